"""Plants for the ArmController tests: what the motors do with the targets the controller writes.

A plain module (not conftest.py), imported by the test files of this folder.
"""
from __future__ import annotations

import numpy as np

from twinvla_ros.control.controller import ArmController
from twinvla_ros.control.safety import SafetyLimits
from twinvla_ros.hardware.motors import BusReading

RATE = 100.0
DT = 1.0 / RATE


def make_controller(description, kinematics, limits: SafetyLimits | None = None, side: str = "right"):
    base_to_ref = np.linalg.inv(kinematics.reference_in_base())
    return ArmController(description.arms[side], kinematics, limits or SafetyLimits(), servo_rate=RATE,
                         reference_frame="eef_reference", base_to_reference=base_to_ref)


def joint_caps(controller) -> np.ndarray:
    """(7,) per-tick caps in force now: six joints (rad) and the gripper (m)."""
    limits, arm = controller.limits, controller.arm
    return np.append(arm.velocity * limits.joint_velocity_scale * DT,
                     limits.max_gripper_speed * DT * arm.gripper_stroke)


class ServoPlant:
    """A position servo with realistic lag, like the MuJoCo sim's: every tick each joint closes
    `alpha` of the gap to its last target, at most `overspeed` x its speed cap (the motor's own
    velocity limit, somewhat above the driver's cap). alpha 0.2 at 100 Hz is a 50 ms time
    constant: the servo lags 5 ticks behind a ramp, ~0.056 rad at the default cap (the sim lags
    0.04-0.07 rad). `frozen` (per joint) holds the measured position where it is: an obstacle.

    `records` holds one (measured at the tick, output of the tick, measured after the tick,
    per-tick caps in force at the tick, tracking margins in force at the tick) per tick.
    """

    def __init__(self, controller, q0, gripper: float = 0.02, alpha: float = 0.2,
                 gripper_alpha: float = 0.4, overspeed: float = 1.5):
        self.controller = controller
        self.q = np.append(np.asarray(q0, dtype=float), gripper)
        self.target = self.q.copy()
        self.alpha = np.append(np.full(6, alpha), gripper_alpha)
        self.overspeed = overspeed
        self.frozen = np.zeros(7, dtype=bool)
        self.t = 0.0
        self.records: list[tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray, np.ndarray]] = []

    def tick(self, n: int = 1) -> None:
        for _ in range(n):
            self.t += DT
            before = self.q.copy()
            caps = joint_caps(self.controller)
            margins = np.append(np.minimum(self.controller.limits.max_tracking_error,
                                           self.controller.limits.max_tracking_lag * caps[:6] / DT),
                                self.controller.limits.max_gripper_tracking_error)
            out = self.controller.update(self.t, BusReading(before.copy(), np.zeros(7), np.zeros(7), self.t))
            if out is not None:
                self.target = out.copy()
            step = np.clip(self.alpha * (self.target - self.q), -self.overspeed * caps, self.overspeed * caps)
            step[self.frozen] = 0.0
            self.q = self.q + step
            self.records.append((before, None if out is None else out.copy(), self.q.copy(), caps, margins))

    def pose(self):
        return self.controller.kinematics.fk(self.q[:6])


class IdealPlant(ServoPlant):
    """Motors that reach each target by the next tick."""

    def __init__(self, controller, q0, gripper: float = 0.02):
        super().__init__(controller, q0, gripper, alpha=1.0, gripper_alpha=1.0, overspeed=np.inf)
