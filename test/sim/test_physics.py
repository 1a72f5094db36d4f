"""Servos, torque off, target validation and a real grasp, all with gravity and contacts."""
from __future__ import annotations

import math

import numpy as np
import pytest

from sim_helpers import ARM_JOINTS, settle, solve_ik, solve_top_down, top_down_rotation

pytestmark = pytest.mark.sim


def test_joint_names_and_home(make_world):
    w = make_world(task="empty")
    assert w.joint_names == [*ARM_JOINTS["left"], "left_gripper", *ARM_JOINTS["right"], "right_gripper"]
    q, v, e = w.joint_state()
    assert q.shape == v.shape == e.shape == (14,)
    np.testing.assert_allclose(q[0:6], [0, 0, 1.2, 1.6, 0, 0])      # config/anubis.yaml home
    np.testing.assert_allclose(q[7:13], [0, 0, 1.2, 1.6, 0, 0])
    assert q[6] == q[13] == pytest.approx(0.04)                       # grippers open


def test_position_actuators_track_targets_under_gravity(make_world):
    w = make_world(task="empty")
    rng = np.random.default_rng(3)
    home = w.joint_state()[0]
    target = home + rng.uniform(-0.3, 0.3, size=14)
    target[[6, 13]] = [0.01, 0.03]
    w.set_joint_targets(dict(zip(w.joint_names, target)))
    settle(w, 2.0)
    q, v, effort = w.joint_state()
    np.testing.assert_allclose(q, target, atol=2e-3)
    assert np.abs(v).max() < 1e-2
    # The servos are really holding the arms up (shoulder pitch joints carry the arm).
    assert abs(effort[w.joint_names.index("right_joint2")]) > 1.0
    assert abs(effort[w.joint_names.index("left_joint2")]) > 1.0
    # ... and the finger-2 mimic follows finger 1.
    for side, t in (("left", 0.01), ("right", 0.03)):
        adr = w.model.joint(f"{side}_gripper_mimic").qposadr[0]
        assert w.data.qpos[adr] == pytest.approx(t, abs=1e-3)


def test_targets_are_clamped_to_the_joint_limits(make_world):
    w = make_world(task="empty")
    w.set_joint_targets({"right_joint2": 5.0, "left_gripper": 1.0, "right_gripper": -1.0})
    targets = w.joint_targets()
    assert targets[w.joint_names.index("right_joint2")] == pytest.approx(0.523599)
    assert targets[w.joint_names.index("left_gripper")] == pytest.approx(0.04)
    assert targets[w.joint_names.index("right_gripper")] == pytest.approx(0.0)


@pytest.mark.parametrize("bad", [
    {"right_joint1": float("nan")},
    {"right_joint1": 0.1, "left_joint3": float("inf")},
    {"right_joint1": 0.1, "no_such_joint": 0.0},
    {"left_gripper": "open"},
])
def test_invalid_targets_raise_and_change_nothing(make_world, bad):
    w = make_world(task="empty")
    before_ctrl = w.data.ctrl.copy()
    before_q = w.joint_state()[0]
    with pytest.raises(ValueError):
        w.set_joint_targets(bad)
    np.testing.assert_array_equal(w.data.ctrl, before_ctrl)
    settle(w, 0.2)
    np.testing.assert_allclose(w.joint_state()[0], before_q, atol=1e-3)


def test_torque_off_sags_and_torque_on_holds_where_it_is(make_world):
    w = make_world(task="empty")
    settle(w, 0.2)
    z_home = w.frame_pose("right_eef")[2, 3]
    w.set_torque(False)
    settle(w, 1.0)
    q_sagged, _, effort = w.joint_state()
    assert np.all(effort == 0.0)
    assert w.frame_pose("right_eef")[2, 3] < z_home - 0.05
    # Torque back on: hold the present (sagged) position, no jump back to the old target.
    w.set_torque(True)
    settle(w, 0.5)
    q_after = w.joint_state()[0]
    arm = [i for i, n in enumerate(w.joint_names) if "gripper" not in n]
    assert np.abs(q_after[arm] - q_sagged[arm]).max() < 0.05
    assert w.frame_pose("right_eef")[2, 3] < z_home - 0.05


def _move(w, q_from, q_to, seconds, gripper):
    """Joint-space interpolation at 50 Hz, like the arm driver's interpolated targets."""
    n = max(1, int(seconds / 0.02))
    for i in range(1, n + 1):
        q = q_from + (q_to - q_from) * i / n
        w.set_joint_targets({**dict(zip(ARM_JOINTS["right"], q)), "right_gripper": gripper})
        settle(w, 0.02)


def _in_gripper_frame(w, point):
    t = w.frame_pose("right_eef")
    return t[:3, :3].T @ (np.asarray(point) - t[:3, 3])


def test_gripper_closes_on_the_box_and_lifts_it(make_world):
    w = make_world(task="lift_box", seed=7)
    settle(w, 0.3)
    box = w.object_poses()["box"]
    box_yaw = 2 * math.atan2(box[6], box[3])
    home = w.joint_state()[0][7:13]
    # Top-down grasp, fingers closing across two opposite faces: the square box allows
    # yaw + k*90 deg; take the one the IK reaches best.
    # Grasp point 1.2 cm above the box centre: the fingertips (1 cm beyond it) end at the box's
    # mid-height, 2 cm above the table; the pads cover the upper half of the box.
    grasp_point = box[:3] + [0.0, 0.0, 0.012]
    q_pre, err, yaw = solve_top_down(w, "right", grasp_point + [0, 0, 0.10],
                                     yaws=[box_yaw + k * math.pi / 2 for k in range(-2, 3)], q0=home)
    assert err < 1e-4
    rot = top_down_rotation(yaw)
    q_grasp, err = solve_ik(w, "right", "right_eef", grasp_point, rot, q0=q_pre)
    assert err < 1e-4
    q_lift, err = solve_ik(w, "right", "right_eef", grasp_point + [0, 0, 0.10], rot, q0=q_grasp)
    assert err < 1e-4

    _move(w, home, q_pre, 1.5, 0.04)
    _move(w, q_pre, q_grasp, 1.0, 0.04)
    settle(w, 0.3)
    w.set_joint_targets({"right_gripper": 0.0})
    settle(w, 0.8)
    q, _, effort = w.joint_state()
    # The fingers stopped on the 4 cm box (2 cm each), pressing at the force limit.
    assert q[13] == pytest.approx(0.02, abs=0.003)
    assert abs(effort[13]) > 10.0
    box_before = w.object_poses()["box"][:3]
    eef_before = w.frame_pose("right_eef")[:3, 3]

    _move(w, q_grasp, q_lift, 1.0, 0.0)
    settle(w, 1.0)
    box_after = w.object_poses()["box"][:3]
    eef_after = w.frame_pose("right_eef")[:3, 3]
    assert eef_after[2] - eef_before[2] == pytest.approx(0.10, abs=0.005)
    assert box_after[2] - box_before[2] == pytest.approx(eef_after[2] - eef_before[2], abs=0.005)
    # Still between the fingers: centred across the closing axis, at the grasp height.
    in_gripper = _in_gripper_frame(w, box_after)
    assert abs(in_gripper[0]) < 0.005     # closing direction
    assert abs(in_gripper[1]) < 0.01
    assert 0.0 < in_gripper[2] < 0.02     # box centre just beyond the grasp point (tool z)
    # Held, not slipping out.
    settle(w, 1.0)
    assert np.linalg.norm(w.object_poses()["box"][:3] - box_after) < 0.003
    # Open: it falls back to the table.
    w.set_joint_targets({"right_gripper": 0.04})
    settle(w, 1.0)
    assert w.object_poses()["box"][2] < box_before[2] + 0.01
