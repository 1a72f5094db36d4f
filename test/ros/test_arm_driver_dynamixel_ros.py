"""The arm driver end to end on the Dynamixel backend: two arms of servos simulated on
pseudo-terminals (real Protocol 2.0 packets through the ROBOTIS SDK), the driver in a real ROS
graph driven through its lifecycle services and topics, the wire checked at the servos."""
import numpy as np
import pytest
import yaml
from geometry_msgs.msg import PoseStamped
from lifecycle_msgs.msg import Transition
from sensor_msgs.msg import JointState

import dynamixel_responder as dxl
from dynamixel_responder import DynamixelResponder, arm_hardware
from ros_probe import Probe, stream_until, wait_for
from twinvla_ros.bringup.graph import real_robot
from twinvla_ros.bringup.runner import GraphRunner
from twinvla_ros.hardware.motors.dynamixel.config import counts_to_motor_angle, motor_angle_to_counts
from twinvla_ros.robot.description import load_description
from twinvla_ros.ros.messages import matrix_to_pose, pose_to_matrix
from twinvla_ros.ros.qos import COMMAND_QOS

pytestmark = [pytest.mark.ros]

DRIVER = "/arm_driver_node"
TORQUE_ENABLE, GOAL_POSITION = 64, 116
DESCRIPTION = load_description()


def torque_writes(servos):
    return [(motor, data[0]) for motor, data in servos.writes_to(TORQUE_ENABLE)]


def goal_angles(servos):
    """The newest goal written to motors 1..6, as motor angles."""
    goals = {}
    for motor, data in servos.writes_to(GOAL_POSITION):
        goals[motor] = int.from_bytes(data, "little", signed=True)
    return counts_to_motor_angle([goals[i] for i in range(1, 7)]) if len(goals) >= 6 else None


@pytest.fixture
def robot(tmp_path):
    servos = {side: DynamixelResponder(range(1, 8)) for side in ("left", "right")}
    try:
        hardware = arm_hardware(servos["left"].port, "follower_left", torque_on_shutdown="off")
        hardware["arms"]["follower_right"] = {"port": servos["right"].port, "baud": 1000000}
        hardware["calibration_dir"] = str(tmp_path / "calibration")
        path = tmp_path / "hardware.yaml"
        path.write_text(yaml.safe_dump({"hardware": hardware}))
        for side, responder in servos.items():     # the arms rest at home, gripper half open
            for motor, q in enumerate(DESCRIPTION.arms[side].home, start=1):
                responder.set_position(motor, int(motor_angle_to_counts(q)))
            responder.set_position(7, int(motor_angle_to_counts(0.75)))
        yield servos, path
    finally:
        for responder in servos.values():
            responder.close()


def test_lifecycle_and_eef_targets_on_the_wire(robot):
    servos, path = robot
    specs = [s for s in real_robot(arm_driver_node={"hardware_config": str(path), "autostart": False})
             if s.name == "arm_driver_node"]
    with GraphRunner(specs) as runner:
        probe = Probe(runner.context)
        probe.record(JointState, "/joint_states", COMMAND_QOS)
        probe.record(PoseStamped, "/right_arm/eef_pose", COMMAND_QOS)
        runner.add_node(probe)
        target_pub = probe.create_publisher(PoseStamped, "/right_arm/eef_target", COMMAND_QOS)
        wait_for(lambda: probe.count_subscribers("/right_arm/eef_target"), 10.0, "the driver's subscription")

        # configure: the buses open and read the arms; no torque, no goal.
        assert probe.change_state(DRIVER, Transition.TRANSITION_CONFIGURE)
        state = wait_for(lambda: probe.latest("/joint_states"), 10.0, "joint states from the servos")
        right = [state.position[state.name.index(f"right_joint{i}")] for i in range(1, 7)]
        np.testing.assert_allclose(right, DESCRIPTION.arms["right"].home, atol=2e-3)
        gripper = state.position[state.name.index("right_gripper")]
        assert gripper == pytest.approx(0.02, abs=1e-3)           # 0.75 of 1.5 rad: half the 0.04 m stroke
        for responder in servos.values():
            assert not [w for w in torque_writes(responder) if w[1] == 1]
            assert not responder.writes_to(GOAL_POSITION)

        # activate: goal = present for every motor, then torque on.
        assert probe.change_state(DRIVER, Transition.TRANSITION_ACTIVATE)
        for side, responder in servos.items():
            on = [motor for motor, value in torque_writes(responder) if value == 1]
            assert sorted(on) == list(range(1, 8)), f"{side}: torque on for {on}"
            first_torque = next(i for i, ins in enumerate(responder.received())
                                if ins.instruction == dxl.WRITE and ins.params[:2] == bytes([TORQUE_ENABLE, 0])
                                and ins.params[2] == 1)
            goals_before = [ins for ins in responder.received()[:first_torque]
                            if ins.params[:2] == bytes([GOAL_POSITION, 0])]
            assert goals_before, f"{side}: torque came on before any goal was set to the present position"
        wait_for(lambda: goal_angles(servos["right"]) is not None, 5.0, "goals held by the servo loop")
        np.testing.assert_allclose(goal_angles(servos["right"]), DESCRIPTION.arms["right"].home, atol=2e-3)   # no jump

        # active: an EEF target 4 cm up becomes goal positions, and the servos get there.
        pose = pose_to_matrix(wait_for(lambda: probe.latest("/right_arm/eef_pose"), 5.0, "eef_pose").pose)
        pose[2, 3] += 0.04
        target = PoseStamped(pose=matrix_to_pose(pose))
        target.header.frame_id = "eef_reference"
        stream_until(lambda: target_pub.publish(target),
                     lambda: abs(probe.latest("/right_arm/eef_pose").pose.position.z - pose[2, 3]) < 0.004,
                     20.0, "the right arm to reach the target through the servos")
        moved = goal_angles(servos["right"])
        assert np.abs(moved - DESCRIPTION.arms["right"].home).max() > 0.02
        np.testing.assert_allclose(goal_angles(servos["left"]), DESCRIPTION.arms["left"].home, atol=2e-3)

        # deactivate: torque stays on, goals stop changing whatever is sent.
        assert probe.change_state(DRIVER, Transition.TRANSITION_DEACTIVATE)
        servos["right"].clear_record()
        lower = PoseStamped(pose=matrix_to_pose(pose))
        lower.pose.position.z -= 0.08
        lower.header.frame_id = "eef_reference"
        stream_until(lambda: target_pub.publish(lower), lambda: len(servos["right"].writes_to(GOAL_POSITION)) >= 60,
                     10.0, "goal writes while deactivated")
        np.testing.assert_allclose(goal_angles(servos["right"]), moved, atol=2e-3)
        assert not torque_writes(servos["right"])

        # shutdown with torque_on_shutdown: off: torque goes off on every motor, the buses close.
        assert probe.change_state(DRIVER, Transition.TRANSITION_INACTIVE_SHUTDOWN)
        assert probe.lifecycle_state(DRIVER) == "finalized"
        for side, responder in servos.items():
            off = {motor for motor, value in torque_writes(responder) if value == 0}
            assert set(range(1, 8)) <= off, f"{side}: torque off for {sorted(off)} only"
        assert runner.node("arm_driver_node").buses == {}
