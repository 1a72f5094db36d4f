"""The URDF, the YAML it is generated from, pinocchio and MuJoCo describe the same robot."""
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pinocchio as pin
import pytest

from twinvla_ros.robot.description import load_description
from twinvla_ros.paths import share_dir, urdf_path

mujoco = pytest.importorskip("mujoco")


@pytest.fixture(scope="module")
def description():
    return load_description()


def test_committed_urdf_is_generated_from_the_yaml():
    script = share_dir() / "scripts" / "generate_urdf.py"
    result = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_urdf_has_the_design_names_and_config_limits(description):
    root = ET.parse(urdf_path()).getroot()
    joints = {j.get("name"): j for j in root.findall("joint")}
    links = {l.get("name") for l in root.findall("link")}
    for frame in ["base_link", "eef_reference", "ego_camera_link", "ego_camera_color_optical_frame"]:
        assert frame in links
    for side, arm in description.arms.items():
        for i, name in enumerate(arm.joint_names):
            assert name == f"{side}_joint{i + 1}"
            limit = joints[name].find("limit")
            assert float(limit.get("lower")) == pytest.approx(arm.lower[i])
            assert float(limit.get("upper")) == pytest.approx(arm.upper[i])
            assert float(limit.get("velocity")) == pytest.approx(arm.velocity[i])
        gripper = joints[arm.gripper_joint]
        assert gripper.get("type") == "prismatic"
        assert float(gripper.find("limit").get("upper")) == pytest.approx(arm.gripper_stroke)
        mimic = joints[f"{side}_gripper_mimic"].find("mimic")
        assert mimic is not None and mimic.get("joint") == arm.gripper_joint
        assert {arm.tip_frame, arm.wrist_camera_frame, f"{side}_wrist_camera_link"} <= links
    # Every link that moves carries mass and inertia (MuJoCo needs them to simulate it).
    for link in root.findall("link"):
        if link.find("inertial") is not None:
            inertia = link.find("inertial/inertia")
            assert float(link.find("inertial/mass").get("value")) > 0
            assert min(float(inertia.get(k)) for k in ("ixx", "iyy", "izz")) > 0


def test_pinocchio_and_mujoco_agree_on_forward_kinematics(description):
    model = pin.buildModelFromUrdf(str(urdf_path()))
    data = model.createData()
    mj_model = mujoco.MjModel.from_xml_path(str(urdf_path()))
    mj_data = mujoco.MjData(mj_model)
    frames = ["eef_reference", "ego_camera_color_optical_frame"]
    for arm in description.arms.values():
        frames += [arm.tip_frame, arm.wrist_camera_frame, f"{arm.side}_finger1"]
    rng = np.random.default_rng(0)
    for _ in range(50):
        q = pin.neutral(model)
        for arm in description.arms.values():
            for i, name in enumerate(arm.joint_names):
                value = rng.uniform(arm.lower[i], arm.upper[i])
                q[model.joints[model.getJointId(name)].idx_q] = value
                mj_data.qpos[mj_model.joint(name).qposadr[0]] = value
            stroke = rng.uniform(0, arm.gripper_stroke)
            for joint in (arm.gripper_joint, f"{arm.side}_gripper_mimic"):
                q[model.joints[model.getJointId(joint)].idx_q] = stroke
                mj_data.qpos[mj_model.joint(joint).qposadr[0]] = stroke
        pin.framesForwardKinematics(model, data, q)
        mujoco.mj_kinematics(mj_model, mj_data)
        for frame in frames:
            placement = data.oMf[model.getFrameId(frame)]
            body = mj_data.body(frame)
            np.testing.assert_allclose(body.xpos, placement.translation, atol=1e-6, err_msg=frame)
            np.testing.assert_allclose(body.xmat.reshape(3, 3), placement.rotation, atol=1e-6, err_msg=frame)
