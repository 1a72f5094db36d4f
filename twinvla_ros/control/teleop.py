"""Teleoperation core: a leader arm's readings -> the follower arm's commands, pure Python.

ALOHA practice: the leader is a passive copy of the follower (the same Anubis kinematics, read
with torque off); its own offsets and directions are calibrated away by LeaderArm.read(), so its
joint angles are the follower's joint angles. Two mappings:
- joint: the follower's joint command is the leader's joints (clamped to the follower's limits);
- eef: the follower's EEF target is the forward kinematics of those joints (the same URDF), in
  the reference frame, and the arm driver's IK follows it.
The gripper maps the leader's finger travel (its own closed .. open range) to the follower's
0 closed .. 1 open, clamped, with a deadband so that a resting hand does not make it chatter.

One `ArmTeleop` per arm is a small state machine fed (now, leader reading, follower measured
joints) at the teleop rate; it returns a command or None (publish nothing: the arm driver's
stale timeout then holds the arm):

    waiting --readings--> approaching --follower at the leader--> mirroring
                            |   ^                                     |
            no usable reading   |   usable readings again             | leader stale / not finite
                            v   |                                     |
                           holding <----------------------------------+
    reset() (activate, deactivate): back to waiting from any state

- approaching (the safe start): the command starts at the follower's measured pose and moves
  towards the leader's in joint space (also for the EEF mapping, where a straight EEF path could
  pass through a singularity) at `safe_start_speed` rad/s (gripper: `safe_start_gripper_speed`),
  all joints on one straight line, chasing the leader if it moves. Mirroring begins only when the
  command has landed on the leader (so the first mirrored command is no step) and every measured
  follower joint is within `engage_tolerance` of it.
- holding: the leader reading is stale (older than `stale_timeout`) or not finite, or, while
  approaching, the follower's measurement is missing or older than `follower_stale_timeout`.
  Nothing is commanded; when the readings are fresh again the arm re-engages through a new safe
  start (the leader may have moved a lot).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import numpy as np

from twinvla_ros.hardware.motors import BusReading
from twinvla_ros.reporting import Level, Status
from twinvla_ros.robot.description import ArmDescription
from twinvla_ros.robot.kinematics import ArmKinematics

MAPPINGS = ("joint", "eef")
ARM_JOINTS = 6
# The longest interval one approach step may cover: after a stall of the teleop loop (a
# loaded machine) the follower resumes at the safe-start speed instead of jumping ahead.
MAX_STEP_INTERVAL = 0.1          # s


class TeleopState(str, Enum):
    WAITING = "waiting"            # not started, or no leader / follower reading yet
    APPROACHING = "approaching"    # safe start: the follower moves slowly to the leader's pose
    MIRRORING = "mirroring"        # the follower follows the leader
    HOLDING = "holding"            # the leader went stale or not finite: nothing is commanded


@dataclass(frozen=True)
class TeleopConfig:
    mapping: str = "joint"                    # "joint" | "eef"
    safe_start_speed: float = 0.3             # rad/s of the fastest joint while approaching
    safe_start_gripper_speed: float = 0.5     # fraction of the stroke per second while approaching
    engage_tolerance: float = 0.05            # rad: every follower joint this close to the leader
    leader_gripper_closed: float = 0.0        # leader's finger travel (m, as LeaderArm reads) closed
    leader_gripper_open: float = 0.04         # ... and fully open
    gripper_deadband: float = 0.02            # fraction: smaller changes of the leader's gripper are ignored
    stale_timeout: float = 0.1                # s: an older leader reading holds the follower
    follower_stale_timeout: float = 0.5       # s: an older follower measurement pauses a safe start

    def __post_init__(self):
        if self.mapping not in MAPPINGS:
            raise ValueError(f"mapping must be one of {list(MAPPINGS)}, got {self.mapping!r}")
        for name in ("safe_start_speed", "safe_start_gripper_speed", "engage_tolerance", "stale_timeout",
                     "follower_stale_timeout"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        for name in ("leader_gripper_closed", "leader_gripper_open"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)!r}")
        if abs(self.leader_gripper_open - self.leader_gripper_closed) < 1e-4:
            raise ValueError(f"leader_gripper_open ({self.leader_gripper_open}) must differ from "
                             f"leader_gripper_closed ({self.leader_gripper_closed}) by at least 0.1 mm")
        if not (math.isfinite(self.gripper_deadband) and 0.0 <= self.gripper_deadband < 0.5):
            raise ValueError(f"gripper_deadband must lie in [0, 0.5), got {self.gripper_deadband!r}")


@dataclass(frozen=True)
class ArmSample:
    """One reading of an arm: six joints (rad), the gripper and when it was measured (s, the
    caller's monotonic clock). The gripper is in the arm's own unit: a leader's finger travel
    in m, a follower's opening 0 closed .. 1 open."""
    joints: np.ndarray
    gripper: float
    stamp: float

    @classmethod
    def from_bus_reading(cls, reading: BusReading) -> "ArmSample":
        """A leader's BusReading (six joints in rad, then finger travel in m)."""
        positions = np.asarray(reading.positions, dtype=np.float64)
        return cls(positions[:ARM_JOINTS].copy(), float(positions[ARM_JOINTS]), float(reading.stamp))


@dataclass(frozen=True)
class TeleopCommand:
    """What the follower is sent: a joint command (approach, joint mirroring) or an EEF target
    (EEF mirroring), with the gripper 0 closed .. 1 open."""
    joints: np.ndarray | None      # (6,) rad
    pose: np.ndarray | None        # (4, 4) EEF target in the reference frame
    gripper: float


def _sample_problem(sample: ArmSample | None, now: float, stale_timeout: float | None, what: str) -> str | None:
    """Why `sample` cannot be used, or None."""
    if sample is None:
        return f"no {what} reading yet"
    joints = np.asarray(sample.joints)
    if joints.shape != (ARM_JOINTS,):
        return f"{what} reading has {joints.size} joints, expected {ARM_JOINTS}"
    if not (np.isfinite(joints).all() and math.isfinite(sample.gripper) and math.isfinite(sample.stamp)):
        return f"{what} reading is not finite"
    if stale_timeout is not None and now - sample.stamp > stale_timeout:
        return f"{what} reading is stale ({(now - sample.stamp) * 1e3:.0f} ms old, limit {stale_timeout * 1e3:.0f} ms)"
    return None


def _move_towards(current: np.ndarray, target: np.ndarray, max_step: float) -> np.ndarray:
    """`current` moved towards `target` on a straight line, no coordinate by more than max_step;
    exactly `target` once it is that close."""
    gap = target - current
    largest = float(np.max(np.abs(gap))) if gap.size else 0.0
    if largest <= max_step:
        return target.copy()
    return current + gap * (max_step / largest)


class GripperMapping:
    """Leader finger travel -> follower opening 0..1 (clamped), with a deadband: the output
    changes only when the leader moved more than `deadband` from it, or reached an end (so
    the gripper still closes and opens fully)."""

    def __init__(self, closed: float, open_: float, deadband: float):
        self.closed, self.open, self.deadband = float(closed), float(open_), float(deadband)
        self.output: float | None = None

    def fraction(self, travel: float) -> float:
        """The clamped opening of a leader reading, without the deadband."""
        with np.errstate(over="ignore", invalid="ignore"):
            value = (float(travel) - self.closed) / (self.open - self.closed)
        return float(np.clip(value, 0.0, 1.0))

    def __call__(self, travel: float) -> float:
        value = self.fraction(travel)
        if self.output is None or value in (0.0, 1.0) or abs(value - self.output) > self.deadband:
            self.output = value
        return self.output

    def reset(self) -> None:
        self.output = None


class ArmTeleop:
    """One arm's teleop state machine (see the module docstring). `kinematics` is needed for the
    EEF mapping only."""

    def __init__(self, arm: ArmDescription, config: TeleopConfig, kinematics: ArmKinematics | None = None):
        if config.mapping == "eef" and kinematics is None:
            raise ValueError("the EEF mapping needs the arm's kinematics")
        self.arm = arm
        self.config = config
        self.kinematics = kinematics
        self.gripper_mapping = GripperMapping(config.leader_gripper_closed, config.leader_gripper_open,
                                              config.gripper_deadband)
        self.state = TeleopState.WAITING
        self.reason = "not started"
        self.counters = {"engagements": 0, "holds": 0, "approaches": 0}
        self._command: np.ndarray | None = None      # approach: (7,) six joints + gripper opening
        self._last_time: float | None = None
        self._gap = float("nan")                      # rad, largest follower - leader joint gap

    def reset(self, reason: str) -> None:
        """Back to waiting (activate, deactivate): the next command starts a new safe start."""
        self.state = TeleopState.WAITING
        self.reason = reason
        self._command = None
        self._last_time = None
        self.gripper_mapping.reset()

    def map_leader(self, leader: ArmSample) -> tuple[np.ndarray, float]:
        """The follower's joint target (the leader's joints within the follower's limits) and
        gripper opening for a (finite) leader reading."""
        joints = np.clip(np.asarray(leader.joints, dtype=np.float64), self.arm.lower, self.arm.upper)
        return joints, self.gripper_mapping(leader.gripper)

    def update(self, now: float, leader: ArmSample | None, follower: ArmSample | None) -> TeleopCommand | None:
        """One teleop tick: the follower's command, or None (nothing to send)."""
        if not math.isfinite(now):
            raise ValueError(f"now must be a finite time, got {now!r}")
        problem = _sample_problem(leader, now, self.config.stale_timeout, "leader")
        if problem is not None:
            self._stop(problem)
            return None
        joints, gripper = self.map_leader(leader)
        if self.state == TeleopState.MIRRORING:
            return self._mirror(joints, gripper)
        problem = _sample_problem(follower, now, self.config.follower_stale_timeout, "follower")
        if problem is not None:
            self._stop(problem)
            return None
        measured = np.asarray(follower.joints, dtype=np.float64)
        if self.state != TeleopState.APPROACHING:
            self.state = TeleopState.APPROACHING
            self.counters["approaches"] += 1
            # From where the follower is: the first command is no step.
            self._command = np.append(np.clip(measured, self.arm.lower, self.arm.upper),
                                      float(np.clip(follower.gripper, 0.0, 1.0)))
            self._last_time = now
        interval = float(np.clip(now - self._last_time, 0.0, MAX_STEP_INTERVAL))
        self._last_time = now
        command = self._command
        command[:ARM_JOINTS] = _move_towards(command[:ARM_JOINTS], joints, self.config.safe_start_speed * interval)
        command[ARM_JOINTS] = _move_towards(command[ARM_JOINTS:], np.array([gripper]),
                                            self.config.safe_start_gripper_speed * interval)[0]
        self._gap = float(np.max(np.abs(measured - joints)))
        landed = np.array_equal(command[:ARM_JOINTS], joints) and command[ARM_JOINTS] == gripper
        if landed and self._gap <= self.config.engage_tolerance:
            # This tick's approach step landed on the leader: the first mirrored command.
            self.state = TeleopState.MIRRORING
            self.reason = "following the leader"
            self.counters["engagements"] += 1
            self._command = None
            return self._mirror(joints, gripper)
        self.reason = f"moving to the leader's pose: largest joint gap {self._gap:.3f} rad"
        return TeleopCommand(command[:ARM_JOINTS].copy(), None, float(command[ARM_JOINTS]))

    def _mirror(self, joints: np.ndarray, gripper: float) -> TeleopCommand:
        if self.config.mapping == "eef":
            return TeleopCommand(None, self.kinematics.fk(joints), gripper)
        return TeleopCommand(joints, None, gripper)

    def _stop(self, problem: str) -> None:
        """No usable reading: waiting stays waiting, a moving arm holds; a later start is a new
        safe start."""
        if self.state in (TeleopState.APPROACHING, TeleopState.MIRRORING):
            self.state = TeleopState.HOLDING
            self.counters["holds"] += 1
        self.reason = problem
        self._command = None
        self._last_time = None

    def status(self) -> Status:
        values = {"state": self.state.value, "reason": self.reason, "mapping": self.config.mapping,
                  **{name: str(count) for name, count in self.counters.items()}}
        if self.state == TeleopState.APPROACHING:
            values["joint_gap_rad"] = f"{self._gap:.3f}"
        level = Level.OK if self.state in (TeleopState.APPROACHING, TeleopState.MIRRORING) else Level.WARN
        return Status(level, f"{self.state.value}: {self.reason}", values)
