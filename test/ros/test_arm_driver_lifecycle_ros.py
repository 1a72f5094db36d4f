"""The arm driver as a managed node, driven the way `ros2 lifecycle set` drives it: the
lifecycle services over real DDS, the sim robot behind it. Nothing reaches the motors before
activate; activate turns torque on holding the measured pose; deactivate holds and refuses
commands; shutdown ends in `finalized`."""
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from lifecycle_msgs.msg import Transition
from sensor_msgs.msg import JointState

from ros_probe import Probe, diagnostic_values, stream_until, wait_for
from twinvla_ros.bringup.graph import sim_robot
from twinvla_ros.bringup.runner import GraphRunner
from twinvla_ros.ros.messages import matrix_to_pose, pose_to_matrix
from twinvla_ros.ros.qos import COMMAND_QOS

pytestmark = [pytest.mark.ros, pytest.mark.sim]

DRIVER = "/arm_driver_node"
RIGHT = "arm_driver_node: right arm"


def torque_messages(probe, since):
    return probe.messages("/sim/torque", since)


@pytest.fixture(scope="module")
def graph():
    specs = sim_robot(sim_node={"camera_rate": 5.0}, arm_driver_node={"autostart": False})
    with GraphRunner(specs) as runner:
        probe = Probe(runner.context)
        for topic in ("/joint_states", "/sim/joint_commands", "/sim/torque", "/sim/joint_states"):
            probe.record(JointState, topic, COMMAND_QOS)
        probe.record(PoseStamped, "/right_arm/eef_pose", COMMAND_QOS)
        probe.record(DiagnosticArray, "/diagnostics", COMMAND_QOS)
        runner.add_node(probe)
        probe.target = probe.create_publisher(PoseStamped, "/right_arm/eef_target", COMMAND_QOS)
        runner.probe = probe
        yield runner


def test_lifecycle_transitions_gate_torque_and_motion(graph):
    probe = graph.probe
    wait_for(lambda: probe.messages("/sim/joint_states"), 20.0, "the sim's joint states")
    assert probe.lifecycle_state(DRIVER) == "unconfigured"
    start = time.monotonic()
    assert not probe.messages("/joint_states") and not probe.messages("/sim/joint_commands")

    # configure: the bus is open and measured, nothing is written to the motors.
    assert probe.change_state(DRIVER, Transition.TRANSITION_CONFIGURE)
    assert probe.lifecycle_state(DRIVER) == "inactive"
    wait_for(lambda: probe.latest("/right_arm/eef_pose"), 10.0, "eef_pose once configured")
    pose = pose_to_matrix(probe.latest("/right_arm/eef_pose").pose)
    pose[2, 3] += 0.05
    target = PoseStamped(pose=matrix_to_pose(pose))
    target.header.frame_id = "eef_reference"
    refused = time.monotonic()
    stream_until(lambda: probe.target.publish(target),
                 lambda: "not active" in diagnostic_values(probe, RIGHT, refused).get("last_rejection", ""),
                 10.0, "the inactive driver to refuse the target")
    assert not probe.messages("/sim/joint_commands"), "an inactive driver wrote joint targets"
    assert not [m for m in torque_messages(probe, start) if any(e > 0 for e in m.effort)]

    # activate: torque on, and the first target written is the measured pose.
    activated = time.monotonic()
    measured = np.array(probe.latest("/sim/joint_states").position)
    names = list(probe.latest("/sim/joint_states").name)
    assert probe.change_state(DRIVER, Transition.TRANSITION_ACTIVATE)
    assert probe.lifecycle_state(DRIVER) == "active"
    wait_for(lambda: torque_messages(probe, activated), 5.0, "torque on")
    assert all(all(e == 1.0 for e in m.effort) for m in torque_messages(probe, activated))
    first = wait_for(lambda: probe.messages("/sim/joint_commands", activated), 5.0, "the first joint targets")[0]
    held = np.array([measured[names.index(name)] for name in first.name])
    np.testing.assert_allclose(first.position, held, atol=2e-3)   # where the arm is, not a jump

    # active: the target is followed.
    moving = time.monotonic()
    stream_until(lambda: probe.target.publish(target),
                 lambda: abs(probe.latest("/right_arm/eef_pose").pose.position.z - pose[2, 3]) < 0.005,
                 20.0, "the active driver to reach the target")

    # deactivate: commands are refused, the arm holds its last command.
    assert probe.change_state(DRIVER, Transition.TRANSITION_DEACTIVATE)
    assert probe.lifecycle_state(DRIVER) == "inactive"
    held_since = time.monotonic()
    lower = PoseStamped(pose=matrix_to_pose(pose))
    lower.pose.position.z -= 0.08
    lower.header.frame_id = "eef_reference"
    stream_until(lambda: probe.target.publish(lower),
                 lambda: "not active" in diagnostic_values(probe, RIGHT, held_since).get("last_rejection", ""),
                 10.0, "the deactivated driver to refuse the target")
    commands = wait_for(lambda: probe.messages("/sim/joint_commands", held_since)[5:], 5.0, "held commands")
    spread = np.ptp(np.array([m.position for m in commands]), axis=0)
    assert spread.max() < 1e-3, f"a deactivated driver moved its commands by {spread.max():.4f} rad"
    assert moving < held_since

    # cleanup, then shutdown: finalized, nothing written any more.
    assert probe.change_state(DRIVER, Transition.TRANSITION_CLEANUP)
    assert probe.lifecycle_state(DRIVER) == "unconfigured"
    assert probe.change_state(DRIVER, Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
    assert probe.lifecycle_state(DRIVER) == "finalized"
    done = time.monotonic()
    # The sim keeps publishing at 100 Hz: 50 of its states later, still no joint target.
    wait_for(lambda: len(probe.messages("/sim/joint_states", done)) >= 50, 10.0, "50 more sim states")
    assert not probe.messages("/sim/joint_commands", done + 0.05)
