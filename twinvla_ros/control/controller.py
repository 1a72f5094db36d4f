"""One arm's servo loop: EEF or joint targets in, safe joint targets for the bus out.

Pure Python (no ROS): the arm driver node feeds commands and bus readings and writes what
`update` returns. At the servo rate (>= 100 Hz) the controller interpolates between the
~20 Hz EEF targets, caps the EEF and joint steps per tick, keeps the EEF in the workspace box,
solves IK warm-started from the last command, and holds when commands go stale, the e-stop is
latched or the bus stops answering. The arms never jump: every output is within one tick's
step of the previous one.
"""
from __future__ import annotations

import threading
from enum import Enum

import numpy as np

from twinvla_ros.hardware.motors import BusReading
from twinvla_ros.reporting import EventLog, Level, Status
from twinvla_ros.control.safety import (SafetyLimits, clamp_to_workspace, interpolate_pose,
                                        limit_joint_step, limit_pose_step, validate_pose)
from twinvla_ros.robot.description import ArmDescription
from twinvla_ros.robot.kinematics import ArmKinematics


class Mode(str, Enum):
    HOLD = "hold"          # keep the last command
    EEF = "eef"            # track EEF targets
    JOINT = "joint"        # track joint targets (leader arms, scripted motions)
    HOME = "home"          # slow joint motion to the home pose


class ArmController:
    def __init__(self, arm: ArmDescription, kinematics: ArmKinematics, limits: SafetyLimits,
                 *, servo_rate: float, reference_frame: str, base_to_reference: np.ndarray,
                 home_speed: float = 0.4):
        if servo_rate <= 0:
            raise ValueError("servo_rate must be positive")
        self.arm = arm
        self.kinematics = kinematics
        self.limits = limits
        self.reference_frame = reference_frame
        self._base_to_reference = np.asarray(base_to_reference, dtype=np.float64)
        dt = 1.0 / servo_rate
        self._dt = dt
        self._max_joint_step = arm.velocity * limits.joint_velocity_scale * dt
        self._max_home_step = np.minimum(self._max_joint_step, home_speed * dt)
        self._max_eef_translation = limits.max_eef_speed * dt
        self._max_eef_rotation = limits.max_eef_angular_speed * dt
        self._max_gripper_step = limits.max_gripper_speed * dt * arm.gripper_stroke
        self._lock = threading.RLock()   # reject() is called from inside locked methods too

        self.mode = Mode.HOLD
        self.enabled = True
        self.estop = False
        self._command: np.ndarray | None = None     # (7,) last joint targets sent (gripper in m)
        self._setpoint: np.ndarray | None = None    # (4, 4) EEF setpoint of the last command
        self._segment: tuple[np.ndarray, np.ndarray, float, float] | None = None
        self._joint_target: np.ndarray | None = None
        self._gripper_target: float | None = None   # m of finger travel
        self._last_command_time: float | None = None
        self._target_period = 0.05                  # s, learnt from the EEF command intervals
        self._measured: BusReading | None = None
        self.events = EventLog(prefix=f"{arm.side} arm: ")
        # Flags of the last tick and counters, for /diagnostics.
        self._stale = False
        self._bus_fault: str | None = None
        self._unreachable_residual: float | None = None
        self._workspace_clamped = False
        self.counters = {"rejected": 0, "unreachable_ticks": 0, "joint_step_capped": 0,
                         "eef_step_capped": 0, "workspace_clamped": 0, "stale_holds": 0}
        self.last_rejection = ""
        self.last_ik_residual_mm = 0.0

    # ---- commands (called from subscription/service callbacks) ------------------------------

    def command_eef(self, pose, frame_id: str, now: float) -> str | None:
        """New absolute EEF target; returns why it was rejected, or None."""
        pose = np.asarray(pose, dtype=np.float64)
        with self._lock:
            reason = self._refuse_motion()
            if reason is None and frame_id not in self.limits.accepted_frames:
                reason = (f"target frame '{frame_id}' is not one of {list(self.limits.accepted_frames)}")
            if reason is None:
                reason = validate_pose(pose)
            if reason is not None:
                return self.reject("EEF target", reason)
            if frame_id != self.reference_frame:
                pose = self._base_to_reference @ pose
            target = pose.copy()
            target[:3, 3], clamped = clamp_to_workspace(target[:3, 3], self.limits)
            self._workspace_clamped = clamped
            if clamped:
                self.counters["workspace_clamped"] += 1
                self._event("workspace_clamped", f"EEF target {np.round(pose[:3, 3], 3).tolist()} outside the workspace box: "
                            f"clamped to {np.round(target[:3, 3], 3).tolist()}")
            if self._last_command_time is not None and self.mode == Mode.EEF:
                interval = now - self._last_command_time
                # Interpolate over the observed command period (bounded), so a 20 Hz stream
                # becomes a continuous path at the servo rate.
                self._target_period += 0.2 * (np.clip(interval, 2 * self._dt, 0.25) - self._target_period)
            if self.mode != Mode.EEF and self._command is not None:
                self._setpoint = self.kinematics.fk(self._command[:6])
            start = self._desired_pose(now) if self.mode == Mode.EEF else self._setpoint
            if start is None:
                start = target
            self._segment = (start, target, now, self._target_period)
            self._stale = False
            self.mode = Mode.EEF
            self._last_command_time = now
            return None

    def command_gripper(self, value: float, now: float) -> str | None:
        """Gripper opening: 0 closed .. 1 open (values outside are clamped)."""
        with self._lock:
            reason = self._refuse_motion()
            if reason is None and not np.isfinite(value):
                reason = "gripper target is NaN or inf"
            if reason is not None:
                return self.reject("gripper target", reason)
            self._gripper_target = float(np.clip(value, 0.0, 1.0)) * self.arm.gripper_stroke
            if self.mode in (Mode.EEF, Mode.JOINT):
                self._last_command_time = now
            return None

    def command_joints(self, q, now: float, gripper: float | None = None) -> str | None:
        """Joint-space target (6,) in rad, optional gripper 0..1: clamped to the joint limits."""
        q = np.asarray(q, dtype=np.float64)
        with self._lock:
            reason = self._refuse_motion()
            if reason is None and q.shape != (6,):
                reason = f"joint target has {q.size} values, expected 6"
            if reason is None and not np.isfinite(q).all():
                reason = "joint target contains NaN or inf"
            if reason is not None:
                return self.reject("joint target", reason)
            clipped = np.clip(q, self.arm.lower, self.arm.upper)
            if np.any(clipped != q):
                self._event("joint_target_clamped", f"joint target outside the limits: clamped by up to "
                            f"{np.abs(clipped - q).max():.3f} rad")
            self._joint_target = clipped
            self._stale = False
            self.mode = Mode.JOINT
            self._last_command_time = now
        if gripper is not None:
            return self.command_gripper(gripper, now)
        return None

    def go_home(self, now: float) -> str | None:
        with self._lock:
            reason = self._refuse_motion()
            if reason is not None:
                return self.reject("go home", reason)
            self._joint_target = self.arm.home.copy()
            self._stale = False
            self.mode = Mode.HOME
            self._last_command_time = now
            return None

    def set_enabled(self, enabled: bool) -> None:
        with self._lock:
            self.enabled = bool(enabled)
            self.mode = Mode.HOLD
            if not enabled:
                self._command = None    # re-read from the motors when enabled again
            self._event("torque", "torque enabled" if enabled else "torque disabled", Level.OK)

    def engage_estop(self) -> None:
        with self._lock:
            if not self.estop:
                self._event("estop", "e-stop engaged: holding position, commands ignored until cleared", Level.ERROR)
            self.estop = True
            self.mode = Mode.HOLD

    def clear_estop(self) -> None:
        with self._lock:
            if self.estop:
                self._event("estop_cleared", "e-stop cleared: waiting for a new command", Level.OK)
            self.estop = False
            self.mode = Mode.HOLD
            self._gripper_target = None

    # ---- servo tick -------------------------------------------------------------------------

    def update(self, now: float, reading: BusReading | None) -> np.ndarray | None:
        """One servo tick: the (7,) joint targets to write, or None to write nothing."""
        with self._lock:
            if reading is None or now - reading.stamp > self.limits.bus_timeout:
                age = "never" if reading is None else f"{(now - reading.stamp) * 1e3:.0f} ms ago"
                self._bus_fault = f"no joint state from the bus (last {age}): holding"
                return None
            self._bus_fault = None
            self._measured = reading
            if not self.enabled:
                return None
            if self._command is None:
                # First tick (or torque just enabled): hold exactly where the arm is.
                self._command = reading.positions.copy()
                self._setpoint = self.kinematics.fk(self._command[:6])
                self.mode = Mode.HOLD
                return self._command.copy()
            if self.estop:
                return self._command.copy()

            if (self.mode in (Mode.EEF, Mode.JOINT) and self._last_command_time is not None
                    and now - self._last_command_time > self.limits.stale_timeout):
                self._stale = True
                self.counters["stale_holds"] += 1
                self._event("stale_hold", f"no command for {now - self._last_command_time:.2f} s "
                            f"(stale_timeout {self.limits.stale_timeout} s): holding")
                self.mode = Mode.HOLD

            arm_q = self._command[:6]
            if self.mode == Mode.EEF:
                arm_q = self._track_eef(now)
            elif self.mode in (Mode.JOINT, Mode.HOME):
                step = self._max_home_step if self.mode == Mode.HOME else self._max_joint_step
                arm_q, capped = limit_joint_step(self._command[:6], self._joint_target, step)
                if self.mode == Mode.HOME and not capped:
                    self.mode = Mode.HOLD
                    self._event("home", "home reached", Level.OK)
            if self.mode != Mode.EEF:
                self._unreachable_residual = None

            gripper = self._command[6]
            if self._gripper_target is not None:
                gripper += np.clip(self._gripper_target - gripper, -self._max_gripper_step, self._max_gripper_step)
            self._command = np.append(arm_q, gripper)
            return self._command.copy()

    def _track_eef(self, now: float) -> np.ndarray:
        desired = self._desired_pose(now)
        self._setpoint, capped = limit_pose_step(self._setpoint, desired, self._max_eef_translation,
                                                 self._max_eef_rotation)
        self.counters["eef_step_capped"] += capped
        result = self.kinematics.ik(self._setpoint, self._command[:6],
                                    position_tolerance=self.limits.ik_position_tolerance,
                                    rotation_tolerance=self.limits.ik_rotation_tolerance,
                                    max_attempts=1)
        self.last_ik_residual_mm = result.position_error * 1e3
        if result.reached:
            self._unreachable_residual = None
        else:
            # Nearest reachable pose: IK's best configuration, approached at the joint limit.
            if self._unreachable_residual is None:
                self._event("unreachable", f"EEF target unreachable: moving to the nearest reachable pose "
                            f"({result.position_error * 1e3:.1f} mm, "
                            f"{np.rad2deg(result.rotation_error):.1f} deg away)")
            self._unreachable_residual = result.position_error
            self.counters["unreachable_ticks"] += 1
        q, capped = limit_joint_step(self._command[:6], result.q, self._max_joint_step)
        self.counters["joint_step_capped"] += capped
        return q

    def _desired_pose(self, now: float) -> np.ndarray:
        start, end, t0, duration = self._segment
        return interpolate_pose(start, end, float(np.clip((now - t0) / duration, 0.0, 1.0)))

    # ---- reporting --------------------------------------------------------------------------

    @property
    def measured(self) -> BusReading | None:
        return self._measured

    def measured_pose(self) -> np.ndarray | None:
        reading = self._measured
        return None if reading is None else self.kinematics.fk(reading.positions[:6])

    def status(self) -> Status:
        with self._lock:
            values = {"mode": self.mode.value, "enabled": str(self.enabled), "estop": str(self.estop),
                      "ik_residual_mm": f"{self.last_ik_residual_mm:.2f}",
                      "last_rejection": self.last_rejection}
            values.update({k: str(v) for k, v in self.counters.items()})
            if self._bus_fault:
                return Status(Level.ERROR, self._bus_fault, values)
            if self.estop:
                return Status(Level.ERROR, "e-stop latched: holding position", values)
            if not self.enabled:
                return Status(Level.WARN, "torque disabled", values)
            if self._stale:
                return Status(Level.WARN, "commands stale: holding position", values)
            if self._unreachable_residual is not None:
                return Status(Level.WARN, f"target unreachable: at the nearest pose, "
                                 f"{self._unreachable_residual * 1e3:.1f} mm away", values)
            if self._workspace_clamped:
                return Status(Level.WARN, "target clamped to the workspace box", values)
            return Status(Level.OK, f"{self.mode.value}", values)

    def drain_events(self) -> list[tuple[Level, str]]:
        """Log lines due since the last call (throttled per kind of event): (level, message)."""
        return self.events.drain()

    def _refuse_motion(self) -> str | None:
        if self.estop:
            return "e-stop is latched"
        if not self.enabled:
            return "torque is disabled"
        return None

    def reject(self, what: str, reason: str) -> str:
        """Count and report an input that could not be used; returns the reason."""
        with self._lock:
            self.counters["rejected"] += 1
            self.last_rejection = f"{what}: {reason}"
            self._event("rejected", f"rejected {what}: {reason}")
            return reason

    def _event(self, kind: str, message: str, level: Level = Level.WARN) -> None:
        self.events.add(kind, message, level)
