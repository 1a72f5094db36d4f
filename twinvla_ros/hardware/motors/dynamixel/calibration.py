"""Calibration of one arm's motors (`twinvla-ros calibrate --arm <role>`): offsets and
directions from raw positions at two known poses, written to `<calibration_dir>/<role>.yaml`,
which load_arm_config then applies.

The poses are `hardware.calibration` in the config (URDF joint angles, rad): the zero pose,
set precisely with the gripper closed, fixes every offset (`offset = motor angle - direction *
gear * pose angle`); the direction pose, set roughly with the gripper fully open, fixes every
direction (the sign of each motor's move against the joint's) and the gripper's open angle.
"""
from __future__ import annotations

import datetime
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Protocol

import numpy as np
import yaml

from twinvla_ros.hardware.motors.dynamixel import control_table as ct
from twinvla_ros.hardware.motors.dynamixel.config import MIN_DIRECTION_MOVE, DynamixelArmConfig, \
    counts_to_motor_angle, load_arm_config, motor_angle_to_counts
from twinvla_ros.hardware.motors.dynamixel.leader import LeaderArm
from twinvla_ros.robot.description import load_description


@dataclass(frozen=True)
class Calibration:
    role: str
    directions: dict[str, tuple[int, ...]]      # joint name -> per motor, +1/-1
    offsets: dict[str, tuple[float, ...]]       # joint name -> per motor, rad
    gripper_direction: int
    gripper_offset: float                       # rad
    gripper_open: float                         # rad, the gripper angle measured fully open
    zero_counts: dict[int, int]                 # the raw readings, for the record
    direction_counts: dict[int, int] | None


def _angle(counts: Mapping[int, int], motor_id: int) -> float:
    if motor_id not in counts:
        raise ValueError(f"no reading of motor {motor_id}")
    return float(counts_to_motor_angle(counts[motor_id]))


def _direction(moved: float, wanted: float, what: str) -> int:
    """The sign of a motor's move relative to the joint's; ValueError when it barely moved."""
    if abs(moved) < MIN_DIRECTION_MOVE:
        raise ValueError(f"{what} moved {moved:+.3f} rad between the two poses; it should turn about "
                         f"{wanted:+.2f} rad (at least {MIN_DIRECTION_MOVE} rad): set the direction pose again")
    return 1 if moved * wanted > 0 else -1


def compute_calibration(config: DynamixelArmConfig, zero_counts: Mapping[int, int],
                        direction_counts: Mapping[int, int] | None = None) -> Calibration:
    """Offsets (and, with the direction pose's readings, directions) from present position
    counts by motor ID at the config's calibration poses. Without `direction_counts` the
    configured directions and gripper open angle are kept."""
    poses = config.calibration_poses
    directions, offsets = {}, {}
    for index, joint in enumerate(config.joints):
        joint_move = poses.direction[index] - poses.zero[index]
        joint_directions, joint_offsets = [], []
        for motor in joint.motors:
            direction = motor.direction
            if direction_counts is not None:
                moved = _angle(direction_counts, motor.id) - _angle(zero_counts, motor.id)
                direction = _direction(moved, joint.gear * joint_move, f"{joint.name} (motor {motor.id})")
            joint_directions.append(direction)
            joint_offsets.append(_angle(zero_counts, motor.id) - direction * joint.gear * poses.zero[index])
        directions[joint.name], offsets[joint.name] = tuple(joint_directions), tuple(joint_offsets)

    gripper = config.gripper
    closed_angle = _angle(zero_counts, gripper.motor.id)
    direction, open_angle = gripper.motor.direction, gripper.open
    if direction_counts is not None:
        moved = _angle(direction_counts, gripper.motor.id) - closed_angle
        direction = _direction(moved, gripper.open - gripper.closed, f"gripper (motor {gripper.motor.id})")
        open_angle = gripper.closed + direction * moved
    return Calibration(
        role=config.role, directions=directions, offsets=offsets, gripper_direction=direction,
        gripper_offset=closed_angle - direction * gripper.closed, gripper_open=open_angle,
        zero_counts={int(i): int(c) for i, c in zero_counts.items()},
        direction_counts=None if direction_counts is None else {int(i): int(c) for i, c in direction_counts.items()})


def position_mode_problems(config: DynamixelArmConfig, calibration: Calibration,
                           lower: np.ndarray, upper: np.ndarray) -> list[str]:
    """Joints in position mode whose range (joint limits, rad) would leave the one turn of
    counts 0..4095 with these offsets: the servo cannot cross that seam in position mode."""
    if config.joint_operating_mode != ct.OperatingMode.POSITION:
        return []
    low_limit, high_limit = ct.POSITION_MODE_RANGE
    problems = []
    for index, joint in enumerate(config.joints):
        for motor, direction, offset in zip(joint.motors, calibration.directions[joint.name],
                                            calibration.offsets[joint.name]):
            ends = motor_angle_to_counts([offset + direction * joint.gear * q for q in (lower[index], upper[index])])
            if ends.min() < low_limit or ends.max() > high_limit:
                problems.append(f"{joint.name} (motor {motor.id}): its limits map to counts {ends.min()} .. "
                                f"{ends.max()}, outside {low_limit} .. {high_limit}; turn the horn by half a turn "
                                "or use joint_operating_mode: extended_position")
    return problems


def calibration_document(calibration: Calibration) -> dict:
    """The calibration file's content (what load_arm_config reads back)."""
    document = {
        "role": calibration.role,
        "recorded": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "joints": {name: {"directions": list(calibration.directions[name]),
                          "offsets": [round(o, 6) for o in calibration.offsets[name]]}
                   for name in calibration.directions},
        "gripper": {"direction": calibration.gripper_direction, "offset": round(calibration.gripper_offset, 6),
                    "open": round(calibration.gripper_open, 6)},
        "raw_counts": {"zero_pose": calibration.zero_counts},
    }
    if calibration.direction_counts is not None:
        document["raw_counts"]["direction_pose"] = calibration.direction_counts
    return document


def write_calibration(path: Path, calibration: Calibration) -> Path:
    """Writes the calibration file (folders created); returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (f"# Motor calibration of {calibration.role}, written by `twinvla-ros calibrate`: it overrides\n"
              "# the directions and offsets (rad) of the hardware config. Delete it to go back to those.\n")
    path.write_text(header + yaml.safe_dump(calibration_document(calibration), sort_keys=False))
    return path


class RawPositionSource(Protocol):
    def raw_positions(self) -> dict[int, int]: ...

    def close(self) -> None: ...


def _degrees(pose) -> str:
    return ", ".join(f"{math.degrees(q):.0f}" for q in pose)


def run_calibration(role: str, prompt: Callable[[str], str] = input, out: Callable[[str], None] = print,
                    bus_factory: Callable[[DynamixelArmConfig], RawPositionSource] | None = None,
                    config_path: Path | str | None = None, calibration_dir: Path | str | None = None) -> Path:
    """Interactive calibration of arm `role`: opens it read-only (torque off), asks for the
    zero pose and the direction pose, writes `<calibration_dir>/<role>.yaml` and prints what it
    recorded; returns the file's path. `bus_factory(config)` defaults to a LeaderArm."""
    config = load_arm_config(role, config_path, calibration_dir=calibration_dir)
    kind = role.rsplit("_", 1)[0]
    poses = config.calibration_poses
    out(f"Calibrating {role} on {config.port}: its torque goes off now, support the arm.")
    bus = (bus_factory or LeaderArm)(config)
    try:
        prompt(f"Move the {config.side} {kind} arm to the zero pose (joints 1-6 at {_degrees(poses.zero)} deg, "
               "gripper closed), then press Enter: ")
        zero = bus.raw_positions()
        prompt(f"Now turn every joint to about {_degrees(poses.direction)} deg (each a little in its positive "
               "direction), gripper fully open, then press Enter: ")
        direction = bus.raw_positions()
    finally:
        bus.close()
    calibration = compute_calibration(config, zero, direction)
    path = write_calibration(config.calibration_file, calibration)
    out(f"Wrote {path}:")
    for joint in config.joints:
        for motor, d, o in zip(joint.motors, calibration.directions[joint.name], calibration.offsets[joint.name]):
            out(f"  {joint.name} motor {motor.id}: direction {d:+d}, offset {o:+.4f} rad "
                f"(zero pose count {zero[motor.id]})")
    out(f"  gripper motor {config.gripper.motor.id}: direction {calibration.gripper_direction:+d}, "
        f"offset {calibration.gripper_offset:+.4f} rad, open at {calibration.gripper_open:.4f} rad")
    arm = load_description().arms[config.side]
    for problem in position_mode_problems(config, calibration, arm.lower, arm.upper):
        out(f"  warning: {problem}")
    return path
