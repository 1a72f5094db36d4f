"""The MuJoCo sim's motors as an arm bus, reached over the sim node's topics.

The arm driver node owns the ROS side (publishers for targets and torque, the subscription
that feeds `on_joint_state`); this class keeps no ROS objects, so it is testable without ROS.
"""
from __future__ import annotations

import threading
from typing import Callable, Sequence

import numpy as np

from twinvla_ros.hardware.motors.arm_bus import ArmBus, BusError, BusReading


class SimArmBus(ArmBus):
    """One arm of the MuJoCo sim, reached through the sim node's joint-state/command topics.

    The node feeds every received sim joint-state message to `on_joint_state` and passes the
    two publishing callables; this class keeps no ROS objects so it is testable without ROS.
    """

    def __init__(self, joint_names: Sequence[str],
                 send_targets: Callable[[Sequence[str], np.ndarray], None],
                 send_torque: Callable[[Sequence[str], bool], None],
                 clock: Callable[[], float]):
        self.joint_names = tuple(joint_names)
        self._send_targets = send_targets
        self._send_torque = send_torque
        self._clock = clock
        self._lock = threading.Lock()
        self._reading: BusReading | None = None

    def on_joint_state(self, names: Sequence[str], positions, velocities, efforts) -> None:
        index = {name: i for i, name in enumerate(names)}
        try:
            order = [index[name] for name in self.joint_names]
        except KeyError:
            return  # a message for the other arm only, or a partial one: not ours
        def pick(values):
            values = np.asarray(values, dtype=np.float64)
            return values[order] if values.size == len(names) else np.zeros(len(order))
        reading = BusReading(pick(positions), pick(velocities), pick(efforts), self._clock())
        with self._lock:
            self._reading = reading

    def read(self) -> BusReading:
        with self._lock:
            reading = self._reading
        if reading is None:
            raise BusError("no joint state received from the sim yet")
        return reading

    def write_targets(self, positions: np.ndarray) -> None:
        self._send_targets(self.joint_names, np.asarray(positions, dtype=np.float64))

    def set_torque(self, enabled: bool) -> None:
        self._send_torque(self.joint_names, bool(enabled))

    def close(self) -> None:
        pass
