"""Safety figures of the arm driver, measured from outside as a black box: the sim robot graph
(sim node + arm driver) runs one process per node, as `ros2 launch` runs it, and this process
sends targets over DDS and watches /joint_states, eef_pose and /diagnostics.

  fuzz_messages_per_s                    fuzzed targets (EEF, gripper, joint) sent to the driver per second
  fuzz_rejected_per_s                    ... of which the driver rejected (the rest were valid or clamped)
  driver_alive_after_fuzz                1 if the driver still serves (a valid target is reached) after the fuzz
  max_joint_speed_ratio_blocked_release  measured joint speed / cap while an arm that could not follow
                                         (alternating far targets for 3 s) is released to home (goal <= 1.1)
  estop_stop_distance_mm                 EEF travel after an e-stop pressed with the EEF moving fast
                                         (estop_press_speed_m_s; the EEF cap is 0.5 m/s) (goal <= 10)
  estop_to_zero_ms                       press -> measured joints at rest

    python bench/safety.py [--fuzz-seconds 10]
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

from common import machine_line  # also puts the checkout on sys.path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fuzz-seconds", type=float, default=10.0)
    args = parser.parse_args()

    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseStamped
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Bool, Float64
    from std_srvs.srv import Trigger

    from twinvla_ros.bringup.dds import isolate_dds
    from twinvla_ros.bringup.graph import sim_robot
    from twinvla_ros.bringup.runner import GraphRunner, ProcessGraphRunner
    from twinvla_ros.robot.description import load_description
    from twinvla_ros.robot.kinematics import ArmKinematics
    from twinvla_ros.ros.messages import matrix_to_pose, pose_to_matrix
    from twinvla_ros.ros.qos import COMMAND_QOS, LATCHED_QOS

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))
    from ros_probe import Probe, diagnostic_values, run_for, stream_until, wait_for

    print(machine_line())
    isolate_dds()
    description = load_description()
    kinematics = ArmKinematics(description, "right")
    arm = description.arms["right"]
    scale = 0.8                                          # config/sim_robot.yaml joint_velocity_scale
    cap = arm.velocity * scale
    right = "arm_driver_node: right arm"

    with ProcessGraphRunner(sim_robot(sim_node={"camera_rate": 5.0})) as graph, GraphRunner([]) as here:
        probe = Probe(here.context, "bench_safety")
        for topic, kind in (("/right_arm/eef_pose", PoseStamped), ("/joint_states", JointState),
                            ("/diagnostics", DiagnosticArray)):
            probe.record(kind, topic, COMMAND_QOS)
        here.add_node(probe)
        target_pub = probe.create_publisher(PoseStamped, "/right_arm/eef_target", COMMAND_QOS)
        gripper_pub = probe.create_publisher(Float64, "/right_arm/gripper_target", COMMAND_QOS)
        joint_pub = probe.create_publisher(JointState, "/right_arm/joint_command", COMMAND_QOS)
        estop_pub = probe.create_publisher(Bool, "/estop", LATCHED_QOS)
        wait_for(lambda: probe.latest("/right_arm/eef_pose"), 60.0, "the arm driver")

        def pose():
            return pose_to_matrix(probe.latest("/right_arm/eef_pose").pose)

        def send(matrix):
            msg = PoseStamped()
            msg.header.frame_id = "eef_reference"
            msg.header.stamp = probe.get_clock().now().to_msg()
            msg.pose = matrix_to_pose(matrix)
            target_pub.publish(msg)

        def home():
            assert probe.call(Trigger, "/arm_driver_node/go_home", Trigger.Request()).success
            since = time.monotonic()
            wait_for(lambda: diagnostic_values(probe, right, since).get("mode") == "hold", 30.0, "home")

        # --- fuzz --------------------------------------------------------------------------
        rng = np.random.default_rng(0)
        specials = np.array([np.nan, np.inf, -np.inf, 1e308, -1e308, 1e200, 5e-324, 0.0, 1e154, 2.0])

        def value():
            return float(rng.choice(specials)) if rng.random() < 0.5 else float(rng.normal(0, 10.0 ** rng.integers(-3, 6)))

        rejected_before = int(diagnostic_values(probe, right).get("rejected", "0"))
        sent = 0
        start = time.monotonic()
        while time.monotonic() - start < args.fuzz_seconds:
            msg = PoseStamped()
            msg.header.frame_id = "eef_reference"
            p, q = msg.pose.position, msg.pose.orientation
            p.x, p.y, p.z, q.x, q.y, q.z, q.w = (value() for _ in range(7))
            target_pub.publish(msg)
            gripper_pub.publish(Float64(data=value()))
            joint_pub.publish(JointState(name=list(arm.joint_names), position=[value() for _ in range(6)]))
            sent += 3
            time.sleep(0.0005)
        elapsed = time.monotonic() - start
        time.sleep(1.0)                          # the driver's next diagnostics carry the final count
        rejected = int(diagnostic_values(probe, right).get("rejected", "0")) - rejected_before
        print(f"fuzz_messages_per_s={sent / elapsed:.0f}")
        print(f"fuzz_rejected_per_s={rejected / elapsed:.0f}")
        alive = 0
        if not graph.failed():
            try:
                time.sleep(1.0)                  # the last fuzzed command goes stale
                home()
                goal = pose()
                goal[2, 3] += 0.05
                stream_until(lambda: send(goal), lambda: np.linalg.norm(pose()[:3, 3] - goal[:3, 3]) < 0.005,
                             15.0, "a valid target after the fuzz")
                alive = 1
            except AssertionError as error:
                print(f"# driver did not serve after the fuzz: {error}")
        print(f"driver_alive_after_fuzz={alive}")

        # --- blocked, then released -----------------------------------------------------------
        home()
        start_pose = kinematics.fk(arm.home)
        flip = np.eye(4)
        c, s = math.cos(math.radians(170)), math.sin(math.radians(170))
        flip[:3, :3] = [[1, 0, 0], [0, c, -s], [0, s, c]]
        a, b = start_pose.copy(), start_pose @ flip
        a[:3, 3], b[:3, 3] = (0.60, -0.60, 0.60), (-0.05, 0.60, -0.10)
        since = time.monotonic()
        count = [0]

        def alternate():
            send((a, b)[count[0] % 2])
            count[0] += 1

        run_for(3.0, 0.05, alternate)
        stream_until(lambda: send(start_pose), lambda: np.linalg.norm(pose()[:3, 3] - start_pose[:3, 3]) < 0.01,
                     20.0, "home after the release")
        names = list(arm.joint_names)
        speeds = np.array([[dict(zip(m.name, m.velocity))[n] for n in names]
                           for m in probe.messages("/joint_states", since)])
        print(f"max_joint_speed_ratio_blocked_release={np.abs(speeds / cap).max():.2f}")

        # --- e-stop at 0.5 m/s -----------------------------------------------------------------
        home()
        goal = pose()
        goal[:3, 3] += (0.0, 0.15, -0.25)
        moving_since = time.monotonic()
        speed = [0.0]

        def fast():
            poses = probe.stamped("/right_arm/eef_pose", moving_since)
            if len(poses) < 3:
                return False
            (t0, m0), (t1, m1) = poses[-3], poses[-1]
            speed[0] = np.linalg.norm(pose_to_matrix(m1.pose)[:3, 3] - pose_to_matrix(m0.pose)[:3, 3]) / (t1 - t0)
            return speed[0] > 0.35

        stream_until(lambda: send(goal), fast, 5.0, "the EEF moving at > 0.35 m/s")
        print(f"estop_press_speed_m_s={speed[0]:.2f}")
        pressed = time.monotonic()
        estop_pub.publish(Bool(data=True))
        values = wait_for(lambda: (v := diagnostic_values(probe, right, pressed + 1.0)) and
                          v.get("estop_stop_distance_mm") not in (None, "", "nan") and v, 10.0, "the stop report")
        print(f"estop_stop_distance_mm={float(values['estop_stop_distance_mm']):.1f}")
        print(f"estop_to_zero_ms={float(values.get('estop_to_zero_ms', 'nan')):.0f}")
        estop_pub.publish(Bool(data=False))


if __name__ == "__main__":
    main()
