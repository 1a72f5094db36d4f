"""Safety limits of the arm driver and the pure functions that enforce them.

Rules borrowed from peers and made stricter: LeRobot's `max_relative_target` (a per-tick cap
on every joint) and EEF bounds, ALOHA's gripper limits, ros2_control's joint_trajectory_controller
path tolerance (a command that the arm does not follow is aborted, here: the arm holds where it
is). Every limit is a parameter of the arm driver node, reported on /diagnostics when it acts.

Tracking margins (`max_tracking_error`, `max_gripper_tracking_error`): a position servo moves
towards its goal at a speed that grows with the gap between goal and position. The per-tick cap
bounds how fast the *command* moves; the margin bounds the gap, and with it how fast the *arm*
moves when an obstacle that held it back lets go (a blocked arm whose command ran on would close
the whole gap at the servo's full speed). The rule for choosing a margin: at most ~1.1 x the
servo's own lag behind a command ramp at the speed cap. Then closing the gap after a release is
no faster than tracking at the cap, and free motion at the cap is (nearly) unthrottled. A
servo's lag is proportional to the speed (lag = speed x its time constant), so the margin is
also bounded as a lag time: min(max_tracking_error, max_tracking_lag x cap) per joint, which
keeps the rule when the cap is lowered at run time. Measured in the MuJoCo sim (kp 60-300
N m/rad, 100 Hz, joint_velocity_scale 0.8, cap 1.12 rad/s): the lag at the cap is 0.04 rad
(wrist) .. 0.07 rad (shoulder), i.e. 36-63 ms; with a 0.05 rad (45 ms) margin, an arm released
after being blocked moves at <= 0.98 x the cap on every joint (0.06 rad: 1.14 x, 0.07 rad:
1.30 x), and the shoulder joints, whose lag exceeds the margin, are throttled to ~0.62 x the
cap in free motion at full speed. Stiffer servos (a real Dynamixel's position loop is much
stiffer) need a smaller margin: measure the lag of a ramp at the cap and set ~1.1 x it (and keep
it above the servo's static droop under the heaviest payload, or a loaded arm counts as
blocked). The gripper margin is fixed in metres because it is also the squeeze on a held
object: the sim gripper lags 1.1 mm at its cap (0.06 m/s); 1.5 mm closes at 0.86 x the cap
after a held object is pulled out, and squeezes with ~3 N per finger (sim kp 2000 N/m).

The workspace box is per controller (per arm); its floor should be the table top plus a margin
(config/anubis.yaml: `table.top_z`, `workspace.floor_margin`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pinocchio as pin

MAX_TARGET_DISTANCE = 10.0    # m: any target farther from the reference origin is nonsense (the arm reaches < 1 m)


@dataclass(frozen=True)
class SafetyLimits:
    # Fraction of the URDF joint velocity limits the driver may use; the per-tick joint step
    # is velocity * scale / servo rate.
    joint_velocity_scale: float = 0.8
    max_eef_speed: float = 0.5               # m/s of the commanded EEF setpoint
    max_eef_angular_speed: float = 2.0       # rad/s
    max_gripper_speed: float = 1.5           # normalized gripper units (0..1) per second
    # Workspace box for the EEF position, in the reference frame (m). One box per controller:
    # the arm driver sets each arm's from config/anubis.yaml (floor: the table top plus
    # workspace.floor_margin). The default floor is that of the default config, 2 cm above the table.
    workspace_min: tuple[float, float, float] = (-0.10, -0.70, -0.003)
    workspace_max: tuple[float, float, float] = (0.65, 0.70, 0.70)
    stale_timeout: float = 0.5               # s without a command -> hold (arm and gripper)
    bus_timeout: float = 0.2                 # s without a joint reading -> hold, report error
    ik_position_tolerance: float = 0.002     # m: beyond this the target counts as unreachable
    ik_rotation_tolerance: float = float(np.deg2rad(2.0))
    accepted_frames: tuple[str, ...] = field(default=("eef_reference", "base_link"))
    # Tracking margins (see the module docstring for how to choose them). The command never
    # leads the measured position of an arm joint by more than
    #   min(max_tracking_error [rad], max_tracking_lag [s] x the joint's speed cap [rad/s]),
    # so the margin shrinks with the cap when `joint_velocity_scale` is lowered (a servo closes a
    # gap at its own speed, whatever the cap: a fixed margin would be too large for a low cap).
    max_tracking_error: float = 0.05
    max_tracking_lag: float = 0.045
    # When the joints are held back, the EEF setpoint is re-based to within this of the
    # measured EEF pose (m, rad), so the interpolation does not run on either.
    max_eef_tracking_error: float = 0.05
    max_eef_tracking_rotation: float = 0.25
    # m of finger travel the gripper command may lead the fingers: it is also the squeeze on a
    # held object (servo stiffness x margin). A gripper held open by an object is a grasp, not a
    # blocked arm: it is never released by the blocked logic.
    max_gripper_tracking_error: float = 0.0015
    # s an arm may stay blocked (command held at the margin, the arm not following) before the
    # controller gives up the motion and holds the measured pose until a new command. 0.5 s is
    # ISO/TS 15066's limit for a transient contact.
    blocked_hold_time: float = 0.5
    # Target stamps: reject a target older than max_target_age (None: stale_timeout) or stamped
    # more than max_target_future in the future. check_stamps False disables both (tools with
    # unsynchronized clocks).
    max_target_age: float | None = None
    max_target_future: float = 0.05
    check_stamps: bool = True

    def __post_init__(self):
        try:
            lo = np.asarray(self.workspace_min, dtype=np.float64)
            hi = np.asarray(self.workspace_max, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"workspace box is malformed: min {self.workspace_min}, max {self.workspace_max}") from None
        if (lo.shape != (3,) or hi.shape != (3,) or not np.isfinite(lo).all() or not np.isfinite(hi).all()
                or np.any(lo >= hi)):
            raise ValueError(f"workspace box is empty or malformed: min {self.workspace_min}, max {self.workspace_max}")
        for name in ("joint_velocity_scale", "max_eef_speed", "max_eef_angular_speed", "max_gripper_speed",
                     "stale_timeout", "bus_timeout", "ik_position_tolerance", "ik_rotation_tolerance",
                     "max_tracking_error", "max_tracking_lag", "max_eef_tracking_error", "max_eef_tracking_rotation",
                     "max_gripper_tracking_error"):
            if not _positive_finite(getattr(self, name)):
                raise ValueError(f"safety limit {name} must be positive and finite, got {getattr(self, name)}")
        for name in ("blocked_hold_time", "max_target_future"):
            if not _non_negative_finite(getattr(self, name)):
                raise ValueError(f"safety limit {name} must be >= 0 and finite, got {getattr(self, name)}")
        if self.max_target_age is not None and not _positive_finite(self.max_target_age):
            raise ValueError(f"safety limit max_target_age must be positive and finite (or None), "
                             f"got {self.max_target_age}")
        if self.joint_velocity_scale > 1.0:
            raise ValueError(f"joint_velocity_scale {self.joint_velocity_scale} exceeds the URDF velocity limits (max 1)")

    @property
    def target_age_limit(self) -> float:
        """s: targets stamped longer ago than this are rejected."""
        return self.stale_timeout if self.max_target_age is None else self.max_target_age


def finite_number(value) -> float | None:
    """float(value) if it is a finite real number (not a bool), else None. Never raises."""
    if isinstance(value, (bool, np.bool_)):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return f if math.isfinite(f) else None


def _positive_finite(value) -> bool:
    f = finite_number(value)
    return f is not None and f > 0


def _non_negative_finite(value) -> bool:
    f = finite_number(value)
    return f is not None and f >= 0


def validate_pose(pose: np.ndarray) -> str | None:
    """Why a 4x4 target is unusable, or None when it is fine. Never raises, never overflows:
    magnitudes are bounded before any product is formed."""
    if pose.shape != (4, 4):
        return f"pose has shape {pose.shape}, expected (4, 4)"
    if not np.isfinite(pose).all():
        return "pose contains NaN or inf"
    if np.any(pose[3] != (0.0, 0.0, 0.0, 1.0)):
        return "pose's last row is not [0, 0, 0, 1]"
    r = pose[:3, :3]
    if np.abs(r).max() > 1.001:
        return "orientation is not a rotation (quaternion not normalized?)"
    if np.abs(r.T @ r - np.eye(3)).max() > 1e-3 or np.linalg.det(r) < 0:
        return "orientation is not a rotation (quaternion not normalized?)"
    distance = float(np.abs(pose[:3, 3]).max())
    if distance > MAX_TARGET_DISTANCE:
        return f"position is {distance:.3g} m from the reference origin (more than {MAX_TARGET_DISTANCE:g} m)"
    return None


def orthonormalized(rotation: np.ndarray) -> np.ndarray:
    """The rotation nearest to an almost-rotation (what validate_pose accepts), so that the IK's
    stricter check holds for every target."""
    u, _, vt = np.linalg.svd(rotation)
    r = u @ vt
    if np.linalg.det(r) < 0:       # cannot happen for validate_pose's inputs; kept for safety
        u[:, -1] *= -1
        r = u @ vt
    return r


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


def limit_lead(previous: np.ndarray, proposed: np.ndarray, measured: np.ndarray,
               margin) -> tuple[np.ndarray, np.ndarray]:
    """Keep a command within `margin` of the measured position without ever moving it away.

    `proposed` is `previous` plus at most one tick's step. Inside the band measured +- margin it
    passes; a step that would leave the band stops at its edge. A command that is already
    outside (the arm was pushed away from it) may stay or move back towards the band, never
    further out. So the command never steps more than `proposed` does, and its lead never grows
    beyond max(margin, its previous lead). Returns (command, mask of the entries the band cut).
    """
    low = np.minimum(measured - margin, previous)
    high = np.maximum(measured + margin, previous)
    out = np.minimum(np.maximum(proposed, low), high)
    return out, out != proposed
