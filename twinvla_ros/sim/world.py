"""SimWorld: the runtime of the MuJoCo sim of Anubis (physics, servos, cameras, object resets).

Layer 1 (no ROS). The sim node steps it in real time and renders the three cameras; the sim
arm bus reads joint states and writes joint targets through it.

Threads: one thread steps physics and exchanges joint targets/states, another renders. Every
access to MjData holds `self._lock`. Rendering holds it only while MuJoCo copies the geometry
of the current instant into the cameras' scenes (`mjv_updateScene`, tens of microseconds);
the rasterisation (`mjr_render` + `mjr_readPixels`, milliseconds, software GL on this CPU) runs
after the lock is released, under a separate render lock. A full MjData copy per frame would
cost more than the scene update and still need the lock to take it, and rendering under the
physics lock would stall the physics thread for a whole frame (12-30 ms for three cameras at
240x320 on two shared cores), breaking real time. MuJoCo's C calls release the GIL, so the two
threads overlap: measured, physics kept real time (worst lag 9 ms) while another thread
rendered the three cameras continuously at ~55 frames/s.

The OpenGL context is made current for each render call and released afterwards, so any
thread may render (one at a time) and close() works from any thread.
"""
from __future__ import annotations

import atexit
import dataclasses
import math
import os
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")   # normally already chosen by twinvla_ros.sim
import mujoco  # noqa: E402

from twinvla_ros.robot.cameras import CAMERAS, CameraIntrinsics  # noqa: E402
from twinvla_ros.sim.scene import TABLE_TOP_Z, build_model, task_spec  # noqa: E402



@dataclass
class SimConfig:
    task: str = "handover_box"        # see twinvla_ros.sim.scene.TASKS
    timestep: float = 0.002           # s
    image_height: int = 240
    image_width: int = 320
    seed: int = 0                     # object placement of the first reset
    urdf_path: Path | None = None     # default: twinvla_ros.paths.urdf_path()
    antialias: bool = False           # 4x multisampling: smoother edges, ~2.5x slower rendering


def _gl_context_class():
    backend = os.environ.get("MUJOCO_GL", "").lower()
    if backend == "egl":
        from mujoco.egl import GLContext
    elif backend == "osmesa":
        from mujoco.osmesa import GLContext
    else:
        from mujoco.gl_context import GLContext
    return GLContext


def _close_at_exit(ref) -> None:
    renderer = ref()
    if renderer is not None:
        renderer.close()


class _Renderer:
    """One offscreen GL context, one MjrContext, one MjvScene per camera."""

    def __init__(self, model: mujoco.MjModel, width: int, height: int, camera_ids: dict[str, int]):
        self.width, self.height = width, height
        self._gl = None
        self._mjr = None
        try:
            self._gl = _gl_context_class()(width, height)
        except Exception as exc:  # noqa: BLE001  (EGL/OSMesa report failures in many ways)
            backend = os.environ.get("MUJOCO_GL")
            raise RuntimeError(
                f"cannot create a headless OpenGL context with MUJOCO_GL={backend}: {exc}. "
                "Install libegl1 + libgl1-mesa-dri (egl) or libosmesa6 and set MUJOCO_GL=osmesa "
                "before importing twinvla_ros.sim."
            ) from exc
        # Free the context before mujoco.egl's atexit eglTerminate (atexit runs LIFO).
        atexit.register(_close_at_exit, weakref.ref(self))
        self._gl.make_current()
        try:
            self._mjr = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_100)
            mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._mjr)
        finally:
            self._release()
        self._rect = mujoco.MjrRect(0, 0, width, height)
        self._option = mujoco.MjvOption()
        self._option.flags[mujoco.mjtVisFlag.mjVIS_TEXTURE] = True
        self._pert = mujoco.MjvPerturb()
        self.scenes: dict[str, mujoco.MjvScene] = {}
        self.cameras: dict[str, mujoco.MjvCamera] = {}
        for name, cam_id in camera_ids.items():
            scene = mujoco.MjvScene(model, maxgeom=max(200, 4 * model.ngeom))
            for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION,
                         mujoco.mjtRndFlag.mjRND_SKYBOX, mujoco.mjtRndFlag.mjRND_FOG,
                         mujoco.mjtRndFlag.mjRND_HAZE):
                scene.flags[flag] = False
            cam = mujoco.MjvCamera()
            cam.type = mujoco.mjtCamera.mjCAMERA_FIXED
            cam.fixedcamid = cam_id
            self.scenes[name] = scene
            self.cameras[name] = cam
        self._buffer = np.empty((height, width, 3), dtype=np.uint8)

    def update(self, model: mujoco.MjModel, data: mujoco.MjData, name: str) -> None:
        mujoco.mjv_updateScene(model, data, self._option, self._pert, self.cameras[name],
                               mujoco.mjtCatBit.mjCAT_ALL, self.scenes[name])

    def draw(self, names) -> dict[str, np.ndarray]:
        if self._mjr is None:
            raise RuntimeError("render called after close()")
        out = {}
        self._gl.make_current()
        try:
            for name in names:
                mujoco.mjr_render(self._rect, self.scenes[name], self._mjr)
                mujoco.mjr_readPixels(self._buffer, None, self._rect, self._mjr)
                out[name] = np.ascontiguousarray(self._buffer[::-1])   # GL rows are bottom-up
        finally:
            self._release()
        return out

    def _release(self) -> None:
        """Un-bind the context from this thread so another thread may make it current."""
        backend = os.environ.get("MUJOCO_GL", "").lower()
        if backend == "egl":
            from mujoco.egl import EGL_DISPLAY
            from mujoco.egl import egl_ext as EGL
            EGL.eglMakeCurrent(EGL_DISPLAY, EGL.EGL_NO_SURFACE, EGL.EGL_NO_SURFACE, EGL.EGL_NO_CONTEXT)
        elif backend == "osmesa":
            from OpenGL import GL, osmesa
            osmesa.OSMesaMakeCurrent(None, None, GL.GL_FLOAT, 0, 0)

    def __del__(self):
        self.close()

    def close(self) -> None:
        if self._mjr is not None:
            self._gl.make_current()
            self._mjr.free()
            self._mjr = None
        if self._gl is not None:
            self._gl.free()
            self._gl = None


class SimWorld:
    """Anubis at a table in MuJoCo. See the module docstring for the threading contract."""

    def __init__(self, config: SimConfig | None = None):
        config = dataclasses.replace(config) if config is not None else SimConfig()
        task_spec(config.task)   # ValueError listing the tasks
        if not (math.isfinite(config.timestep) and config.timestep > 0):
            raise ValueError(f"timestep must be > 0, got {config.timestep}")
        if config.image_width < 1 or config.image_height < 1:
            raise ValueError(f"bad image size {config.image_height}x{config.image_width}")
        self.config = config
        self.model, self.info = build_model(
            config.task, urdf=config.urdf_path, timestep=config.timestep,
            image_width=config.image_width, image_height=config.image_height,
            antialias=config.antialias)
        self.data = mujoco.MjData(self.model)
        self._lock = threading.RLock()
        self._render_lock = threading.Lock()
        self._renderer: _Renderer | None = None
        self._closed = False
        self._torque = True
        self._kinematics_stale = False

        m = self.model
        self.joint_names: list[str] = list(self.info.joint_names)
        self._qadr = np.array([m.joint(n).qposadr[0] for n in self.joint_names])
        self._dadr = np.array([m.joint(n).dofadr[0] for n in self.joint_names])
        self._act = np.array([m.actuator(n).id for n in self.joint_names])
        self._index = {n: i for i, n in enumerate(self.joint_names)}
        self._ctrl_lo = m.actuator_ctrlrange[self._act, 0].copy()
        self._ctrl_hi = m.actuator_ctrlrange[self._act, 1].copy()
        self._home = np.array([self.info.home[n] for n in self.joint_names])
        self._mimic = {n: m.joint(f"{n}_mimic").qposadr[0] for n in self.joint_names if n.endswith("_gripper")}
        self._objects = {o.name: o for o in self.info.task.objects}
        self._obj_qadr = {name: m.joint(name).qposadr[0] for name in self._objects}
        self._cam_ids = {c: m.camera(c).id for c in CAMERAS}
        self._seeds = np.random.default_rng(config.seed)
        self.reset(config.seed)

    # --- physics ------------------------------------------------------------------------------
    @property
    def time(self) -> float:
        """Simulated seconds since construction (monotonic: reset() does not rewind it)."""
        return float(self.data.time)

    @property
    def torque_enabled(self) -> bool:
        return self._torque

    def step(self, n: int = 1) -> None:
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if n == 0:
            return
        with self._lock:
            mujoco.mj_step(self.model, self.data, nstep=int(n))
            self._kinematics_stale = True

    def _sync_kinematics(self) -> None:
        # mj_step leaves body/camera poses at the start of its last step; bring them to the
        # current qpos for readers (frame_pose, render). Does not affect the dynamics.
        if self._kinematics_stale:
            mujoco.mj_kinematics(self.model, self.data)
            mujoco.mj_camlight(self.model, self.data)
            self._kinematics_stale = False

    def set_joint_targets(self, targets: dict[str, float]) -> None:
        """Position targets: radians for arm joints, metres of finger travel for grippers
        (0 closed .. stroke open). Clamped to the joint limits. Unknown names or non-finite
        values raise ValueError and change nothing."""
        idx, values = [], []
        for name, value in targets.items():
            if name not in self._index:
                raise ValueError(f"unknown joint {name!r}; joints: {', '.join(self.joint_names)}")
            try:
                v = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"target for {name} is not a number: {value!r}") from None
            if not math.isfinite(v):
                raise ValueError(f"target for {name} is not finite: {v}")
            idx.append(self._index[name])
            values.append(v)
        if not idx:
            return
        idx_a = np.array(idx)
        clamped = np.clip(np.array(values), self._ctrl_lo[idx_a], self._ctrl_hi[idx_a])
        with self._lock:
            self.data.ctrl[self._act[idx_a]] = clamped

    def joint_targets(self) -> np.ndarray:
        with self._lock:
            return self.data.ctrl[self._act].copy()

    def set_torque(self, enabled: bool) -> None:
        """Torque off: the servos (and their gravity compensation) produce no force and the
        arms sag. Torque on: like a Dynamixel, hold the present position."""
        enabled = bool(enabled)
        with self._lock:
            if enabled == self._torque:
                return
            m, d = self.model, self.data
            if enabled:
                q = d.qpos[self._qadr]
                d.ctrl[self._act] = np.clip(q, self._ctrl_lo, self._ctrl_hi)
                m.opt.disableflags &= ~int(mujoco.mjtDisableBit.mjDSBL_ACTUATION)
            else:
                m.opt.disableflags |= int(mujoco.mjtDisableBit.mjDSBL_ACTUATION)
            self._torque = enabled

    def joint_state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(positions, velocities, efforts) in joint_names order. Effort is the servo's output
        (N m, or N for a gripper), gravity compensation included; zero with torque off."""
        with self._lock:
            d = self.data
            return (d.qpos[self._qadr].copy(), d.qvel[self._dadr].copy(),
                    d.qfrc_actuator[self._dadr].copy())

    def frame_pose(self, body_name: str) -> np.ndarray:
        """4x4 world pose of a body (every URDF link is one)."""
        body_id = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, body_name)
        if body_id < 0:
            raise ValueError(f"no body named {body_name!r}")
        t = np.eye(4)
        with self._lock:
            self._sync_kinematics()
            t[:3, :3] = self.data.xmat[body_id].reshape(3, 3)
            t[:3, 3] = self.data.xpos[body_id]
        return t

    # --- objects ------------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> dict[str, np.ndarray]:
        """Robot to home (grippers open, torque state unchanged), objects to random poses on the
        table drawn from `seed` (same seed -> bit-identical poses; None -> the next seed of a
        sequence started from config.seed). Returns the object poses (pos + quat wxyz)."""
        if seed is None:
            seed = int(self._seeds.integers(0, 2**31 - 1))
        rng = np.random.default_rng(int(seed))
        placements = self._sample_placements(rng)
        with self._lock:
            m, d = self.model, self.data
            t = d.time
            mujoco.mj_resetData(m, d)
            d.time = t
            d.qpos[self._qadr] = self._home
            for name, adr in self._mimic.items():
                d.qpos[adr] = self._home[self._index[name]]
            d.ctrl[self._act] = self._home
            for name, pose in placements.items():
                d.qpos[self._obj_qadr[name]:self._obj_qadr[name] + 7] = pose
            mujoco.mj_forward(m, d)
            self._kinematics_stale = False
            return self.object_poses()

    def _sample_placements(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        placed: list[tuple[np.ndarray, float]] = []
        out = {}
        for obj in self.info.task.objects:
            radius = float(np.hypot(obj.half_size[0], obj.half_size[1]))
            for _ in range(100):
                xy = np.array([rng.uniform(*obj.x_range), rng.uniform(*obj.y_range)])
                if all(np.linalg.norm(xy - c) > radius + r + 0.01 for c, r in placed):
                    break
            placed.append((xy, radius))
            yaw = rng.uniform(*obj.yaw_range) if obj.yaw_range[1] > obj.yaw_range[0] else obj.yaw_range[0]
            quat = np.array([math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)])
            out[obj.name] = np.concatenate([[xy[0], xy[1], TABLE_TOP_Z + obj.half_size[2]], quat])
        return out

    def object_poses(self) -> dict[str, np.ndarray]:
        """{object name: (x, y, z, qw, qx, qy, qz)} in the world (= base_link) frame."""
        with self._lock:
            return {name: self.data.qpos[adr:adr + 7].copy() for name, adr in self._obj_qadr.items()}

    def set_object_pose(self, name: str, pose) -> None:
        """Teleport an object (pos + quat wxyz), zeroing its velocity. For tests and tools."""
        if name not in self._obj_qadr:
            raise ValueError(f"no object {name!r}; objects: {', '.join(self._obj_qadr) or 'none'}")
        p = np.asarray(pose, dtype=np.float64)
        if p.shape != (7,) or not np.all(np.isfinite(p)):
            raise ValueError("pose must be 7 finite numbers (x y z qw qx qy qz)")
        p[3:] /= np.linalg.norm(p[3:])
        with self._lock:
            adr = self._obj_qadr[name]
            self.data.qpos[adr:adr + 7] = p
            dof = self.model.joint(name).dofadr[0]
            self.data.qvel[dof:dof + 6] = 0
            mujoco.mj_forward(self.model, self.data)
            self._kinematics_stale = False

    # --- cameras ------------------------------------------------------------------------------
    def _check_camera(self, camera: str) -> None:
        if camera not in self._cam_ids:
            raise ValueError(f"unknown camera {camera!r}; cameras: {', '.join(CAMERAS)}")

    def _render(self, cameras) -> dict[str, np.ndarray]:
        with self._render_lock:
            if self._closed:
                raise RuntimeError("SimWorld is closed")
            if self._renderer is None:
                self._renderer = _Renderer(self.model, self.config.image_width,
                                           self.config.image_height, self._cam_ids)
            with self._lock:   # only the scene update needs MjData
                self._sync_kinematics()
                for cam in cameras:
                    self._renderer.update(self.model, self.data, cam)
            return self._renderer.draw(cameras)

    def render(self, camera: str) -> np.ndarray:
        """uint8 (H, W, 3) RGB, C-contiguous."""
        self._check_camera(camera)
        return self._render([camera])[camera]

    def render_all(self) -> dict[str, np.ndarray]:
        """All three cameras at the same simulated instant."""
        return self._render(list(CAMERAS))

    def camera_intrinsics(self, camera: str) -> CameraIntrinsics:
        self._check_camera(camera)
        w, h = self.config.image_width, self.config.image_height
        fovy = math.radians(float(self.model.cam_fovy[self._cam_ids[camera]]))
        f = (h / 2.0) / math.tan(fovy / 2.0)
        return CameraIntrinsics(width=w, height=h, fx=f, fy=f, cx=(w - 1) / 2.0, cy=(h - 1) / 2.0,
                                frame_id=self.info.camera_frames[camera])

    # --- lifetime -----------------------------------------------------------------------------
    def close(self) -> None:
        """Release the renderer (GL context). Idempotent; physics stays usable."""
        with self._render_lock:
            self._closed = True
            if self._renderer is not None:
                self._renderer.close()
                self._renderer = None

    def __enter__(self) -> "SimWorld":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
