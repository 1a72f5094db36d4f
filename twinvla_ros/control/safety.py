"""Safety limits of the arm driver and the pure functions that enforce them.

Rules borrowed from peers and made stricter: LeRobot's `max_relative_target` (a per-tick cap
on every joint) and EEF bounds, ALOHA's gripper limits. Every limit is a parameter of the
arm driver node, reported on /diagnostics when it acts.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pinocchio as pin


@dataclass(frozen=True)
class SafetyLimits:
    # Fraction of the URDF joint velocity limits the driver may use; the per-tick joint step
    # is velocity * scale / servo rate.
    joint_velocity_scale: float = 0.8
    max_eef_speed: float = 0.5               # m/s of the commanded EEF setpoint
    max_eef_angular_speed: float = 2.0       # rad/s
    max_gripper_speed: float = 1.5           # normalized gripper units (0..1) per second
    # Workspace box for the EEF position, in the reference frame (m).
    workspace_min: tuple[float, float, float] = (-0.10, -0.70, -0.12)
    workspace_max: tuple[float, float, float] = (0.65, 0.70, 0.70)
    stale_timeout: float = 0.5               # s without a command -> hold
    bus_timeout: float = 0.2                 # s without a joint reading -> hold, report error
    ik_position_tolerance: float = 0.002     # m: beyond this the target counts as unreachable
    ik_rotation_tolerance: float = float(np.deg2rad(2.0))
    accepted_frames: tuple[str, ...] = field(default=("eef_reference", "base_link"))

    def __post_init__(self):
        lo, hi = np.asarray(self.workspace_min), np.asarray(self.workspace_max)
        if lo.shape != (3,) or hi.shape != (3,) or np.any(lo >= hi):
            raise ValueError(f"workspace box is empty or malformed: min {self.workspace_min}, max {self.workspace_max}")
        for name in ("joint_velocity_scale", "max_eef_speed", "max_eef_angular_speed",
                     "max_gripper_speed", "stale_timeout", "bus_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"safety limit {name} must be positive, got {getattr(self, name)}")


def validate_pose(pose: np.ndarray) -> str | None:
    """Why a 4x4 target is unusable, or None when it is fine."""
    if pose.shape != (4, 4):
        return f"pose has shape {pose.shape}, expected (4, 4)"
    if not np.isfinite(pose).all():
        return "pose contains NaN or inf"
    r = pose[:3, :3]
    if np.abs(r.T @ r - np.eye(3)).max() > 1e-3 or np.linalg.det(r) < 0:
        return "orientation is not a rotation (quaternion not normalized?)"
    return None


def clamp_to_workspace(position: np.ndarray, limits: SafetyLimits) -> tuple[np.ndarray, bool]:
    clamped = np.clip(position, limits.workspace_min, limits.workspace_max)
    return clamped, bool(np.any(clamped != position))


def interpolate_pose(start: np.ndarray, end: np.ndarray, alpha: float) -> np.ndarray:
    """Straight line in position, geodesic in rotation; alpha in [0, 1]."""
    out = np.eye(4)
    out[:3, 3] = start[:3, 3] + alpha * (end[:3, 3] - start[:3, 3])
    relative = pin.log3(start[:3, :3].T @ end[:3, :3])
    out[:3, :3] = start[:3, :3] @ pin.exp3(alpha * relative)
    return out


def limit_pose_step(previous: np.ndarray, desired: np.ndarray, max_translation: float,
                    max_rotation: float) -> tuple[np.ndarray, bool]:
    """Move from `previous` towards `desired` by at most the given step; True if it was capped."""
    translation = np.linalg.norm(desired[:3, 3] - previous[:3, 3])
    rotation = np.linalg.norm(pin.log3(previous[:3, :3].T @ desired[:3, :3]))
    scale = 1.0
    if translation > max_translation:
        scale = min(scale, max_translation / translation)
    if rotation > max_rotation:
        scale = min(scale, max_rotation / rotation)
    if scale >= 1.0:
        return desired, False
    return interpolate_pose(previous, desired, scale), True


def limit_joint_step(previous: np.ndarray, desired: np.ndarray, max_step: np.ndarray) -> tuple[np.ndarray, bool]:
    step = desired - previous
    capped = np.clip(step, -max_step, max_step)
    return previous + capped, bool(np.any(capped != step))
