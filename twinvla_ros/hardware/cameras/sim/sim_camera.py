"""A camera of the MuJoCo world: renders the URDF camera frame headless (EGL or OSMesa)."""
from __future__ import annotations

import time
from typing import Callable

from twinvla_ros.hardware.cameras.camera import Camera, CameraConfig, Frame
from twinvla_ros.robot.cameras import CameraIntrinsics
from twinvla_ros.sim import SimWorld


class SimCamera(Camera):
    """The world renders at its configured image size; a config asking for another is an error
    rather than a silently resized stream."""

    def __init__(self, world: SimWorld, config: CameraConfig, clock: Callable[[], float] = time.monotonic):
        size = (world.config.image_width, world.config.image_height)
        if (config.width, config.height) != size:
            raise ValueError(f"sim camera {config.name}: the world renders {size[0]}x{size[1]}, "
                             f"asked for {config.width}x{config.height}")
        self.config = config
        self._world = world
        self._clock = clock
        self._intrinsics = world.camera_intrinsics(config.name)

    def read(self) -> Frame:
        stamp = self._clock()
        return Frame(self._world.render(self.config.name), stamp)

    @property
    def intrinsics(self) -> CameraIntrinsics:
        return self._intrinsics

    def close(self) -> None:
        pass          # the world (and its GL context) belongs to whoever made it
