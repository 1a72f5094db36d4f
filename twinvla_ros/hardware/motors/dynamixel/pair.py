"""Both arms' buses, or neither: what the arm driver (followers) and the teleop node (leaders)
open. A bus that opened is closed again when the other fails, and one BusError names every
port, motor and configuration problem of both, so the robot is fixed in one pass."""
from __future__ import annotations

from pathlib import Path

from twinvla_ros.hardware.motors.arm_bus import BusError
from twinvla_ros.hardware.motors.dynamixel.bus import DynamixelArmBus
from twinvla_ros.hardware.motors.dynamixel.config import load_arm_config
from twinvla_ros.robot.description import RobotDescription


def open_arm_pair(roles: dict[str, str], description: RobotDescription, config_path: str | Path | None = None,
                  bus_class: type[DynamixelArmBus] = DynamixelArmBus, what: str = "arm") -> dict[str, DynamixelArmBus]:
    """{side: role of the hardware config} -> {side: open bus of `bus_class`}."""
    opened, problems = {}, []
    for side, role in roles.items():
        arm = description.arms[side]
        try:
            config = load_arm_config(role, config_path)
            if config.side != side:
                raise ValueError(f"role {role!r} is a {config.side} arm, not a {side} one")
            opened[side] = bus_class(config, [*arm.joint_names, arm.gripper_joint], gripper_stroke=arm.gripper_stroke)
        except (BusError, ValueError, OSError) as error:
            problems.append(f"{side} {what}: {error}")
    if problems:
        for bus in opened.values():
            bus.close()
        raise BusError("; ".join(problems))
    return opened
