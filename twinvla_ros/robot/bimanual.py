"""The 20-D bimanual vector used everywhere inside the package (TwinVLA's state/action layout).

    [L xyz (3), L 6D rotation (6), L gripper (1), R xyz (3), R 6D rotation (6), R gripper (1)]

Positions are metres in the EEF reference frame, 6D = first two rotation-matrix columns
(see rotations.py), gripper 0 = closed .. 1 = open. Batched over leading dimensions.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from twinvla_ros.robot.rotations import matrix_to_rot6d, rot6d_to_matrix

ARMS = ("left", "right")
ARM_DIM = 10
BIMANUAL_DIM = 2 * ARM_DIM
POSITION = slice(0, 3)
ROT6D = slice(3, 9)
GRIPPER = 9


def arm_slice(side: str) -> slice:
    """Where one arm's 10 values sit in the 20-D vector."""
    if side not in ARMS:
        raise ValueError(f"arm must be one of {ARMS}, got {side!r}")
    start = ARMS.index(side) * ARM_DIM
    return slice(start, start + ARM_DIM)


@dataclass(frozen=True)
class ArmPose:
    """One arm's EEF pose and gripper: position (..., 3), rotation (..., 3, 3), gripper (...)."""

    position: np.ndarray
    rotation: np.ndarray
    gripper: np.ndarray

    @classmethod
    def from_vector(cls, vector) -> "ArmPose":
        v = np.asarray(vector, dtype=np.float64)
        if v.shape[-1:] != (ARM_DIM,):
            raise ValueError(f"arm vector must have trailing size {ARM_DIM}, got shape {v.shape}")
        if not np.all(np.isfinite(v)):
            raise ValueError("arm vector contains NaN or inf")
        return cls(v[..., POSITION].copy(), rot6d_to_matrix(v[..., ROT6D]), v[..., GRIPPER].copy())

    @classmethod
    def from_matrix(cls, transform, gripper) -> "ArmPose":
        t = np.asarray(transform, dtype=np.float64)
        if t.shape[-2:] != (4, 4):
            raise ValueError(f"transform must have trailing shape (4, 4), got {t.shape}")
        return cls(t[..., :3, 3].copy(), t[..., :3, :3].copy(), np.asarray(gripper, dtype=np.float64))

    def to_vector(self) -> np.ndarray:
        gripper = np.asarray(self.gripper, dtype=np.float64)[..., None]
        return np.concatenate([np.asarray(self.position, dtype=np.float64),
                               matrix_to_rot6d(self.rotation), gripper], axis=-1)

    def matrix(self) -> np.ndarray:
        position = np.asarray(self.position, dtype=np.float64)
        out = np.zeros(position.shape[:-1] + (4, 4))
        out[..., :3, :3] = self.rotation
        out[..., :3, 3] = position
        out[..., 3, 3] = 1.0
        return out


def pack(left: ArmPose, right: ArmPose) -> np.ndarray:
    """Two arms -> (..., 20)."""
    return np.concatenate([left.to_vector(), right.to_vector()], axis=-1)


def unpack(vector) -> tuple[ArmPose, ArmPose]:
    """(..., 20) -> (left, right); the 6D parts are re-orthonormalized."""
    v = np.asarray(vector, dtype=np.float64)
    if v.shape[-1:] != (BIMANUAL_DIM,):
        raise ValueError(f"bimanual vector must have trailing size {BIMANUAL_DIM}, got shape {v.shape}")
    return ArmPose.from_vector(v[..., arm_slice("left")]), ArmPose.from_vector(v[..., arm_slice("right")])
