#!/usr/bin/env python3
"""Benchmark of the policy node: control-loop timing and chunk execution per mode.

    python bench/policy.py [--seconds 15]

The real PolicyNode (embedded tiny TwinVLA, CPU) runs in this process with a feeder node that
publishes the three camera streams (240x320 rgb8, 15 Hz), both EEF poses and the joint states
(50 Hz) with fresh stamps, so inference runs continuously in the background. Each run measures
`--seconds` of steady state (from its third chunk on). Prints:
  tick_period_p50_ms, tick_period_p99_ms   control loop (rtc mode, natural latency)
  stall_ticks_{sync,async,rtc}             ticks without an action, `--seconds` each, natural latency
  boundary_jump_{async,rtc}                mean L2 jump of the 20-D action at chunk switches,
                                           150 ms injected latency, execution horizon 5
  plan_change_{async,rtc}                  mean L2 between the new chunk's first executed action
                                           and the old chunk's action for that tick (same runs):
                                           with the random tiny model consecutive actions differ
                                           as much as any two, so only this shows continuity
  stall_ticks_rtc_latency_{0.3,0.6,0.9}    rtc, that much injected latency on top of the model's own
                                           (the total is latency_estimate_s_latency_*, p95 of the
                                           requests, hand-over included), default execution horizon
  latency_estimate_s_latency_{0.3,0.6,0.9} the policy's latency estimate at the end of those runs
  max_gap_ms_latency_0.6                   largest interval between consecutive eef_target messages of
                                           one arm (header stamps: publish times), 0.6 s injected
  stall_ticks_repeated_instruction         rtc, natural latency, the same instruction re-published on
                                           /instruction once a second (`ros2 topic pub` without --once)
  inference_p50_ms                         the tiny model's chunk latency in the natural-latency runs
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import machine_line
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String

from twinvla_ros.reporting import RateMeter
from twinvla_ros.robot.description import load_description
from twinvla_ros.bringup.graph import policy_only
from twinvla_ros.robot.kinematics import ArmKinematics
from twinvla_ros.ros.messages import matrix_to_pose, rgb_to_image, stamp_to_seconds
from twinvla_ros.ros.qos import COMMAND_QOS, SENSOR_QOS
from twinvla_ros.ros.nodes.policy_node import PolicyNode
from twinvla_ros.bringup.dds import isolate_dds
from twinvla_ros.bringup.runner import GraphRunner


class Feeder(Node):
    """Cameras at ~16.7 Hz and robot state at 50 Hz, as the sim and the arm driver publish them."""

    def __init__(self, context):
        super().__init__("bench_feeder", context=context)
        description = load_description()
        rng = np.random.default_rng(0)
        self.images = {cam: rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
                       for cam in ("ego", "wrist_left", "wrist_right")}
        self.image_pubs = {cam: self.create_publisher(Image, f"/cameras/{cam}/color/image_raw", SENSOR_QOS)
                           for cam in self.images}
        self.poses = {side: ArmKinematics(description, side).fk(description.arms[side].home)
                      for side in ("left", "right")}
        self.pose_pubs = {side: self.create_publisher(PoseStamped, f"/{side}_arm/eef_pose", COMMAND_QOS)
                          for side in self.poses}
        self.joint_pub = self.create_publisher(JointState, "/joint_states", COMMAND_QOS)
        self.joint_names = list(description.joint_names)
        self.ticks = 0
        self.create_timer(0.02, self._tick)
        # What reaches the arms: publish stamps of each arm's targets.
        self.target_stamps = {side: [] for side in ("left", "right")}
        for side in self.target_stamps:
            self.create_subscription(PoseStamped, f"/{side}_arm/eef_target",
                                     lambda msg, side=side: self.target_stamps[side].append(
                                         stamp_to_seconds(msg.header.stamp)), COMMAND_QOS)
        self.instruction_pub = self.create_publisher(String, "/instruction", COMMAND_QOS)
        self.repeat: str | None = None      # re-published once a second while set
        self.create_timer(1.0, self._repeat)

    def _repeat(self):
        if self.repeat is not None:
            self.instruction_pub.publish(String(data=self.repeat))

    def max_gap(self, since: float) -> float:
        """Seconds: the largest interval between consecutive targets of one arm stamped after `since`
        (ROS time)."""
        gaps = [np.diff([t for t in stamps if t >= since]) for stamps in self.target_stamps.values()]
        return max((float(g.max()) for g in gaps if g.size), default=float("nan"))

    def _tick(self):
        stamp = self.get_clock().now().to_msg()
        if self.ticks % 3 == 0:
            for cam, image in self.images.items():
                self.image_pubs[cam].publish(rgb_to_image(image, stamp, cam))
        for side, pose in self.poses.items():
            msg = PoseStamped()
            msg.header.stamp = stamp
            msg.header.frame_id = "eef_reference"
            msg.pose = matrix_to_pose(pose)
            self.pose_pubs[side].publish(msg)
        joints = JointState(name=self.joint_names, position=[0.02] * len(self.joint_names))
        joints.header.stamp = stamp
        self.joint_pub.publish(joints)
        self.ticks += 1


TASK = "hand over the box"


def run(mode: str, seconds: float, injected_latency: float = 0.0, execution_horizon: int = 10,
        repeat_instruction: bool = False) -> PolicyNode:
    """Run the policy node in one mode for `seconds` from its third chunk on; returns the node
    (stopped) with its statistics, and the feeder as `bench_feeder`."""
    # The random tiny model (the node's default is the shipped lift_box_narrow policy, whose
    # chunk offset leaves a 10-step horizon): these figures are about scheduling at 20 steps.
    specs = policy_only(policy_node={"checkpoint": "tiny", "execution_mode": mode, "injected_latency": injected_latency,
                                     "execution_horizon": execution_horizon, "seed": 0})
    with GraphRunner(specs) as runner:
        feeder = Feeder(runner.context)
        runner.add_node(feeder)
        policy = runner.node("policy_node")
        runtime = policy.runtime
        while not runtime.check_inputs(policy.ros_now()).ok:
            time.sleep(0.05)
        accepted, message = runtime.set_instruction(TASK)
        assert accepted, message
        # Start-up (loading, the first inferences, the latency not measured yet) is not steady state.
        while runtime.scheduler.stats.chunks_accepted < 3:
            time.sleep(0.05)
        stats = runtime.scheduler.stats
        stalls_before, repeats_before = stats.stall_ticks, runtime.repeated_instructions
        since = policy.ros_now()
        runtime.tick_meter = RateMeter(window=100000)
        if repeat_instruction:
            feeder.repeat = TASK
        time.sleep(seconds)
        feeder.repeat = None
        policy.bench_stalls = stats.stall_ticks - stalls_before
        policy.bench_repeats = runtime.repeated_instructions - repeats_before
        policy.bench_max_gap = feeder.max_gap(since)
        policy.bench_feeder = feeder
        return policy


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="measuring time per run")
    args = parser.parse_args(argv)
    isolate_dds()
    print(machine_line(torch=torch.__version__), flush=True)
    latencies = []
    for mode in ("rtc", "async", "sync"):
        policy = run(mode, args.seconds)
        latencies += list(policy.runtime.worker.latencies)
        if mode == "rtc":
            periods = policy.runtime.tick_meter.periods()
            print(f"tick_period_p50_ms={np.percentile(periods, 50) * 1e3:.2f}")
            print(f"tick_period_p99_ms={np.percentile(periods, 99) * 1e3:.2f}", flush=True)
        print(f"stall_ticks_{mode}={policy.bench_stalls}", flush=True)
    for mode in ("async", "rtc"):
        # Execution horizon 5: the next chunk is requested early enough to overlap the current
        # one even at this CPU's ~0.5 s latency, so there is a plan to continue at the switch.
        policy = run(mode, args.seconds, injected_latency=0.15, execution_horizon=5)
        stats = policy.runtime.scheduler.stats
        print(f"boundary_jump_{mode}={stats.mean_boundary_jump:.4f}")
        print(f"plan_change_{mode}={stats.mean_plan_change:.4f}", flush=True)
    for latency in (0.3, 0.6, 0.9):
        policy = run("rtc", args.seconds, injected_latency=latency)
        print(f"stall_ticks_rtc_latency_{latency}={policy.bench_stalls}")
        print(f"latency_estimate_s_latency_{latency}={policy.runtime.scheduler.latency_estimate:.3f}", flush=True)
        if latency == 0.6:
            print(f"max_gap_ms_latency_0.6={policy.bench_max_gap * 1e3:.1f}", flush=True)
    policy = run("rtc", args.seconds, repeat_instruction=True)
    assert policy.bench_repeats >= args.seconds - 2, f"only {policy.bench_repeats} repeats reached the policy"
    print(f"stall_ticks_repeated_instruction={policy.bench_stalls}", flush=True)
    print(f"inference_p50_ms={np.percentile(latencies, 50) * 1e3:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
