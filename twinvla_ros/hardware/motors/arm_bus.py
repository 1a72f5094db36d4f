"""The arm-bus interface: what the arm driver needs from the motors of one arm.

One bus drives one arm: its six joints and the gripper (finger travel in metres). Backends,
one folder each: `sim/` (the MuJoCo sim node's motors, over its topics) and, with the hardware
issue, `dynamixel/` (Protocol 2.0 on a serial port). The controller in twinvla_ros.control
only ever sees this interface.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BusReading:
    positions: np.ndarray     # (7,) rad for the arm joints, m of finger travel for the gripper
    velocities: np.ndarray    # (7,)
    efforts: np.ndarray       # (7,)
    stamp: float              # seconds (the driver's clock) when the values were measured


class BusError(RuntimeError):
    """The bus cannot deliver a reading or accept a command (disconnected, timed out, ...)."""


class ArmBus(ABC):
    joint_names: tuple[str, ...]   # six arm joints then the gripper joint

    @abstractmethod
    def read(self) -> BusReading:
        """The latest measurement; BusError when there is none."""

    @abstractmethod
    def write_targets(self, positions: np.ndarray) -> None:
        """(7,) goal positions, already checked by the safety layer."""

    @abstractmethod
    def set_torque(self, enabled: bool) -> None: ...

    @abstractmethod
    def close(self) -> None: ...
