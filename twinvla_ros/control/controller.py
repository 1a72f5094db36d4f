"""One arm's servo loop: EEF or joint targets in, safe joint targets for the bus out.

Pure Python (no ROS): the arm driver node feeds commands and bus readings and writes what
`update` returns. At the servo rate (>= 100 Hz) the controller interpolates between the
~20 Hz EEF targets, caps the EEF and joint steps per tick, keeps the EEF in the workspace box,
solves IK warm-started from the last command, and holds when commands go stale, the e-stop is
latched or the bus stops answering.

The arms never jump:
- every output is within one tick's step of the previous one, except a step back to the measured
  position (the e-stop, the blocked hold, a confirmed jump of the reading), which removes a gap
  instead of opening one;
- the command never leads the measured position by more than `max_tracking_error` (joints) and
  `max_gripper_tracking_error` (gripper): a blocked arm cannot wind up its command and snap when
  it is released (see twinvla_ros.control.safety for how the margins are chosen). An arm that
  stays blocked (command at the margin, the joint not following) is reported and, after
  `blocked_hold_time`, holds its measured pose until a new command arrives;
- a reading further from the last one than a servo moves in the time between them is not
  trusted (nothing is written); a second reading that confirms it (a sim reset, an arm moved
  while unobserved) moves the command and the EEF setpoint to the measured pose, so the arm is
  not pulled back to where it was;
- the e-stop freezes the command at the measured pose (a category 2 stop: the servos brake and
  hold); the stopping distance is measured and reported;
- every input is checked before any arithmetic (shape, finite, magnitude, stamp age): a bad one
  is rejected, counted and reported, never raised; update() never returns a non-finite value.

Every intervention has a counter (`counters`, all of them in status().values) and an event in
`events` (throttled per kind for the log, every one counted).
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from enum import Enum

import numpy as np

from twinvla_ros.hardware.motors import BusReading
from twinvla_ros.reporting import EventLog, Level, Status
from twinvla_ros.control.safety import (SafetyLimits, clamp_to_workspace, finite_number, interpolate_pose,
                                        limit_joint_step, limit_lead, limit_pose_step, orthonormalized,
                                        validate_pose)
from twinvla_ros.robot.description import ArmDescription
from twinvla_ros.robot.kinematics import ArmKinematics

# A joint at its tracking margin that moves towards its command slower than this fraction of
# its speed cap is not following: blocked (a free but sluggish servo at the margin still moves
# at a good fraction of the cap, e.g. ~0.6 x for the sim's shoulder joints).
BLOCKED_PROGRESS = 0.25
BLOCKED_REPORT_DELAY = 0.1     # s of continuous blocking before "arm blocked" is reported
REPORT_WINDOW = 2.0            # s a one-off intervention (clamp, rejection) keeps the status at WARN
# At rest (for the e-stop's stopping time): every arm joint within REST_SPREAD rad for REST_WINDOW s
# (2 encoder counts of a 4096-count motor over 10 ticks: robust to 1-count noise).
REST_SPREAD = 0.003
REST_WINDOW = 0.1
ESTOP_SETTLE_TIMEOUT = 2.0     # s after the press: report the stop even if the arm is not at rest
# A reading further than this (rad) plus twice the URDF's velocity limit times the time since the
# previous reading from it jumped: no servo moves that fast (a sim reset's teleport, an encoder
# glitch). At the URDF's 1.4 rad/s a joint moves 0.014 rad in a 100 Hz tick.
READING_JUMP = 0.25


class Mode(str, Enum):
    HOLD = "hold"          # keep the last command
    EEF = "eef"            # track EEF targets
    JOINT = "joint"        # track joint targets (leader arms, scripted motions)
    HOME = "home"          # slow joint motion to the home pose


COUNTERS = (
    "rejected",                  # inputs refused (any reason, stamps included)
    "stamp_rejected",            # ... of which for their stamp (too old / in the future)
    "unreachable_ticks",         # ticks at the nearest reachable pose of an unreachable target
    "joint_step_capped",         # ticks the per-tick joint cap acted (EEF mode)
    "eef_step_capped",           # ticks the EEF speed caps acted
    "workspace_clamped",         # EEF targets moved into the workspace box
    "joint_target_clamped",      # joint targets moved into the joint limits
    "gripper_clamped",           # gripper targets moved into [0, 1]
    "stale_holds",               # arm command streams that went stale (arm and gripper held)
    "gripper_stale_holds",       # gripper targets that went stale before they were reached
    "tracking_limited",          # ticks the joint tracking margin held the command back
    "gripper_tracking_limited",  # ticks the gripper tracking margin held the command back (squeeze)
    "eef_tracking_limited",      # ticks the EEF setpoint was re-based on the measured pose
    "blocked",                   # blocked episodes reported
    "blocked_holds",             # blocked episodes that ended in a hold at the measured pose
    "estops",                    # e-stop presses
    "bus_faults",                # episodes without a usable bus reading
    "reading_jumps",             # readings that jumped: a first one is not trusted, a confirmed one re-anchors
    "internal_errors",           # servo ticks that failed (a bug): the last target was held
)


@dataclass
class _Stop:
    """The e-stop's stopping measurement: from the press until the arm is at rest."""
    press_stamp: float
    press_position: np.ndarray        # EEF position at the press (reference frame)
    anchor_stamp: float               # start of the current quiet period
    anchor_q: np.ndarray
    distance: float = 0.0             # m, largest EEF displacement from the press position so far
    rest_stamp: float | None = None
    done: bool = False


class ArmController:
    def __init__(self, arm: ArmDescription, kinematics: ArmKinematics, limits: SafetyLimits,
                 *, servo_rate: float, reference_frame: str, base_to_reference: np.ndarray,
                 home_speed: float = 0.4):
        if finite_number(servo_rate) is None or servo_rate <= 0:
            raise ValueError("servo_rate must be positive and finite")
        if not isinstance(limits, SafetyLimits):
            raise TypeError(f"limits must be SafetyLimits, got {type(limits).__name__}")
        self.arm = arm
        self.kinematics = kinematics
        self.reference_frame = reference_frame
        self._base_to_reference = np.asarray(base_to_reference, dtype=np.float64)
        self._dt = 1.0 / float(servo_rate)
        self._home_speed = float(home_speed)
        self._lock = threading.RLock()   # reject() is called from inside locked methods too
        self._apply_limits(limits)

        self.mode = Mode.HOLD
        self.enabled = True
        self.estop = False
        self._command: np.ndarray | None = None     # (7,) last joint targets sent (gripper in m)
        self._last_output: np.ndarray | None = None  # (7,) last value update() returned (finite)
        self._setpoint: np.ndarray | None = None    # (4, 4) EEF setpoint of the last command
        self._segment: tuple[np.ndarray, np.ndarray, float, float] | None = None
        self._joint_target: np.ndarray | None = None
        self._gripper_target: float | None = None   # m of finger travel
        self._last_command_time: float | None = None   # of the arm (EEF / joint) stream
        self._last_gripper_time: float | None = None
        self._target_period = 0.05                  # s, learnt from the EEF command intervals
        self._measured: BusReading | None = None
        self._measured_q: np.ndarray | None = None  # (7,) validated positions of _measured
        self._measured_stamp = 0.0
        self._velocity = np.zeros(7)                # rad/s (m/s gripper), from consecutive readings
        self._jumped_to: tuple[np.ndarray, float] | None = None   # a reading that jumped and its stamp
        self._now = -math.inf                       # latest time seen (servo clock)
        self.events = EventLog(prefix=f"{arm.side} arm: ")
        # Flags of the last tick and counters, for /diagnostics.
        self._stale = False
        self._bus_fault: str | None = None
        self._unreachable_residual: float | None = None
        self._tracking_error = 0.0                  # rad, largest |command - measured| over the arm joints
        self._gripper_squeezing = False             # the gripper command is at its margin (a grasp)
        self._blocked_since: float | None = None
        self._blocked_reported = False
        self._blocked_joint = ""
        self._blocked_lead = 0.0
        self._blocked_hold: str | None = None       # why the arm holds its measured pose
        self._recent: dict[str, tuple[float, str, Level]] = {}   # kind -> (time, message, level)
        self._stop: _Stop | None = None
        self._freeze_pending = False                # e-stop: freeze at the next reading
        self.counters = {name: 0 for name in COUNTERS}
        self.last_rejection = ""
        self.last_ik_residual_mm = 0.0

    # ---- limits ------------------------------------------------------------------------------

    @property
    def limits(self) -> SafetyLimits:
        return self._limits

    @limits.setter
    def limits(self, limits: SafetyLimits) -> None:
        self.update_limits(limits)

    def update_limits(self, limits: SafetyLimits) -> None:
        """New limits (e.g. `ros2 param set`), effective from the next tick. Thread-safe."""
        if not isinstance(limits, SafetyLimits):
            raise TypeError(f"limits must be SafetyLimits, got {type(limits).__name__}")
        with self._lock:
            self._apply_limits(limits)
            self._event("limits", "safety limits updated", Level.OK)

    def _apply_limits(self, limits: SafetyLimits) -> None:
        dt = self._dt
        self._limits = limits
        self._joint_cap = self.arm.velocity * float(limits.joint_velocity_scale)       # rad/s
        self._max_joint_step = self._joint_cap * dt
        self._max_home_step = np.minimum(self._max_joint_step, self._home_speed * dt)
        self._max_eef_translation = float(limits.max_eef_speed) * dt
        self._max_eef_rotation = float(limits.max_eef_angular_speed) * dt
        self._max_gripper_step = float(limits.max_gripper_speed) * dt * self.arm.gripper_stroke
        # (6,) rad: the tracking margin of each joint (see SafetyLimits.max_tracking_lag).
        self._lead_margin = np.minimum(float(limits.max_tracking_error),
                                       float(limits.max_tracking_lag) * self._joint_cap)
        self._gripper_margin = float(limits.max_gripper_tracking_error)

    # ---- commands (called from subscription/service callbacks) ------------------------------

    def command_eef(self, pose, frame_id: str, now: float, stamp_age: float | None = None) -> str | None:
        """New absolute EEF target; returns why it was rejected, or None.

        stamp_age: seconds from the message's stamp to now (None: unstamped, counts as now).
        """
        with self._lock:
            reason = self._refuse_motion() or self._check_time(now)
            if reason is None and (not isinstance(frame_id, str) or frame_id not in self.limits.accepted_frames):
                reason = f"target frame '{frame_id}' is not one of {list(self.limits.accepted_frames)}"
            target = None
            if reason is None:
                target, reason = self._as_pose(pose)
            if reason is not None:
                return self.reject("EEF target", reason)
            stamp_problem = self._check_stamp(stamp_age)
            if stamp_problem is not None:
                return self._reject_stamp("EEF target", stamp_problem)
            now = float(now)
            self._see(now)
            if frame_id != self.reference_frame:
                target = self._base_to_reference @ target
            requested = target[:3, 3].copy()
            target[:3, 3], clamped = clamp_to_workspace(requested, self.limits)
            if clamped:
                self.counters["workspace_clamped"] += 1
                self._intervention("workspace_clamped", "target clamped to the workspace box",
                                   f"EEF target {np.round(requested, 3).tolist()} outside the workspace box: "
                                   f"clamped to {np.round(target[:3, 3], 3).tolist()}", now)
            if self._last_command_time is not None and self.mode == Mode.EEF:
                interval = now - self._last_command_time
                # Interpolate over the observed command period (bounded), so a 20 Hz stream
                # becomes a continuous path at the servo rate.
                self._target_period += 0.2 * (float(np.clip(interval, 2 * self._dt, 0.25)) - self._target_period)
            if self.mode != Mode.EEF and self._command is not None:
                self._setpoint = self.kinematics.fk(self._command[:6])
            # The new segment starts at the setpoint (where the command is), not where the last
            # segment's interpolation had got to: nothing runs ahead of the arm.
            start = target if self._setpoint is None else self._setpoint.copy()
            self._segment = (start, target, now, self._target_period)
            self._resume(Mode.EEF, now)
            return None

    def command_gripper(self, value: float, now: float, stamp_age: float | None = None) -> str | None:
        """Gripper opening: 0 closed .. 1 open (values outside are clamped, counted, reported)."""
        with self._lock:
            reason = self._refuse_motion() or self._check_time(now) or self._check_gripper_value(value)
            if reason is not None:
                return self.reject("gripper target", reason)
            stamp_problem = self._check_stamp(stamp_age)
            if stamp_problem is not None:
                return self._reject_stamp("gripper target", stamp_problem)
            self._see(float(now))
            self._accept_gripper(float(value), float(now))
            return None

    def command_joints(self, q, now: float, gripper: float | None = None,
                       stamp_age: float | None = None) -> str | None:
        """Joint-space target (6,) in rad, optional gripper 0..1: clamped to the joint limits
        (counted, reported). The command (joints and gripper) is accepted or rejected as a whole."""
        with self._lock:
            reason = self._refuse_motion() or self._check_time(now)
            target = None
            if reason is None:
                try:
                    target = np.array(q, dtype=np.float64)
                except (TypeError, ValueError, OverflowError):
                    reason = "joint target is not an array of numbers"
            if reason is None and target.shape != (6,):
                reason = f"joint target has {target.size} values, expected 6"
            if reason is None and not np.isfinite(target).all():
                reason = "joint target contains NaN or inf"
            if reason is None and gripper is not None:
                reason = self._check_gripper_value(gripper)
            if reason is not None:
                return self.reject("joint target", reason)
            stamp_problem = self._check_stamp(stamp_age)
            if stamp_problem is not None:
                return self._reject_stamp("joint target", stamp_problem)
            now = float(now)
            self._see(now)
            clipped = np.clip(target, self.arm.lower, self.arm.upper)
            if np.any(clipped != target):
                self.counters["joint_target_clamped"] += 1
                worst = int(np.argmax(np.abs(clipped - target)))
                self._intervention("joint_target_clamped", "joint target clamped to the joint limits",
                                   f"joint target outside the limits: {self.arm.joint_names[worst]} "
                                   f"{target[worst]:.3g} rad clamped to {clipped[worst]:.3f} rad", now)
            self._joint_target = clipped
            self._resume(Mode.JOINT, now)
            if gripper is not None:
                self._accept_gripper(float(gripper), now)
            return None

    def go_home(self, now: float) -> str | None:
        with self._lock:
            reason = self._refuse_motion() or self._check_time(now)
            if reason is not None:
                return self.reject("go home", reason)
            self._see(float(now))
            self._joint_target = self.arm.home.copy()
            self._resume(Mode.HOME, float(now))
            return None

    def set_enabled(self, enabled: bool) -> None:
        with self._lock:
            self.enabled = bool(enabled)
            self.mode = Mode.HOLD
            self._gripper_target = None
            self._clear_blocked()
            self._blocked_hold = None
            if not enabled:
                self._command = None    # re-read from the motors when enabled again
                self._freeze_pending = False
            self._event("torque", "torque enabled" if enabled else "torque disabled", Level.OK)

    def hold(self, reason: str) -> None:
        """Stop following commands and hold the last command (the driver deactivated): the arm
        stops within its tracking margin and stays; torque stays as it is."""
        with self._lock:
            self.mode = Mode.HOLD
            self._gripper_target = None
            self._clear_blocked()
            self._blocked_hold = None
            self._event("hold", f"holding: {reason}", Level.OK)

    def engage_estop(self) -> None:
        """Controlled stop (category 2): the command becomes the measured position, so the arm
        moves only as far as its servos need to brake; then it holds. The freeze takes the first
        reading after the press (the tick that writes it to the bus), not the last one before
        it: the arm has moved on since, and that older pose would pull it back. A gripper
        squeezing an object keeps its squeeze (bounded by its tracking margin) instead of
        dropping it. The stopping distance is measured from the last reading before the press."""
        with self._lock:
            if self.estop:
                return
            self.estop = True
            self.counters["estops"] += 1
            self.mode = Mode.HOLD
            self._gripper_target = None
            self._clear_blocked()
            self._blocked_hold = None
            self._freeze_pending = False
            detail = ""
            if self._command is not None and self._measured_q is not None and self.enabled:
                self._freeze(self._measured_q)       # until the next reading arrives
                self._freeze_pending = True
                press = self._measured_q
                self._stop = _Stop(press_stamp=self._measured_stamp,
                                   press_position=self.kinematics.fk(press[:6])[:3, 3].copy(),
                                   anchor_stamp=self._measured_stamp, anchor_q=press.copy())
                detail = " at the measured pose"
            self._event("estop", f"e-stop engaged: holding position{detail}, commands ignored until cleared",
                        Level.ERROR)

    def _freeze(self, measured: np.ndarray) -> None:
        frozen = measured.copy()
        if self._gripper_squeezing:
            frozen[6] = self._command[6]
        self._command = frozen
        self._setpoint = self.kinematics.fk(frozen[:6])

    def clear_estop(self) -> None:
        with self._lock:
            if self.estop:
                self._event("estop_cleared", "e-stop cleared: waiting for a new command", Level.OK)
            self.estop = False
            self.mode = Mode.HOLD
            self._gripper_target = None
            if self._stop is not None and not self._stop.done:
                self._stop.done = True      # cleared before the arm came to rest: report what was seen

    # ---- servo tick -------------------------------------------------------------------------

    def update(self, now: float, reading: BusReading | None) -> np.ndarray | None:
        """One servo tick: the (7,) joint targets to write, or None to write nothing.

        Never raises and never returns a non-finite value: a failure inside the tick (a bug) is
        counted and reported as an error, and the last target is held."""
        with self._lock:
            try:
                out = self._tick(now, reading)
            except Exception as error:  # noqa: BLE001  (last resort: the servo loop must keep running)
                return self._internal_fault(f"{type(error).__name__}: {error}")
            if out is None:
                return None
            if out.shape != (7,) or not np.isfinite(out).all():
                return self._internal_fault("the tick computed a non-finite joint target")
            self._last_output = out.copy()
            return out

    def _tick(self, now, reading) -> np.ndarray | None:
        t = finite_number(now)
        if t is None:
            self._fault(f"servo clock reads {now!r}: writing nothing")
            return None
        self._see(t)
        q, stamp, problem = self._check_reading(t, reading)
        if problem is not None:
            self._fault(problem)
            return None
        self._bus_fault = None
        if self._reading_jumped(q, stamp):
            return None
        self._observe(reading, q, stamp)
        if not self.enabled:
            return None
        if self._command is None:
            # First tick (or torque just enabled): hold exactly where the arm is.
            self._command = q.copy()
            self._setpoint = self.kinematics.fk(self._command[:6])
            self.mode = Mode.HOLD
            return self._command.copy()
        if self._freeze_pending:          # e-stop pressed since the last tick (even if cleared since)
            self._freeze(q)
            self._freeze_pending = False
        if self.estop:
            self._track_stop(q, stamp)
            return self._command.copy()

        self._check_stale(t)
        arm_q = self._servo_arm(t, q[:6])
        gripper = self._servo_gripper(q[6])
        self._command = np.append(arm_q, gripper)
        return self._command.copy()

    def _check_reading(self, now: float, reading) -> tuple[np.ndarray | None, float, str | None]:
        if reading is None:
            last = "never" if self._measured is None else f"{(now - self._measured_stamp) * 1e3:.0f} ms ago"
            return None, 0.0, f"no joint state from the bus (last {last}): holding"
        try:
            q = np.array(reading.positions, dtype=np.float64)
            stamp = float(reading.stamp)
        except (AttributeError, TypeError, ValueError, OverflowError):
            return None, 0.0, "malformed bus reading: holding"
        if q.shape != (7,):
            return None, 0.0, f"bus reading has {q.size} positions, expected 7: holding"
        if not np.isfinite(q).all() or not math.isfinite(stamp):
            return None, 0.0, "bus reading contains NaN or inf: holding"
        if now - stamp > self.limits.bus_timeout:
            return None, 0.0, f"no joint state from the bus (last {(now - stamp) * 1e3:.0f} ms ago): holding"
        return q, stamp, None

    def _reading_jumped(self, q: np.ndarray, stamp: float) -> bool:
        """True for a reading of the arm joints that moved further since the last one than any
        servo can: nothing is written on it (the motors keep their last goal). The next reading
        decides: back near the old position, it was a glitch; near the jumped one, the arm is
        there now (the sim was reset, the arm put elsewhere), and the command and the EEF
        setpoint move to it. Without that the command, now far outside the tracking band, would
        stay where the arm was and pull it back there."""
        last = self._measured_q
        if last is None:
            return False
        reach = READING_JUMP + 2.0 * self.arm.velocity * max(stamp - self._measured_stamp, 0.0)
        jumped = np.abs(q[:6] - last[:6]) > reach
        if not jumped.any():
            self._jumped_to = None
            return False
        if self._jumped_to is not None and stamp <= self._jumped_to[1]:
            return True                      # the same reading again (the bus polls faster than it updates)
        j = int(np.argmax(np.where(jumped, np.abs(q[:6] - last[:6]), -1.0)))
        distance = (f"{self.arm.joint_names[j]} {abs(q[j] - last[j]):.3f} rad in "
                    f"{(stamp - self._measured_stamp) * 1e3:.0f} ms")
        if self._jumped_to is None or np.abs(q[:6] - self._jumped_to[0][:6]).max() > READING_JUMP:
            self._jumped_to = (q.copy(), stamp)
            self.counters["reading_jumps"] += 1
            self._intervention("reading_jump", f"joint reading jumped ({distance}): not trusted",
                               f"joint reading jumped ({distance}): not trusted, writing nothing until the "
                               f"next reading confirms it", self._now)
            return True
        self._jumped_to = None
        self._intervention("reading_jump_confirmed", f"joint reading jump confirmed ({distance}): command moved",
                           f"joint reading jump confirmed ({distance}; a sim reset, or the arm moved while "
                           f"unobserved): the command and setpoint move to the measured pose", self._now)
        self._measured_q = None              # no velocity across the jump
        self._clear_blocked()
        self._blocked_hold = None
        if self._command is not None:
            self._command = q.copy()
            self._setpoint = self.kinematics.fk(q[:6])
        return False

    def _observe(self, reading: BusReading, q: np.ndarray, stamp: float) -> None:
        """Keep the reading and a velocity estimate from consecutive readings (the bus's own
        velocities may be missing or filtered differently per backend)."""
        if self._measured_q is not None and stamp > self._measured_stamp:
            self._velocity = (q - self._measured_q) / (stamp - self._measured_stamp)
        elif self._measured_q is None:
            self._velocity = np.zeros(7)
        self._measured = reading
        self._measured_q = q.copy()
        self._measured_stamp = stamp

    def _check_stale(self, now: float) -> None:
        stale_timeout = self.limits.stale_timeout
        if (self.mode in (Mode.EEF, Mode.JOINT) and self._last_command_time is not None
                and now - self._last_command_time > stale_timeout):
            self._stale = True
            self.counters["stale_holds"] += 1
            self._event("stale_hold", f"no command for {now - self._last_command_time:.2f} s "
                        f"(stale_timeout {stale_timeout} s): holding the arm and the gripper")
            self.mode = Mode.HOLD
            self._gripper_target = None          # the gripper holds too, at its current command
        if (self._gripper_target is not None and self._last_gripper_time is not None
                and now - self._last_gripper_time > stale_timeout):
            if abs(self._command[6] - self._gripper_target) > 1e-12:
                self.counters["gripper_stale_holds"] += 1
                self._intervention("gripper_stale", "gripper target stale: gripper holding",
                                   f"no gripper target for {now - self._last_gripper_time:.2f} s "
                                   f"(stale_timeout {stale_timeout} s): holding the gripper", now)
            self._gripper_target = None

    def _servo_arm(self, now: float, measured: np.ndarray) -> np.ndarray:
        previous = self._command[:6]
        mode = self.mode
        if mode == Mode.EEF:
            goal = self._eef_goal(now)
        elif mode in (Mode.JOINT, Mode.HOME):
            goal = self._joint_target
        else:
            goal = previous
        step = self._max_home_step if mode == Mode.HOME else self._max_joint_step
        proposed, capped = limit_joint_step(previous, goal, step)
        if mode == Mode.EEF:
            self.counters["joint_step_capped"] += capped
        arm_q, cut = limit_lead(previous, proposed, measured, self._lead_margin)
        lead = arm_q - measured
        self._tracking_error = float(np.abs(lead).max())
        if cut.any():
            self.counters["tracking_limited"] += 1
        blocked = np.zeros(6, dtype=bool)
        if mode != Mode.HOLD:
            progress = np.sign(lead) * self._velocity[:6]
            blocked = (np.abs(lead) >= self._lead_margin - 1e-9) & (progress < BLOCKED_PROGRESS * self._joint_cap)
        if mode == Mode.EEF and (cut.any() or blocked.any()):
            self._rebase_setpoint(measured)
        if blocked.any():
            arm_q = self._on_blocked(now, lead, blocked, measured, arm_q)
        else:
            self._clear_blocked()
        if self.mode == Mode.HOME and np.array_equal(arm_q, self._joint_target):
            self.mode = Mode.HOLD
            self._event("home", "home reached", Level.OK)
        if self.mode != Mode.EEF:
            self._unreachable_residual = None
        return arm_q

    def _servo_gripper(self, measured: float) -> float:
        previous = float(self._command[6])
        goal = previous if self._gripper_target is None else self._gripper_target
        proposed = previous + min(max(goal - previous, -self._max_gripper_step), self._max_gripper_step)
        margin = self._gripper_margin
        out = min(max(proposed, min(measured - margin, previous)), max(measured + margin, previous))
        if out != proposed:
            self.counters["gripper_tracking_limited"] += 1
        self._gripper_squeezing = abs(out - measured) >= margin - 1e-12
        return out

    def _on_blocked(self, now: float, lead: np.ndarray, blocked: np.ndarray, measured: np.ndarray,
                    arm_q: np.ndarray) -> np.ndarray:
        j = int(np.argmax(np.where(blocked, np.abs(lead), -1.0)))
        name = self.arm.joint_names[j]
        self._blocked_joint, self._blocked_lead = name, float(lead[j])
        if self._blocked_since is None:
            self._blocked_since = now
        duration = now - self._blocked_since
        hold_time = self.limits.blocked_hold_time
        if not self._blocked_reported and duration >= min(BLOCKED_REPORT_DELAY, hold_time):
            self._blocked_reported = True
            self.counters["blocked"] += 1
            self._event("blocked", f"arm blocked: {name} is {abs(lead[j]):.3f} rad from its command and not "
                        f"following (tracking margin {self._lead_margin[j]:.3f} rad): the command stops at the margin")
        if duration < hold_time:
            return arm_q
        self.counters["blocked_holds"] += 1
        self._blocked_hold = (f"arm blocked at {name} for {duration:.2f} s: holding the measured pose "
                              f"until a new command")
        self._event("blocked_hold", self._blocked_hold)
        self.mode = Mode.HOLD
        self._gripper_target = None
        self._setpoint = self.kinematics.fk(measured)
        self._clear_blocked()
        self._tracking_error = 0.0
        return measured.copy()

    def _clear_blocked(self) -> None:
        self._blocked_since = None
        self._blocked_reported = False
        self._blocked_joint = ""
        self._blocked_lead = 0.0

    def _rebase_setpoint(self, measured: np.ndarray) -> None:
        """The joints are held back: keep the EEF setpoint within the EEF margins of the measured
        EEF pose so the interpolation does not run on without the arm."""
        rebased, moved = limit_pose_step(self.kinematics.fk(measured), self._setpoint,
                                         float(self.limits.max_eef_tracking_error),
                                         float(self.limits.max_eef_tracking_rotation))
        if moved:
            self._setpoint = rebased
            self.counters["eef_tracking_limited"] += 1

    def _eef_goal(self, now: float) -> np.ndarray:
        """Advance the EEF setpoint by at most one tick's EEF step; its IK solution."""
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
        return result.q

    def _desired_pose(self, now: float) -> np.ndarray:
        start, end, t0, duration = self._segment
        return interpolate_pose(start, end, float(np.clip((now - t0) / duration, 0.0, 1.0)))

    def _track_stop(self, q: np.ndarray, stamp: float) -> None:
        stop = self._stop
        if stop is None or stop.done:
            return
        position = self.kinematics.fk(q[:6])[:3, 3]
        stop.distance = max(stop.distance, float(np.linalg.norm(position - stop.press_position)))
        if np.abs(q[:6] - stop.anchor_q[:6]).max() > REST_SPREAD:
            stop.anchor_stamp, stop.anchor_q = stamp, q.copy()
        elif stamp - stop.anchor_stamp >= REST_WINDOW:
            stop.rest_stamp = stop.anchor_stamp
            stop.done = True
            self._event("estop_stopped", f"e-stop: the arm stopped within {stop.distance * 1e3:.1f} mm of its "
                        f"position at the press, {(stop.rest_stamp - stop.press_stamp) * 1e3:.0f} ms after it",
                        Level.OK)
            return
        if stamp - stop.press_stamp > ESTOP_SETTLE_TIMEOUT:
            stop.done = True
            self._event("estop_stopped", f"e-stop: the arm is not at rest {ESTOP_SETTLE_TIMEOUT:.1f} s after "
                        f"the press ({stop.distance * 1e3:.1f} mm from its position at the press)", Level.ERROR)

    # ---- reporting --------------------------------------------------------------------------

    @property
    def measured(self) -> BusReading | None:
        return self._measured

    def measured_pose(self) -> np.ndarray | None:
        with self._lock:
            q = self._measured_q
            return None if q is None else self.kinematics.fk(q[:6])

    def status(self) -> Status:
        with self._lock:
            stop = self._stop
            stopped = stop is not None and stop.done
            values = {"mode": self.mode.value, "enabled": str(self.enabled), "estop": str(self.estop),
                      "ik_residual_mm": f"{self.last_ik_residual_mm:.2f}",
                      "tracking_error_rad": f"{self._tracking_error:.4f}",
                      "tracking_margin_rad": f"{float(np.min(self._lead_margin)):.4f}",
                      "blocked_joint": self._blocked_joint if self._blocked_reported else "",
                      "estop_stop_distance_mm": f"{stop.distance * 1e3:.1f}" if stopped else "",
                      "estop_to_zero_ms": (f"{(stop.rest_stamp - stop.press_stamp) * 1e3:.0f}"
                                           if stopped and stop.rest_stamp is not None else ""),
                      "last_rejection": self.last_rejection}
            values.update({k: str(v) for k, v in self.counters.items()})
            recent = sorted(((t, message, level) for t, message, level in self._recent.values()
                             if self._now - t <= REPORT_WINDOW), key=lambda item: item[0], reverse=True)
            errors = [item for item in recent if item[2] == Level.ERROR]
            if self._bus_fault:
                return Status(Level.ERROR, self._bus_fault, values)
            if errors:
                return Status(Level.ERROR, errors[0][1], values)
            if self.estop:
                return Status(Level.ERROR, "e-stop latched: holding position", values)
            if not self.enabled:
                return Status(Level.WARN, "torque disabled", values)
            if self._blocked_hold:
                return Status(Level.WARN, self._blocked_hold, values)
            if self._blocked_reported:
                return Status(Level.WARN, f"arm blocked: {self._blocked_joint} is {abs(self._blocked_lead):.3f} rad "
                              f"from its command and not following", values)
            if self._stale:
                return Status(Level.WARN, "commands stale: holding position", values)
            if self._unreachable_residual is not None:
                return Status(Level.WARN, f"target unreachable: at the nearest pose, "
                                 f"{self._unreachable_residual * 1e3:.1f} mm away", values)
            if recent:
                return Status(recent[0][2], recent[0][1], values)
            return Status(Level.OK, f"{self.mode.value}", values)

    def drain_events(self) -> list[tuple[Level, str]]:
        """Log lines due since the last call (throttled per kind of event): (level, message)."""
        return self.events.drain()

    def reject(self, what: str, reason: str) -> str:
        """Count and report an input that could not be used; returns the reason."""
        with self._lock:
            self.counters["rejected"] += 1
            self.last_rejection = f"{what}: {reason}"
            self._intervention("rejected", f"rejected {what}: {reason}", f"rejected {what}: {reason}", self._now)
            return reason

    # ---- helpers ----------------------------------------------------------------------------

    def _reject_stamp(self, what: str, reason: str) -> str:
        self.counters["stamp_rejected"] += 1
        return self.reject(what, reason)

    def _refuse_motion(self) -> str | None:
        if self.estop:
            return "e-stop is latched"
        if not self.enabled:
            return "torque is disabled"
        return None

    @staticmethod
    def _check_time(now) -> str | None:
        return None if finite_number(now) is not None else f"command time {now!r} is not a finite number"

    @staticmethod
    def _check_gripper_value(value) -> str | None:
        if isinstance(value, (bool, np.bool_)):
            return "gripper target is not a number"
        try:
            v = float(value)
        except (TypeError, ValueError, OverflowError):
            return "gripper target is not a number"
        return None if math.isfinite(v) else "gripper target is NaN or inf"

    def _check_stamp(self, stamp_age) -> str | None:
        """Why a target's stamp makes it unusable, or None (also when unstamped or unchecked)."""
        if stamp_age is None or not self.limits.check_stamps:
            return None
        age = finite_number(stamp_age)
        if age is None:
            return f"stamp age {stamp_age!r} is not a finite number"
        limit = self.limits.target_age_limit
        if age > limit:
            return f"stamped {age:.3f} s ago: too old (max_target_age {limit:.3f} s)"
        if age < -self.limits.max_target_future:
            return (f"stamped {-age:.3f} s in the future (max_target_future {self.limits.max_target_future:.3f} s): "
                    f"are the clocks synchronized?")
        return None

    def _as_pose(self, pose) -> tuple[np.ndarray | None, str | None]:
        try:
            target = np.array(pose, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            return None, "pose is not a 4x4 array of numbers"
        with np.errstate(all="ignore"):
            reason = validate_pose(target)
            if reason is None:
                target[:3, :3] = orthonormalized(target[:3, :3])
        return (None, reason) if reason is not None else (target, None)

    def _accept_gripper(self, value: float, now: float) -> None:
        clipped = min(max(value, 0.0), 1.0)
        if clipped != value:
            self.counters["gripper_clamped"] += 1
            self._intervention("gripper_clamped", "gripper target clamped to [0, 1]",
                               f"gripper target {value:.3g} outside [0, 1]: clamped to {clipped:g}", now)
        self._gripper_target = clipped * self.arm.gripper_stroke
        self._last_gripper_time = now

    def _resume(self, mode: Mode, now: float) -> None:
        """A new arm command: leave a stale or blocked hold and track it."""
        self._stale = False
        self._blocked_hold = None
        self.mode = mode
        self._last_command_time = now

    def _see(self, now: float) -> None:
        if now > self._now:
            self._now = now

    def _fault(self, message: str) -> None:
        if self._bus_fault is None:
            self.counters["bus_faults"] += 1
            self._event("bus_fault", message, Level.ERROR)
        self._bus_fault = message

    def _internal_fault(self, what: str) -> np.ndarray | None:
        self.counters["internal_errors"] += 1
        message = f"internal error in the servo tick ({what}): holding the last target"
        self._recent["internal_error"] = (self._now, message, Level.ERROR)
        self._event("internal_error", message, Level.ERROR)
        self.mode = Mode.HOLD
        if self._last_output is None:
            self._command = None
            return None
        self._command = self._last_output.copy()
        return self._last_output.copy()

    def _intervention(self, kind: str, status_message: str, log_message: str, now: float) -> None:
        """A limit acted: WARN in status() for REPORT_WINDOW s, an event for the log."""
        self._recent[kind] = (now if math.isfinite(now) else self._now, status_message, Level.WARN)
        self._event(kind, log_message)

    def _event(self, kind: str, message: str, level: Level = Level.WARN) -> None:
        self.events.add(kind, message, level)
