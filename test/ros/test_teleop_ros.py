"""teleop_node end to end: leader arms simulated as Dynamixel servos on pseudo-terminals (real
Protocol 2.0 through the ROBOTIS SDK, torque off) drive the simulated robot (MuJoCo sim node +
arm driver over real DDS), and the sim's scripted expert records a lift_box demo.

One sim robot graph serves every test (the sim runs in real time: starting it is the slow part);
each test adds its own teleop node to it and takes it down again, so the leader ports are free
for the next one."""
import json
import time

import numpy as np
import pytest
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from std_srvs.srv import Trigger

from dynamixel_responder import DynamixelResponder, arm_hardware
from ros_probe import Probe, diagnostic_values, wait_for
from twinvla_ros.bringup.graph import sim_robot
from twinvla_ros.bringup.runner import GraphRunner
from twinvla_ros.hardware.motors.dynamixel.config import motor_angle_to_counts
from twinvla_ros.robot.description import load_description
from twinvla_ros.robot.kinematics import ArmKinematics
from twinvla_ros.robot.rotations import rotation_angle_between
from twinvla_ros.ros.messages import pose_to_matrix
from twinvla_ros.ros.node import StartupError
from twinvla_ros.ros.nodes.teleop_node import TeleopNode
from twinvla_ros.ros.qos import COMMAND_QOS

pytestmark = [pytest.mark.ros, pytest.mark.sim]

DESCRIPTION = load_description()
SIDES = ("left", "right")
KINEMATICS = {side: ArmKinematics(DESCRIPTION, side) for side in SIDES}
SAFE_START_SPEED = 0.3              # rad/s
# Where the leaders are put: well away from the followers' home pose (0.4 rad on some joints).
LEADER_OFFSET = {"left": np.array([-0.25, 0.2, -0.2, 0.15, 0.3, -0.4]),
                 "right": np.array([0.4, -0.2, 0.25, -0.15, 0.2, 0.3])}


@pytest.fixture(scope="module")
def graph():
    specs = sim_robot(sim_node={"camera_rate": 2.0, "task": "lift_box"})
    with GraphRunner(specs) as runner:
        probe = Probe(runner.context)
        probe.record(JointState, "/joint_states", COMMAND_QOS)
        probe.record(DiagnosticArray, "/diagnostics", COMMAND_QOS)
        for side in SIDES:
            probe.record(PoseStamped, f"/{side}_arm/eef_pose", COMMAND_QOS)
        runner.add_node(probe)
        wait_for(lambda: probe.latest("/right_arm/eef_pose"), 30.0, "the arm driver's first eef_pose")
        runner.probe = probe
        yield runner


@pytest.fixture
def leaders(tmp_path):
    """Two leader arms of servos 1..7 on ptys, resting at home + LEADER_OFFSET, grippers 0.3 open."""
    servos = {side: DynamixelResponder(range(1, 8)) for side in SIDES}
    try:
        hardware = arm_hardware(servos["left"].port, "leader_left")
        hardware["arms"]["leader_right"] = {"port": servos["right"].port, "baud": 1000000}
        hardware["calibration_dir"] = str(tmp_path / "calibration")
        path = tmp_path / "hardware.yaml"
        path.write_text(yaml.safe_dump({"hardware": hardware}))
        for side in SIDES:
            place_leader(servos[side], DESCRIPTION.arms[side].home + LEADER_OFFSET[side], 0.3)
        yield servos, path
    finally:
        for responder in servos.values():
            responder.close()


def place_leader(responder, joints, gripper_fraction):
    """Turn the leader's horns by hand: joints rad (offset 0, direction 1); gripper 0..1 of 1.5 rad."""
    for motor, q in enumerate(joints, start=1):
        responder.set_position(motor, int(motor_angle_to_counts(q)))
    responder.set_position(7, int(motor_angle_to_counts(1.5 * gripper_fraction)))


def start_teleop(runner, name, **parameters):
    """A TeleopNode named `name` in the running graph, configured and active."""
    node = TeleopNode(context=runner.context, cli_args=["--ros-args", "-r", f"__node:={name}"],
                      parameter_overrides=[Parameter(k, value=v) for k, v in parameters.items()])
    node.bring_up()
    runner.add_node(node)
    return node


def stop_teleop(node):
    node.trigger_deactivate()
    node.trigger_cleanup()


def follower_joints(probe, side, since=0.0):
    """(n,) header stamps and (n, 6) measured joints of one arm from /joint_states."""
    names = [f"{side}_joint{i}" for i in range(1, 7)]
    stamps, positions = [], []
    for msg in probe.messages("/joint_states", since):
        index = {name: i for i, name in enumerate(msg.name)}
        stamps.append(msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9)
        positions.append([msg.position[index[n]] for n in names])
    return np.array(stamps), np.array(positions)


def fastest_average_speed(stamps, positions, window=0.5):
    """rad/s: the largest joint displacement over any >= `window` s stretch, per second (robust
    to the sim servo's transients and to a loaded machine's stall-and-catch-up, which a velocity
    sample or a short window is not)."""
    fastest = 0.0
    for i, t in enumerate(stamps):
        later = np.nonzero(stamps >= t + window)[0]
        if later.size:
            j = later[0]
            fastest = max(fastest, np.abs(positions[j] - positions[i]).max() / (stamps[j] - t))
    return fastest


def latest_joints(probe, side):
    msg = probe.latest("/joint_states")
    return np.array([msg.position[msg.name.index(f"{side}_joint{i}")] for i in range(1, 7)])


def follower_gripper(probe, side):
    msg = probe.latest("/joint_states")
    return msg.position[msg.name.index(f"{side}_gripper")] / DESCRIPTION.arms[side].gripper_stroke


def teleop_state(probe, node, side, since):
    return diagnostic_values(probe, f"{node}: {side} arm", since).get("state")


def go_home(runner):
    probe = runner.probe
    assert probe.call(Trigger, "/arm_driver_node/go_home", Trigger.Request()).success
    wait_for(lambda: all(np.abs(latest_joints(probe, side) - DESCRIPTION.arms[side].home).max() < 0.02
                         for side in SIDES), 30.0, "both arms home")


def test_joint_mirroring_starts_slowly_then_follows_the_leaders(graph, leaders):
    servos, path = leaders
    probe = graph.probe
    go_home(graph)
    started = time.monotonic()
    node = start_teleop(graph, "teleop_joint", backend="leader", mapping="joint", hardware_config=str(path),
                        safe_start_speed=SAFE_START_SPEED)
    try:
        engaged = wait_for(lambda: all(teleop_state(probe, "teleop_joint", s, started) == "mirroring" for s in SIDES)
                           and time.monotonic(), 30.0, "both arms mirroring")
        leader = {side: DESCRIPTION.arms[side].home + LEADER_OFFSET[side] for side in SIDES}
        for side in SIDES:
            # The safe start: from home to the leader at the safe-start speed, never at the arm
            # driver's own cap (0.8 x 1.4 rad/s); 1.3 x for the servo's lag and a loaded machine.
            stamps, positions = follower_joints(probe, side, started)
            assert np.abs(positions[0] - DESCRIPTION.arms[side].home).max() < 0.02
            assert fastest_average_speed(stamps, positions) <= 1.3 * SAFE_START_SPEED, side
        # It cannot have engaged sooner than the largest gap (0.4 rad) less the tolerance allows.
        assert engaged - started >= (0.4 - 0.05) / SAFE_START_SPEED
        # Mirroring: the followers are at the leaders' joints and gripper opening.
        wait_for(lambda: all(np.abs(latest_joints(probe, s) - leader[s]).max() < 0.02
                             for s in SIDES), 10.0, "the followers at the leaders' joints")
        wait_for(lambda: abs(follower_gripper(probe, "right") - 0.3) < 0.05, 10.0, "the right gripper 0.3 open")
        # The operator moves the right leader: the follower mirrors it (no new safe start).
        moved = leader["right"] + np.array([0.0, 0.0, 0.0, 0.2, 0.0, -0.2])
        place_leader(servos["right"], moved, 0.8)
        wait_for(lambda: np.abs(latest_joints(probe, "right") - moved).max() < 0.02,
                 10.0, "the right follower at the moved leader")
        wait_for(lambda: abs(follower_gripper(probe, "right") - 0.8) < 0.05, 10.0, "the right gripper 0.8 open")
        values = wait_for(lambda: diagnostic_values(probe, "teleop_joint: right arm", engaged), 5.0,
                          "the teleop diagnostics")
        assert values["engagements"] == "1" and values["holds"] == "0"
        assert float(values["leader_rate_hz"]) > 0.0          # the leaders are read (no rate claim: shared machine)
        assert diagnostic_values(probe, "teleop_joint: right leader bus", started)["access"] == "read-only (leader)"

        # The right leader stops answering: that arm holds and says why; the left one mirrors on.
        servos["right"].silent.update(range(1, 8))
        silenced = time.monotonic()
        wait_for(lambda: teleop_state(probe, "teleop_joint", "right", silenced) == "holding", 10.0, "right holding")
        assert "stale" in diagnostic_values(probe, "teleop_joint: right arm", silenced)["reason"]
        assert teleop_state(probe, "teleop_joint", "left", silenced) == "mirroring"
        # Back, moved meanwhile: a new safe start, then mirroring again.
        place_leader(servos["right"], leader["right"], 0.3)
        servos["right"].silent.clear()
        back = time.monotonic()
        wait_for(lambda: teleop_state(probe, "teleop_joint", "right", back) == "mirroring", 20.0, "right mirroring")
        values = diagnostic_values(probe, "teleop_joint: right arm", back)
        assert (values["engagements"], values["holds"], values["approaches"]) == ("2", "1", "2")
        wait_for(lambda: np.abs(latest_joints(probe, "right") - leader["right"]).max() < 0.02, 10.0,
                 "the right follower back at the leader")
    finally:
        stop_teleop(node)


def test_configure_fails_for_a_missing_leader_and_leaves_the_other_port_free(graph, leaders, tmp_path):
    _, path = leaders
    document = yaml.safe_load(path.read_text())
    document["hardware"]["arms"]["leader_right"]["port"] = str(tmp_path / "no_such_port")
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(document))
    node = TeleopNode(context=graph.context, cli_args=["--ros-args", "-r", "__node:=teleop_broken"],
                      parameter_overrides=[Parameter("hardware_config", value=str(broken))])
    try:
        with pytest.raises(StartupError, match="right leader: .*no_such_port"):
            node.bring_up()
        assert node.lifecycle_state == "unconfigured" and not node.leaders
    finally:
        node.destroy_node()
    # The left leader's port was closed again: another owner can open it.
    working = start_teleop(graph, "teleop_after", hardware_config=str(path))
    stop_teleop(working)


def test_eef_mirroring_puts_the_followers_at_the_leaders_fk(graph, leaders):
    _, path = leaders
    probe = graph.probe
    go_home(graph)
    started = time.monotonic()
    node = start_teleop(graph, "teleop_eef", backend="leader", mapping="eef", hardware_config=str(path))
    try:
        wait_for(lambda: all(teleop_state(probe, "teleop_eef", s, started) == "mirroring" for s in SIDES),
                 30.0, "both arms mirroring")
        for side in SIDES:
            goal = KINEMATICS[side].fk(DESCRIPTION.arms[side].home + LEADER_OFFSET[side])

            def at_goal():
                pose = pose_to_matrix(probe.latest(f"/{side}_arm/eef_pose").pose)
                return (np.linalg.norm(pose[:3, 3] - goal[:3, 3]) < 0.005
                        and rotation_angle_between(pose[:3, :3], goal[:3, :3]) < 0.03)
            wait_for(at_goal, 10.0, f"the {side} EEF at the leader's FK")
    finally:
        stop_teleop(node)


def test_sim_expert_demo_lifts_the_box(graph):
    probe = graph.probe
    node = start_teleop(graph, "teleop_expert", backend="sim_expert", task="lift_box", seed=4)
    try:
        reply = probe.call(Trigger, "/teleop_expert/start_demo", Trigger.Request(), timeout=60.0)
        assert reply.success, reply.message
        demo = json.loads(reply.message)
        assert demo["seed"] == 4 and demo["task"] == "lift_box" and demo["duration"] > 0
        refused = probe.call(Trigger, "/teleop_expert/start_demo", Trigger.Request())
        assert not refused.success and "under way" in refused.message

        def status():
            return json.loads(probe.call(Trigger, "/teleop_expert/demo_status", Trigger.Request()).message)
        final = wait_for(lambda: (s := status())["done"] and s, demo["duration"] + 30.0, "the demo to end")
        assert final["seed"] == 4 and final["phase"] == "done" and not final["running"]
        task = json.loads(probe.call(Trigger, "/sim_node/task_status", Trigger.Request()).message)
        assert task["task"] == "lift_box"
        assert task["success"], task["reason"]
    finally:
        stop_teleop(node)


def test_a_demo_waits_for_a_peer_whose_service_appears_late(graph):
    """`record --processes` starts the teleop node next to its peers: the first demo must wait
    for their services to be discovered, not fail ("service ... is not available")."""
    probe = graph.probe
    # The late driver's go_home below moves nothing: the arms start home. The sim's reset puts
    # them there (the last test's demo may have left the right arm holding the box up, where
    # going home drags the box along), the real driver's go_home makes its setpoint follow.
    assert probe.call(Trigger, "/sim_node/reset", Trigger.Request()).success
    go_home(graph)
    node = start_teleop(graph, "teleop_early", backend="sim_expert", task="lift_box", seed=5,
                        arm_driver_node="late_driver")
    client = probe.create_client(Trigger, "/teleop_early/start_demo")
    homed = []
    try:
        assert client.wait_for_service(timeout_sec=10.0)
        future = client.call_async(Trigger.Request())

        def demo_status():
            return json.loads(probe.call(Trigger, "/teleop_early/demo_status", Trigger.Request()).message)
        # Without the wait the demo fails at once ("failed: ... not available") and never shows this.
        wait_for(lambda: (s := demo_status())["phase"] == "going home" and not s["done"], 10.0,
                 "the demo to wait for the driver's go_home")
        assert not future.done(), future.result().message

        late = Node("late_driver", context=graph.context)

        def on_go_home(request, response):
            homed.append(time.monotonic())
            response.success = True
            return response
        late.create_service(Trigger, "~/go_home", on_go_home)
        graph.add_node(late)
        wait_for(future.done, 20.0, "the demo to start once the driver's service appears")
        reply = future.result()
        assert reply.success, reply.message
        assert json.loads(reply.message)["seed"] == 5 and len(homed) == 1
    finally:
        probe.destroy_client(client)
        stop_teleop(node)
