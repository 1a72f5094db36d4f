"""Per-arm forward and inverse kinematics from the URDF (pinocchio).

Poses are 4x4 homogeneous transforms of the arm's EEF (grasp point) frame expressed in the
description's reference frame (see config/anubis.yaml). IK solves for an absolute pose:
Levenberg-Marquardt-damped least squares on the SE(3) error, joint limits enforced by
projection after every step, warm-started from the caller's seed, with random restarts when
the seed does not lead to the target. It always returns the best configuration it found and
says whether the target was reached and with what residual: a nearest reachable solution,
never a silent wrong one.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pinocchio as pin
from scipy.linalg.lapack import dposv

from twinvla_ros.robot.description import RobotDescription, load_description


class IKResult(NamedTuple):
    q: np.ndarray                 # (6,) joint positions within limits
    reached: bool                 # residual within the requested tolerances
    position_error: float         # m, between the target and FK(q)
    rotation_error: float         # rad
    iterations: int               # over all attempts
    attempts: int                 # 1 = the seed was enough


def _validated_pose(pose, name: str = "pose") -> np.ndarray:
    t = np.asarray(pose, dtype=np.float64)
    if t.shape != (4, 4):
        raise ValueError(f"{name} must be a 4x4 transform, got shape {t.shape}")
    if not np.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf")
    # Checked in scalar Python: numpy's per-call overhead on a 3x3 matrix costs more than an
    # IK iteration. Columns of unit length, mutually orthogonal, right-handed.
    (a, b, c), (d, e, f), (g, h, i) = t[:3, :3].tolist()
    det = a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g)
    gram = (a * a + d * d + g * g - 1, b * b + e * e + h * h - 1, c * c + f * f + i * i - 1,
            a * b + d * e + g * h, a * c + d * f + g * i, b * c + e * f + h * i)
    if abs(det - 1.0) > 1e-4 or max(map(abs, gram)) > 1e-4:
        raise ValueError(f"{name} rotation is not orthonormal (det {det:.4f})")
    return t


class ArmKinematics:
    """FK/IK of one arm: six joints from the robot base to the arm's EEF frame."""

    def __init__(self, description: RobotDescription, side: str, *, seed: int = 0,
                 rotation_weight: float = 0.3):
        arm = description.arms[side]
        full = pin.buildModelFromUrdf(str(description.urdf))
        keep = {full.getJointId(name) for name in arm.joint_names}
        if len(keep) != 6 or full.njoints in keep:  # getJointId returns njoints when missing
            raise ValueError(f"URDF {description.urdf} lacks some of {arm.joint_names}")
        lock = [j for j in range(1, full.njoints) if j not in keep]
        self.model = pin.buildReducedModel(full, lock, pin.neutral(full))
        self.data = self.model.createData()
        if tuple(self.model.names[1:]) != arm.joint_names:
            raise ValueError(f"unexpected joint order {tuple(self.model.names[1:])}")
        self.side = side
        self.joint_names = arm.joint_names
        # Limits come from the config (which the URDF is generated from), not from code.
        self.lower = arm.lower.copy()
        self.upper = arm.upper.copy()
        self.home = arm.home.copy()
        self._tip = self.model.getFrameId(arm.tip_frame)
        ref = self.model.getFrameId(description.reference_frame)
        pin.framesForwardKinematics(self.model, self.data, pin.neutral(self.model))
        # The reference frame hangs off the base, so it is constant: precompute its inverse.
        self._base_to_ref = self.data.oMf[ref].inverse()
        self._ref_to_base = self.data.oMf[ref].copy()
        # Rotation errors are scaled into metres so one damping term serves both: this weight
        # is what "nearest" means for an unreachable target (1 rad counts as 0.3 m).
        self._weights = np.array([1.0, 1.0, 1.0, rotation_weight, rotation_weight, rotation_weight])
        self._weight_column = self._weights[:, None]
        self._rng = np.random.default_rng(seed)

    @classmethod
    def for_arm(cls, side: str, description: RobotDescription | None = None, **kwargs) -> "ArmKinematics":
        return cls(description or load_description(), side, **kwargs)

    def reference_in_base(self) -> np.ndarray:
        """Pose (4, 4) of the reference frame in the robot base frame."""
        return self._ref_to_base.homogeneous

    def _check_q(self, q) -> np.ndarray:
        q = np.asarray(q, dtype=np.float64)
        if q.shape != (6,):
            raise ValueError(f"{self.side} arm joint vector must have 6 entries, got shape {q.shape}")
        if not np.isfinite(q).all():
            raise ValueError(f"{self.side} arm joint vector contains NaN or inf")
        return q

    def within_limits(self, q, tolerance: float = 1e-9) -> bool:
        q = self._check_q(q)
        return bool(np.all(q >= self.lower - tolerance) and np.all(q <= self.upper + tolerance))

    def _fk_base(self, q: np.ndarray) -> pin.SE3:
        pin.forwardKinematics(self.model, self.data, q)
        return pin.updateFramePlacement(self.model, self.data, self._tip)

    def fk(self, q) -> np.ndarray:
        """Joint positions (6,) -> EEF pose (4, 4) in the reference frame."""
        return (self._base_to_ref * self._fk_base(self._check_q(q))).homogeneous

    def ik(self, target, q_seed=None, *, position_tolerance: float = 1e-3,
           rotation_tolerance: float = np.deg2rad(1.0), max_iterations: int = 60,
           max_attempts: int = 40) -> IKResult:
        """EEF pose (4, 4) in the reference frame -> joint positions.

        q_seed: where to start (the current joints, for a warm start); None starts at home.
        Further attempts start from random configurations within the limits. Each descent
        iterates to 1/20 of the position tolerance (50 um by default, finer than the encoders
        resolve at full reach) so successive warm solves of a moving target do not drift.
        """
        target_base = self._ref_to_base * pin.SE3(_validated_pose(target, "IK target"))
        seed = self.home if q_seed is None else self._check_q(q_seed)
        stop_cost = min((0.05 * position_tolerance) ** 2, 1e-8)
        best = None
        iterations = 0
        for attempt in range(1, max_attempts + 1):
            if attempt == 1:
                q0 = np.minimum(np.maximum(seed, self.lower), self.upper)
            else:
                q0 = self._rng.uniform(self.lower, self.upper)
            solution = self._solve(target_base, q0, max_iterations, stop_cost)
            iterations += solution[-1]
            if best is None or solution[1] < best[1]:
                best = solution
            q, _, pos_err, rot_err, _ = best
            if pos_err <= position_tolerance and rot_err <= rotation_tolerance:
                return IKResult(q, True, pos_err, rot_err, iterations, attempt)
        q, _, pos_err, rot_err, _ = best
        return IKResult(q, False, pos_err, rot_err, iterations, max_attempts)

    def _solve(self, target_base: pin.SE3, q: np.ndarray, max_iterations: int, stop_cost: float):
        """One damped least-squares descent.

        Returns (q, weighted squared error, position error m, rotation error rad, iterations)
        for the best configuration visited.
        """
        w = self._weights
        best_q, best_cost, best_err = q, np.inf, None
        stalled = 0
        for it in range(1, max_iterations + 1):
            current = self._fk_base(q)
            # Error in the EEF's local frame, and the Jacobian of that error w.r.t. q.
            err_se3 = target_base.actInv(current)
            err = pin.log6(err_se3).vector * w
            cost = float(err @ err)
            stalled = stalled + 1 if cost >= best_cost * (1 - 1e-3) else 0
            if cost < best_cost:
                best_q, best_cost, best_err = q, cost, err_se3
            if cost < stop_cost or stalled >= 8:
                break
            jac = pin.computeFrameJacobian(self.model, self.data, q, self._tip, pin.LOCAL)
            # d log6 / d pose is the identity near the solution; its exact Jacobian only
            # matters for large errors (beyond ~1 cm here).
            if cost > 1e-4:
                jac = pin.Jlog6(err_se3) @ jac
            jac = jac * self._weight_column
            # Levenberg-Marquardt damping grows with the error: large steps when far, exact
            # Gauss-Newton when close; the constant keeps singular poses well conditioned.
            damping = 1e-6 + 0.5 * cost
            q_next = q - self._damped_step(jac, err, damping)
            clipped = np.minimum(np.maximum(q_next, self.lower), self.upper)
            blocked = clipped != q_next
            if blocked.any():
                # Joints that would cross a limit are held there and the others re-solve the
                # error without them; plain clipping would stall the descent at the limit.
                q_next = q - self._damped_step(jac * ~blocked, err, damping)
                clipped = np.minimum(np.maximum(q_next, self.lower), self.upper)
            q = clipped
        # best_err = target^-1 * FK(best_q): its translation norm is the position error, the
        # angle of its rotation the orientation error.
        return (best_q, best_cost, float(np.linalg.norm(best_err.translation)),
                float(np.linalg.norm(pin.log3(best_err.rotation))), it)

    @staticmethod
    def _damped_step(jac: np.ndarray, err: np.ndarray, damping: float) -> np.ndarray:
        """J^T (J J^T + damping I)^-1 err; dposv (Cholesky) costs a fraction of numpy.linalg.solve here."""
        normal = jac @ jac.T
        normal.flat[::7] += damping
        _, solved, _ = dposv(normal, err)
        return jac.T @ solved
