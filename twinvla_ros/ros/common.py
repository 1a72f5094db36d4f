"""What every twinvla_ros node shares: QoS choices, parameters, diagnostics, message conversion.

QoS, chosen on purpose:
- cameras: sensor-data QoS (best effort, keep last few): a late frame is worth nothing, and a
  reliable image stream backs up the whole graph when a subscriber is slow;
- commands and states: reliable, keep last 10: a dropped EEF target is a visible hiccup;
- e-stop: reliable + transient local, so a node that starts after the e-stop was pressed
  still sees it.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Iterable

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Pose
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)
from sensor_msgs.msg import CameraInfo, Image

from twinvla_ros.rotations import matrix_to_quat_xyzw, quat_xyzw_to_matrix

SENSOR_QOS = qos_profile_sensor_data
COMMAND_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                         history=HistoryPolicy.KEEP_LAST, durability=DurabilityPolicy.VOLATILE)
LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         history=HistoryPolicy.KEEP_LAST, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def declare(node: Node, name: str, default: Any, description: str) -> Any:
    """Declare a parameter with a default and a description; return its (possibly overridden) value.

    Dynamic typing lets a YAML file or launch argument write `100` for a float parameter
    without rclpy rejecting the integer; the value is converted to the default's type here.
    """
    value = node.declare_parameter(
        name, default, ParameterDescriptor(description=description, dynamic_typing=True)).value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, list) and default and isinstance(default[0], float) and isinstance(value, list):
        return [float(v) for v in value]
    return value


def stamp_to_seconds(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def pose_to_matrix(pose: Pose) -> np.ndarray:
    """geometry_msgs/Pose -> 4x4. The quaternion is normalized; a zero/NaN one gives NaN (rejected later)."""
    q = np.array([pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w])
    out = np.full((4, 4), np.nan)
    out[3] = (0.0, 0.0, 0.0, 1.0)
    out[:3, 3] = (pose.position.x, pose.position.y, pose.position.z)
    norm = np.linalg.norm(q)
    if np.isfinite(q).all() and norm > 1e-6:
        out[:3, :3] = quat_xyzw_to_matrix(q / norm)
    return out


def matrix_to_pose(matrix: np.ndarray) -> Pose:
    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in matrix[:3, 3])
    x, y, z, w = matrix_to_quat_xyzw(matrix[:3, :3])
    pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = float(x), float(y), float(z), float(w)
    return pose


def rgb_to_image(image: np.ndarray, stamp: Time, frame_id: str) -> Image:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected uint8 HxWx3 RGB, got {image.dtype} {image.shape}")
    msg = Image()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(image.shape[0]), int(image.shape[1])
    msg.encoding = "rgb8"
    msg.is_bigendian = 0
    msg.step = msg.width * 3
    msg.data = np.ascontiguousarray(image).tobytes()
    return msg


def image_to_rgb(msg: Image) -> np.ndarray:
    """sensor_msgs/Image (rgb8 or bgr8) -> uint8 HxWx3 RGB; anything else is a clear error."""
    if msg.encoding not in ("rgb8", "bgr8"):
        raise ValueError(f"unsupported image encoding '{msg.encoding}' (need rgb8 or bgr8)")
    if msg.step < msg.width * 3 or len(msg.data) < msg.step * msg.height:
        raise ValueError(f"image data too short: {len(msg.data)} bytes for {msg.height}x{msg.width}, step {msg.step}")
    rows = np.frombuffer(msg.data, dtype=np.uint8, count=msg.step * msg.height).reshape(msg.height, msg.step)
    image = rows[:, : msg.width * 3].reshape(msg.height, msg.width, 3)
    return image[..., ::-1].copy() if msg.encoding == "bgr8" else image


def camera_info(width: int, height: int, fx: float, fy: float, cx: float, cy: float,
                stamp: Time, frame_id: str) -> CameraInfo:
    msg = CameraInfo()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.width, msg.height = int(width), int(height)
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    msg.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


class Diagnostics:
    """Publishes the node's statuses as one DiagnosticArray (the node decides when)."""

    def __init__(self, node: Node, topic: str = "/diagnostics", hardware_id: str = "anubis"):
        self._node = node
        self._pub = node.create_publisher(DiagnosticArray, topic, COMMAND_QOS)
        self._hardware_id = hardware_id

    def publish(self, statuses: Iterable[tuple[str, int, str, dict[str, Any]]]) -> None:
        """statuses: (name, level, message, values)."""
        array = DiagnosticArray()
        array.header.stamp = self._node.get_clock().now().to_msg()
        for name, level, message, values in statuses:
            status = DiagnosticStatus()
            status.level = bytes([int(level)])
            status.name = f"{self._node.get_name()}: {name}"
            status.message = message
            status.hardware_id = self._hardware_id
            status.values = [KeyValue(key=str(k), value=str(v)) for k, v in values.items()]
            array.status.append(status)
        self._pub.publish(array)


class RateMeter:
    """Measures a loop's period (p50/p99) over a sliding window, for diagnostics and benches."""

    def __init__(self, window: int = 400):
        self._stamps: list[float] = []
        self._window = window

    def tick(self, now: float | None = None) -> None:
        self._stamps.append(time.monotonic() if now is None else now)
        if len(self._stamps) > self._window:
            del self._stamps[: len(self._stamps) - self._window]

    def periods(self) -> np.ndarray:
        return np.diff(self._stamps)

    def summary(self) -> dict[str, str]:
        periods = self.periods()
        if periods.size == 0:
            return {"rate_hz": "0"}
        return {"rate_hz": f"{1.0 / periods.mean():.1f}",
                "period_p50_ms": f"{np.percentile(periods, 50) * 1e3:.2f}",
                "period_p99_ms": f"{np.percentile(periods, 99) * 1e3:.2f}"}


def run_node(make_node: Callable[[], Node], args=None) -> None:
    """A node process's main: spin until Ctrl-C or shutdown, then the node's safe close()."""
    rclpy.init(args=args)
    node = make_node()
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.close()
        node.destroy_node()
        rclpy.try_shutdown()
