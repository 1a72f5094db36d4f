"""The scripted experts without physics: input validation, determinism, and the properties the
arm driver needs of every target stream (smooth, inside the workspace box, reachable by IK with
joint steps well below the caps) over many seeds. Whether the demos succeed in physics is
test/evaluation/test_sim_rollout.py's."""
from __future__ import annotations

import math

import numpy as np
import pinocchio as pin
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twinvla_ros.control.safety import SafetyLimits
from twinvla_ros.robot.description import load_description
from twinvla_ros.robot.kinematics import ArmKinematics
from twinvla_ros.sim import SimConfig, SimWorld, make_expert
from twinvla_ros.sim.expert import ExpertTargets

TASKS = ("lift_box", "lift_box_narrow", "handover_box", "empty")
DESCRIPTION = load_description()
KINEMATICS = {side: ArmKinematics(DESCRIPTION, side) for side in ("left", "right")}
DEFAULTS = SafetyLimits()
COMMAND_PERIOD = 0.02          # the teleop node publishes the targets at 50 Hz
# Share of the arm driver's default caps one 20 ms step may use (the brief: well below them).
CAP_SHARE = 0.6
# Joint steps of the IK solutions (the driver's joint cap: joint_velocity_scale x URDF velocity).
# The EEF moves use <= 36 % of the EEF caps, but the elbow and wrist turn faster where the arm is
# folded or the wrist near alignment (joint 5 ~ +-1.39 rad at the sideways handover poses):
# measured up to ~62 % of the joint cap over these seeds.
JOINT_CAP_SHARE = 0.75


@pytest.fixture(scope="module")
def worlds():
    made = {task: SimWorld(SimConfig(task=task)) for task in TASKS}
    yield made
    for world in made.values():
        world.close()


def home_poses() -> dict[str, np.ndarray]:
    return {side: k.fk(k.home) for side, k in KINEMATICS.items()}


def plan(worlds, task: str, seed: int):
    return make_expert(task, worlds[task].reset(seed), home_poses(), seed)


def samples(expert, period: float = COMMAND_PERIOD) -> list[ExpertTargets]:
    return [expert.targets(t) for t in np.arange(0.0, expert.duration + 2 * period, period)]


# ---- API and validation ----------------------------------------------------------------------

def test_targets_start_at_the_start_pose_and_end_at_the_final_targets(worlds):
    expert = plan(worlds, "handover_box", 4)
    start = expert.targets(0.0)
    for side, pose in home_poses().items():
        np.testing.assert_allclose(start.poses[side], pose, atol=1e-9)
        assert start.grippers[side] == 1.0
    final = expert.targets(expert.duration)
    later = expert.targets(expert.duration + 100.0)
    for side in ("left", "right"):
        np.testing.assert_array_equal(final.poses[side], later.poses[side])
        assert final.grippers[side] == later.grippers[side] == 1.0   # the box was let go
    assert expert.task == "handover_box" and expert.duration > 10.0


def test_same_seed_same_targets_bit_identical_and_other_seeds_differ(worlds):
    objects = worlds["lift_box"].reset(3)
    first = make_expert("lift_box", objects, home_poses(), 3)
    again = make_expert("lift_box", {k: v.copy() for k, v in objects.items()}, home_poses(), 3)
    other = make_expert("lift_box", objects, home_poses(), 4)   # same objects, other expert seed
    assert first.duration == again.duration
    differ = 0
    for t in np.linspace(0.0, first.duration, 57):
        a, b, c = first.targets(t), again.targets(t), other.targets(t)
        for side in ("left", "right"):
            assert np.array_equal(a.poses[side], b.poses[side]) and a.grippers[side] == b.grippers[side]
        differ += not np.allclose(a.poses["right"], c.poses["right"], atol=1e-4)
    assert differ > 40 and other.duration != first.duration


@pytest.mark.parametrize("task", TASKS)
def test_every_task_varies_with_the_seed(worlds, task):
    durations = {plan(worlds, task, seed).duration for seed in range(5)}
    assert len(durations) == 5


def test_unknown_task_missing_inputs_and_bad_seeds_are_clear_errors(worlds):
    objects = worlds["handover_box"].reset(0)
    with pytest.raises(ValueError, match="unknown sim task 'stack'.*handover_box"):
        make_expert("stack", objects, home_poses(), 0)
    with pytest.raises(ValueError, match="'target_pad' is missing"):
        make_expert("handover_box", {"box": objects["box"]}, home_poses(), 0)
    with pytest.raises(ValueError, match="left arm is missing"):
        make_expert("handover_box", objects, {"right": home_poses()["right"]}, 0)
    for seed in (-1, 1.5, "3", None, True):
        with pytest.raises(ValueError, match="seed"):
            make_expert("handover_box", objects, home_poses(), seed)
    with pytest.raises(ValueError, match="time must be finite"):
        make_expert("empty", {}, home_poses(), 0).targets(math.nan)


def test_objects_out_of_reach_or_knocked_over_are_refused(worlds):
    objects = worlds["lift_box"].reset(0)
    far = objects["box"].copy()
    far[:2] = [0.6, -0.5]
    with pytest.raises(ValueError, match="right arm.*(cannot reach|outside its workspace)"):
        make_expert("lift_box", {"box": far}, home_poses(), 0)
    lying = objects["box"].copy()
    lying[3:] = [math.cos(math.pi / 4), math.sin(math.pi / 4), 0.0, 0.0]   # on its side
    with pytest.raises(ValueError, match="tilted 90 deg"):
        make_expert("lift_box", {"box": lying}, home_poses(), 0)
    upside_down = objects["box"].copy()
    upside_down[3:] = [0.0, 1.0, 0.0, 0.0]
    assert make_expert("lift_box", {"box": upside_down}, home_poses(), 0).duration > 0


def test_a_start_pose_that_is_not_a_rigid_transform_is_refused():
    bad = home_poses()
    bad["right"] = bad["right"].copy()
    bad["right"][:3, :3] *= 2.0
    with pytest.raises(ValueError, match="right start pose is not a rigid transform"):
        make_expert("empty", {}, bad, 0)


finite = st.floats(-2.0, 2.0, allow_nan=False)
non_finite = st.sampled_from([math.nan, math.inf, -math.inf])
garbage = st.one_of(
    # 7 numbers with at least one NaN/inf in them
    st.tuples(st.lists(finite, min_size=6, max_size=6), non_finite, st.integers(0, 6)).map(
        lambda v: v[0][:v[2]] + [v[1]] + v[0][v[2]:]),
    st.lists(finite, max_size=12).filter(lambda v: len(v) != 7),          # wrong length
    st.lists(finite, min_size=3, max_size=3).map(lambda p: p + [0.0, 0.0, 0.0, 0.0]),   # zero quaternion
    st.lists(st.floats(1e3, 1e300), min_size=7, max_size=7),              # absurdly far
    st.text(max_size=10), st.none(), st.dictionaries(st.text(max_size=3), finite, max_size=2),
    st.lists(st.text(max_size=2), min_size=7, max_size=7),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(box=garbage, task=st.sampled_from(["lift_box", "handover_box"]), pad_too=st.booleans())
def test_garbage_object_poses_are_value_errors(worlds, box, task, pad_too):
    objects = {k: v.copy() for k, v in worlds[task].object_poses().items()}
    objects["box"] = box
    if pad_too and task == "handover_box":
        objects["target_pad"] = box
    with pytest.raises(ValueError):
        make_expert(task, objects, home_poses(), 0)


@settings(max_examples=60, deadline=None)
@given(entry=st.sampled_from([(0, 0), (1, 3), (2, 2), (3, 3), (0, 3)]), value=non_finite,
       side=st.sampled_from(["left", "right"]))
def test_non_finite_start_poses_are_value_errors(entry, value, side):
    poses = home_poses()
    poses[side][entry] = value
    with pytest.raises(ValueError, match=f"{side} start pose"):
        make_expert("empty", {}, poses, 0)


# ---- what the arm driver sees: every 20 ms target, many seeds --------------------------------

def check_stream(task: str, expert, with_ik: bool) -> None:
    stream = samples(expert)
    max_step = CAP_SHARE * DEFAULTS.max_eef_speed * COMMAND_PERIOD
    max_turn = CAP_SHARE * DEFAULTS.max_eef_angular_speed * COMMAND_PERIOD
    max_grip = CAP_SHARE * DEFAULTS.max_gripper_speed * COMMAND_PERIOD
    for side in ("left", "right"):
        arm = DESCRIPTION.arms[side]
        kinematics = KINEMATICS[side]
        joint_step = JOINT_CAP_SHARE * arm.velocity * DEFAULTS.joint_velocity_scale * COMMAND_PERIOD
        q = kinematics.ik(stream[0].poses[side]).q
        for i, (a, b) in enumerate(zip(stream, stream[1:])):
            pa, pb = a.poses[side], b.poses[side]
            where = f"{task} {side} arm at {i * COMMAND_PERIOD:.2f} s"
            assert np.linalg.norm(pb[:3, 3] - pa[:3, 3]) <= max_step, where
            assert np.linalg.norm(pin.log3(pa[:3, :3].T @ pb[:3, :3])) <= max_turn, where
            assert abs(b.grippers[side] - a.grippers[side]) <= max_grip, where
            assert 0.0 <= b.grippers[side] <= 1.0, where
            assert np.all(pb[:3, 3] >= arm.workspace_min) and np.all(pb[:3, 3] <= arm.workspace_max), where
            if with_ik:
                # As the driver solves it: warm-started from the last solution, one attempt.
                result = kinematics.ik(pb, q, position_tolerance=DEFAULTS.ik_position_tolerance,
                                       rotation_tolerance=DEFAULTS.ik_rotation_tolerance, max_attempts=1)
                assert result.reached, f"{where}: unreachable ({result.position_error * 1e3:.1f} mm)"
                assert np.all(np.abs(result.q - q) <= joint_step), f"{where}: joint step {np.abs(result.q - q)}"
                q = result.q


@pytest.mark.parametrize("task", TASKS)
def test_targets_are_smooth_and_inside_the_workspace_over_many_seeds(worlds, task):
    for seed in range(30):
        check_stream(task, plan(worlds, task, seed), with_ik=False)


@pytest.mark.parametrize("task", TASKS)
def test_targets_are_reachable_with_joint_steps_well_below_the_caps(worlds, task):
    for seed in (0, 11, 23):
        check_stream(task, plan(worlds, task, seed), with_ik=True)


@pytest.mark.parametrize("task", ["lift_box", "lift_box_narrow", "handover_box"])
def test_every_placement_of_many_seeds_has_a_plan(worlds, task):
    """The scene's spawn regions and the expert's margins agree: no seed is refused."""
    for seed in range(100, 300):
        plan(worlds, task, seed)
