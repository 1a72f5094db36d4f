#!/usr/bin/env python3
"""Benchmark of the camera node's publish path: prints `name=value` lines.

  camera_msg_build_ms_640x480          rgb_to_image + camera_info for one 640x480 frame (median)
  camera_jpeg_ms_640x480               rgb_to_compressed at quality 90: JPEG encode + CompressedImage (median)
  camera_publish_cpu_percent_3x30fps   CPU of the node's three publish threads (raw + JPEG + camera_info,
                                       serialization and the DDS write), % of one core
  camera_process_cpu_percent_3x30fps   the whole process over the same run: also the three software
                                       cameras producing frames, librealsense and the capture threads
  camera_published_fps_min             the slowest camera's publish rate (30 when the node keeps up)

The CPU figures run camera_node on three librealsense software cameras (640x480 rgb8 at 30 fps,
smooth images with sensor-like noise) for `--seconds`, with one subscriber to every raw and
compressed topic in a separate process, as the policy and the recorder would be.

    python bench/hardware_cameras.py [--seconds 10]
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import textwrap
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
from common import machine_line, median_ms  # also puts the checkout on sys.path

WIDTH, HEIGHT, FPS = 640, 480, 30
CAMERAS = ("ego", "wrist_left", "wrist_right")
SUBSCRIBER = textwrap.dedent("""
    import sys
    import rclpy
    from sensor_msgs.msg import CompressedImage, Image
    from rclpy.qos import qos_profile_sensor_data
    rclpy.init()
    node = rclpy.create_node("bench_camera_subscriber")
    for name in sys.argv[1:]:
        node.create_subscription(Image, f"/cameras/{name}/color/image_raw", lambda m: None, qos_profile_sensor_data)
        node.create_subscription(CompressedImage, f"/cameras/{name}/color/image_raw/compressed", lambda m: None,
                                 qos_profile_sensor_data)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
""")


def test_image(seed: int) -> np.ndarray:
    """Gradients plus noise of a few grey levels: what JPEG meets on a real sensor image."""
    x = np.linspace(0, 1, WIDTH)[None, :]
    y = np.linspace(0, 1, HEIGHT)[:, None]
    base = np.stack([np.broadcast_to(c, (HEIGHT, WIDTH)) for c in
                     (200 * x + 40 * y, 60 + 150 * y, 128 + 90 * np.sin(6 * x + 4 * y + seed))], axis=-1)
    noise = np.random.default_rng(seed).normal(0, 4, base.shape)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def process_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(seconds: float = 10.0) -> dict[str, float]:
    from rclpy.parameter import Parameter

    import pyrealsense2 as rs  # after rclpy: see twinvla_ros/ros/nodes/camera_node.py
    from twinvla_ros.bringup.dds import isolate_dds
    from twinvla_ros.bringup.runner import GraphRunner
    from twinvla_ros.hardware.cameras.realsense import FrameStream, SoftwareRealSense
    from twinvla_ros.robot.cameras import CameraIntrinsics
    from twinvla_ros.ros.messages import camera_info, rgb_to_compressed, rgb_to_image, seconds_to_stamp
    from twinvla_ros.ros.nodes.camera_node import CameraNode

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))
    from waiting import wait_for

    figures: dict[str, float] = {}
    image = test_image(0)
    stamp = seconds_to_stamp(time.time())
    intrinsics = CameraIntrinsics(WIDTH, HEIGHT, 615.0, 615.0, 319.5, 239.5, "ego_camera_color_optical_frame")
    figures["camera_msg_build_ms_640x480"] = median_ms(
        lambda: (rgb_to_image(image, stamp, intrinsics.frame_id), camera_info(intrinsics, stamp)), 300)
    figures["camera_jpeg_ms_640x480"] = median_ms(
        lambda: rgb_to_compressed(image, stamp, intrinsics.frame_id, 90), 100)

    isolate_dds()
    realsense = rs.context()
    serials = {name: f"90000000000{i}" for i, name in enumerate(CAMERAS)}
    devices = [SoftwareRealSense(realsense, serials[name], "D405", WIDTH, HEIGHT, FPS) for name in CAMERAS]
    images = [test_image(i) for i in range(len(CAMERAS))]
    config = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_cameras_{os.getpid()}.yaml"
    config.write_text("hardware:\n  cameras:\n" + "".join(
        f'    {name}: {{serial: "{serials[name]}", width: {WIDTH}, height: {HEIGHT}, fps: {FPS}}}\n'
        for name in CAMERAS))
    subscriber = subprocess.Popen([sys.executable, "-c", SUBSCRIBER, *CAMERAS])
    try:
        with GraphRunner([]) as runner, FrameStream(devices, FPS, lambda camera, _: images[camera]):
            node = CameraNode(realsense_context=realsense, context=runner.context, parameter_overrides=[
                Parameter("hardware_config", value=str(config)), Parameter("jpeg_quality", value=90)])
            try:
                node.bring_up()
                runner.add_node(node)
                publishers = node.publishers_by_camera.values()
                wait_for(lambda: all(p.image_pub.get_subscription_count() and p.compressed_pub.get_subscription_count()
                                     and p.published > FPS for p in publishers),
                         60.0, "the subscriber and a second of frames")
                published = [p.published for p in publishers]
                threads_cpu = sum(p.cpu_seconds for p in publishers)
                process_cpu, start = process_cpu_seconds(), time.monotonic()
                time.sleep(seconds)                       # the measured run
                wall = time.monotonic() - start
                figures["camera_publish_cpu_percent_3x30fps"] = 100 * (
                    sum(p.cpu_seconds for p in publishers) - threads_cpu) / wall
                figures["camera_process_cpu_percent_3x30fps"] = 100 * (process_cpu_seconds() - process_cpu) / wall
                figures["camera_published_fps_min"] = min(
                    (p.published - before) / wall for p, before in zip(publishers, published))
            finally:
                node.close()
                node.destroy_node()
    finally:
        subscriber.terminate()
        subscriber.wait(timeout=10)
        config.unlink(missing_ok=True)
    return figures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the 3-camera publishing run")
    args = parser.parse_args(argv)
    import cv2

    print(machine_line(pyrealsense2=version("pyrealsense2"), opencv=cv2.__version__), flush=True)
    for name, value in measure(args.seconds).items():
        print(f"{name}={value:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
