"""Headless rendering of the three cameras: format, content, intrinsics, threads."""
from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from sim_helpers import ARM_JOINTS, settle, solve_top_down
from twinvla_ros.sim import CAMERAS

pytestmark = pytest.mark.sim

OFF_TABLE = np.array([1.2, 0.0, 0.02, 1.0, 0.0, 0.0, 0.0])   # on the floor, far out of view


def _project(w, camera, point):
    """Pixel (u, v) of a world point through the reported intrinsics and optical frame."""
    k = w.camera_intrinsics(camera)
    t = w.frame_pose(k.frame_id)
    p = t[:3, :3].T @ (np.asarray(point) - t[:3, 3])
    assert p[2] > 0, "point behind the camera"
    return np.array([k.fx * p[0] / p[2] + k.cx, k.fy * p[1] / p[2] + k.cy])


def _changed(a, b, threshold=30):
    return np.abs(a.astype(int) - b.astype(int)).max(axis=2) > threshold


@pytest.mark.parametrize("height,width,antialias", [(240, 320, False), (120, 200, True)])
def test_every_camera_returns_a_nontrivial_rgb_image(make_world, height, width, antialias):
    w = make_world(image_height=height, image_width=width, antialias=antialias)
    images = w.render_all()
    assert list(images) == list(CAMERAS)
    for cam, img in images.items():
        single = w.render(cam)
        for im in (img, single):
            assert im.shape == (height, width, 3)
            assert im.dtype == np.uint8
            assert im.flags["C_CONTIGUOUS"]
        np.testing.assert_array_equal(img, single)   # same instant, same picture
        assert img.std() > 10, cam                     # not a constant image
        assert 20 < img.mean() < 235, cam              # neither black nor blown out
        assert len(np.unique(img.reshape(-1, 3), axis=0)) > 20, cam


@pytest.mark.parametrize("height,width", [(240, 320), (480, 640), (120, 200)])
def test_intrinsics_match_the_resolution_and_the_urdf_frames(make_world, height, width):
    w = make_world(task="empty", image_height=height, image_width=width)
    frames = {"ego": "ego_camera_color_optical_frame",
              "wrist_left": "left_wrist_camera_color_optical_frame",
              "wrist_right": "right_wrist_camera_color_optical_frame"}
    for cam in CAMERAS:
        k = w.camera_intrinsics(cam)
        assert (k.width, k.height) == (width, height)
        assert k.frame_id == frames[cam]
        assert k.cx == pytest.approx((width - 1) / 2) and k.cy == pytest.approx((height - 1) / 2)
        assert k.fx == pytest.approx(k.fy)
        fovy = 2 * math.degrees(math.atan(height / 2 / k.fy))
        assert fovy == pytest.approx(w.model.cam_fovy[w.model.camera(cam).id])
    assert 50 < 2 * math.degrees(math.atan(height / 2 / w.camera_intrinsics("wrist_left").fy)) < 65
    with pytest.raises(ValueError, match="ego"):
        w.camera_intrinsics("top")
    with pytest.raises(ValueError):
        w.render("top")


def test_ego_camera_sees_the_box_where_the_intrinsics_say(make_world):
    w = make_world(task="lift_box", seed=2)
    settle(w, 0.2)
    with_box = w.render("ego")
    box = w.object_poses()["box"]
    w.set_object_pose("box", OFF_TABLE)
    without_box = w.render("ego")
    changed = _changed(with_box, without_box)
    assert changed.sum() > 50          # the box covers a visible patch of the image
    vs, us = np.nonzero(changed)
    centroid = np.array([us.mean(), vs.mean()])
    # The patch sits where the box centre projects (intrinsics + optical frame are right).
    np.testing.assert_allclose(centroid, _project(w, "ego", box[:3]), atol=4.0)
    # The box is red: the patch is too.
    patch = with_box[changed].astype(int)
    assert np.median(patch[:, 0] - patch[:, 1]) > 60


def test_ego_camera_sees_both_grippers_above_the_table(make_world):
    w = make_world(task="empty")
    for side, y in (("left", 0.2), ("right", -0.2)):
        q, err, _ = solve_top_down(w, side, [0.27, y, 0.90])
        assert err < 1e-4
        w.set_joint_targets(dict(zip(ARM_JOINTS[side], q)))
    settle(w, 1.5)
    k = w.camera_intrinsics("ego")
    for side in ("left", "right"):
        u, v = _project(w, "ego", w.frame_pose(f"{side}_eef")[:3, 3])
        assert 0 <= u < k.width and 0 <= v < k.height, side
        assert (u < k.width / 2) == (side == "left")   # the left arm is on the image's left
    # ... and the grippers are really drawn there: move one away and the picture changes
    # where its gripper body was.
    t = w.frame_pose("right_gripper_base")
    u, v = _project(w, "ego", t[:3, :3] @ [0, 0, 0.025] + t[:3, 3])
    before = w.render("ego")
    w.set_joint_targets(dict(zip(ARM_JOINTS["right"], [0, 0, 0, 0.2, 0, 0])))   # arm up
    settle(w, 1.5)
    changed = _changed(before, w.render("ego"))
    assert changed[int(v) - 2:int(v) + 3, int(u) - 2:int(u) + 3].all()


def test_wrist_camera_sees_the_box_below_its_gripper(make_world):
    w = make_world(task="lift_box", seed=2)
    settle(w, 0.2)
    box = w.object_poses()["box"]
    q, err, _ = solve_top_down(w, "right", box[:3] + [0, 0, 0.10])
    assert err < 1e-4
    w.set_joint_targets(dict(zip(ARM_JOINTS["right"], q)))
    settle(w, 1.5)
    with_box = w.render_all()
    w.set_object_pose("box", OFF_TABLE)
    without_box = w.render_all()
    assert _changed(with_box["wrist_right"], without_box["wrist_right"]).sum() > 200
    # The left wrist camera looks at its own side of the table: no box there.
    assert _changed(with_box["wrist_left"], without_box["wrist_left"]).sum() == 0


def test_rendering_from_another_thread_while_physics_steps(make_world):
    w = make_world(task="lift_box")
    w.render_all()
    errors, frames = [], []
    stop = threading.Event()

    def physics():
        try:
            k = 0
            while not stop.is_set():
                w.set_joint_targets({"right_joint1": 0.4 * math.sin(0.01 * k)})
                w.step(5)
                w.joint_state()
                k += 1
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    thread = threading.Thread(target=physics)
    thread.start()
    try:
        t0 = w.time
        while len(frames) < 10 or w.time - t0 < 0.5:
            frames.append(w.render_all()["ego"])
    finally:
        stop.set()
        thread.join()
    assert not errors
    assert w.time - t0 >= 0.5
    assert any(not np.array_equal(frames[0], f) for f in frames[1:])   # the arm moved


def test_rendering_does_not_change_the_physics(make_world):
    a, b = make_world(task="lift_box"), make_world(task="lift_box")
    for w in (a, b):
        w.set_joint_targets({"right_joint1": -0.3, "right_joint3": 1.5})
    for i in range(20):
        a.step(10)
        b.step(10)
        if i % 3 == 0:
            a.render_all()
            a.frame_pose("right_eef")
    np.testing.assert_array_equal(a.data.qpos, b.data.qpos)
    np.testing.assert_array_equal(a.data.qvel, b.data.qvel)


def test_close_releases_the_renderer(make_world):
    w = make_world(task="empty")
    w.render("ego")
    w.close()
    w.close()   # idempotent
    with pytest.raises(RuntimeError):
        w.render("ego")
    w.step(10)  # physics does not need the renderer
    assert w.joint_state()[0].shape == (14,)


@pytest.mark.parametrize("side", ["left", "right"])
def test_each_wrist_camera_sees_its_own_fingers_close(make_world, side):
    w = make_world(task="empty")
    camera = f"wrist_{side}"
    open_image = w.render(camera)
    w.set_joint_targets({f"{side}_gripper": 0.0})
    settle(w, 0.8)
    closed_image = w.render(camera)
    changed = _changed(open_image, closed_image)
    # The fingers move across the lower part of the image; the rest of the view is unchanged.
    height = changed.shape[0]
    assert changed[height // 2:].mean() > 0.02, "fingers not visible in the wrist camera"
    assert changed[: height // 4].mean() < 0.01
