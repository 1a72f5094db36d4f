"""The Dynamixel settings: parsing and its error messages, the unit conversions, the
calibration arithmetic. Pure functions, no port."""
from __future__ import annotations

import copy
import math
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from dynamixel_responder import arm_hardware
from twinvla_ros.hardware.motors.dynamixel import config as cfg
from twinvla_ros.hardware.motors.dynamixel.calibration import compute_calibration, position_mode_problems, \
    write_calibration
from twinvla_ros.hardware.motors.dynamixel.config import ArmConversion, load_arm_config, parse_arm_config
from twinvla_ros.hardware.motors.dynamixel.control_table import OperatingMode, hardware_error_names
from twinvla_ros.robot.description import load_description

STROKE = 0.04
COUNT = cfg.RAD_PER_COUNT


def parse(section, role="follower_left", **kwargs):
    return parse_arm_config(section, role, **kwargs)


# ---- the shipped config -------------------------------------------------------------------------

@pytest.mark.parametrize("role", ["follower_left", "follower_right", "leader_left", "leader_right"])
def test_the_shipped_config_parses_for_every_arm_role(role, tmp_path):
    config = load_arm_config(role, calibration_dir=tmp_path)
    assert config.side == role.rsplit("_", 1)[1]
    assert config.motor_ids == (1, 2, 3, 4, 5, 6, 7)
    assert config.gripper_operating_mode == OperatingMode.CURRENT_BASED_POSITION
    assert config.torque_on_shutdown == "hold" and config.io_retries == 2
    assert not config.calibrated and config.calibration_file == tmp_path / f"{role}.yaml"
    arm = load_description().arms[config.side]
    assert [f"{config.side}_{j.name}" for j in config.joints] == list(arm.joint_names)


def test_the_calibration_dir_is_expanded_and_relative_to_the_config_file(tmp_path):
    section = arm_hardware("/dev/null")
    path = tmp_path / "robot.yaml"
    path.write_text(yaml.safe_dump({"hardware": section}))
    assert load_arm_config("follower_left", path).calibration_file == tmp_path / "calibration" / "follower_left.yaml"
    section["calibration_dir"] = "~/somewhere"
    path.write_text(yaml.safe_dump({"hardware": section}))
    assert load_arm_config("follower_left", path).calibration_file == Path.home() / "somewhere" / "follower_left.yaml"


def test_an_arm_entry_overrides_the_shared_motor_settings():
    section = arm_hardware("/dev/a")
    section["arms"]["follower_right"] = {"port": "/dev/b", "baud": 4000000, "io_retries": 0,
                                         "gripper": {"id": 9, "closed": 0.2, "open": -1.0, "current_limit": 250}}
    right, left = parse(section, "follower_right"), parse(section, "follower_left")
    assert (right.port, right.baud, right.io_retries, right.gripper.motor.id) == ("/dev/b", 4000000, 0, 9)
    assert (left.io_retries, left.gripper.motor.id) == (2, 7)


# ---- bad values name their key -------------------------------------------------------------------

def not_in(values):
    return lambda v: v not in values or isinstance(v, bool)


ANYTHING_BUT_A_NUMBER = st.one_of(st.text(max_size=5), st.none(), st.booleans(), st.lists(st.integers(), max_size=2),
                                  st.sampled_from([math.nan, math.inf, -math.inf]))
BAD_VALUES = {
    ("joints", "joint3", "directions", 0): st.one_of(st.integers().filter(not_in((1, -1))), st.floats(0.1, 0.9),
                                                    ANYTHING_BUT_A_NUMBER),
    ("joints", "joint2", "offsets", 0): ANYTHING_BUT_A_NUMBER,
    ("joints", "joint1", "gear"): st.one_of(st.floats(max_value=0.0), ANYTHING_BUT_A_NUMBER),
    ("joints", "joint6", "ids", 0): st.one_of(st.integers(253, 10**6), st.integers(max_value=-1), ANYTHING_BUT_A_NUMBER),
    ("gripper", "current_limit"): st.one_of(st.integers(2048, 10**6), st.integers(max_value=0), st.floats(1, 100),
                                            ANYTHING_BUT_A_NUMBER),
    ("gripper", "id"): st.one_of(st.integers(253, 10**6), ANYTHING_BUT_A_NUMBER),
    ("gripper", "closed"): ANYTHING_BUT_A_NUMBER,
    ("gripper", "direction"): st.one_of(st.integers().filter(not_in((1, -1))), ANYTHING_BUT_A_NUMBER),
    ("io_retries",): st.one_of(st.integers(max_value=-1), st.integers(11, 10**6), ANYTHING_BUT_A_NUMBER),
    ("return_delay_us",): st.one_of(st.integers(0, 254).map(lambda v: 2 * v + 1), st.integers(509, 10**6),
                                    st.integers(max_value=-1), ANYTHING_BUT_A_NUMBER),
    ("profile_velocity",): st.one_of(st.integers(max_value=-1), st.integers(32768, 10**9), ANYTHING_BUT_A_NUMBER),
    ("torque_on_shutdown",): st.one_of(st.text(max_size=6).filter(not_in(("hold", "off"))), ANYTHING_BUT_A_NUMBER),
    ("joint_operating_mode",): st.one_of(st.sampled_from(["current_based_position", "velocity", "Position"]),
                                         ANYTHING_BUT_A_NUMBER),
    ("gripper_operating_mode",): st.one_of(st.sampled_from(["pwm", "current"]), ANYTHING_BUT_A_NUMBER),
    ("arms", "follower_left", "baud"): st.one_of(st.integers().filter(not_in(cfg.BAUD_RATES)), ANYTHING_BUT_A_NUMBER),
    ("arms", "follower_left", "port"): st.one_of(st.just(""), st.integers(), st.none()),
    ("calibration", "zero_pose", 3): ANYTHING_BUT_A_NUMBER,
}


def key_text(path) -> str:
    text = "hardware"
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(BAD_VALUES, key=str)).flatmap(lambda path: st.tuples(st.just(path), BAD_VALUES[path])))
def test_a_bad_value_is_refused_naming_its_key(case):
    path, value = case
    section = copy.deepcopy(arm_hardware("/dev/ttyUSB0"))
    node = section
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    with pytest.raises(ValueError, match=re.escape(key_text(path) + ":")):
        parse(section)


@pytest.mark.parametrize("change, message", [
    (lambda s: s["joints"].pop("joint4"), "hardware.joints: expected 6 joints"),
    (lambda s: s["joints"]["joint2"].update(ids=[2, 3]), "hardware.joints.joint2.directions: expected a list of 2"),
    (lambda s: s["joints"]["joint2"].update(ids=[2, 3], directions=[1, -1], offsets=[0, 0]), "[3] used twice"),
    (lambda s: s["gripper"].update(id=1), "[1] used twice"),
    (lambda s: s["gripper"].update(open=0.0), "hardware.gripper.open: expected an angle apart from closed"),
    (lambda s: s["gripper"].pop("current_limit"), "hardware.gripper.current_limit: missing"),
    (lambda s: s.update(io_retry=3), "hardware: unknown key(s) 'io_retry'"),
    (lambda s: s["joints"]["joint1"].update(offset=[0.0]), "hardware.joints.joint1: unknown key(s) 'offset'"),
    (lambda s: s["arms"]["follower_left"].update(prot="/dev/x"), "hardware.arms.follower_left: unknown key(s) 'prot'"),
    (lambda s: s.pop("io_retries"), "hardware.io_retries: missing"),
    (lambda s: s["calibration"].update(direction_pose=[0.0, 0.5, 0.5, 2.0, 0.5, 0.5]),
     "hardware.calibration.direction_pose[0]: expected at least 0.1 rad away"),
    (lambda s: s["arms"].update(follower_middle={"port": "/dev/x", "baud": 1000000}), None),
])
def test_structural_mistakes_are_named(change, message):
    section = copy.deepcopy(arm_hardware("/dev/ttyUSB0"))
    change(section)
    if message is None:
        with pytest.raises(ValueError, match="must end in _left or _right"):
            parse(section, "follower_middle")
        return
    with pytest.raises(ValueError, match=re.escape(message)):
        parse(section)


def test_an_unknown_role_lists_the_configured_ones():
    with pytest.raises(ValueError, match="no arm 'leader_left' \\(configured: follower_left\\)"):
        parse(arm_hardware("/dev/x"), "leader_left")


# ---- conversions ---------------------------------------------------------------------------------

def test_register_units():
    assert cfg.counts_to_motor_angle(2048) == 0.0
    assert cfg.counts_to_motor_angle(3072) == pytest.approx(math.pi / 2)
    assert cfg.motor_angle_to_counts(-math.pi) == 0
    assert cfg.velocity_units_to_rad_s(1) == pytest.approx(0.229 * 2 * math.pi / 60)   # 0.02398 rad/s
    assert cfg.current_units_to_amps(-100) == pytest.approx(-0.269)


motor_specs = st.tuples(st.sampled_from([1, -1]), st.floats(-2.0, 2.0))


@st.composite
def arm_configs(draw):
    """Random directions, offsets and gears, some joints with shadow motors, IDs unique."""
    section = copy.deepcopy(arm_hardware("/dev/x"))
    next_id = 10
    for n in range(1, 7):
        motors = draw(st.lists(motor_specs, min_size=1, max_size=3))
        ids = list(range(next_id, next_id + len(motors)))
        next_id += len(motors)
        section["joints"][f"joint{n}"] = {"ids": ids, "directions": [d for d, _ in motors],
                                          "offsets": [o for _, o in motors], "gear": draw(st.sampled_from([1.0, 2.0, 3.5]))}
    closed, span = draw(st.floats(-1.0, 1.0)), draw(st.one_of(st.floats(0.3, 2.0), st.floats(-2.0, -0.3)))
    direction, offset = draw(motor_specs)
    section["gripper"] = {"id": 1, "direction": direction, "offset": offset, "closed": closed, "open": closed + span,
                          "current_limit": 300}
    return parse(section)


@settings(max_examples=200, deadline=None)
@given(arm_configs(), st.lists(st.floats(-1.5, 1.5), min_size=6, max_size=6), st.floats(0.0, STROKE))
def test_goal_counts_read_back_as_the_targets_on_every_motor(config, joints, travel):
    conversion = ArmConversion(config, STROKE)
    targets = np.array([*joints, travel])
    counts = conversion.goal_counts(targets)
    # Every motor gets offset + direction * gear * angle, shadows included.
    motors = [(m, j.gear, joints[n]) for n, j in enumerate(config.joints) for m in j.motors]
    for (motor, gear, q), count in zip(motors, counts[:-1]):
        assert abs(cfg.counts_to_motor_angle(count) - (motor.offset + motor.direction * gear * q)) <= COUNT / 2 + 1e-12
    positions, velocities, efforts = conversion.joint_values(counts, np.zeros_like(counts), np.zeros_like(counts))
    gears = np.array([j.gear for j in config.joints])
    assert np.all(np.abs(positions[:6] - joints) <= COUNT / 2 / gears + 1e-12)
    assert abs(positions[6] - travel) <= STROKE * COUNT / 2 / abs(config.gripper.open - config.gripper.closed) + 1e-12
    assert conversion.shadow_disagreement(counts) <= COUNT / gears.min() + 1e-12
    assert not velocities.any() and not efforts.any()


@settings(max_examples=100, deadline=None)
@given(arm_configs(), st.floats(-0.2, 0.2))
def test_the_gripper_is_linear_between_closed_and_open_and_clamped(config, beyond):
    conversion = ArmConversion(config, STROKE)
    g = config.gripper

    def travel_at(angle):
        counts = np.full(len(config.motor_ids), 2048)
        counts[-1] = cfg.motor_angle_to_counts(g.motor.offset + g.motor.direction * angle)
        return conversion.joint_values(counts, counts * 0, counts * 0)[0][6]

    quantum = STROKE * COUNT / 2 / abs(g.open - g.closed) + 1e-12      # half a count of travel
    assert travel_at(g.closed) == pytest.approx(0.0, abs=quantum)
    assert travel_at(g.open) == pytest.approx(STROKE, abs=quantum)
    assert travel_at((g.open + g.closed) / 2) == pytest.approx(STROKE / 2, abs=quantum)
    past = (g.open - g.closed) * (1 + abs(beyond) + 0.01)
    assert travel_at(g.closed + past) == STROKE and travel_at(g.open - past) == 0.0
    # A target past the stroke goes to the open angle, not beyond it.
    assert conversion.goal_counts(np.array([0, 0, 0, 0, 0, 0, STROKE + abs(beyond)]))[-1] == \
        conversion.goal_counts(np.array([0, 0, 0, 0, 0, 0, STROKE]))[-1]


def test_velocities_and_efforts_follow_direction_gear_and_sum_over_shadow_motors():
    section = copy.deepcopy(arm_hardware("/dev/x"))
    section["joints"]["joint2"] = {"ids": [2, 8], "directions": [1, -1], "offsets": [0.0, 0.3], "gear": 2.0}
    section["joints"]["joint1"]["directions"] = [-1]
    section["gripper"].update(direction=-1, closed=0.2, open=1.2)
    conversion = ArmConversion(parse(section), STROKE)         # motor order: 1, 2, 8, 3, 4, 5, 6, 7
    velocity = np.array([10, 10, -10, 0, 0, 0, 0, 20])
    current = np.array([100, 100, -100, 0, 0, 0, 0, 50])
    _, velocities, efforts = conversion.joint_values(np.full(8, 2048), velocity, current)
    unit = cfg.velocity_units_to_rad_s(10)
    assert velocities[0] == pytest.approx(-unit)               # direction -1
    assert velocities[1] == pytest.approx(unit / 2)            # gear 2
    assert efforts[0] == pytest.approx(-0.269)
    assert efforts[1] == pytest.approx(2 * 0.269)              # both motors push the same way
    assert velocities[6] == pytest.approx(-cfg.velocity_units_to_rad_s(20) * STROKE / 1.0)   # m/s of travel
    assert efforts[6] == pytest.approx(-50 * 0.00269)


def test_hardware_error_bits_have_names():
    assert hardware_error_names(0) == ()
    assert hardware_error_names(0x20 | 0x04) == ("overheating", "overload")
    assert hardware_error_names(0x02) == ("bit1",)


# ---- calibration ----------------------------------------------------------------------------------

def uncalibrated(truth):
    """The same arm as configured before calibration: directions +1, offsets 0, an open angle
    of the right sign only."""
    joints = tuple(replace(j, motors=tuple(replace(m, direction=1, offset=0.0) for m in j.motors)) for j in truth.joints)
    g = truth.gripper
    return replace(truth, joints=joints, gripper=replace(g, motor=replace(g.motor, direction=1, offset=0.0),
                                                         open=g.closed + math.copysign(1.0, g.open - g.closed)))


@settings(max_examples=100, deadline=None)
@given(arm_configs(), st.lists(st.floats(0.3, 0.6), min_size=6, max_size=6))
def test_calibration_recovers_directions_and_offsets(truth, moves):
    """Raw counts of an arm with unknown directions/offsets (`truth`) at the zero pose and at a
    roughly set direction pose give back those directions and offsets."""
    conversion = ArmConversion(truth, STROKE)
    poses = truth.calibration_poses
    rough = np.array(poses.zero) + np.sign(np.subtract(poses.direction, poses.zero)) * moves
    ids = truth.motor_ids
    zero = dict(zip(ids, conversion.goal_counts(np.array([*poses.zero, 0.0])).tolist()))
    direction = dict(zip(ids, conversion.goal_counts(np.array([*rough, STROKE])).tolist()))
    calibration = compute_calibration(uncalibrated(truth), zero, direction)
    for joint in truth.joints:
        assert calibration.directions[joint.name] == tuple(m.direction for m in joint.motors)
        np.testing.assert_allclose(calibration.offsets[joint.name], [m.offset for m in joint.motors],
                                   atol=COUNT / 2 + 1e-9)
    assert calibration.gripper_direction == truth.gripper.motor.direction
    assert calibration.gripper_offset == pytest.approx(truth.gripper.motor.offset, abs=COUNT / 2 + 1e-9)
    assert calibration.gripper_open == pytest.approx(truth.gripper.open, abs=COUNT + 1e-9)


def test_a_joint_that_did_not_move_between_the_poses_is_named():
    config = parse(arm_hardware("/dev/x"))
    zero = {i: 2048 for i in config.motor_ids}
    moved = {i: 2048 + 400 for i in config.motor_ids}
    moved[4] = 2050
    with pytest.raises(ValueError, match=r"joint4 \(motor 4\) moved \+0.003 rad"):
        compute_calibration(config, zero, moved)


def test_a_calibration_file_overrides_directions_and_offsets(tmp_path):
    section = arm_hardware("/dev/x")
    section["calibration_dir"] = str(tmp_path)
    path = tmp_path / "robot.yaml"
    path.write_text(yaml.safe_dump({"hardware": section}))
    config = load_arm_config("follower_left", path)
    zero = {i: 2048 + 100 * i for i in config.motor_ids}
    direction = {i: c + (-300 if i in (2, 7) else 300) for i, c in zero.items()}
    write_calibration(config.calibration_file, compute_calibration(config, zero, direction))
    calibrated = load_arm_config("follower_left", path)
    assert calibrated.calibrated
    assert calibrated.joints[1].motors[0].direction == -1 and calibrated.joints[0].motors[0].direction == 1
    assert calibrated.joints[3].motors[0].offset == pytest.approx(cfg.counts_to_motor_angle(2448) - 1.5708, abs=1e-6)
    assert calibrated.gripper.motor.direction == -1
    assert calibrated.gripper.open == pytest.approx(300 * COUNT, abs=1e-6)
    # A hand-edited file with a mistake is named, with the file.
    text = config.calibration_file.read_text().replace("directions:\n    - -1", "directions:\n    - 2")
    config.calibration_file.write_text(text)
    with pytest.raises(ValueError, match=re.escape(f"calibration file {config.calibration_file}.joints.joint2.directions[0]")):
        load_arm_config("follower_left", path)
    config.calibration_file.write_text("role: leader_left\n")
    with pytest.raises(ValueError, match="the file is for another arm"):
        load_arm_config("follower_left", path)


def test_a_joint_range_across_the_position_mode_seam_is_warned_about():
    config = parse(arm_hardware("/dev/x"))
    zero = {i: 2048 for i in config.motor_ids}
    zero[1] = 2048 + 1800                                     # joint1's zero near the end of the turn
    moved = {i: c + 300 for i, c in zero.items()}
    calibration = compute_calibration(config, zero, moved)
    arm = load_description().arms["left"]
    problems = position_mode_problems(config, calibration, arm.lower, arm.upper)
    assert len(problems) == 1 and problems[0].startswith("joint1 (motor 1): its limits map to counts")
    assert position_mode_problems(replace(config, joint_operating_mode=OperatingMode.EXTENDED_POSITION),
                                  calibration, arm.lower, arm.upper) == []


def test_an_arm_pair_refuses_a_role_of_the_other_side_and_names_every_problem(tmp_path):
    from twinvla_ros.hardware.motors import BusError
    from twinvla_ros.hardware.motors.dynamixel import open_arm_pair

    hardware = arm_hardware(str(tmp_path / "no_port"), "follower_left")
    hardware["arms"]["follower_right"] = {"port": str(tmp_path / "no_port_either"), "baud": 1000000}
    hardware["calibration_dir"] = str(tmp_path / "calibration")
    path = tmp_path / "hardware.yaml"
    path.write_text(yaml.safe_dump({"hardware": hardware}))
    with pytest.raises(BusError) as refused:
        open_arm_pair({"left": "follower_right", "right": "follower_left"}, load_description(), path)
    text = str(refused.value)
    assert "left arm:" in text and "not a left one" in text
    assert "right arm:" in text and "not a right one" in text
