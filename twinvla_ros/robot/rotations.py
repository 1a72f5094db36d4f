"""Rotation conversions between matrices, the 6D representation and quaternions (numpy).

Conventions, stated once:
- 6D = the first two COLUMNS of the rotation matrix, concatenated: [R[:, 0], R[:, 1]] (TwinVLA).
  Back to a matrix by Gram-Schmidt: x = normalize(c0), y = normalize(c1 - (x.c1) x), z = x cross y.
- Quaternions come in two orders and every function names its order: `xyzw` (ROS messages,
  scipy) and `wxyz` (MuJoCo, pinocchio's coeffs are xyzw too). Returned quaternions are unit
  length with w >= 0.
Every function is batched over leading dimensions: (..., 3, 3) <-> (..., 6) <-> (..., 4).
"""
from __future__ import annotations

import numpy as np

_EPS = 1e-9


def _as_float_array(x, trailing: tuple[int, ...], name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.shape[a.ndim - len(trailing):] != trailing:
        raise ValueError(f"{name} must have trailing shape {trailing}, got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf")
    return a


def _normalize(v: np.ndarray, name: str) -> np.ndarray:
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    if np.any(norm < _EPS):
        raise ValueError(f"{name} has a (near) zero-length vector and defines no rotation")
    return v / norm


def matrix_to_rot6d(matrix) -> np.ndarray:
    """(..., 3, 3) -> (..., 6): [first column, second column]."""
    m = _as_float_array(matrix, (3, 3), "rotation matrix")
    return np.concatenate([m[..., :, 0], m[..., :, 1]], axis=-1)


def rot6d_to_matrix(rot6d) -> np.ndarray:
    """(..., 6) -> (..., 3, 3), re-orthonormalizing by Gram-Schmidt (column 0 keeps its direction)."""
    d = _as_float_array(rot6d, (6,), "6D rotation")
    x = _normalize(d[..., 0:3], "6D rotation (first column)")
    c1 = d[..., 3:6]
    y = _normalize(c1 - np.sum(x * c1, axis=-1, keepdims=True) * x,
                   "6D rotation (second column parallel to the first)")
    z = np.cross(x, y)
    return np.stack([x, y, z], axis=-1)


def quat_xyzw_to_matrix(quat) -> np.ndarray:
    """(..., 4) unit-normalized first; a zero quaternion is an error."""
    q = _normalize(_as_float_array(quat, (4,), "quaternion"), "quaternion")
    x, y, z, w = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    m = np.empty(q.shape[:-1] + (3, 3))
    m[..., 0, 0] = 1 - 2 * (y * y + z * z)
    m[..., 0, 1] = 2 * (x * y - z * w)
    m[..., 0, 2] = 2 * (x * z + y * w)
    m[..., 1, 0] = 2 * (x * y + z * w)
    m[..., 1, 1] = 1 - 2 * (x * x + z * z)
    m[..., 1, 2] = 2 * (y * z - x * w)
    m[..., 2, 0] = 2 * (x * z - y * w)
    m[..., 2, 1] = 2 * (y * z + x * w)
    m[..., 2, 2] = 1 - 2 * (x * x + y * y)
    return m


def matrix_to_quat_xyzw(matrix) -> np.ndarray:
    """(..., 3, 3) -> (..., 4) xyzw with w >= 0.

    Shepperd's method: branch on the largest of (trace, diagonal) so the square root never
    sees a small argument, which keeps full precision for 180-degree rotations.
    """
    m = _as_float_array(matrix, (3, 3), "rotation matrix")
    flat = m.reshape(-1, 3, 3)
    out = np.empty((flat.shape[0], 4))
    trace = np.trace(flat, axis1=1, axis2=2)
    diag = np.diagonal(flat, axis1=1, axis2=2)
    case = np.argmax(np.concatenate([trace[:, None], diag], axis=1), axis=1)
    for c in range(4):
        idx = np.nonzero(case == c)[0]
        if idx.size == 0:
            continue
        r = flat[idx]
        if c == 0:
            s = 2.0 * np.sqrt(1.0 + trace[idx])
            out[idx, 3] = 0.25 * s
            out[idx, 0] = (r[:, 2, 1] - r[:, 1, 2]) / s
            out[idx, 1] = (r[:, 0, 2] - r[:, 2, 0]) / s
            out[idx, 2] = (r[:, 1, 0] - r[:, 0, 1]) / s
        else:
            i = c - 1
            j, k = (i + 1) % 3, (i + 2) % 3
            s = 2.0 * np.sqrt(1.0 + r[:, i, i] - r[:, j, j] - r[:, k, k])
            out[idx, i] = 0.25 * s
            out[idx, 3] = (r[:, k, j] - r[:, j, k]) / s
            out[idx, j] = (r[:, j, i] + r[:, i, j]) / s
            out[idx, k] = (r[:, k, i] + r[:, i, k]) / s
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    out[out[:, 3] < 0] *= -1.0
    return out.reshape(m.shape[:-2] + (4,))


def quat_xyzw_to_wxyz(quat) -> np.ndarray:
    q = _as_float_array(quat, (4,), "quaternion")
    return np.concatenate([q[..., 3:4], q[..., 0:3]], axis=-1)


def quat_wxyz_to_xyzw(quat) -> np.ndarray:
    q = _as_float_array(quat, (4,), "quaternion")
    return np.concatenate([q[..., 1:4], q[..., 0:1]], axis=-1)


def rot6d_to_quat_xyzw(rot6d) -> np.ndarray:
    return matrix_to_quat_xyzw(rot6d_to_matrix(rot6d))


def quat_xyzw_to_rot6d(quat) -> np.ndarray:
    return matrix_to_rot6d(quat_xyzw_to_matrix(quat))


def rotation_angle_between(a, b) -> np.ndarray:
    """Geodesic angle (radians) between rotation matrices a and b, batched."""
    ma = _as_float_array(a, (3, 3), "rotation matrix")
    mb = _as_float_array(b, (3, 3), "rotation matrix")
    rel = np.swapaxes(ma, -1, -2) @ mb
    cos = (np.trace(rel, axis1=-2, axis2=-1) - 1.0) / 2.0
    # atan2 of (sin, cos) instead of arccos(cos): accurate for small angles too.
    axis = np.stack([rel[..., 2, 1] - rel[..., 1, 2], rel[..., 0, 2] - rel[..., 2, 0],
                     rel[..., 1, 0] - rel[..., 0, 1]], axis=-1)
    sin = np.linalg.norm(axis, axis=-1) / 2.0
    return np.arctan2(sin, cos)
