"""MuJoCo simulation of Anubis: the model (scene.py), the runtime (world.py), the tasks'
success checks (tasks.py) and their scripted experts (expert.py).

Layer 1: pure Python, no ROS import. The sim node and the sim arm bus sit on top of
`SimWorld`.

Headless rendering: MuJoCo picks its OpenGL backend from MUJOCO_GL when `mujoco` is first
imported, so it is chosen here, before that import. A value the user set is respected
(`setdefault`); otherwise EGL (Mesa's llvmpipe on a machine without a GPU) when libEGL is
present, else OSMesa. If mujoco was imported earlier by someone else, MUJOCO_GL is already
fixed and this has no effect.
"""
from __future__ import annotations

import ctypes.util
import os


def _default_gl_backend() -> str:
    if ctypes.util.find_library("EGL"):
        return "egl"
    if ctypes.util.find_library("OSMesa"):
        return "osmesa"
    return "egl"  # neither found: let MuJoCo report the EGL failure when rendering


os.environ.setdefault("MUJOCO_GL", _default_gl_backend())

from twinvla_ros.sim.world import (  # noqa: E402  (MUJOCO_GL must be set first)
    CAMERAS,
    CameraIntrinsics,
    SimConfig,
    SimWorld,
)
from twinvla_ros.sim.scene import TASKS  # noqa: E402
from twinvla_ros.sim.tasks import task_success  # noqa: E402
from twinvla_ros.sim.expert import ExpertTargets, ScriptedExpert, make_expert  # noqa: E402

__all__ = ["CAMERAS", "CameraIntrinsics", "ExpertTargets", "ScriptedExpert", "SimConfig", "SimWorld", "TASKS",
           "make_expert", "task_success"]
