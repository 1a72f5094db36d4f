"""The Dynamixel settings of one arm, read and checked from the `hardware:` section of the robot
config (config/anubis.yaml), and the unit conversions between motor registers and joints.

Conventions (every number in the YAML is in these units):
- A motor's angle is (count - 2048) * 2 pi / 4096 rad: count 2048, the middle of one turn, is
  0 rad of the motor.
- A joint's motors follow `motor angle = offset + direction * gear * joint angle`; the first
  motor of a joint is its primary (it is read), the others are shadow motors on the same axis
  (each gets the goal through its own direction and offset, so a mirrored motor is simply
  direction -1).
- The gripper motor's angle after direction and offset, `direction * (motor angle - offset)`,
  is `closed` with the fingers closed and `open` fully open; finger travel (0 .. stroke m, the
  robot description's `gripper_stroke`) is linear in between and clamped to it.
- Velocities: 0.229 rpm per unit. Efforts are motor current in A (2.69 mA per unit, XM430/XM540),
  signed along the joint's positive direction and summed over a joint's motors: a current, not
  a torque (the torque constant depends on the model and the load).

A calibration file `<calibration_dir>/<role>.yaml` (written by `twinvla-ros calibrate`)
overrides the directions and offsets it names.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import yaml

from twinvla_ros.hardware.motors.dynamixel.control_table import (
    CENTRE_COUNT, COUNTS_PER_REV, CURRENT_UNIT_A, RETURN_DELAY_UNIT_US, VELOCITY_UNIT_RPM, OperatingMode,
)
from twinvla_ros.paths import config_path

RAD_PER_COUNT = 2.0 * math.pi / COUNTS_PER_REV
RAD_S_PER_VELOCITY_UNIT = VELOCITY_UNIT_RPM * 2.0 * math.pi / 60.0
ARM_JOINTS = 6
MAX_MOTOR_ID = 252               # 253 is reserved and 254 is the broadcast ID
# The baud rates the SDK's PortHandler can set (it refuses any other).
BAUD_RATES = (9600, 19200, 38400, 57600, 115200, 230400, 460800, 500000, 576000, 921600, 1000000,
              1152000, 2000000, 2500000, 3000000, 3500000, 4000000)
JOINT_MODES = {"position": OperatingMode.POSITION, "extended_position": OperatingMode.EXTENDED_POSITION}
GRIPPER_MODES = {**JOINT_MODES, "current_based_position": OperatingMode.CURRENT_BASED_POSITION}
SHUTDOWN_POLICIES = ("hold", "off")
# Keys of the shared motor settings; an arm's entry under `arms` may override any of them.
MOTOR_KEYS = ("joints", "gripper", "joint_operating_mode", "gripper_operating_mode", "profile_velocity",
              "return_delay_us", "io_retries", "torque_on_shutdown", "calibration")
HARDWARE_KEYS = ("calibration_dir", "arms", "cameras", *MOTOR_KEYS)   # `cameras` is the camera backend's
ARM_KEYS = ("port", "baud", *MOTOR_KEYS)
CALIBRATION_FILE_KEYS = ("role", "recorded", "joints", "gripper", "raw_counts")
# A joint moved less than this between the two calibration poses gives no reliable direction.
MIN_DIRECTION_MOVE = 0.1         # rad


# ---- unit conversions (scalars or numpy arrays) -----------------------------------------------

def counts_to_motor_angle(counts):
    """Present/goal position counts -> motor angle, rad (count 2048 = 0 rad)."""
    return (np.asarray(counts, dtype=np.float64) - CENTRE_COUNT) * RAD_PER_COUNT


def motor_angle_to_counts(angle):
    """Motor angle, rad -> the nearest position count (int64)."""
    return np.rint(np.asarray(angle, dtype=np.float64) / RAD_PER_COUNT).astype(np.int64) + CENTRE_COUNT


def velocity_units_to_rad_s(units):
    """Present Velocity (0.229 rpm per unit) -> rad/s."""
    return np.asarray(units, dtype=np.float64) * RAD_S_PER_VELOCITY_UNIT


def current_units_to_amps(units):
    """Present Current (2.69 mA per unit) -> A."""
    return np.asarray(units, dtype=np.float64) * CURRENT_UNIT_A


# ---- the settings ---------------------------------------------------------------------------

@dataclass(frozen=True)
class MotorSpec:
    id: int
    direction: int           # +1 or -1: the motor's positive turn relative to the joint's
    offset: float            # rad: the motor angle at joint angle 0 (gripper: at angle 0)


@dataclass(frozen=True)
class JointSpec:
    name: str                # the URDF joint without the side prefix, e.g. "joint1"
    motors: tuple[MotorSpec, ...]   # the first is the primary (read); the rest are shadows
    gear: float              # motor turns per joint turn

@dataclass(frozen=True)
class GripperSpec:
    motor: MotorSpec
    closed: float            # rad (after direction and offset) with the fingers closed
    open: float              # rad with the fingers fully open
    current_limit: int       # Current Limit register, 2.69 mA units: how hard a grasp squeezes

    def angle(self, motor_angle):
        """rad: the gripper angle (direction and offset applied) of a motor angle."""
        return self.motor.direction * (np.asarray(motor_angle, dtype=np.float64) - self.motor.offset)

    def travel(self, motor_angle, stroke: float):
        """m of finger travel (0 closed .. stroke open, clamped) for a motor angle in rad."""
        fraction = (self.angle(motor_angle) - self.closed) / (self.open - self.closed)
        return stroke * np.clip(fraction, 0.0, 1.0)

    def angle_for_travel(self, travel, stroke: float):
        """rad: the gripper angle for `travel` m of finger travel (clamped to 0 .. stroke)."""
        fraction = np.clip(np.asarray(travel, dtype=np.float64) / stroke, 0.0, 1.0)
        return self.closed + fraction * (self.open - self.closed)


@dataclass(frozen=True)
class CalibrationPoses:
    """The two poses `twinvla-ros calibrate` asks for, as URDF joint angles (rad)."""
    zero: tuple[float, ...]         # set precisely, gripper closed: it fixes the offsets
    direction: tuple[float, ...]    # roughly, gripper open: only the sign of each move is used


@dataclass(frozen=True)
class DynamixelArmConfig:
    role: str                        # entry of hardware.arms, e.g. "follower_left"
    side: str                        # "left" | "right", from the role's suffix
    port: str
    baud: int                        # bit/s
    joints: tuple[JointSpec, ...]    # six, base to wrist
    gripper: GripperSpec
    joint_operating_mode: OperatingMode
    gripper_operating_mode: OperatingMode
    profile_velocity: int            # Profile Velocity register (0.229 rpm units, 0: off)
    return_delay_us: int             # written at start; even, 0 .. 508
    io_retries: int                  # extra tries of a failed packet before BusError
    torque_on_shutdown: str          # "hold" | "off"
    calibration_poses: CalibrationPoses
    calibration_file: Path           # where calibrate writes and load_arm_config reads
    calibrated: bool                 # the calibration file was found and applied

    @property
    def motor_ids(self) -> tuple[int, ...]:
        """Every motor of the arm: joints (primaries and shadows) then the gripper."""
        return (*(m.id for joint in self.joints for m in joint.motors), self.gripper.motor.id)

    @property
    def return_delay_register(self) -> int:
        return self.return_delay_us // RETURN_DELAY_UNIT_US

    def operating_mode(self, motor_id: int) -> OperatingMode:
        return self.gripper_operating_mode if motor_id == self.gripper.motor.id else self.joint_operating_mode


class ArmConversion:
    """Vectorised registers <-> (7,) joint values of one arm (six joints in rad, then the
    gripper's finger travel in m), motors in `config.motor_ids` order."""

    def __init__(self, config: DynamixelArmConfig, gripper_stroke: float):
        if not (math.isfinite(gripper_stroke) and gripper_stroke > 0):
            raise ValueError(f"gripper_stroke must be a positive length in m, got {gripper_stroke!r}")
        self.config = config
        self.stroke = float(gripper_stroke)
        joint_motors = [(i, joint, m) for i, joint in enumerate(config.joints) for m in joint.motors]
        self.output = np.array([i for i, _, _ in joint_motors] + [ARM_JOINTS])   # per motor
        self.direction = np.array([m.direction for _, _, m in joint_motors] + [config.gripper.motor.direction],
                                  dtype=np.float64)
        self.offset = np.array([m.offset for _, _, m in joint_motors] + [config.gripper.motor.offset])
        self.gear = np.array([joint.gear for _, joint, _ in joint_motors] + [1.0])
        # The first motor of each output (six joints, the gripper) is the one that is read.
        self.primary = np.array([self.output.tolist().index(i) for i in range(ARM_JOINTS + 1)])
        self.shadow = np.setdiff1d(np.arange(len(self.output)), self.primary)
        self.gripper_scale = self.stroke / (config.gripper.open - config.gripper.closed)  # m per rad

    def joint_values(self, counts, velocity_units, current_units) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(positions, velocities, efforts), each (7,): rad, rad/s, A for the joints; m, m/s, A
        for the gripper (its velocity unclamped)."""
        motor_angle = counts_to_motor_angle(counts)
        signed_velocity = self.direction * velocity_units_to_rad_s(velocity_units) / self.gear
        p = self.primary
        positions = self.direction[p] * (motor_angle[p] - self.offset[p]) / self.gear[p]
        positions[ARM_JOINTS] = self.config.gripper.travel(motor_angle[p[ARM_JOINTS]], self.stroke)
        velocities = signed_velocity[p]
        velocities[ARM_JOINTS] *= self.gripper_scale
        efforts = np.bincount(self.output, weights=self.direction * current_units_to_amps(current_units),
                              minlength=ARM_JOINTS + 1)
        return positions, velocities, efforts

    def goal_counts(self, targets: np.ndarray) -> np.ndarray:
        """(7,) targets (rad, then m of finger travel) -> the goal count of every motor."""
        targets = np.asarray(targets, dtype=np.float64)
        angle = targets[self.output]
        gripper = self.output == ARM_JOINTS
        angle[gripper] = self.config.gripper.angle_for_travel(targets[ARM_JOINTS], self.stroke)
        return motor_angle_to_counts(self.offset + self.direction * self.gear * angle)

    def shadow_disagreement(self, counts) -> float:
        """rad: the largest difference between a shadow motor's joint angle and its primary's
        (a slipped horn or a shadow that lost torque); 0 without shadows."""
        if not self.shadow.size:
            return 0.0
        joint = self.direction * (counts_to_motor_angle(counts) - self.offset) / self.gear
        return float(np.max(np.abs(joint[self.shadow] - joint[self.primary[self.output[self.shadow]]])))


# ---- parsing --------------------------------------------------------------------------------

def _fail(key: str, message: str, value: Any) -> ValueError:
    return ValueError(f"{key}: {message}, got {value!r}")


def _mapping(value: Any, key: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise _fail(key, "expected a mapping", value)
    return value


def _only_keys(value: Mapping, key: str, allowed: Sequence[str]) -> None:
    unknown = [k for k in value if k not in allowed]
    if unknown:
        raise ValueError(f"{key}: unknown key(s) {', '.join(map(repr, unknown))} (allowed: {', '.join(allowed)})")


def _required(value: Mapping, key: str, name: str) -> Any:
    if name not in value:
        raise ValueError(f"{key}.{name}: missing")
    return value[name]


def _int(value: Any, key: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise _fail(key, f"expected an integer in {low} .. {high}", value)
    return int(value)


def _float(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value):
        raise _fail(key, "expected a finite number", value)
    return float(value)


def _direction(value: Any, key: str) -> int:
    if isinstance(value, bool) or value not in (1, -1):
        raise _fail(key, "expected +1 or -1", value)
    return int(value)


def _list(value: Any, key: str, length: int | None = None) -> list:
    if not isinstance(value, (list, tuple)) or (length is not None and len(value) != length):
        raise _fail(key, "expected a list" + (f" of {length}" if length is not None else ""), value)
    return list(value)


def _choice(value: Any, key: str, choices: Mapping | Sequence) -> Any:
    if not isinstance(value, str) or value not in choices:
        raise _fail(key, f"expected one of {', '.join(choices)}", value)
    return choices[value] if isinstance(choices, Mapping) else value


def _motor_id(value: Any, key: str) -> int:
    return _int(value, key, 0, MAX_MOTOR_ID)


def _joint(name: str, entry: Any, key: str) -> JointSpec:
    entry = _mapping(entry, key)
    _only_keys(entry, key, ("ids", "directions", "offsets", "gear"))
    ids = _list(_required(entry, key, "ids"), f"{key}.ids")
    if not ids:
        raise _fail(f"{key}.ids", "expected at least one motor ID", ids)
    directions = _list(_required(entry, key, "directions"), f"{key}.directions", len(ids))
    offsets = _list(_required(entry, key, "offsets"), f"{key}.offsets", len(ids))
    gear = _float(entry.get("gear", 1.0), f"{key}.gear")
    if gear <= 0:
        raise _fail(f"{key}.gear", "expected a positive ratio (motor turns per joint turn)", gear)
    motors = tuple(MotorSpec(_motor_id(i, f"{key}.ids[{n}]"), _direction(d, f"{key}.directions[{n}]"),
                             _float(o, f"{key}.offsets[{n}]"))
                   for n, (i, d, o) in enumerate(zip(ids, directions, offsets)))
    return JointSpec(name, motors, gear)


def _gripper(entry: Any, key: str) -> GripperSpec:
    entry = _mapping(entry, key)
    _only_keys(entry, key, ("id", "direction", "offset", "closed", "open", "current_limit"))
    motor = MotorSpec(_motor_id(_required(entry, key, "id"), f"{key}.id"),
                      _direction(entry.get("direction", 1), f"{key}.direction"),
                      _float(entry.get("offset", 0.0), f"{key}.offset"))
    closed = _float(_required(entry, key, "closed"), f"{key}.closed")
    open_ = _float(_required(entry, key, "open"), f"{key}.open")
    if abs(open_ - closed) < 1e-3:
        raise _fail(f"{key}.open", f"expected an angle apart from closed ({closed})", open_)
    current_limit = _int(_required(entry, key, "current_limit"), f"{key}.current_limit", 1, 2047)
    return GripperSpec(motor, closed, open_, current_limit)


def _poses(entry: Any, key: str) -> CalibrationPoses:
    entry = _mapping(entry, key)
    _only_keys(entry, key, ("zero_pose", "direction_pose"))
    zero, direction = (tuple(_float(v, f"{key}.{name}[{n}]")
                             for n, v in enumerate(_list(_required(entry, key, name), f"{key}.{name}", ARM_JOINTS)))
                       for name in ("zero_pose", "direction_pose"))
    for n, (a, b) in enumerate(zip(zero, direction)):
        if abs(b - a) < MIN_DIRECTION_MOVE:
            raise _fail(f"{key}.direction_pose[{n}]",
                        f"expected at least {MIN_DIRECTION_MOVE} rad away from zero_pose[{n}] ({a})", b)
    return CalibrationPoses(zero, direction)


def _apply_calibration(joints: tuple[JointSpec, ...], gripper: GripperSpec, calibration: Mapping,
                       role: str, key: str) -> tuple[tuple[JointSpec, ...], GripperSpec]:
    """The configured joints and gripper with the directions/offsets (and gripper open angle)
    of a calibration file."""
    calibration = _mapping(calibration, key)
    _only_keys(calibration, key, CALIBRATION_FILE_KEYS)
    if calibration.get("role", role) != role:
        raise _fail(f"{key}.role", f"the file is for another arm, expected {role!r}", calibration["role"])
    by_name = {joint.name: joint for joint in joints}
    for name, entry in _mapping(calibration.get("joints", {}), f"{key}.joints").items():
        joint_key = f"{key}.joints.{name}"
        if name not in by_name:
            raise ValueError(f"{joint_key}: not a configured joint ({', '.join(by_name)})")
        entry = _mapping(entry, joint_key)
        _only_keys(entry, joint_key, ("directions", "offsets"))
        joint = by_name[name]
        n = len(joint.motors)
        directions = _list(entry.get("directions", [m.direction for m in joint.motors]), f"{joint_key}.directions", n)
        offsets = _list(entry.get("offsets", [m.offset for m in joint.motors]), f"{joint_key}.offsets", n)
        by_name[name] = replace(joint, motors=tuple(
            MotorSpec(m.id, _direction(d, f"{joint_key}.directions[{i}]"), _float(o, f"{joint_key}.offsets[{i}]"))
            for i, (m, d, o) in enumerate(zip(joint.motors, directions, offsets))))
    entry = _mapping(calibration.get("gripper", {}), f"{key}.gripper")
    _only_keys(entry, f"{key}.gripper", ("direction", "offset", "open"))
    motor = MotorSpec(gripper.motor.id,
                      _direction(entry.get("direction", gripper.motor.direction), f"{key}.gripper.direction"),
                      _float(entry.get("offset", gripper.motor.offset), f"{key}.gripper.offset"))
    open_ = _float(entry.get("open", gripper.open), f"{key}.gripper.open")
    if abs(open_ - gripper.closed) < 1e-3:
        raise _fail(f"{key}.gripper.open", f"expected an angle apart from closed ({gripper.closed})", open_)
    return tuple(by_name[j.name] for j in joints), replace(gripper, motor=motor, open=open_)


def parse_arm_config(hardware: Mapping, role: str, *, calibration: Mapping | None = None,
                     calibration_file: Path = Path("calibration.yaml"), source: str = "hardware") -> DynamixelArmConfig:
    """The checked settings of `role` from a parsed `hardware:` section (and a parsed
    calibration file); ValueError naming the key (prefixed by `source`) when a value is bad."""
    hardware = _mapping(hardware, source)
    _only_keys(hardware, source, HARDWARE_KEYS)
    arms = _mapping(_required(hardware, source, "arms"), f"{source}.arms")
    if role not in arms:
        raise ValueError(f"{source}.arms: no arm {role!r} (configured: {', '.join(map(str, arms))})")
    side = role.rsplit("_", 1)[-1]
    if side not in ("left", "right"):
        raise ValueError(f"{source}.arms.{role}: the role must end in _left or _right")
    arm_key = f"{source}.arms.{role}"
    arm = _mapping(arms[role], arm_key)
    _only_keys(arm, arm_key, ARM_KEYS)

    def setting(name: str) -> tuple[Any, str]:
        """An arm's own value overrides the shared one; the key says which was used."""
        if name in arm:
            return arm[name], f"{arm_key}.{name}"
        return _required(hardware, source, name), f"{source}.{name}"

    port = _required(arm, arm_key, "port")
    if not isinstance(port, str) or not port:
        raise _fail(f"{arm_key}.port", "expected a device path", port)
    baud = _required(arm, arm_key, "baud")
    if isinstance(baud, bool) or baud not in BAUD_RATES:
        raise _fail(f"{arm_key}.baud", f"expected one of {', '.join(map(str, BAUD_RATES))}", baud)

    joints_entry, joints_key = setting("joints")
    joints_entry = _mapping(joints_entry, joints_key)
    if len(joints_entry) != ARM_JOINTS:
        raise _fail(joints_key, f"expected {ARM_JOINTS} joints", list(joints_entry))
    joints = tuple(_joint(str(name), entry, f"{joints_key}.{name}") for name, entry in joints_entry.items())
    gripper = _gripper(*setting("gripper"))
    if calibration is not None:
        joints, gripper = _apply_calibration(joints, gripper, calibration, role, f"calibration file {calibration_file}")

    ids = [m.id for joint in joints for m in joint.motors] + [gripper.motor.id]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"{joints_key} / gripper: motor ID(s) {duplicates} used twice in arm {role}")
    return_delay_us = _int(*setting("return_delay_us"), 0, 254 * RETURN_DELAY_UNIT_US)
    if return_delay_us % RETURN_DELAY_UNIT_US:
        raise _fail(setting("return_delay_us")[1], f"expected a multiple of {RETURN_DELAY_UNIT_US} us", return_delay_us)
    return DynamixelArmConfig(
        role=role, side=side, port=port, baud=int(baud), joints=joints, gripper=gripper,
        joint_operating_mode=_choice(*setting("joint_operating_mode"), JOINT_MODES),
        gripper_operating_mode=_choice(*setting("gripper_operating_mode"), GRIPPER_MODES),
        profile_velocity=_int(*setting("profile_velocity"), 0, 32767),
        return_delay_us=return_delay_us,
        io_retries=_int(*setting("io_retries"), 0, 10),
        torque_on_shutdown=_choice(*setting("torque_on_shutdown"), SHUTDOWN_POLICIES),
        calibration_poses=_poses(*setting("calibration")),
        calibration_file=calibration_file,
        calibrated=calibration is not None,
    )


def _calibration_folder(hardware: Mapping, config_file: Path) -> Path:
    """`hardware.calibration_dir`, `~` expanded, relative to the config file's folder."""
    value = _required(hardware, "hardware", "calibration_dir")
    if not isinstance(value, str) or not value:
        raise _fail("hardware.calibration_dir", "expected a folder path", value)
    return (config_file.parent / Path(value).expanduser()).resolve()


def load_arm_config(role: str, path: Path | str | None = None, *,
                    calibration_dir: Path | str | None = None) -> DynamixelArmConfig:
    """The settings of arm `role` (e.g. "follower_left") from the `hardware:` section of `path`
    (default: the installed config/anubis.yaml), with `<calibration_dir>/<role>.yaml` applied
    when it exists (`calibration_dir` overrides the YAML's folder). ValueError naming the file
    and key when something is wrong."""
    path = Path(path or config_path("anubis.yaml"))
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(document, Mapping) or "hardware" not in document:
        raise ValueError(f"{path}: no `hardware:` section")
    hardware = document["hardware"]
    folder = Path(calibration_dir).expanduser() if calibration_dir else \
        _calibration_folder(_mapping(hardware, f"{path}: hardware"), path)
    calibration_file = folder / f"{role}.yaml"
    calibration = None
    if calibration_file.is_file():
        try:
            calibration = yaml.safe_load(calibration_file.read_text()) or {}
        except yaml.YAMLError as error:
            raise ValueError(f"calibration file {calibration_file}: not valid YAML: {error}") from error
    return parse_arm_config(hardware, role, calibration=calibration, calibration_file=calibration_file,
                            source=f"{path}: hardware")
