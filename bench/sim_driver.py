#!/usr/bin/env python3
"""Benchmark of the MuJoCo sim and the arm driver: prints `name=value` lines.

    python bench/sim_driver.py                    # every figure
    python bench/sim_driver.py --only sim_realtime_factor

The first line describes the machine. Each figure is one function in FIGURES returning its
value. The arm-driver figures run the sim_robot graph (sim node + arm driver) in this process
over real DDS, the way the tests and `twinvla-ros launch` run it, while EEF targets stream at
20 Hz. Figures here are throughput on this machine, not pass/fail tests.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from functools import lru_cache
from typing import Callable

import numpy as np
from common import machine_line

from twinvla_ros.sim import SimConfig, SimWorld  # also selects MUJOCO_GL


def _render_fps(height: int, width: int, seconds: float) -> float:
    """Frames per second of render_all() (all three cameras) at one resolution, default scene
    and render settings (no multisampling)."""
    with SimWorld(SimConfig(image_height=height, image_width=width)) as world:
        world.render_all()   # context creation and first-frame setup are not throughput
        world.render_all()
        frames, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            world.render_all()
            frames += 1
        return frames / (time.perf_counter() - start)


def sim_render_fps_3cams_240x320(seconds: float) -> float:
    return _render_fps(240, 320, seconds)


def sim_render_fps_3cams_480x640(seconds: float) -> float:
    return _render_fps(480, 640, seconds)


def sim_realtime_factor(seconds: float) -> float:
    """Simulated seconds per wall second, physics only (no rendering), default scene, one
    step() call per 2 ms step as a real-time loop makes them, with the arms tracking moving
    joint targets and a joint_state() read every 5 ms (the sim bus at 200 Hz)."""
    import math

    with SimWorld(SimConfig()) as world:
        home = dict(zip(world.joint_names, world.joint_state()[0]))
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            if steps % 5 == 0:
                phase = 2 * math.pi * 0.5 * world.time
                world.set_joint_targets({"left_joint1": home["left_joint1"] + 0.3 * math.sin(phase),
                                         "right_joint3": home["right_joint3"] + 0.2 * math.sin(phase)})
                world.joint_state()
            world.step(1)
            steps += 1
        wall = time.perf_counter() - start
        return steps * world.config.timestep / wall


@lru_cache(maxsize=None)
def _driver_run(seconds: float) -> tuple[float, float]:
    """(servo loop Hz, median ms from an EEF command's arrival to the joint target it causes)
    of the arm driver in the sim_robot graph while both arms follow a 20 Hz target stream."""
    from geometry_msgs.msg import PoseStamped
    from rclpy.node import Node

    from twinvla_ros.bringup.graph import sim_robot
    from twinvla_ros.ros.messages import matrix_to_pose
    from twinvla_ros.ros.qos import COMMAND_QOS
    from twinvla_ros.bringup.dds import isolate_dds
    from twinvla_ros.bringup.runner import GraphRunner

    isolate_dds()
    with GraphRunner(sim_robot()) as runner:
        driver = runner.node("arm_driver_node")
        while any(c.measured is None for c in driver.controllers.values()):
            time.sleep(0.05)
        streamer = Node("bench_targets", context=runner.context)
        runner.add_node(streamer)
        pubs = {side: streamer.create_publisher(PoseStamped, f"/{side}_arm/eef_target", COMMAND_QOS)
                for side in driver.controllers}
        homes = {side: c.measured_pose() for side, c in driver.controllers.items()}
        driver.loop_rate = type(driver.loop_rate)(window=100000)
        driver.command_latencies.clear()
        start = time.monotonic()
        while (t := time.monotonic() - start) < seconds:
            for side, pub in pubs.items():
                target = homes[side].copy()
                target[:3, 3] += 0.05 * np.array([np.sin(2 * np.pi * 0.25 * t), np.cos(2 * np.pi * 0.25 * t) - 1, 0])
                msg = PoseStamped()
                msg.header.frame_id = "eef_reference"
                msg.pose = matrix_to_pose(target)
                pub.publish(msg)
            time.sleep(0.05)
        periods = driver.loop_rate.periods()
        return 1.0 / periods.mean(), float(np.median(driver.command_latencies) * 1e3)


def arm_driver_loop_hz(seconds: float) -> float:
    return _driver_run(seconds)[0]


def eef_cmd_to_joint_target_ms(seconds: float) -> float:
    return _driver_run(seconds)[1]


def image_publish_latency_ms(seconds: float) -> float:
    """Median ms from publishing a 480x640 rgb8 Image to its subscriber's callback, two nodes
    of one process on their own executor threads (sensor-data QoS, as the cameras use)."""
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from sensor_msgs.msg import Image

    from twinvla_ros.ros.messages import rgb_to_image
    from twinvla_ros.ros.qos import SENSOR_QOS
    from twinvla_ros.bringup.dds import isolate_dds

    isolate_dds()
    context = Context()
    rclpy.init(context=context)
    latencies = []
    try:
        publisher_node = Node("bench_camera", context=context)
        subscriber_node = Node("bench_viewer", context=context)
        sent: dict[int, float] = {}
        subscriber_node.create_subscription(
            Image, "/bench/image", lambda msg: latencies.append(time.perf_counter() - sent[msg.header.stamp.nanosec]),
            SENSOR_QOS)
        pub = publisher_node.create_publisher(Image, "/bench/image", SENSOR_QOS)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(subscriber_node)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        while pub.get_subscription_count() == 0:
            time.sleep(0.05)
        image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
        start, frame = time.monotonic(), 0
        while time.monotonic() - start < seconds:
            msg = rgb_to_image(image, publisher_node.get_clock().now().to_msg(), "bench")
            msg.header.stamp.nanosec = frame            # the frame number keys the send time
            sent[frame] = time.perf_counter()
            pub.publish(msg)
            frame += 1
            time.sleep(1 / 30)
        time.sleep(0.2)
        executor.shutdown()
    finally:
        rclpy.shutdown(context=context)
    return float(np.median(latencies) * 1e3)


FIGURES: list[Callable[[float], float]] = [
    sim_render_fps_3cams_240x320,
    sim_render_fps_3cams_480x640,
    sim_realtime_factor,
    arm_driver_loop_hz,
    eef_cmd_to_joint_target_ms,
    image_publish_latency_ms,
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="run only this figure (repeatable)")
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring time per figure")
    args = parser.parse_args(argv)
    figures = [f for f in FIGURES if not args.only or f.__name__ in args.only]
    unknown = set(args.only) - {f.__name__ for f in FIGURES}
    if unknown:
        parser.error(f"unknown figure(s) {sorted(unknown)}; known: {[f.__name__ for f in FIGURES]}")
    import mujoco
    print(machine_line(mujoco=mujoco.__version__, MUJOCO_GL=os.environ.get("MUJOCO_GL", "")), flush=True)
    for figure in figures:
        print(f"{figure.__name__}={figure(args.seconds):.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
