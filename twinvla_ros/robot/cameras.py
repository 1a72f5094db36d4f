"""The robot's three cameras: their logical names and the pinhole model their images follow.

Names are those of the topics (`/cameras/<name>/color/image_raw`) and of TwinVLA's image
keys (ego = agentview). Every camera backend (sim, RealSense) reports CameraIntrinsics.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CAMERAS = ("ego", "wrist_left", "wrist_right")


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics (OpenCV convention: pixel centres at integer coordinates)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    frame_id: str                     # the URDF optical frame (z forward, x right, y down)

    @property
    def matrix(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])
