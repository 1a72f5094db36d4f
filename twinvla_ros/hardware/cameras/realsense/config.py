"""The RealSense cameras of the robot, read from the `hardware.cameras` section of
config/anubis.yaml (or another file with that section).

    hardware:
      cameras:
        ego:        {serial: "218622270123", width: 640, height: 480, fps: 30, depth: false}
        wrist_left: {serial: "130322273456", width: 640, height: 480, fps: 30, depth: true}

Everything is checked here, before any device is touched: a typo in a key, a size that is not a
whole number of pixels, an fps librealsense cannot take, a serial written as a YAML number (which
loses leading zeros) or two cameras sharing one serial is a ValueError naming the entry.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import yaml

from twinvla_ros.hardware.cameras.camera import CameraConfig
from twinvla_ros.paths import config_path
from twinvla_ros.robot.cameras import CAMERAS
from twinvla_ros.robot.description import load_description

SECTION = "hardware.cameras"
KEYS = ("serial", "width", "height", "fps", "depth")
DEFAULTS = {"serial": "", "width": 640, "height": 480, "fps": 30, "depth": False}
MAX_SIDE_PX = 4096          # beyond any RealSense sensor: a larger number is a typo
MAX_FPS = 300               # the D4xx top out at 300 fps (infrared); colour at 90


@lru_cache(maxsize=1)
def optical_frames() -> dict[str, str]:
    """Camera name -> the URDF optical frame its images are expressed in (the frame_id of its
    messages), as the robot description names them (read once)."""
    return load_description().camera_frames


@dataclass(frozen=True)
class RealSenseCameraConfig(CameraConfig):
    """One RealSense camera: which device (serial), its colour profile (width x height px at an
    integer fps, rgb8) and whether depth (aligned to the colour image) is streamed too."""

    depth: bool = False
    frame_id: str = ""         # URDF optical frame; empty: the robot description's frame for `name`

    def __post_init__(self):
        super().__post_init__()
        for side, value in (("width", self.width), ("height", self.height)):
            if not _is_int(value) or value > MAX_SIDE_PX:
                raise ValueError(f"camera {self.name}: {side} must be a whole number of pixels in "
                                 f"1..{MAX_SIDE_PX}, got {value!r}")
        if not (_is_int(self.fps) or (isinstance(self.fps, float) and self.fps.is_integer())) or self.fps > MAX_FPS:
            raise ValueError(f"camera {self.name}: fps must be a whole number in 1..{MAX_FPS} "
                             f"(librealsense takes integer frame rates), got {self.fps!r}")
        if not isinstance(self.serial, str):
            raise ValueError(f"camera {self.name}: serial must be a string, got {self.serial!r}")
        if not isinstance(self.depth, bool):
            raise ValueError(f"camera {self.name}: depth must be true or false, got {self.depth!r}")
        if not self.frame_id:
            object.__setattr__(self, "frame_id", optical_frames()[self.name])

    @property
    def profile(self) -> str:
        """The colour profile in words: '640x480 rgb8 at 30 fps'."""
        return f"{self.width}x{self.height} rgb8 at {int(self.fps)} fps"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_camera_configs(section: Any, source: str = SECTION) -> dict[str, RealSenseCameraConfig]:
    """The `hardware.cameras` mapping -> {camera name: config}; ValueError saying which entry of
    `source` is wrong and how. Keys left out take DEFAULTS (an empty serial fails only when that
    camera is opened, naming the entry to fill in)."""
    if not isinstance(section, Mapping):
        raise ValueError(f"{source} must be a mapping of camera name -> settings, got {type(section).__name__}")
    unknown = [name for name in section if name not in CAMERAS]
    if unknown:
        raise ValueError(f"{source}: unknown cameras {unknown}; cameras: {', '.join(CAMERAS)}")
    configs = {}
    for name, entry in section.items():
        where = f"{source}.{name}"
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where} must be a mapping with keys {', '.join(KEYS)}, got {entry!r}")
        extra = [key for key in entry if key not in KEYS]
        if extra:
            raise ValueError(f"{where}: unknown keys {extra}; keys: {', '.join(KEYS)}")
        values = {**DEFAULTS, **entry}
        if values["serial"] is None:
            values["serial"] = ""
        if _is_int(values["serial"]):
            raise ValueError(f"{where}.serial is the number {values['serial']}: write it in quotes "
                             f"(\"{values['serial']}\"), YAML drops leading zeros of numbers")
        try:
            configs[name] = RealSenseCameraConfig(name=name, **values)
        except (ValueError, TypeError) as error:
            raise ValueError(f"{where}: {error}") from None
    owners: dict[str, str] = {}
    for name, config in configs.items():
        if config.serial and config.serial in owners:
            raise ValueError(f"{source}: cameras {owners[config.serial]} and {name} have the same serial "
                             f"{config.serial!r}; each camera is its own device")
        owners.setdefault(config.serial, name)
    return configs


def load_camera_configs(path: str | Path | None = None) -> dict[str, RealSenseCameraConfig]:
    """The cameras of `path` (default: the package's config/anubis.yaml)."""
    path = Path(path) if path else config_path("anubis.yaml")
    document = yaml.safe_load(path.read_text()) or {}
    hardware = document.get("hardware") if isinstance(document, Mapping) else None
    if not isinstance(hardware, Mapping) or "cameras" not in hardware:
        raise ValueError(f"{path}: no `{SECTION}` section")
    return parse_camera_configs(hardware["cameras"], f"{path}: {SECTION}")
