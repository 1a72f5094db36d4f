"""The simulated robot end to end: sim node + arm driver over real DDS, MuJoCo physics and
rendering, driven the way the policy and a user drive it (topics and services)."""
import json
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Bool, Float64
from std_srvs.srv import Trigger

from ros_probe import Probe, run_for, wait_for
from twinvla_ros.bringup.graph import sim_robot
from twinvla_ros.ros.messages import matrix_to_pose, pose_to_matrix
from twinvla_ros.ros.qos import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS
from twinvla_ros.robot.rotations import rotation_angle_between
from twinvla_ros.bringup.runner import GraphRunner

pytestmark = [pytest.mark.ros, pytest.mark.sim]

CAMERA_RATE = 15.0
SERVO_RATE = 100.0
CAMERAS = ("ego", "wrist_left", "wrist_right")


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
    driver = graph.node("arm_driver_node")
    probe.estop.publish(Bool(data=False))
    wait_for(lambda: not driver._estop_pressed, 5.0, "e-stop release to arrive")
    assert probe.call(Trigger, "/arm_driver_node/clear_estop", Trigger.Request()).success
    assert probe.call(Trigger, "/arm_driver_node/go_home", Trigger.Request()).success
    wait_for(lambda: all(c.mode.value == "hold" for c in driver.controllers.values()), 30.0, "arms home")
    assert probe.call(Trigger, "/sim_node/reset", Trigger.Request()).success
    return probe


def eef_pose(probe, side="right"):
    return pose_to_matrix(probe.latest(f"/{side}_arm/eef_pose").pose)


def target_msg(pose, frame="eef_reference"):
    msg = PoseStamped()
    msg.header.frame_id = frame
    msg.pose = matrix_to_pose(pose)
    return msg


def stream_target(probe, pose, seconds, side="right", rate=20.0):
    run_for(seconds, 1.0 / rate, lambda: probe.targets[side].publish(target_msg(pose)))


def commanded(probe, side, since):
    """The joint targets the driver sent to the sim bus for one arm: (n, 7)."""
    names = [f"{side}_joint{i}" for i in range(1, 7)] + [f"{side}_gripper"]
    rows = []
    for msg in probe.messages("/sim/joint_commands", since):
        position = dict(zip(msg.name, msg.position))
        if all(name in position for name in names):
            rows.append([position[name] for name in names])
    return np.array(rows)


def diagnostic(probe, name_part, since):
    for array in reversed(probe.messages("/diagnostics", since)):
        for status in array.status:
            if name_part in status.name:
                return status
    return None


def test_pose_target_is_reached_in_sim(probe):
    start = eef_pose(probe)
    target = start.copy()
    target[:3, 3] += (0.06, 0.04, -0.10)
    target[:3, :3] = start[:3, :3] @ np.array([[1, 0, 0], [0, np.cos(0.3), -np.sin(0.3)], [0, np.sin(0.3), np.cos(0.3)]])
    stream_target(probe, target, 3.0)
    reached = eef_pose(probe)
    assert np.linalg.norm(reached[:3, 3] - target[:3, 3]) < 0.005
    assert rotation_angle_between(reached[:3, :3], target[:3, :3]) < np.deg2rad(3)


def test_far_target_moves_without_a_step_above_the_limit(graph, probe):
    controller = graph.node("arm_driver_node").controllers["right"]
    max_step = controller.arm.velocity * controller.limits.joint_velocity_scale / SERVO_RATE
    since = time.monotonic()
    # A reachable pose far from home: ~0.3 m and half a turn of the base joint away.
    far = controller.kinematics.fk(controller.arm.home + np.array([-0.6, 0.3, -0.3, 0.4, 0.3, -0.5]))
    stream_target(probe, far, 4.0)
    commands = commanded(probe, "right", since)
    assert len(commands) > 200
    steps = np.abs(np.diff(commands[:, :6], axis=0))
    assert np.all(steps <= max_step + 1e-9), f"largest step {steps.max():.4f} rad > {max_step.max():.4f}"
    assert steps.max() > 0.5 * max_step.min()           # it did move, at speed
    assert np.linalg.norm(eef_pose(probe)[:3, 3] - far[:3, 3]) < 0.005


def test_nan_target_is_rejected_with_a_diagnostic_and_no_motion(graph, probe):
    since = time.monotonic()
    wait_for(lambda: commanded(probe, "right", since).size, 2.0, "servo commands")
    before = commanded(probe, "right", since)[-1]
    bad = eef_pose(probe)
    bad[0, 3] = np.nan
    stream_target(probe, bad, 1.0)
    after = commanded(probe, "right", since + 0.5)
    np.testing.assert_allclose(after[:, :6], np.broadcast_to(before[:6], after[:, :6].shape), atol=1e-12)
    status = wait_for(lambda: (s := diagnostic(probe, "right arm", since)) and "NaN" in dict(
        (kv.key, kv.value) for kv in s.values).get("last_rejection", "") and s, 3.0, "rejection on /diagnostics")
    values = {kv.key: kv.value for kv in status.values}
    assert int(values["rejected"]) >= 10


def test_no_commands_for_the_stale_timeout_holds(graph, probe):
    controller = graph.node("arm_driver_node").controllers["right"]
    far = eef_pose(probe)
    far[:3, 3] += (0.0, 0.0, 0.3)
    stream_target(probe, far, 0.3)                      # a short burst, then silence
    wait_for(lambda: controller.status().message.startswith("commands stale"), 3.0, "stale hold")
    since = time.monotonic()
    wait_for(lambda: len(commanded(probe, "right", since)) > 30, 3.0, "servo commands")
    held = commanded(probe, "right", since)
    assert np.ptp(held[:, :6], axis=0).max() == 0.0
    assert np.linalg.norm(eef_pose(probe)[:3, 3] - far[:3, 3]) > 0.1   # stopped on the way
    status = wait_for(lambda: diagnostic(probe, "right arm", since), 3.0, "diagnostics")
    assert status.level == bytes([1]) and "stale" in status.message


def test_estop_stops_motion_and_latches(graph, probe):
    controller = graph.node("arm_driver_node").controllers["right"]
    far = controller.kinematics.fk(controller.arm.home + np.array([-0.6, 0.3, -0.3, 0.4, 0.3, -0.5]))
    stream_target(probe, far, 0.15)
    probe.estop.publish(Bool(data=True))
    since = time.monotonic() + 0.3                      # let the e-stop arrive
    stream_target(probe, far, 1.5)
    after = commanded(probe, "right", since)
    assert len(after) > 50
    assert np.ptp(after[:, :6], axis=0).max() == 0.0
    assert np.linalg.norm(eef_pose(probe)[:3, 3] - far[:3, 3]) > 0.05
    refused = probe.call(Trigger, "/arm_driver_node/clear_estop", Trigger.Request())
    assert not refused.success and "still pressed" in refused.message
    probe.estop.publish(Bool(data=False))
    wait_for(lambda: not graph.node("arm_driver_node")._estop_pressed, 3.0, "e-stop release")
    stream_target(probe, far, 0.5)                      # still latched: ignored
    assert graph.node("arm_driver_node").controllers["right"].estop
    assert probe.call(Trigger, "/arm_driver_node/clear_estop", Trigger.Request()).success
    stream_target(probe, far, 3.0)
    assert np.linalg.norm(eef_pose(probe)[:3, 3] - far[:3, 3]) < 0.005, controller.status()


def test_gripper_closes_on_the_box_and_lifts_it(graph, probe):
    world = graph.node("sim_node").world
    box = world.object_poses()["box"]
    box_position = box[:3] - np.array([-0.095, 0.0, 0.823356])      # world -> eef_reference
    side = "right" if box_position[1] < 0 else "left"
    kinematics = graph.node("arm_driver_node").controllers[side].kinematics
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
    lift = grasp.copy()
    lift[:3, 3] += (0, 0, 0.12)

    def go(pose, seconds, gripper):
        run_for(seconds, 0.05, lambda: (probe.targets[side].publish(target_msg(pose)),
                                        probe.grippers[side].publish(Float64(data=gripper))))

    go(above, 3.0, 1.0)
    go(grasp, 2.5, 1.0)
    go(grasp, 1.5, 0.0)
    go(lift, 3.0, 0.0)
    lifted = world.object_poses()["box"]
    assert lifted[2] > box[2] + 0.08, f"box rose only {lifted[2] - box[2]:.3f} m"
    fingers = world.frame_pose(f"{side}_eef")[:3, 3]
    assert np.linalg.norm(lifted[:2] - fingers[:2]) < 0.03


def test_camera_topics_arrive_at_the_rate_with_encoding_size_and_frames(probe):
    since = time.monotonic()
    time_window = 4.0
    wait_for(lambda: time.monotonic() - since > time_window, time_window + 1, "camera window", poll=0.1)
    for camera in CAMERAS:
        stamped = probe.stamped(f"/cameras/{camera}/color/image_raw", since)
        rate = (len(stamped) - 1) / (stamped[-1][0] - stamped[0][0])
        assert abs(rate - CAMERA_RATE) <= 0.1 * CAMERA_RATE, f"{camera}: {rate:.1f} Hz"
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


def test_reset_with_the_same_seed_gives_the_same_object_poses(graph, probe):
    first = json.loads(probe.call(Trigger, "/sim_node/reset", Trigger.Request()).message)
    run_for(0.5, 0.5, lambda: None)
    again = json.loads(probe.call(Trigger, "/sim_node/reset", Trigger.Request()).message)
    assert first["seed"] == again["seed"] == 3
    assert first["objects"] == again["objects"]
    sim = graph.node("sim_node")
    from rclpy.parameter import Parameter
    sim.set_parameters([Parameter("seed", value=4)])
    other = json.loads(probe.call(Trigger, "/sim_node/reset", Trigger.Request()).message)
    assert other["objects"] != first["objects"]
    sim.set_parameters([Parameter("seed", value=3)])


def test_joint_space_commands_move_the_arm_for_leader_arms(graph, probe):
    controller = graph.node("arm_driver_node").controllers["left"]
    goal = controller.arm.home + np.array([0.3, 0.2, -0.2, 0.3, 0.2, -0.3])
    names = [*controller.arm.joint_names, controller.arm.gripper_joint]
    publisher = probe.create_publisher(JointState, "/left_arm/joint_command", COMMAND_QOS)
    # A leader arm streams its joints at 50 Hz; the follower goes there at its speed limit.
    run_for(2.5, 0.02, lambda: publisher.publish(JointState(name=names, position=[*goal.tolist(), 0.01])))
    state = probe.latest("/joint_states")
    position = dict(zip(state.name, state.position))
    np.testing.assert_allclose([position[n] for n in controller.arm.joint_names], goal, atol=0.01,
                               err_msg=str(controller.status()))
    assert position["left_gripper"] == pytest.approx(0.01, abs=0.003)
    probe.destroy_publisher(publisher)
