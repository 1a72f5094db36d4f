"""Helpers for the MuJoCo sim tests: a small IK of the tests' own (damped least squares on
MuJoCo Jacobians, on a private MjData so the world under test is untouched).

A plain module, not conftest.py: test/ has other conftest.py files, and `from conftest import`
would pick whichever was imported first."""
from __future__ import annotations

import math

import mujoco
import numpy as np

from twinvla_ros.sim import SimWorld

ARM_JOINTS = {side: [f"{side}_joint{i}" for i in range(1, 7)] for side in ("left", "right")}


def rotation_error(r_current: np.ndarray, r_target: np.ndarray) -> np.ndarray:
    """Axis-angle vector (world frame) that rotates r_current onto r_target."""
    r = r_target @ r_current.T
    angle = math.acos(max(-1.0, min(1.0, (np.trace(r) - 1) / 2)))
    if angle < 1e-9:
        return np.zeros(3)
    axis = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])
    n = np.linalg.norm(axis)
    if n < 1e-9:   # angle ~ pi: any axis from the symmetric part
        w, v = np.linalg.eigh((r + np.eye(3)) / 2)
        axis = v[:, -1]
        n = 1.0
    return axis / n * angle


def solve_ik(world: SimWorld, side: str, body: str, pos, rot=None, q0=None,
             iterations: int = 300, damping: float = 1e-3):
    """Joint positions (6,) of `side`'s arm putting `body` at world `pos` (and `rot`)."""
    m = world.model
    d = mujoco.MjData(m)
    with world._lock:
        d.qpos[:] = world.data.qpos
    qadr = np.array([m.joint(j).qposadr[0] for j in ARM_JOINTS[side]])
    dadr = np.array([m.joint(j).dofadr[0] for j in ARM_JOINTS[side]])
    lo = m.jnt_range[[m.joint(j).id for j in ARM_JOINTS[side]], 0]
    hi = m.jnt_range[[m.joint(j).id for j in ARM_JOINTS[side]], 1]
    if q0 is not None:
        d.qpos[qadr] = q0
    body_id = m.body(body).id
    jacp, jacr = np.zeros((3, m.nv)), np.zeros((3, m.nv))
    err = np.inf
    for _ in range(iterations):
        mujoco.mj_kinematics(m, d)
        mujoco.mj_comPos(m, d)
        e = np.asarray(pos) - d.xpos[body_id]
        mujoco.mj_jacBody(m, d, jacp, jacr, body_id)
        jac = jacp[:, dadr]
        if rot is not None:
            e = np.concatenate([e, 0.3 * rotation_error(d.xmat[body_id].reshape(3, 3), rot)])
            jac = np.vstack([jac, 0.3 * jacr[:, dadr]])
        err = np.linalg.norm(e)
        if err < 1e-6:
            break
        dq = jac.T @ np.linalg.solve(jac @ jac.T + damping * np.eye(len(e)), e)
        d.qpos[qadr] = np.clip(d.qpos[qadr] + dq, lo, hi)
    return d.qpos[qadr].copy(), err


def top_down_rotation(yaw: float) -> np.ndarray:
    """Tool z pointing down (world -z), fingers closing along (cos yaw, sin yaw, 0)."""
    x = np.array([math.cos(yaw), math.sin(yaw), 0.0])
    z = np.array([0.0, 0.0, -1.0])
    return np.column_stack([x, np.cross(z, x), z])


def solve_top_down(world: SimWorld, side: str, pos, yaws=None, q0=(0, 0, 1.2, 1.6, 0, 0)):
    """Best top-down IK over candidate gripper yaws: (q, error, yaw)."""
    if yaws is None:
        yaws = np.arange(-math.pi, math.pi, math.pi / 4)
    best = None
    for yaw in yaws:
        q, err = solve_ik(world, side, f"{side}_eef", pos, top_down_rotation(yaw), q0=q0)
        if best is None or err < best[1]:
            best = (q, err, yaw)
    return best


def settle(world: SimWorld, seconds: float) -> None:
    world.step(int(round(seconds / world.config.timestep)))
