"""The teleop core (twinvla_ros.control.teleop): mappings, the safe start, stale and bad leader
readings, and a hypothesis fuzz of arbitrary leader/follower readings.

The follower is a first-order servo plant (it closes a fraction of its gap to the command per
tick), the way the arm driver + motors follow a joint command."""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from twinvla_ros.control.teleop import (MAX_STEP_INTERVAL, ArmSample, ArmTeleop, GripperMapping, TeleopCommand,
                                        TeleopConfig, TeleopState)
from twinvla_ros.hardware.motors import BusReading
from twinvla_ros.robot.description import load_description
from twinvla_ros.robot.kinematics import ArmKinematics

DESCRIPTION = load_description()
ARM = DESCRIPTION.arms["right"]
KINEMATICS = ArmKinematics(DESCRIPTION, "right")
DT = 0.01
STROKE = ARM.gripper_stroke
EPS = 1e-9


class FollowerPlant:
    """Follows commands with a first-order lag (alpha of the gap per tick)."""

    def __init__(self, joints, gripper=1.0, alpha=0.3):
        self.joints = np.array(joints, dtype=np.float64)
        self.gripper = float(gripper)
        self.alpha = alpha

    def follow(self, command: TeleopCommand | None):
        if command is None:
            return
        target = command.joints if command.joints is not None else KINEMATICS.ik(command.pose, self.joints).q
        self.joints += self.alpha * (target - self.joints)
        self.gripper += self.alpha * (command.gripper - self.gripper)

    def sample(self, now):
        return ArmSample(self.joints.copy(), self.gripper, now)


def leader_at(joints, travel=STROKE, stamp=0.0):
    return ArmSample(np.array(joints, dtype=np.float64), float(travel), stamp)


def run_until_mirroring(teleop, plant, leader_joints, start=0.0, timeout=30.0, travel=STROKE):
    """Ticks until the arm mirrors; returns (time, commands)."""
    now, commands = start, []
    while now < start + timeout:
        command = teleop.update(now, leader_at(leader_joints, travel, now), plant.sample(now))
        commands.append(command)
        plant.follow(command)
        if teleop.state == TeleopState.MIRRORING:
            return now, commands
        now += DT
    raise AssertionError(f"not mirroring after {timeout} s: {teleop.reason}")


def test_safe_start_moves_slowly_on_a_straight_line_then_mirrors_without_a_step():
    config = TeleopConfig(safe_start_speed=0.3, engage_tolerance=0.05)
    teleop = ArmTeleop(ARM, config)
    plant = FollowerPlant(ARM.home)
    leader = ARM.home + np.array([0.6, -0.3, 0.2, 0.0, 0.4, -0.5])
    engaged_at, commands = run_until_mirroring(teleop, plant, leader)

    joints = np.array([c.joints for c in commands])
    np.testing.assert_allclose(joints[0], ARM.home)                    # starts where the follower is
    steps = np.abs(np.diff(joints, axis=0)).max(axis=1)
    assert steps.max() <= 0.3 * DT + EPS
    # The largest joint gap (0.6 rad) at 0.3 rad/s: ~2 s, plus the follower's lag.
    assert 2.0 <= engaged_at <= 3.0
    # One straight line in joint space: every command lies on home + s * (leader - home).
    direction = (leader - ARM.home) / np.linalg.norm(leader - ARM.home)
    offsets = joints - ARM.home
    np.testing.assert_allclose(offsets - np.outer(offsets @ direction, direction), 0.0, atol=1e-9)
    assert teleop.counters == {"engagements": 1, "holds": 0, "approaches": 1}
    # The command had landed on the leader before mirroring began: the hand-over is no step.
    np.testing.assert_array_equal(commands[-1].joints, leader)
    mirrored = teleop.update(engaged_at + DT, leader_at(leader + 0.001, STROKE, engaged_at + DT),
                             plant.sample(engaged_at + DT))
    np.testing.assert_allclose(mirrored.joints, leader + 0.001)


def test_approach_chases_a_moving_leader():
    teleop = ArmTeleop(ARM, TeleopConfig(safe_start_speed=0.3))
    plant = FollowerPlant(ARM.home)
    now, previous = 0.0, None
    while teleop.state != TeleopState.MIRRORING:
        assert now < 20.0, teleop.reason
        leader = ARM.home + np.array([0.5, 0.0, 0.0, 0.0, 0.0, 0.0]) + 0.1 * math.sin(now)   # the hand drifts
        command = teleop.update(now, leader_at(leader, STROKE, now), plant.sample(now))
        if previous is not None and teleop.state == TeleopState.APPROACHING:
            assert np.abs(command.joints - previous.joints).max() <= 0.3 * DT + EPS
        plant.follow(command)
        previous = command
        now += DT
    assert np.abs(plant.joints - leader).max() <= 0.05


def test_eef_mapping_approaches_in_joint_space_then_sends_the_leaders_fk():
    teleop = ArmTeleop(ARM, TeleopConfig(mapping="eef"), KINEMATICS)
    plant = FollowerPlant(ARM.home)
    leader = ARM.home + np.array([-0.3, 0.2, -0.2, 0.3, 0.2, 0.1])
    engaged_at, commands = run_until_mirroring(teleop, plant, leader)
    assert all(c.pose is None and c.joints is not None for c in commands[:-1])
    # The tick that engages sends the first EEF target: the pose of the joints the approach landed on.
    np.testing.assert_allclose(commands[-1].pose, KINEMATICS.fk(leader))
    assert commands[-1].joints is None
    command = teleop.update(engaged_at + DT, leader_at(leader, STROKE, engaged_at + DT), plant.sample(engaged_at))
    np.testing.assert_allclose(command.pose, KINEMATICS.fk(leader))


def test_eef_mapping_needs_kinematics():
    with pytest.raises(ValueError, match="kinematics"):
        ArmTeleop(ARM, TeleopConfig(mapping="eef"))


def test_leader_beyond_the_followers_limits_is_clamped_and_still_engages():
    teleop = ArmTeleop(ARM, TeleopConfig())
    plant = FollowerPlant(ARM.home)
    leader = ARM.home.copy()
    leader[0] = ARM.upper[0] + 1.0
    engaged_at, _ = run_until_mirroring(teleop, plant, leader)
    command = teleop.update(engaged_at + DT, leader_at(leader, STROKE, engaged_at + DT), plant.sample(engaged_at))
    assert command.joints[0] == ARM.upper[0]


@pytest.mark.parametrize("bad", ["stale", "nan"])
def test_bad_leader_holds_then_reengages_through_a_new_safe_start(bad):
    teleop = ArmTeleop(ARM, TeleopConfig(stale_timeout=0.1))
    plant = FollowerPlant(ARM.home)
    engaged_at, _ = run_until_mirroring(teleop, plant, ARM.home + 0.1)
    now = engaged_at + DT
    frozen = leader_at(ARM.home + 0.1, STROKE, now)
    if bad == "stale":     # the last good reading, 0.15 s later
        assert teleop.update(now + 0.15, frozen, plant.sample(now + 0.15)) is None
        assert "stale" in teleop.reason
    else:
        assert teleop.update(now, leader_at([math.nan] * 6, STROKE, now), plant.sample(now)) is None
        assert "not finite" in teleop.reason
    assert teleop.state == TeleopState.HOLDING
    assert teleop.status().values["state"] == "holding"
    assert teleop.counters["holds"] == 1

    # Meanwhile the leader was moved far: the re-engagement is a safe start from the follower.
    now += 1.0
    moved = ARM.home + np.array([0.8, 0.0, 0.0, 0.0, 0.0, 0.0])
    command = teleop.update(now, leader_at(moved, STROKE, now), plant.sample(now))
    assert teleop.state == TeleopState.APPROACHING
    np.testing.assert_allclose(command.joints, plant.joints)
    run_until_mirroring(teleop, plant, moved, start=now + DT)
    assert teleop.counters == {"engagements": 2, "holds": 1, "approaches": 2}


def test_waiting_until_both_readings_exist():
    teleop = ArmTeleop(ARM, TeleopConfig())
    assert teleop.update(0.0, None, None) is None
    assert teleop.state == TeleopState.WAITING and "no leader reading" in teleop.reason
    assert teleop.update(0.0, leader_at(ARM.home, STROKE, 0.0), None) is None
    assert teleop.state == TeleopState.WAITING and "no follower reading" in teleop.reason
    assert teleop.update(0.0, leader_at(ARM.home, STROKE, 0.0), FollowerPlant(ARM.home).sample(0.0)) is not None
    assert teleop.state in (TeleopState.APPROACHING, TeleopState.MIRRORING)


def test_stale_follower_pauses_the_safe_start():
    teleop = ArmTeleop(ARM, TeleopConfig(follower_stale_timeout=0.5))
    plant = FollowerPlant(ARM.home)
    assert teleop.update(0.0, leader_at(ARM.home + 0.5, STROKE, 0.0), plant.sample(0.0)) is not None
    assert teleop.update(1.0, leader_at(ARM.home + 0.5, STROKE, 1.0), plant.sample(0.0)) is None
    assert teleop.state == TeleopState.HOLDING and "follower reading is stale" in teleop.reason


def test_reset_starts_over():
    teleop = ArmTeleop(ARM, TeleopConfig())
    plant = FollowerPlant(ARM.home)
    engaged_at, _ = run_until_mirroring(teleop, plant, ARM.home + 0.05)
    teleop.reset("deactivated")
    assert teleop.state == TeleopState.WAITING and teleop.reason == "deactivated"
    now = engaged_at + 1.0
    teleop.update(now, leader_at(ARM.home + 0.05, STROKE, now), plant.sample(now))
    assert teleop.state in (TeleopState.APPROACHING, TeleopState.MIRRORING)
    assert teleop.counters["approaches"] == 2


def test_a_stalled_loop_does_not_make_the_approach_jump():
    teleop = ArmTeleop(ARM, TeleopConfig(safe_start_speed=0.3))
    plant = FollowerPlant(ARM.home)
    first = teleop.update(0.0, leader_at(ARM.home + 1.0, STROKE, 0.0), plant.sample(0.0))
    second = teleop.update(5.0, leader_at(ARM.home + 1.0, STROKE, 5.0), plant.sample(5.0))
    assert np.abs(second.joints - first.joints).max() == pytest.approx(0.3 * MAX_STEP_INTERVAL)


def test_gripper_mapping_range_clamp_and_deadband():
    mapping = GripperMapping(closed=0.004, open_=0.036, deadband=0.02)
    assert mapping(0.020) == pytest.approx(0.5)
    assert mapping(0.0203) == pytest.approx(0.5)         # 0.01 of the range: inside the deadband
    assert mapping(0.0210) == pytest.approx(0.53125)     # 0.031: outside it
    assert mapping(0.001) == 0.0                          # below closed: clamped, ends always pass
    assert mapping(0.0012) == 0.0
    assert mapping(1.0) == 1.0
    assert mapping(math.inf) == 1.0
    assert GripperMapping(0.04, 0.0, 0.0)(0.01) == pytest.approx(0.75)   # a reversed leader range


def test_gripper_approaches_at_its_speed():
    teleop = ArmTeleop(ARM, TeleopConfig(safe_start_gripper_speed=0.5))
    plant = FollowerPlant(ARM.home, gripper=1.0)
    _, commands = run_until_mirroring(teleop, plant, ARM.home, travel=0.0)
    grippers = np.array([c.gripper for c in commands])
    assert grippers[0] == 1.0 and grippers[-1] == 0.0
    assert np.abs(np.diff(grippers)).max() <= 0.5 * DT + EPS


def test_sample_from_a_leader_bus_reading():
    positions = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.02])
    sample = ArmSample.from_bus_reading(BusReading(positions, np.zeros(7), np.zeros(7), 12.5))
    np.testing.assert_array_equal(sample.joints, positions[:6])
    assert (sample.gripper, sample.stamp) == (0.02, 12.5)


@pytest.mark.parametrize("field, value, match", [
    ("mapping", "cartesian", "mapping"),
    ("safe_start_speed", 0.0, "safe_start_speed"),
    ("safe_start_speed", math.nan, "safe_start_speed"),
    ("engage_tolerance", -1.0, "engage_tolerance"),
    ("leader_gripper_open", 0.0, "must differ"),
    ("leader_gripper_closed", math.inf, "finite"),
    ("gripper_deadband", 0.6, "gripper_deadband"),
    ("stale_timeout", 0.0, "stale_timeout"),
])
def test_config_refuses_bad_values(field, value, match):
    with pytest.raises(ValueError, match=match):
        TeleopConfig(**{field: value})


def test_non_finite_time_is_refused():
    with pytest.raises(ValueError, match="finite time"):
        ArmTeleop(ARM, TeleopConfig()).update(math.nan, None, None)


# ---- fuzz ------------------------------------------------------------------------------------
# An example is a few segments: a run of clean ticks (a hand drifting near a pose, read fresh,
# the follower plant measured), then one arbitrary tick (any leader reading: none, NaN, huge,
# wrong length, stale; any follower reading; any interval), so approaches, engagements, holds
# and re-engagements all happen.

SPECIAL = [math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324, 0.0, -0.0, 1e200, -1e200]
any_float = st.one_of(st.floats(), st.sampled_from(SPECIAL))
near = st.floats(-0.5, 0.5)
joint_vector = st.one_of(
    st.lists(near, min_size=6, max_size=6).map(lambda v: ARM.home + np.array(v)),    # plausible
    st.lists(any_float, min_size=6, max_size=6).map(np.array),                      # anything
    st.lists(near, min_size=0, max_size=8).map(lambda v: np.array(v)),              # wrong length
)
any_leader = st.one_of(st.none(), st.tuples(joint_vector, st.one_of(st.floats(-0.01, 0.05), any_float),
                                            st.one_of(st.floats(0.0, 0.3), any_float)))      # (joints, travel, age)
any_follower = st.one_of(st.none(), st.just("plant"),
                         st.tuples(joint_vector, st.one_of(st.floats(0.0, 1.0), any_float), st.floats(0.0, 1.0)))
segment = st.fixed_dictionaries({
    "clean_ticks": st.integers(0, 250),
    "dt": st.floats(0.002, 0.03),
    "pose": st.lists(st.floats(-0.3, 0.3), min_size=6, max_size=6).map(np.array),   # from home
    "drift": st.floats(0.0, 0.5),                    # rad/s of the hand while the follower approaches
    "travel": st.floats(-0.01, 0.05),
    "fault": st.tuples(st.one_of(st.floats(0.0, 0.05), st.floats(0.0, 5.0)), any_leader, any_follower),
})


def fuzz_ticks(segments, plant):
    """(now, interval, leader, follower) per tick; time starts at 100 s."""
    now = 100.0
    for part in segments:
        for k in range(part["clean_ticks"]):
            now += part["dt"]
            hand = ARM.home + part["pose"] + part["drift"] * 0.2 * np.sin(np.arange(6) + now)
            yield now, part["dt"], ArmSample(hand, part["travel"] + 0.001 * math.sin(7 * now), now), plant.sample(now)
        dt, leader_spec, follower_spec = part["fault"]
        now += dt
        leader = None if leader_spec is None else ArmSample(leader_spec[0], leader_spec[1], now - leader_spec[2])
        if follower_spec == "plant":
            follower = plant.sample(now)
        elif follower_spec is None:
            follower = None
        else:
            follower = ArmSample(follower_spec[0], follower_spec[1], now - follower_spec[2])
        yield now, dt, leader, follower


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mapping=st.sampled_from(["joint", "eef"]),
       speed=st.floats(0.1, 1.0), gripper_speed=st.floats(0.05, 2.0), deadband=st.floats(0.0, 0.2),
       segments=st.lists(segment, min_size=1, max_size=4))
def test_fuzz_readings_never_make_a_step_or_a_bad_command(mapping, speed, gripper_speed, deadband, segments):
    config = TeleopConfig(mapping=mapping, safe_start_speed=speed, safe_start_gripper_speed=gripper_speed,
                          gripper_deadband=deadband, stale_timeout=0.1)
    teleop = ArmTeleop(ARM, config, KINEMATICS)
    # A stiff plant (half the gap per tick): the EEF mirroring needs no IK for it to follow.
    plant = FollowerPlant(ARM.home, alpha=0.5)
    previous, visited = None, set()
    for now, dt, leader, follower in fuzz_ticks(segments, plant):
        state_before = teleop.state
        command = teleop.update(now, leader, follower)
        visited.add(teleop.state.value)
        if command is None:
            assert teleop.state in (TeleopState.WAITING, TeleopState.HOLDING)
            previous = None
            continue
        values = [command.gripper] + ([] if command.joints is None else command.joints.tolist()) \
            + ([] if command.pose is None else command.pose.ravel().tolist())
        assert all(math.isfinite(v) for v in values)
        assert 0.0 <= command.gripper <= 1.0
        target = None
        if teleop.state == TeleopState.MIRRORING:
            # The mapped leader reading: its joints within the follower's limits (or their FK),
            # its gripper opening within the deadband.
            target = np.clip(leader.joints, ARM.lower, ARM.upper)
            assert abs(command.gripper - teleop.gripper_mapping.fraction(leader.gripper)) <= deadband + EPS
            if mapping == "joint":
                np.testing.assert_array_equal(command.joints, target)
            else:
                np.testing.assert_allclose(command.pose, KINEMATICS.fk(target), atol=1e-12)
        else:
            assert teleop.state == TeleopState.APPROACHING and command.joints is not None
            assert np.all(command.joints >= ARM.lower) and np.all(command.joints <= ARM.upper)
        if state_before == TeleopState.APPROACHING and previous is not None:
            # Every step of an approach (the one that engages too) is within the safe-start speed.
            step_time = min(dt, MAX_STEP_INTERVAL)
            joints = command.joints if command.joints is not None else target     # EEF: engaged at FK(target)
            assert np.abs(joints - previous.joints).max() <= speed * step_time + EPS
            assert abs(command.gripper - previous.gripper) <= gripper_speed * step_time + EPS
        elif state_before != TeleopState.MIRRORING and teleop.state == TeleopState.APPROACHING:
            # A safe start begins where the follower is.
            np.testing.assert_allclose(command.joints, np.clip(follower.joints, ARM.lower, ARM.upper))
        plant.follow(command)
        previous = command
    event(f"visited {sorted(visited)}")
