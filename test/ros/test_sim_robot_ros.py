"""The simulated robot end to end: sim node + arm driver over real DDS, MuJoCo physics and
rendering, driven the way the policy and a user drive it (topics, services, parameters), and
observed the same way (/joint_states, eef_pose, /diagnostics, the sim bus)."""
import json
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Bool, Float64, String
from std_srvs.srv import Trigger

from ros_probe import Probe, diagnostic_status, diagnostic_values, run_for, stream_until, wait_for
from twinvla_ros.bringup.graph import sim_robot
from twinvla_ros.bringup.runner import GraphRunner
from twinvla_ros.robot.description import load_description
from twinvla_ros.robot.kinematics import ArmKinematics
from twinvla_ros.robot.rotations import rotation_angle_between
from twinvla_ros.ros.messages import matrix_to_pose, pose_to_matrix, stamp_to_seconds
from twinvla_ros.ros.qos import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS

pytestmark = [pytest.mark.ros, pytest.mark.sim]

CAMERA_RATE = 15.0
SERVO_RATE = 100.0
CAMERAS = ("ego", "wrist_left", "wrist_right")
DESCRIPTION = load_description()
KINEMATICS = {side: ArmKinematics(DESCRIPTION, side) for side in ("left", "right")}
JOINT_VELOCITY_SCALE = 0.8                   # config/sim_robot.yaml
RIGHT = "arm_driver_node: right arm"
LEFT = "arm_driver_node: left arm"
SERVO = "arm_driver_node: servo loop"


@pytest.fixture(scope="module")
def graph():
    specs = sim_robot(sim_node={"camera_rate": CAMERA_RATE, "seed": 3},
                      arm_driver_node={"servo_rate": SERVO_RATE})
    with GraphRunner(specs) as runner:
        probe = Probe(runner.context)
        for side in ("left", "right"):
            probe.record(PoseStamped, f"/{side}_arm/eef_pose", COMMAND_QOS)
        probe.record(JointState, "/joint_states", COMMAND_QOS)
        probe.record(JointState, "/sim/joint_commands", COMMAND_QOS)
        probe.record(DiagnosticArray, "/diagnostics", COMMAND_QOS)
        for camera in CAMERAS:
            probe.record(Image, f"/cameras/{camera}/color/image_raw", SENSOR_QOS)
            probe.record(CameraInfo, f"/cameras/{camera}/color/camera_info", SENSOR_QOS)
        runner.add_node(probe)
        probe.targets = {side: probe.create_publisher(PoseStamped, f"/{side}_arm/eef_target", COMMAND_QOS)
                         for side in ("left", "right")}
        probe.grippers = {side: probe.create_publisher(Float64, f"/{side}_arm/gripper_target", COMMAND_QOS)
                          for side in ("left", "right")}
        probe.estop = probe.create_publisher(Bool, "/estop", LATCHED_QOS)
        wait_for(lambda: probe.latest("/right_arm/eef_pose"), 20.0, "the arm driver's first eef_pose")
        runner.probe = probe
        yield runner


@pytest.fixture
def probe(graph):
    """Each test starts with the robot at home, holding, e-stop clear, objects reset."""
    probe = graph.probe
    since = time.monotonic()
    probe.estop.publish(Bool(data=False))
    wait_for(lambda: diagnostic_values(probe, SERVO, since).get("estop_pressed") == "False", 5.0,
             "the e-stop release to arrive")
    assert probe.call(Trigger, "/arm_driver_node/clear_estop", Trigger.Request()).success
    assert probe.call(Trigger, "/arm_driver_node/go_home", Trigger.Request()).success
    homing = time.monotonic()
    wait_for(lambda: all(diagnostic_values(probe, arm, homing).get("mode") == "hold" for arm in (LEFT, RIGHT)),
             30.0, "both arms home and holding")
    assert probe.call(Trigger, "/sim_node/reset", Trigger.Request()).success
    return probe


def eef_pose(probe, side="right"):
    return pose_to_matrix(probe.latest(f"/{side}_arm/eef_pose").pose)


def target_msg(probe, pose, frame="eef_reference", stamp=None):
    msg = PoseStamped()
    msg.header.frame_id = frame
    msg.header.stamp = stamp if stamp is not None else probe.get_clock().now().to_msg()
    msg.pose = matrix_to_pose(pose)
    return msg


def send(probe, pose, side="right"):
    probe.targets[side].publish(target_msg(probe, pose))


def stream_target(probe, pose, seconds, side="right", rate=20.0):
    run_for(seconds, 1.0 / rate, lambda: send(probe, pose, side))


def reach(probe, pose, timeout, side="right", tolerance=0.005):
    """Stream `pose` as a 20 Hz target until the arm is within `tolerance` of it."""
    stream_until(lambda: send(probe, pose, side),
                 lambda: np.linalg.norm(eef_pose(probe, side)[:3, 3] - pose[:3, 3]) < tolerance,
                 timeout, f"the {side} arm at {np.round(pose[:3, 3], 3).tolist()}")


def joint_positions(probe, names):
    """The latest /joint_states positions of `names`, in that order."""
    latest = probe.latest("/joint_states")
    state = dict(zip(latest.name, latest.position))
    return np.array([state[name] for name in names])


def commanded(probe, side, since):
    """The joint targets the driver sent to the sim bus for one arm: (n, 7)."""
    names = [f"{side}_joint{i}" for i in range(1, 7)] + [f"{side}_gripper"]
    rows = []
    for msg in probe.messages("/sim/joint_commands", since):
        position = dict(zip(msg.name, msg.position))
        if all(name in position for name in names):
            rows.append([position[name] for name in names])
    return np.array(rows)


def measured_velocities(probe, side, since):
    """Measured joint velocities of one arm's six joints from /joint_states: (n, 6) rad/s."""
    names = [f"{side}_joint{i}" for i in range(1, 7)]
    rows = []
    for msg in probe.messages("/joint_states", since):
        velocity = dict(zip(msg.name, msg.velocity))
        rows.append([velocity[name] for name in names])
    return np.array(rows)


def far_pose(side="right"):
    """A reachable pose far from home: ~0.3 m and half a turn of the base joint away."""
    return KINEMATICS[side].fk(DESCRIPTION.arms[side].home + np.array([-0.6, 0.3, -0.3, 0.4, 0.3, -0.5]))


def counter(probe, name, key, since=0.0) -> int:
    return int(diagnostic_values(probe, name, since).get(key, "0"))


def set_parameter(probe, node, name, value):
    kind = {float: ParameterType.PARAMETER_DOUBLE, int: ParameterType.PARAMETER_INTEGER,
            bool: ParameterType.PARAMETER_BOOL}[type(value)]
    field = {float: "double_value", int: "integer_value", bool: "bool_value"}[type(value)]
    request = SetParameters.Request(parameters=[ParameterMsg(
        name=name, value=ParameterValue(type=kind, **{field: value}))])
    return probe.call(SetParameters, f"/{node}/set_parameters", request).results[0]


def test_pose_target_is_reached_in_sim(probe):
    start = eef_pose(probe)
    target = start.copy()
    target[:3, 3] += (0.06, 0.04, -0.10)
    target[:3, :3] = start[:3, :3] @ np.array([[1, 0, 0], [0, np.cos(0.3), -np.sin(0.3)], [0, np.sin(0.3), np.cos(0.3)]])
    reach(probe, target, 10.0, tolerance=0.005)
    stream_until(lambda: send(probe, target),
                 lambda: rotation_angle_between(eef_pose(probe)[:3, :3], target[:3, :3]) < np.deg2rad(3),
                 5.0, "the target orientation")


def test_far_target_moves_without_a_step_above_the_limit(probe):
    arm = DESCRIPTION.arms["right"]
    max_step = arm.velocity * JOINT_VELOCITY_SCALE / SERVO_RATE
    since = time.monotonic()
    far = far_pose()
    reach(probe, far, 15.0)
    commands = commanded(probe, "right", since)
    assert len(commands) > 50
    steps = np.abs(np.diff(commands[:, :6], axis=0))
    assert np.all(steps <= max_step + 1e-9), f"largest step {steps.max():.4f} rad > {max_step.max():.4f}"
    assert steps.max() > 0.5 * max_step.min()           # it did move, at speed


def test_nan_and_overflowing_targets_are_rejected_and_the_driver_keeps_serving(probe):
    since = time.monotonic()
    wait_for(lambda: commanded(probe, "right", since).size, 2.0, "servo commands")
    before = commanded(probe, "right", since)[-1]
    nan_target = eef_pose(probe)
    nan_target[0, 3] = np.nan
    overflow = target_msg(probe, eef_pose(probe))
    # Valid position, quaternion (1e200, 1e200, 0, 0): its plain norm overflows to inf.
    overflow.pose.orientation.x, overflow.pose.orientation.y = 1e200, 1e200
    overflow.pose.orientation.z, overflow.pose.orientation.w = 0.0, 0.0
    rejected = counter(probe, RIGHT, "rejected")
    run_for(0.5, 0.05, lambda: (send(probe, nan_target), probe.targets["right"].publish(overflow)))
    values = wait_for(lambda: (v := diagnostic_values(probe, RIGHT, since)) and int(v["rejected"]) >= rejected + 16
                      and v, 5.0, "the rejections on /diagnostics")
    assert "quaternion" in values["last_rejection"] or "NaN" in values["last_rejection"]
    after = commanded(probe, "right", since + 0.3)
    np.testing.assert_allclose(after[:, :6], np.broadcast_to(before[:6], after[:, :6].shape), atol=1e-12)
    assert diagnostic_status(probe, "arm_driver_node: callbacks", since).level == bytes([0])
    # Still serving: a valid target moves the arm.
    target = eef_pose(probe)
    target[2, 3] += 0.05
    reach(probe, target, 10.0)


def test_targets_stamped_far_in_the_past_or_future_are_rejected(probe):
    now = probe.get_clock().now()
    hour = 3600 * 10**9
    from rclpy.time import Time
    stale = target_msg(probe, eef_pose(probe), stamp=Time(nanoseconds=now.nanoseconds - hour).to_msg())
    future = target_msg(probe, eef_pose(probe), stamp=Time(nanoseconds=now.nanoseconds + hour).to_msg())
    for msg, word in ((stale, "old"), (future, "future")):
        since = time.monotonic()
        rejected = counter(probe, RIGHT, "rejected")
        probe.targets["right"].publish(msg)
        values = wait_for(lambda: (v := diagnostic_values(probe, RIGHT, since)) and int(v["rejected"]) > rejected
                          and v, 5.0, f"the {word} target's rejection")
        assert word in values["last_rejection"], values["last_rejection"]
    # A zero stamp (a tool that sends none) counts as now and is executed.
    target = eef_pose(probe)
    target[2, 3] += 0.04
    zero = target_msg(probe, target)
    zero.header.stamp.sec, zero.header.stamp.nanosec = 0, 0
    stream_until(lambda: probe.targets["right"].publish(zero),
                 lambda: abs(eef_pose(probe)[2, 3] - target[2, 3]) < 0.005, 10.0, "the zero-stamped target")


def test_no_commands_for_the_stale_timeout_holds(probe):
    far = eef_pose(probe)
    far[:3, 3] += (0.0, 0.0, 0.3)
    stream_target(probe, far, 0.3)                      # a short burst, then silence
    stale = wait_for(lambda: (s := diagnostic_status(probe, RIGHT)) and "stale" in s.message and s, 3.0,
                     "the stale hold on /diagnostics")
    assert stale.level == bytes([1])
    since = time.monotonic()
    wait_for(lambda: len(commanded(probe, "right", since)) > 30, 3.0, "servo commands")
    held = commanded(probe, "right", since)
    assert np.ptp(held[:, :6], axis=0).max() == 0.0
    assert np.linalg.norm(eef_pose(probe)[:3, 3] - far[:3, 3]) > 0.1   # stopped on the way


def test_a_sim_reset_leaves_the_arm_home_rather_than_pulling_it_back(probe):
    """The reset puts the arm home in one step while the driver holds a pose 0.5 rad away: the
    driver takes the arm's new position as its command instead of pulling it back all the way
    (the evaluation's homing after a reset relies on it: the arm is not blocked again)."""
    arm = DESCRIPTION.arms["right"]
    away = arm.home + np.array([0.5, 0.2, -0.2, 0.3, 0.2, -0.3])
    names = [*arm.joint_names, arm.gripper_joint]
    publisher = probe.create_publisher(JointState, "/right_arm/joint_command", COMMAND_QOS)

    def joints():
        return joint_positions(probe, arm.joint_names)

    stream_until(lambda: publisher.publish(JointState(name=names, position=[*away.tolist(), 0.01])),
                 lambda: np.abs(joints() - away).max() < 0.01, 10.0, "the arm 0.5 rad from home", every=0.02)
    probe.destroy_publisher(publisher)
    wait_for(lambda: (s := diagnostic_status(probe, RIGHT)) and "stale" in s.message, 3.0, "the stale hold")
    jumps = int(diagnostic_values(probe, RIGHT)["reading_jumps"])
    assert probe.call(Trigger, "/sim_node/reset", Trigger.Request()).success
    reset = time.monotonic()
    wait_for(lambda: len(commanded(probe, "right", reset)) > 150, 5.0, "1.5 s of servo commands")
    held = commanded(probe, "right", reset)[50:]          # from 0.5 s after the reset on
    # The driver's commands still on their way when the reset lands, and those it writes until
    # it reads the new position, move the arm back some way (0.07 rad alone, 0.18 rad in a full
    # CI run); then it holds where it is, no longer at the old command.
    assert np.ptp(held[:, :6], axis=0).max() < 1e-9, "the command still moves 0.5 s after the reset"
    left = np.abs(held[-1, :6] - away).max()
    assert left > 0.25, f"the command is {left:.3f} rad from the pose held before the reset"
    assert probe.call(Trigger, "/arm_driver_node/go_home", Trigger.Request()).success
    wait_for(lambda: np.abs(joints() - arm.home).max() < 0.02, 10.0, "the arm home")
    wait_for(lambda: int(diagnostic_values(probe, RIGHT, reset).get("reading_jumps", jumps)) > jumps, 5.0,
             "the jump counted on /diagnostics")


def test_estop_freezes_at_the_measured_pose_and_latches(probe):
    far = far_pose()
    stream_target(probe, far, 0.3)                      # moving at speed
    pressed = time.monotonic()
    probe.estop.publish(Bool(data=True))
    engaged = wait_for(lambda: (s := diagnostic_status(probe, RIGHT, pressed)) and "e-stop" in s.message and s,
                       3.0, "the e-stop on /diagnostics")
    assert engaged.level == bytes([2])
    since = time.monotonic() + 0.3                      # braking done
    # Ignored while latched: streamed until 50 bus commands came after the braking (0.5 s at the
    # 100 Hz servo rate; longer when a loaded machine slows this one-process graph).
    stream_until(lambda: send(probe, far), lambda: len(commanded(probe, "right", since)) > 50, 10.0,
                 "50 bus commands while the e-stop is latched")
    after = commanded(probe, "right", since)
    assert np.ptp(after[:, :6], axis=0).max() == 0.0
    assert np.linalg.norm(eef_pose(probe)[:3, 3] - far[:3, 3]) > 0.05
    distance = wait_for(lambda: diagnostic_values(probe, RIGHT, pressed).get("estop_stop_distance_mm"), 3.0,
                        "the stopping distance")
    assert 0.0 <= float(distance) < 15.0, f"stopped {distance} mm after the press"
    refused = probe.call(Trigger, "/arm_driver_node/clear_estop", Trigger.Request())
    assert not refused.success and "still pressed" in refused.message
    released = time.monotonic()
    probe.estop.publish(Bool(data=False))
    wait_for(lambda: diagnostic_values(probe, SERVO, released).get("estop_pressed") == "False", 3.0,
             "the e-stop release")
    still_latched = time.monotonic()
    stream_target(probe, far, 0.5)                      # still latched: ignored
    values = wait_for(lambda: diagnostic_values(probe, RIGHT, still_latched), 3.0, "diagnostics after the release")
    assert values["estop"] == "True"
    assert probe.call(Trigger, "/arm_driver_node/clear_estop", Trigger.Request()).success
    reach(probe, far, 15.0)


def test_blocked_arm_does_not_wind_up_and_moves_at_the_cap_after_release(probe):
    """The issue's sequence: alternate targets the arm cannot follow at 20 Hz for 3 s, then home."""
    home = KINEMATICS["right"].fk(DESCRIPTION.arms["right"].home)
    flip = np.eye(4)
    flip[:3, :3] = np.array([[1, 0, 0], [0, np.cos(np.pi * 170 / 180), -np.sin(np.pi * 170 / 180)],
                             [0, np.sin(np.pi * 170 / 180), np.cos(np.pi * 170 / 180)]])
    a, b = home.copy(), home @ flip
    a[:3, 3], b[:3, 3] = (0.60, -0.60, 0.60), (-0.05, 0.60, -0.10)
    since = time.monotonic()
    sent = []

    def alternate():
        send(probe, (a, b)[len(sent) % 2])
        sent.append(1)

    run_for(3.0, 0.05, alternate)
    reach(probe, home, 20.0, tolerance=0.01)
    cap = DESCRIPTION.arms["right"].velocity * JOINT_VELOCITY_SCALE
    ratio = np.abs(measured_velocities(probe, "right", since)) / cap
    assert ratio.max() <= 1.25, f"a joint moved at {ratio.max():.2f} x the cap"


def tool_down(x, y, z, yaw=np.pi / 2):
    """A pose with the tool pointing straight down (fingers closing along y at yaw 0)."""
    pose = np.eye(4)
    rz = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
    pose[:3, :3] = rz @ np.array([[0, 1, 0], [1, 0, 0], [0, 0, -1]], dtype=float)
    pose[:3, 3] = (x, y, z)
    return pose


def test_a_target_below_the_table_stops_at_the_table_margin(probe):
    floor = DESCRIPTION.arms["right"].workspace_min[2]
    assert floor > DESCRIPTION.table_top_z                        # the box's floor is above the table
    assert KINEMATICS["right"].ik(tool_down(0.38, -0.2, floor)).reached
    reach(probe, tool_down(0.38, -0.2, 0.10), 20.0)
    below = tool_down(0.38, -0.2, DESCRIPTION.table_top_z - 0.10)
    clamped = counter(probe, RIGHT, "workspace_clamped")
    stream_until(lambda: send(probe, below), lambda: abs(eef_pose(probe)[2, 3] - floor) < 0.004, 15.0,
                 "the EEF at the workspace floor")
    since = time.monotonic()

    def workspace_reported():
        return any("workspace" in status.message for array in probe.messages("/diagnostics", since)
                   for status in array.status if status.name == RIGHT)

    # Looked for while the target streams: once it stops, the newest status may already say
    # "stale", and on a loaded machine a fixed window can pass without a diagnostics message.
    stream_until(lambda: send(probe, below), workspace_reported, 10.0, "the workspace clamp on /diagnostics")
    assert eef_pose(probe)[2, 3] > floor - 0.004                   # and not lower
    assert counter(probe, RIGHT, "workspace_clamped") > clamped


def test_live_parameters_take_effect_and_the_rest_are_refused(graph, probe):
    refused = set_parameter(probe, "arm_driver_node", "max_eef_speed", 5.0)      # above its range
    assert not refused.successful
    refused = set_parameter(probe, "arm_driver_node", "servo_rate", 50.0)        # read-only
    assert not refused.successful and "read-only" in refused.reason
    assert set_parameter(probe, "arm_driver_node", "max_eef_speed", 1).successful   # int for a float
    try:
        assert set_parameter(probe, "arm_driver_node", "max_eef_speed", 0.05).successful
        target = eef_pose(probe)
        target[:3, 3] += (0.0, 0.0, 0.15)
        since = time.monotonic()
        stream_target(probe, target, 1.0)
        poses = [(t, pose_to_matrix(m.pose)[:3, 3]) for t, m in probe.stamped("/right_arm/eef_pose", since + 0.3)]
        (t0, p0), (t1, p1) = poses[0], poses[-1]
        speed = np.linalg.norm(p1 - p0) / (t1 - t0)
        assert 0.01 < speed < 0.05 * 1.3, f"EEF moved at {speed:.3f} m/s with a 0.05 m/s cap"
    finally:
        assert set_parameter(probe, "arm_driver_node", "max_eef_speed", 0.5).successful


def test_state_is_published_for_both_arms_together_and_the_urdf_is_latched(graph, probe):
    since = time.monotonic()
    wait_for(lambda: len(probe.messages("/joint_states", since)) > 20, 5.0, "joint states")
    for msg in probe.messages("/joint_states", since):
        assert list(msg.name) == list(DESCRIPTION.joint_names)
    left = {(m.header.stamp.sec, m.header.stamp.nanosec) for m in probe.messages("/left_arm/eef_pose", since)}
    right = [(m.header.stamp.sec, m.header.stamp.nanosec) for m in probe.messages("/right_arm/eef_pose", since)]
    assert right and sum(stamp in left for stamp in right) >= len(right) - 1   # the last may be in flight
    # A late joiner still gets the robot model.
    late = Probe(graph.context, "late_joiner")
    late.record(String, "/robot_description", LATCHED_QOS)
    graph.add_node(late)
    urdf = wait_for(lambda: late.latest("/robot_description"), 10.0, "the latched URDF")
    assert urdf.data.startswith("<?xml") and "<robot" in urdf.data and "left_joint1" in urdf.data


def test_gripper_closes_on_the_box_and_lifts_it(graph, probe):
    world = graph.node("sim_node").world
    reset = json.loads(probe.call(Trigger, "/sim_node/reset", Trigger.Request()).message)
    box = np.array(reset["objects"]["box"])
    box_position = box[:3] - np.array([-0.095, 0.0, 0.823356])      # world -> eef_reference
    side = "right" if box_position[1] < 0 else "left"
    kinematics = KINEMATICS[side]
    # Tool straight down, fingers closing across a face of the (square) box: of the four
    # such yaws, take one the wrist can reach (its yaw joint spans only +-90 deg).
    box_yaw = 2 * np.arctan2(box[6], box[3])
    down = np.array([[0, 1, 0], [1, 0, 0], [0, 0, -1]], dtype=float)
    for yaw in box_yaw + np.arange(4) * np.pi / 2:
        grasp = np.eye(4)
        grasp[:3, :3] = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]]) @ down
        grasp[:3, 3] = box_position + (0, 0, 0.005)
        if kinematics.ik(grasp).reached:
            break
    above = grasp.copy()
    above[:3, 3] += (0, 0, 0.12)

    def go(pose, gripper, condition, timeout, what):
        stream_until(lambda: (send(probe, pose, side), probe.grippers[side].publish(Float64(data=gripper))),
                     condition, timeout, what)

    def at(pose, tolerance=0.006):
        return lambda: np.linalg.norm(eef_pose(probe, side)[:3, 3] - pose[:3, 3]) < tolerance

    def gripper_opening():
        state = probe.latest("/joint_states")
        return dict(zip(state.name, state.position))[f"{side}_gripper"]

    go(above, 1.0, at(above), 15.0, "above the box")
    go(grasp, 1.0, at(grasp, 0.008), 10.0, "at the box")
    closing = []
    go(grasp, 0.0, lambda: closing.append(gripper_opening()) or (len(closing) > 10 and
       abs(closing[-1] - closing[-10]) < 1e-4), 10.0, "the fingers closed on the box")
    assert closing[-1] > 0.005          # stopped by the box, not closed on nothing
    go(above, 0.0, lambda: world.object_poses()["box"][2] > box[2] + 0.08, 15.0, "the box lifted by 8 cm")
    fingers = world.frame_pose(f"{side}_eef")[:3, 3]
    assert np.linalg.norm(world.object_poses()["box"][:2] - fingers[:2]) < 0.03


def test_camera_topics_arrive_at_the_rate_with_encoding_size_and_frames(probe):
    since = time.monotonic()
    wait_for(lambda: all(len(probe.messages(f"/cameras/{c}/color/image_raw", since)) >= 4 * CAMERA_RATE
                         for c in CAMERAS), 10.0, "four seconds of frames from every camera")
    for camera in CAMERAS:
        stamped = probe.stamped(f"/cameras/{camera}/color/image_raw", since)
        # The sim's pacing, from the frames' own stamps: the median interval is the period even
        # when this (same-process, best-effort) receiver misses a frame on a loaded machine.
        stamps = np.array([stamp_to_seconds(msg.header.stamp) for _, msg in stamped])
        period = float(np.median(np.diff(stamps)))
        assert abs(1.0 / period - CAMERA_RATE) <= 0.1 * CAMERA_RATE, f"{camera}: frames {period * 1e3:.1f} ms apart"
        received = (len(stamped) - 1) / (stamped[-1][0] - stamped[0][0])
        assert received >= 0.5 * CAMERA_RATE, f"{camera}: {received:.1f} Hz received"
        image = stamped[-1][1]
        assert (image.encoding, image.height, image.width, image.step) == ("rgb8", 240, 320, 960)
        expected_frame = ("ego_camera_color_optical_frame" if camera == "ego"
                          else f"{camera.split('_')[1]}_wrist_camera_color_optical_frame")
        assert image.header.frame_id == expected_frame
        pixels = np.frombuffer(image.data, np.uint8)
        assert pixels.std() > 5                            # a scene, not a blank frame
        info = probe.latest(f"/cameras/{camera}/color/camera_info")
        assert info.header.frame_id == expected_frame and (info.width, info.height) == (320, 240)
        assert info.k[0] > 0 and info.k[2] == pytest.approx(159.5)


def test_reset_with_the_same_seed_gives_the_same_object_poses(probe):
    first = json.loads(probe.call(Trigger, "/sim_node/reset", Trigger.Request()).message)
    again = json.loads(probe.call(Trigger, "/sim_node/reset", Trigger.Request()).message)
    assert first["seed"] == again["seed"] == 3
    assert first["objects"] == again["objects"]
    assert set_parameter(probe, "sim_node", "seed", 4).successful
    try:
        other = json.loads(probe.call(Trigger, "/sim_node/reset", Trigger.Request()).message)
        assert other["seed"] == 4 and other["objects"] != first["objects"]
    finally:
        assert set_parameter(probe, "sim_node", "seed", 3).successful
    assert not set_parameter(probe, "sim_node", "camera_rate", 5.0).successful     # read-only


def test_joint_space_commands_move_the_arm_for_leader_arms(probe):
    arm = DESCRIPTION.arms["left"]
    goal = arm.home + np.array([0.3, 0.2, -0.2, 0.3, 0.2, -0.3])
    names = [*arm.joint_names, arm.gripper_joint]
    publisher = probe.create_publisher(JointState, "/left_arm/joint_command", COMMAND_QOS)

    def joints():
        q = joint_positions(probe, names)
        return q[:6], q[6]

    # A leader arm streams its joints at 50 Hz; the follower goes there at its speed limit.
    stream_until(lambda: publisher.publish(JointState(name=names, position=[*goal.tolist(), 0.01])),
                 lambda: np.abs(joints()[0] - goal).max() < 0.01 and abs(joints()[1] - 0.01) < 0.003,
                 10.0, "the leader's joint positions", every=0.02)
    since = time.monotonic()
    beyond = goal.copy()
    beyond[0] = arm.upper[0] + 1.0
    clamped = counter(probe, LEFT, "joint_target_clamped")
    run_for(0.3, 0.02, lambda: publisher.publish(JointState(name=names, position=[*beyond.tolist(), 0.01])))
    status = wait_for(lambda: (s := diagnostic_status(probe, LEFT, since)) and s.level == bytes([1]) and s, 3.0,
                      "an out-of-limit joint command reported as a warning")
    assert int({kv.key: kv.value for kv in status.values}["joint_target_clamped"]) > clamped
    probe.destroy_publisher(publisher)
