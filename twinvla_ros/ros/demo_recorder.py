"""The demo's eyes: a node that records what a person wants to see of a run.

The ego camera frames, both arms' commanded (eef_target) and reached (eef_pose) positions, and
the latest /diagnostics values of every node; it also sends the instruction, and asks the sim
whether the task is done (ServiceClient.task_status).
"""
from __future__ import annotations

import threading
import time

import numpy as np
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import Image
from std_msgs.msg import String

from twinvla_ros.robot.bimanual import ARMS
from twinvla_ros.ros.messages import image_to_rgb, pose_to_matrix
from twinvla_ros.ros.qos import COMMAND_QOS, SENSOR_QOS
from twinvla_ros.ros.service_client import ServiceClient


class DemoRecorder(ServiceClient):
    """Records the ego camera, both arms' commanded and reached EEF positions, and the latest
    /diagnostics values of every node."""

    def __init__(self, context):
        super().__init__("demo_recorder", context=context)
        self._lock = threading.Lock()
        self.t0: float | None = None
        self.frames: list[np.ndarray] = []
        self.commanded = {side: ([], []) for side in ARMS}
        self.reached = {side: ([], []) for side in ARMS}
        self.create_subscription(Image, "/cameras/ego/color/image_raw", self._on_image, SENSOR_QOS)
        for side in ARMS:
            self.create_subscription(PoseStamped, f"/{side}_arm/eef_target",
                                     lambda msg, s=side: self._on_pose(self.commanded[s], msg), COMMAND_QOS)
            self.create_subscription(PoseStamped, f"/{side}_arm/eef_pose",
                                     lambda msg, s=side: self._on_pose(self.reached[s], msg), COMMAND_QOS)
        self._instruction_pub = self.create_publisher(String, "/instruction", COMMAND_QOS)

    def policy_listening(self) -> bool:
        return self._instruction_pub.get_subscription_count() > 0

    def send_instruction(self, text: str) -> None:
        self._instruction_pub.publish(String(data=text))

    def start(self) -> None:
        """(Re)start recording: clear what was recorded, time 0 is now."""
        with self._lock:
            self.t0 = time.monotonic()
            self.frames.clear()
            for store in (*self.commanded.values(), *self.reached.values()):
                store[0].clear()
                store[1].clear()

    def _on_image(self, msg: Image) -> None:
        with self._lock:
            if self.t0 is not None:
                self.frames.append(image_to_rgb(msg))

    def values(self, status_name: str) -> dict[str, str]:
        return self.diagnostic_status(status_name)[1]

    def _on_pose(self, store, msg: PoseStamped) -> None:
        with self._lock:
            if self.t0 is not None:
                store[0].append(time.monotonic() - self.t0)
                store[1].append(pose_to_matrix(msg.pose)[:3, 3])

    def series(self, which) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        with self._lock:
            return {side: (np.array(t), np.array(xyz).reshape(-1, 3)) for side, (t, xyz) in which.items()}
