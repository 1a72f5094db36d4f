"""The camera interface: what the camera node needs from one colour camera.

Backends, one folder each: `sim/` (a camera of the MuJoCo world) and, with the hardware
issue, `realsense/` (pyrealsense2, chosen by serial number). The node publishes what `read`
returns on `/cameras/<name>/color/image_raw` and `camera_info`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from twinvla_ros.robot.cameras import CAMERAS, CameraIntrinsics


@dataclass(frozen=True)
class CameraConfig:
    name: str              # one of CAMERAS: the topic name and TwinVLA's image key
    width: int = 320
    height: int = 240
    fps: float = 15.0
    serial: str = ""       # hardware backends: which device (empty for the sim)

    def __post_init__(self):
        if self.name not in CAMERAS:
            raise ValueError(f"unknown camera {self.name!r}; cameras: {', '.join(CAMERAS)}")
        if self.width <= 0 or self.height <= 0 or not self.fps > 0:
            raise ValueError(f"camera {self.name}: size and fps must be positive, got "
                             f"{self.width}x{self.height} at {self.fps} Hz")


@dataclass(frozen=True)
class Frame:
    image: np.ndarray      # uint8 (H, W, 3) RGB, C-contiguous
    stamp: float           # seconds on the host's clock when the image was exposed
    # uint16 (H, W) millimetres along the optical axis, pixel for pixel with `image` (0: no
    # measurement); None from a camera that streams no depth.
    depth: np.ndarray | None = None


class Camera(ABC):
    config: CameraConfig

    @abstractmethod
    def read(self) -> Frame:
        """The newest frame (blocking at most one frame period for a live device)."""

    @property
    @abstractmethod
    def intrinsics(self) -> CameraIntrinsics: ...

    @abstractmethod
    def close(self) -> None: ...
