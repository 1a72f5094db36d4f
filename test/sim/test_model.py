"""The MuJoCo model: the URDF compiles, its kinematics agree with pinocchio, cameras sit at the
URDF optical frames, and the scene additions (actuators, mimic, exclusions) are there."""
from __future__ import annotations

import mujoco
import numpy as np
import pinocchio as pin
import pytest

from twinvla_ros.paths import urdf_path
from twinvla_ros.sim import CAMERAS, TASKS, SimConfig, SimWorld
from twinvla_ros.sim.scene import CAMERA_FRAMES, build_model

pytestmark = pytest.mark.sim

FRAMES = ["left_eef", "right_eef", "left_gripper_base", "right_gripper_base", "eef_reference",
          "ego_camera_color_optical_frame", "left_wrist_camera_color_optical_frame",
          "right_wrist_camera_color_optical_frame", "left_finger2", "right_finger1"]


def test_urdf_compiles_in_mujoco_and_pinocchio():
    model, info = build_model("empty")
    pmodel = pin.buildModelFromUrdf(str(urdf_path()))
    # The same 16 joints (12 arm, 2 fingers + 2 mimic fingers) on both sides.
    mj_joints = {model.joint(i).name for i in range(model.njnt)}
    pin_joints = set(pmodel.names[1:])
    assert mj_joints == pin_joints
    assert len(mj_joints) == 16
    # Every URDF link survives as a MuJoCo body (fusestatic off), frames included.
    for frame in FRAMES + list(CAMERA_FRAMES.values()):
        assert mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, frame) >= 0, frame
        assert pmodel.existFrame(frame), frame
    # One position actuator per /joint_states joint, named like it, force-limited.
    assert model.nu == 14
    assert [model.actuator(i).name for i in range(model.nu)] == sorted(
        info.joint_names, key=lambda n: model.actuator(n).id)
    assert set(info.joint_names) == {model.actuator(i).name for i in range(model.nu)}
    assert np.all(model.actuator_forcelimited == 1)
    assert model.opt.gravity[2] == pytest.approx(-9.81)
    # The mimic finger follows through an equality constraint.
    # Exactly one per side (MuJoCo's URDF importer may already have made one from <mimic>).
    assert model.neq == 2
    for side in ("left", "right"):
        eq = model.equality(f"{side}_gripper_mimic")
        assert eq.type == mujoco.mjtEq.mjEQ_JOINT
        assert model.joint(eq.obj1id[0]).name == f"{side}_gripper_mimic"
        assert model.joint(eq.obj2id[0]).name == f"{side}_gripper"
        np.testing.assert_allclose(eq.data[:5], [0, 1, 0, 0, 0])


def _mj_pin_pairs(model, pmodel):
    pairs = []
    for i in range(model.njnt):
        name = model.joint(i).name
        pairs.append((model.jnt_qposadr[i], pmodel.idx_qs[pmodel.getJointId(name)],
                      model.jnt_range[i]))
    return pairs


def test_forward_kinematics_agrees_with_pinocchio():
    model, _ = build_model("empty")
    data = mujoco.MjData(model)
    pmodel = pin.buildModelFromUrdf(str(urdf_path()))
    pdata = pmodel.createData()
    pairs = _mj_pin_pairs(model, pmodel)
    rng = np.random.default_rng(42)
    worst_pos, worst_rot = 0.0, 0.0
    for _ in range(25):
        q = pin.neutral(pmodel)
        for mj_adr, pin_idx, (lo, hi) in pairs:
            value = rng.uniform(lo, hi)
            data.qpos[mj_adr] = value
            q[pin_idx] = value
        mujoco.mj_kinematics(model, data)
        pin.framesForwardKinematics(pmodel, pdata, q)
        for frame in FRAMES:
            body = model.body(frame).id
            oMf = pdata.oMf[pmodel.getFrameId(frame)]
            worst_pos = max(worst_pos, np.abs(data.xpos[body] - oMf.translation).max())
            worst_rot = max(worst_rot, np.abs(data.xmat[body].reshape(3, 3) - oMf.rotation).max())
    assert worst_pos < 1e-6
    assert worst_rot < 1e-6


def test_cameras_sit_at_the_urdf_optical_frames():
    """A MuJoCo camera looks along its -z with +y up; the ROS optical frame looks along +z with
    +y down: same origin, rotated 180 deg about x."""
    model, _ = build_model("empty")
    data = mujoco.MjData(model)
    data.qpos[:] = 0.3   # any pose: the wrist cameras ride on the arms
    mujoco.mj_forward(model, data)
    flip = np.diag([1.0, -1.0, -1.0])
    for cam in CAMERAS:
        frame = CAMERA_FRAMES[cam]
        cam_id = model.camera(cam).id
        assert model.cam_bodyid[cam_id] == model.body(frame).id
        np.testing.assert_allclose(data.cam_xpos[cam_id], data.xpos[model.body(frame).id], atol=1e-9)
        np.testing.assert_allclose(data.cam_xmat[cam_id].reshape(3, 3),
                                   data.xmat[model.body(frame).id].reshape(3, 3) @ flip, atol=1e-9)


def test_every_task_builds_and_unknown_task_is_rejected():
    for task in ("handover_box", "lift_box", "empty"):
        assert task in TASKS
        build_model(task)
    with pytest.raises(ValueError, match="empty.*handover_box.*lift_box"):
        SimWorld(SimConfig(task="juggle"))
