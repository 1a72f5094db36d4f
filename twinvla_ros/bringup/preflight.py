"""Before a graph with real hardware starts: is every device it names there?

One error lists everything that is missing (serial ports, motor configs, camera serials), so
a user fixes the robot in one pass, and nothing is started half: the runners and the launch
files call `require_hardware` before any node exists. A simulated graph passes untouched.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from twinvla_ros.bringup.graph import ARM_DRIVER, CAMERA_NODE, TELEOP, NodeSpec
from twinvla_ros.robot.bimanual import ARMS
from twinvla_ros.robot.cameras import CAMERAS


class HardwareMissing(RuntimeError):
    """Devices a real-robot graph needs are absent or not configured."""


def _arm_problems(parameters: dict, role_parameter: str = "{side}_arm_role",
                  default_role: str = "follower_{side}") -> list[str]:
    from twinvla_ros.hardware.motors.dynamixel import load_arm_config

    problems = []
    for side in ARMS:
        role = parameters.get(role_parameter.format(side=side), default_role.format(side=side))
        try:
            config = load_arm_config(role, parameters.get("hardware_config") or None)
        except ValueError as error:
            problems.append(f"{side} arm ({role}): {error}")
            continue
        if not Path(config.port).exists():
            problems.append(f"{side} arm ({role}): serial port {config.port} not found "
                            f"(hardware.arms.{role}.port; is the U2D2 plugged in?)")
    return problems


def _camera_problems(parameters: dict, connected: Callable[[], list[str]]) -> list[str]:
    from twinvla_ros.hardware.cameras.realsense import load_camera_configs

    try:
        configs = load_camera_configs(parameters.get("hardware_config") or None)
    except ValueError as error:
        return [f"cameras: {error}"]
    serials = connected()
    listing = ", ".join(serials) or "none"
    problems = []
    for name in parameters.get("cameras") or CAMERAS:
        config = configs.get(name)
        if config is None or not config.serial:
            problems.append(f"camera {name}: no serial set (hardware.cameras.{name}.serial; "
                            f"connected RealSense serials: {listing})")
        elif config.serial not in serials:
            problems.append(f"camera {name}: RealSense {config.serial} not connected "
                            f"(connected: {listing})")
    return problems


def _connected_realsense_serials() -> list[str]:
    import pyrealsense2 as rs

    from twinvla_ros.hardware.cameras.realsense import connected_devices

    return sorted(connected_devices(rs.context()))


def missing_hardware(specs: list[NodeSpec],
                     connected_cameras: Callable[[], list[str]] = _connected_realsense_serials) -> list[str]:
    """What the graph's hardware nodes need and cannot find; empty when all is there."""
    problems = []
    for spec in specs:
        parameters = spec.parameters
        if spec.name == ARM_DRIVER.name and parameters.get("backend") == "dynamixel":
            problems += _arm_problems(parameters)
        elif spec.name == TELEOP.name and parameters.get("backend") == "leader":
            problems += _arm_problems(parameters, "{side}_leader_role", "leader_{side}")
        elif spec.name == CAMERA_NODE.name and parameters.get("backend") == "realsense":
            problems += _camera_problems(parameters, connected_cameras)
    return problems


def require_hardware(specs: list[NodeSpec], **kwargs) -> None:
    problems = missing_hardware(specs, **kwargs)
    if problems:
        raise HardwareMissing("the real robot is not ready; nothing was started:\n  - " + "\n  - ".join(problems))
