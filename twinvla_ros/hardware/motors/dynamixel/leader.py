"""A leader arm: the teleoperator's passive Dynamixel arm, read with torque off."""
from __future__ import annotations

from typing import Sequence

from twinvla_ros.hardware.motors.dynamixel.bus import DynamixelArmBus
from twinvla_ros.hardware.motors.dynamixel.config import DynamixelArmConfig


class LeaderArm(DynamixelArmBus):
    """The bus in read-only mode: torque is turned off at open and never on; `write_targets`
    and `set_torque(True)` raise BusError, so a leader cannot be driven by mistake. `read()`
    gives the same BusReading as a follower (rad, finger travel in m), which is what a
    follower is then sent."""

    def __init__(self, config: DynamixelArmConfig, joint_names: Sequence[str] | None = None,
                 gripper_stroke: float | None = None, **options):
        super().__init__(config, joint_names, gripper_stroke, read_only=True, **options)
