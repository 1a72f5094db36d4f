"""Scripted experts for the sim tasks: the EEF and gripper targets of a successful demo.

`make_expert(task, object_poses, start_poses, seed)` plans a demo once, from where the objects
are (SimWorld.reset()/object_poses(): base_link frame, [x y z qw qx qy qz]) and where the arms
measure they are (4x4 EEF poses in `eef_reference`); `targets(t)` then samples it at any time t
(seconds since the demo started). The teleop node's `sim_expert` backend publishes these targets
on the arm driver's inputs at 50 Hz by wall time; the offline harness
(twinvla_ros.evaluation.sim_rollout) feeds them to the same ArmController by sim time.

A plan is one timeline of keyframes per arm (pose, gripper); between two keyframes the target
moves on a straight line with a geodesic rotation, timed by a minimum-jerk profile (zero speed and
acceleration at both ends), so consecutive targets never jump and the arm driver's interpolation,
speed caps and tracking margins have nothing to clip. Peak speeds are fixed fractions of the arm
driver's default caps (SafetyLimits: 0.5 m/s, 2 rad/s, 1.5 gripper units/s): SPEED, ANGULAR_SPEED,
GRIPPER_SPEED below. Keyframes are checked when the plan is made: inside the arm's workspace box
(config/anubis.yaml) with a margin and reachable by the IK, warm-started along the timeline as
the driver's IK is; a placement that cannot be done is a ValueError, not a failing demo.

The demos (grasp geometry from test/sim/test_physics.py's top-down grasp: grasp point ~1.2 cm
above the box centre, fingers closing across two opposite faces):
- lift_box (and lift_box_narrow): the right arm grasps the box top-down and lifts it 10-14 cm;
  the left arm holds still.
- handover_box: the right arm grasps the box top-down, lifts it and turns it sideways to a
  handover point above the middle of the table (its tool pointing at the left arm, the box
  sticking out of its fingers towards the left); the left arm, tool pointing back at the right
  arm, grasps the free half of the box across the other pair of faces (so the two grippers'
  fingers never meet), the right arm lets go and backs off, and the left arm turns the box down
  (it ends upside down) and puts it on the green pad.
- empty: both arms visit two nearby poses, closing and opening their grippers, and return.

Wall time: a sim running slower than real time lags the targets, so every descent and every
grasp is followed by a dwell before the next step depends on it (the arm has arrived, the
fingers have closed). `seed` draws the plan's free choices (speeds, approach and lift heights,
grasp depths, dwell times, handover point and roll, placement on the pad, the empty task's
waypoints) within the margins above, for diverse datasets; the same inputs give bit-identical
targets.
"""
from __future__ import annotations

import bisect
import math
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import lru_cache
from typing import Mapping

import numpy as np
import pinocchio as pin

from twinvla_ros.robot.bimanual import ARMS
from twinvla_ros.robot.description import RobotDescription, load_description
from twinvla_ros.robot.kinematics import ArmKinematics
from twinvla_ros.robot.rotations import quat_wxyz_to_xyzw, quat_xyzw_to_matrix
from twinvla_ros.sim.scene import TASKS, task_spec

# --- Speeds: peaks of the minimum-jerk profiles (average = peak / 1.875) ----------------------
SPEED = 0.15                # m/s: 30 % of the driver's max_eef_speed default (0.5)
ANGULAR_SPEED = 0.5         # rad/s: 25 % of max_eef_angular_speed (2.0): the wrist joints turn faster than the EEF
GRIPPER_SPEED = 0.75        # gripper units/s: 50 % of max_gripper_speed (1.5)
# Gripper "closed" target: the fingers meet the 4 cm box at 0.5 and the squeeze comes from the
# driver's gripper tracking margin, so any target below ~0.45 grips the same; 0.2 spares time.
GRIPPER_CLOSED = 0.2
MIN_JERK_PEAK = 1.875       # peak / average speed of a minimum-jerk move
MIN_MOVE_TIME = 0.4         # s: even a tiny move is not rushed
SPEED_SCALE = (0.75, 1.0)   # per-demo speed factor drawn from the seed
DESCENT_SCALE = 0.6         # descents and the last approach to a grasp: slower than free moves
# Sideways moves at the handover (the left gripper's approach, the right one's retreat): the
# wrist is near alignment (joint 5 ~ +-1.39 rad), where joints 4 and 6 turn up to ~16 rad/s per
# m/s of EEF speed; this keeps them near half their cap.
SIDEWAYS_SCALE = 0.2

# --- Grasp geometry (m) -----------------------------------------------------------------------
GRASP_HEIGHT = (0.010, 0.014)     # grasp point above the box centre (fingertips 1 cm beyond it)
APPROACH_HEIGHT = (0.08, 0.12)    # pre-grasp / pre-place height above the grasp / place pose
LIFT_HEIGHT = (0.10, 0.14)        # lift_box: how far the box is lifted (success needs 5 cm)
PLACE_CLEARANCE = (0.002, 0.006)  # box bottom above the pad when the fingers open
PLACE_JITTER = 0.012              # m: box centre within this of the pad centre (pad half-size 5 cm)
UPRIGHT_TOLERANCE = math.radians(15.0)   # a box tilted more cannot be grasped top-down
# Nominal top-down yaw (closing direction in the table plane) of the right arm: its wrist joint
# 6 is mid-range there (home-like arm); of the box's four face-normal yaws the nearest is used.
RIGHT_GRASP_YAW = -math.pi / 2
# For the handover the grasp yaw also sets how far the box turns on its way to the handover
# pose (a pure quarter turn about x when it equals the handover roll): nearer the roll, within
# joint 6's range.
HANDOVER_GRASP_YAW = math.radians(-70.0)

# --- Handover (base_link frame, m / rad) ------------------------------------------------------
# Where the box centre is handed over, and the roll of the right gripper about its tool axis
# (pointing at the left arm, +y): with roll -30..-45 deg both arms' joint 6 keep >= 0.6 rad
# from their limits (the left arm closes across the other faces, 90 deg further). Sideways,
# the right arm cannot fold its wrist closer than y ~ -0.05 (less with a smaller roll): the
# point sits a little left of the midline so that the right gripper can back off the box.
HANDOVER_X = (0.27, 0.295)
HANDOVER_Y = (0.005, 0.02)
HANDOVER_Z = (0.975, 1.01)
HANDOVER_ROLL = (math.radians(-45.0), math.radians(-30.0))
LEFT_READY_BACKOFF = (0.07, 0.10)  # the left gripper waits this far from its handover grasp, along +y
# The right gripper backs off along its tool axis after letting go: its fingertips clear the box
# by 0.5-2 cm, then it turns away on its way back to the start pose.
RETREAT = (0.035, 0.04)

# --- Timing (s) -------------------------------------------------------------------------------
DWELL = (0.35, 0.6)          # after a descent or an approach, before the gripper acts
GRASP_DWELL = (0.45, 0.7)    # after the fingers closed/opened, before the arm moves on
FINAL_HOLD = (0.8, 1.2)      # at the end: the scene settles (lift_box: the box is held up)

# --- Checks -----------------------------------------------------------------------------------
WORKSPACE_MARGIN = 0.01      # m: keyframes keep this far inside the workspace box
IK_POSITION_TOLERANCE = 1e-3
IK_ROTATION_TOLERANCE = math.radians(1.0)
CHECK_STEPS = 8              # poses per move at which the plan check solves the IK
TOOL_DOWN = np.array([0.0, 0.0, -1.0])


@dataclass(frozen=True)
class ExpertTargets:
    poses: dict[str, np.ndarray]     # side -> (4, 4) EEF target in eef_reference
    grippers: dict[str, float]       # side -> 0 closed .. 1 open


class ScriptedExpert(ABC):
    """A planned demo: targets(t) for t in [0, duration]; later t give the final targets."""

    task: str
    duration: float                  # s

    @abstractmethod
    def targets(self, t: float) -> ExpertTargets:
        """The targets t seconds after the demo started."""


# ---- geometry helpers --------------------------------------------------------------------------

def _tool_rotation(closing, tool_axis) -> np.ndarray:
    """Gripper orientation: fingers closing along `closing`, tool z (towards the fingertips)
    along `tool_axis` (the two must be orthogonal)."""
    x = np.asarray(closing, dtype=np.float64)
    z = np.asarray(tool_axis, dtype=np.float64)
    x = x / np.linalg.norm(x)
    z = z / np.linalg.norm(z)
    return np.column_stack([x, np.cross(z, x), z])


def _top_down(yaw: float) -> np.ndarray:
    return _tool_rotation([math.cos(yaw), math.sin(yaw), 0.0], TOOL_DOWN)


def _pose(rotation: np.ndarray, position) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = rotation
    out[:3, 3] = position
    return out


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2 * math.pi) - math.pi


def _min_jerk(alpha: float) -> float:
    return alpha * alpha * alpha * (10.0 + alpha * (-15.0 + 6.0 * alpha))


def _interpolate(start: np.ndarray, end: np.ndarray, s: float) -> np.ndarray:
    out = np.eye(4)
    out[:3, 3] = start[:3, 3] + s * (end[:3, 3] - start[:3, 3])
    out[:3, :3] = start[:3, :3] @ pin.exp3(s * pin.log3(start[:3, :3].T @ end[:3, :3]))
    return out


def _rotation_angle(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(pin.log3(a[:3, :3].T @ b[:3, :3])))


# ---- timelines ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Keyframe:
    time: float
    pose: np.ndarray          # (4, 4) eef_reference
    gripper: float
    label: str


class _Timeline:
    """One arm's keyframes, appended in time order by the planning helpers."""

    def __init__(self, side: str, pose: np.ndarray, gripper: float, speed_scale: float):
        self.side = side
        self.speed_scale = speed_scale
        self.frames = [_Keyframe(0.0, pose, gripper, "start")]

    @property
    def end(self) -> float:
        return self.frames[-1].time

    @property
    def pose(self) -> np.ndarray:
        return self.frames[-1].pose

    def _append(self, duration: float, pose: np.ndarray, gripper: float, label: str) -> None:
        self.frames.append(_Keyframe(self.end + duration, pose, gripper, label))

    def move(self, pose: np.ndarray, label: str, slow: float = 1.0) -> float:
        """Minimum-jerk move to `pose` (gripper unchanged) at `slow` x the timeline's speed;
        returns its end time."""
        scale = self.speed_scale * slow
        distance = float(np.linalg.norm(pose[:3, 3] - self.pose[:3, 3]))
        angle = _rotation_angle(self.pose, pose)
        duration = max(MIN_MOVE_TIME, MIN_JERK_PEAK * distance / (SPEED * scale),
                       MIN_JERK_PEAK * angle / (ANGULAR_SPEED * scale))
        self._append(duration, pose, self.frames[-1].gripper, label)
        return self.end

    def grip(self, value: float, label: str) -> float:
        change = abs(value - self.frames[-1].gripper)
        duration = max(MIN_MOVE_TIME, MIN_JERK_PEAK * change / (GRIPPER_SPEED * self.speed_scale))
        self._append(duration, self.pose, value, label)
        return self.end

    def wait(self, seconds: float, label: str = "dwell") -> float:
        self._append(seconds, self.pose, self.frames[-1].gripper, label)
        return self.end

    def wait_until(self, time: float, label: str = "wait") -> float:
        if time > self.end:
            self.wait(time - self.end, label)
        return self.end

    def sample(self, t: float, times: list[float]) -> tuple[np.ndarray, float]:
        i = bisect.bisect_right(times, t)
        if i >= len(self.frames):
            last = self.frames[-1]
            return last.pose.copy(), last.gripper
        a, b = self.frames[i - 1], self.frames[i]
        s = _min_jerk((t - a.time) / (b.time - a.time))
        return _interpolate(a.pose, b.pose, s), a.gripper + s * (b.gripper - a.gripper)


class _TimelineExpert(ScriptedExpert):
    def __init__(self, task: str, timelines: dict[str, _Timeline]):
        self.task = task
        self.duration = max(line.end for line in timelines.values())
        self._timelines = timelines
        self._times = {side: [f.time for f in line.frames] for side, line in timelines.items()}

    def targets(self, t: float) -> ExpertTargets:
        try:
            t = float(t)
        except (TypeError, ValueError):
            raise ValueError(f"time must be a number, got {t!r}") from None
        if not math.isfinite(t):
            raise ValueError(f"time must be finite, got {t}")
        t = min(max(t, 0.0), self.duration)
        poses, grippers = {}, {}
        for side, line in self._timelines.items():
            poses[side], grippers[side] = line.sample(t, self._times[side])
        return ExpertTargets(poses=poses, grippers=grippers)

    def keyframes(self) -> dict[str, list[tuple[float, str]]]:
        """side -> [(time, label)]: the plan's structure, for logs and tests."""
        return {side: [(f.time, f.label) for f in line.frames] for side, line in self._timelines.items()}


# ---- the robot, once per process -------------------------------------------------------------

@dataclass(frozen=True)
class _Robot:
    description: RobotDescription
    kinematics: dict[str, ArmKinematics]
    base_to_reference: np.ndarray
    lock: threading.Lock          # the kinematics keep pinocchio data: one IK at a time


@lru_cache(maxsize=1)
def _robot() -> _Robot:
    description = load_description()
    kinematics = {side: ArmKinematics(description, side) for side in ARMS}
    base_to_reference = np.linalg.inv(kinematics["right"].reference_in_base())
    return _Robot(description, kinematics, base_to_reference, threading.Lock())


# ---- input validation -----------------------------------------------------------------------

def _object_pose(name: str, value) -> np.ndarray:
    try:
        pose = np.array(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"pose of {name!r} is not 7 numbers (x y z qw qx qy qz): {value!r}") from None
    if pose.shape != (7,):
        raise ValueError(f"pose of {name!r} must be 7 numbers (x y z qw qx qy qz), got shape {pose.shape}")
    if not np.isfinite(pose).all():
        raise ValueError(f"pose of {name!r} contains NaN or inf")
    if np.abs(pose[:3]).max() > 10.0:
        raise ValueError(f"pose of {name!r} is {np.abs(pose[:3]).max():.3g} m from the base: not on the table")
    norm = float(np.linalg.norm(pose[3:]))
    if not 0.5 < norm < 2.0:
        raise ValueError(f"quaternion of {name!r} has norm {norm:.3g}, expected 1")
    pose[3:] /= norm
    return pose


def _start_pose(side: str, value) -> np.ndarray:
    try:
        pose = np.array(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{side} start pose is not a 4x4 array of numbers") from None
    if pose.shape != (4, 4):
        raise ValueError(f"{side} start pose must be 4x4, got shape {pose.shape}")
    if not np.isfinite(pose).all():
        raise ValueError(f"{side} start pose contains NaN or inf")
    rotation = pose[:3, :3]
    if (np.any(pose[3] != (0.0, 0.0, 0.0, 1.0)) or np.abs(rotation).max() > 1.001
            or np.abs(rotation.T @ rotation - np.eye(3)).max() > 1e-3 or np.linalg.det(rotation) < 0):
        raise ValueError(f"{side} start pose is not a rigid transform")
    u, _, vt = np.linalg.svd(rotation)
    pose[:3, :3] = u @ vt
    return pose


def _box_in_reference(robot: _Robot, task: str, name: str, pose7: np.ndarray) -> tuple[np.ndarray, float]:
    """A box's pose (4x4, eef_reference) with its own z up, and its half height. ValueError when
    it is not standing on one of its square ends (either way up)."""
    spec = next(o for o in TASKS[task].objects if o.name == name)
    rotation = quat_xyzw_to_matrix(quat_wxyz_to_xyzw(pose7[3:]))
    up = rotation[:, 2]
    tilt = math.acos(min(1.0, abs(float(up[2]))))
    if tilt > UPRIGHT_TOLERANCE:
        raise ValueError(f"{task}: the {name} is tilted {math.degrees(tilt):.0f} deg: a top-down grasp needs "
                         f"it upright (within {math.degrees(UPRIGHT_TOLERANCE):.0f} deg)")
    if up[2] < 0:                  # upside down: the same box for a top-down grasp
        rotation = rotation @ np.diag([1.0, -1.0, -1.0])
    world = _pose(rotation, pose7[:3])
    return robot.base_to_reference @ world, float(spec.half_size[2])


def _box_yaw(box: np.ndarray) -> float:
    x = box[:3, 0]
    return math.atan2(float(x[1]), float(x[0]))


def _nearest_face_yaw(box: np.ndarray, nominal: float) -> float:
    """Of the yaws that close the fingers across two opposite faces (box yaw + k * 90 deg), the
    one nearest `nominal`."""
    yaw = _box_yaw(box)
    candidates = [yaw + k * math.pi / 2 for k in range(-4, 5)]
    return min(candidates, key=lambda c: abs(_wrap(c - nominal)))


# ---- plan checks -----------------------------------------------------------------------------

def _check_plan(robot: _Robot, task: str, timelines: dict[str, _Timeline], start_q: dict[str, np.ndarray]) -> None:
    """Every keyframe inside the workspace box (with WORKSPACE_MARGIN), and every move reachable
    by IK the way the driver follows it: warm-started from the previous solution along the path
    (CHECK_STEPS poses per move; the tests check every 20 ms target)."""
    with robot.lock:
        for side, line in timelines.items():
            arm = robot.description.arms[side]
            lo = np.asarray(arm.workspace_min) + WORKSPACE_MARGIN
            hi = np.asarray(arm.workspace_max) - WORKSPACE_MARGIN
            q = start_q[side]
            for before, frame in zip(line.frames, line.frames[1:]):
                p = frame.pose[:3, 3]
                if np.any(p < lo) or np.any(p > hi):
                    raise ValueError(f"{task}: the {side} arm's '{frame.label}' pose {np.round(p, 3).tolist()} is "
                                     f"outside its workspace box {arm.workspace_min}..{arm.workspace_max} "
                                     f"(eef_reference, {WORKSPACE_MARGIN * 100:.0f} cm margin): objects out of reach")
                if np.array_equal(before.pose, frame.pose):
                    continue
                for s in np.linspace(0.0, 1.0, CHECK_STEPS + 1)[1:]:
                    result = robot.kinematics[side].ik(_interpolate(before.pose, frame.pose, float(s)), q,
                                                       position_tolerance=IK_POSITION_TOLERANCE,
                                                       rotation_tolerance=IK_ROTATION_TOLERANCE, max_attempts=1)
                    if not result.reached:
                        raise ValueError(f"{task}: the {side} arm cannot reach its '{frame.label}' pose "
                                         f"{np.round(p, 3).tolist()} (IK residual "
                                         f"{result.position_error * 1e3:.1f} mm, "
                                         f"{math.degrees(result.rotation_error):.1f} deg, {s:.0%} of the way): "
                                         f"objects out of reach")
                    q = result.q


def _start_configuration(robot: _Robot, side: str, pose: np.ndarray) -> np.ndarray:
    with robot.lock:
        result = robot.kinematics[side].ik(pose, None, position_tolerance=IK_POSITION_TOLERANCE,
                                           rotation_tolerance=IK_ROTATION_TOLERANCE)
    if not result.reached:
        raise ValueError(f"{side} start pose {np.round(pose[:3, 3], 3).tolist()} is not reachable by the arm")
    return result.q


# ---- the plans ---------------------------------------------------------------------------------

class _Draw:
    """The seed's choices, named at the call site."""

    def __init__(self, seed: int):
        self._rng = np.random.default_rng(seed)

    def __call__(self, bounds: tuple[float, float]) -> float:
        return float(self._rng.uniform(*bounds))


def _pick(line: _Timeline, box: np.ndarray, draw: _Draw, nominal_yaw: float = RIGHT_GRASP_YAW) -> tuple[float, float]:
    """Top-down grasp of a box standing on the table: pre-grasp, descend, close. Returns (grasp
    height above the box centre, yaw)."""
    yaw = _nearest_face_yaw(box, nominal_yaw)
    rotation = _top_down(yaw)
    grasp_height = draw(GRASP_HEIGHT)
    grasp = box[:3, 3] + [0.0, 0.0, grasp_height]
    above = grasp + [0.0, 0.0, draw(APPROACH_HEIGHT)]
    line.move(_pose(rotation, above), "pre-grasp")
    line.move(_pose(rotation, grasp), "grasp", slow=DESCENT_SCALE)
    line.wait(draw(DWELL))
    line.grip(GRIPPER_CLOSED, "close")
    line.wait(draw(GRASP_DWELL))
    return grasp_height, yaw


def _lift_box(objects: dict, start: dict[str, np.ndarray], draw: _Draw, robot: _Robot) -> dict[str, _Timeline]:
    box, _ = _box_in_reference(robot, "lift_box", "box", objects["box"])
    scale = draw(SPEED_SCALE)
    right = _Timeline("right", start["right"], 1.0, scale)
    left = _Timeline("left", start["left"], 1.0, scale)
    _pick(right, box, draw)
    lifted = right.pose.copy()
    lifted[2, 3] += draw(LIFT_HEIGHT)
    right.move(lifted, "lift", slow=DESCENT_SCALE)
    right.wait(draw(FINAL_HOLD), "hold")
    left.wait_until(right.end, "hold")
    return {"left": left, "right": right}


def _handover_box(objects: dict, start: dict[str, np.ndarray], draw: _Draw, robot: _Robot) -> dict[str, _Timeline]:
    box, half_height = _box_in_reference(robot, "handover_box", "box", objects["box"])
    pad_world = objects["target_pad"]
    pad_spec = next(o for o in TASKS["handover_box"].objects if o.name == "target_pad")
    pad = robot.base_to_reference @ _pose(np.eye(3), pad_world[:3])
    pad_top = pad[2, 3] + pad_spec.half_size[2]
    scale = draw(SPEED_SCALE)
    right = _Timeline("right", start["right"], 1.0, scale)
    left = _Timeline("left", start["left"], 1.0, scale)

    # Right: pick the box and lift it clear of the table.
    right_grasp, _ = _pick(right, box, draw, HANDOVER_GRASP_YAW)
    lifted = right.pose.copy()
    lifted[2, 3] += draw(LIFT_HEIGHT)
    right.move(lifted, "lift")

    # The handover point (box centre) and the two grippers there: the right tool points at the
    # left arm (+y), the box centre right_grasp beyond its grasp point; the left tool points back
    # (-y), closing across the other pair of faces (90 deg about the y axis from the right's).
    centre_world = np.array([draw(HANDOVER_X), draw(HANDOVER_Y), draw(HANDOVER_Z)])
    centre = (robot.base_to_reference @ _pose(np.eye(3), centre_world))[:3, 3]
    roll = draw(HANDOVER_ROLL)
    y_axis = np.array([0.0, 1.0, 0.0])
    right_rotation = _tool_rotation([math.cos(roll), 0.0, math.sin(roll)], y_axis)
    left_rotation = _tool_rotation([-math.sin(roll), 0.0, math.cos(roll)], -y_axis)
    left_grasp = draw(GRASP_HEIGHT)
    right_handover = _pose(right_rotation, centre - right_grasp * y_axis)
    left_handover = _pose(left_rotation, centre + left_grasp * y_axis)
    left_ready = _pose(left_rotation, left_handover[:3, 3] + draw(LEFT_READY_BACKOFF) * y_axis)

    # Left: to its ready pose while the right arm picks.
    left.move(left_ready, "ready")
    right.move(right_handover, "handover")
    right.wait(draw(DWELL))
    left.wait_until(right.end)
    left.move(left_handover, "handover grasp", slow=SIDEWAYS_SCALE)
    left.wait(draw(DWELL))
    left.grip(GRIPPER_CLOSED, "close")
    left.wait(draw(GRASP_DWELL))

    # Right: let go, back off along its tool axis, return to where it started.
    right.wait_until(left.end)
    right.grip(1.0, "open")
    right.wait(draw(GRASP_DWELL))
    clear = right.move(_pose(right_rotation, right_handover[:3, 3] - draw(RETREAT) * y_axis), "retreat",
                       slow=SIDEWAYS_SCALE)
    right.move(start["right"], "rest")

    # Left: turn the box down (the tool from -y to straight down, a quarter turn about x) and put
    # it on the pad. The box's end that faced the left gripper now faces up.
    left.wait_until(clear)                           # the right gripper is clear of the box
    place_rotation = pin.exp3(np.array([math.pi / 2, 0.0, 0.0])) @ left_rotation
    place_centre = pad[:3, 3].copy()
    place_centre[:2] += [draw((-PLACE_JITTER, PLACE_JITTER)), draw((-PLACE_JITTER, PLACE_JITTER))]
    place_centre[2] = pad_top + half_height + draw(PLACE_CLEARANCE)
    place = place_centre + [0.0, 0.0, left_grasp]
    above = place + [0.0, 0.0, draw(APPROACH_HEIGHT)]
    left.move(_pose(place_rotation, above), "pre-place")
    left.move(_pose(place_rotation, place), "place", slow=DESCENT_SCALE)
    left.wait(draw(DWELL))
    left.grip(1.0, "open")
    left.wait(draw(GRASP_DWELL))
    left.move(_pose(place_rotation, above), "retreat", slow=DESCENT_SCALE)
    end = max(left.end, right.end) + draw(FINAL_HOLD)
    left.wait_until(end, "hold")
    right.wait_until(end, "hold")
    return {"left": left, "right": right}


# The empty task's waypoints: offsets from the start pose (m) and tilts (rad), drawn per arm.
EMPTY_OFFSET_X = (0.0, 0.08)
EMPTY_OFFSET_Y = (-0.06, 0.06)
EMPTY_OFFSET_Z = (-0.12, -0.04)
EMPTY_TILT = (-0.2, 0.2)
EMPTY_GRIPPER = (0.2, 0.5)


def _empty(objects: dict, start: dict[str, np.ndarray], draw: _Draw, robot: _Robot) -> dict[str, _Timeline]:
    scale = draw(SPEED_SCALE)
    lines = {}
    for side in ARMS:
        line = _Timeline(side, start[side], 1.0, scale)
        for label in ("first waypoint", "second waypoint"):
            pose = start[side].copy()
            pose[:3, 3] += [draw(EMPTY_OFFSET_X), draw(EMPTY_OFFSET_Y), draw(EMPTY_OFFSET_Z)]
            pose[:3, :3] = pin.exp3(np.array([draw(EMPTY_TILT), draw(EMPTY_TILT), draw(EMPTY_TILT)])) @ pose[:3, :3]
            line.move(pose, label)
            line.grip(draw(EMPTY_GRIPPER), "close")
            line.grip(1.0, "open")
        line.move(start[side], "back to start")
        lines[side] = line
    end = max(line.end for line in lines.values()) + draw(FINAL_HOLD)
    for line in lines.values():
        line.wait_until(end, "hold")
    return lines


_PLANS = {"lift_box": _lift_box, "lift_box_narrow": _lift_box, "handover_box": _handover_box, "empty": _empty}


def make_expert(task: str, object_poses: Mapping[str, np.ndarray], start_poses: Mapping[str, np.ndarray],
                seed: int) -> ScriptedExpert:
    """Plan the demo of `task` for these objects (base_link, [x y z qw qx qy qz]) and arm start
    poses (4x4 EEF in eef_reference). ValueError for an unknown task, a missing or malformed
    object or start pose, a bad seed, or objects the arms cannot reach."""
    if task not in _PLANS:
        task_spec(task)   # the scene's error lists the tasks
        raise ValueError(f"no scripted expert for task {task!r}; experts: {', '.join(sorted(_PLANS))}")
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(object_poses, Mapping):
        raise ValueError(f"object_poses must be a mapping name -> pose, got {type(object_poses).__name__}")
    if not isinstance(start_poses, Mapping):
        raise ValueError(f"start_poses must be a mapping side -> 4x4 pose, got {type(start_poses).__name__}")
    objects = {}
    for spec in TASKS[task].objects:
        if spec.name not in object_poses:
            raise ValueError(f"{task}: object {spec.name!r} is missing from the object poses "
                             f"(got {sorted(map(str, object_poses))})")
        objects[spec.name] = _object_pose(spec.name, object_poses[spec.name])
    start = {}
    for side in ARMS:
        if side not in start_poses:
            raise ValueError(f"start pose of the {side} arm is missing (got {sorted(map(str, start_poses))})")
        start[side] = _start_pose(side, start_poses[side])
    robot = _robot()
    start_q = {side: _start_configuration(robot, side, start[side]) for side in ARMS}
    timelines = _PLANS[task](objects, start, _Draw(int(seed)), robot)
    _check_plan(robot, task, timelines, start_q)
    return _TimelineExpert(task, timelines)


__all__ = ["ExpertTargets", "ScriptedExpert", "make_expert"]
