"""The offline closed loop (evaluation/sim_rollout.py) with the scripted experts: every task's
demo succeeds in MuJoCo physics through the arm driver's ArmController without the driver ever
stepping in, and the harness sees failures and interventions when there are some.

Cost (2-core machine): ~0.07 wall s per simulated s; lift_box and empty demos last ~11 s,
handover_box ~40 s."""
from __future__ import annotations

import numpy as np
import pytest

from twinvla_ros.evaluation.sim_rollout import (INTERVENTIONS, expert_agent, measured_eef_poses, policy_agent, run_expert,
                                                run_rollout)
from twinvla_ros.robot.bimanual import GRIPPER, POSITION, arm_slice
from twinvla_ros.sim import ExpertTargets, SimConfig, SimWorld, make_expert

pytestmark = pytest.mark.sim


@pytest.fixture
def make_world():
    worlds = []

    def make(task: str) -> SimWorld:
        worlds.append(SimWorld(SimConfig(task=task)))
        return worlds[-1]

    yield make
    for w in worlds:
        w.close()


@pytest.mark.parametrize("task, seeds", [("lift_box", (1, 8)), ("lift_box_narrow", (4,)), ("empty", (2,)), ("handover_box", (3, 14))])
def test_the_expert_succeeds_without_any_safety_intervention(make_world, task, seeds):
    world = make_world(task)
    for seed in seeds:
        expert, result = run_expert(world, seed)
        assert result.success, f"{task} seed {seed}: {result.reason}"
        assert result.interventions == {"left": {}, "right": {}}, f"{task} seed {seed}"
        n = len(result.times)
        assert n == round((expert.duration + 0.5) * 100)
        for side in ("left", "right"):
            assert result.eef_poses[side].shape == (n, 4, 4) and result.grippers[side].shape == (n,)
            # The arm ended where the expert's final target is.
            final = expert.targets(expert.duration).poses[side]
            assert np.linalg.norm(result.eef_poses[side][-1][:3, 3] - final[:3, 3]) < 0.005


def test_an_agent_that_holds_the_start_pose_fails_the_task(make_world):
    world = make_world("lift_box")
    world.reset(0)
    start = measured_eef_poses(world)
    hold = ExpertTargets(poses=start, grippers={"left": 1.0, "right": 1.0})
    result = run_rollout(world, lambda t, measured: hold, 1.0)
    assert not result.success and "above the table" in result.reason
    assert result.interventions == {"left": {}, "right": {}}


def test_interventions_are_counted_when_the_agent_asks_for_too_much(make_world):
    world = make_world("empty")
    world.reset(0)
    expert = make_expert("empty", {}, measured_eef_poses(world), 0)

    def below_the_table(t, measured):
        targets = expert.targets(t)
        poses = dict(targets.poses)
        poses["right"] = poses["right"].copy()
        poses["right"][2, 3] = -0.2                 # under the workspace floor
        return ExpertTargets(poses, targets.grippers)

    result = run_rollout(world, below_the_table, 0.5)
    assert result.interventions["right"].get("workspace_clamped", 0) > 0
    assert result.interventions["left"] == {}
    assert set(result.interventions["right"]) <= set(INTERVENTIONS)


def test_on_tick_sees_every_tick_in_sim_time_and_bad_arguments_are_refused(make_world):
    world = make_world("empty")
    world.reset(0)
    expert = make_expert("empty", {}, measured_eef_poses(world), 0)
    seen = []
    start = world.time
    run_rollout(world, expert_agent(expert), 0.2, on_tick=lambda t, w: seen.append((t, w.time - start)))
    assert len(seen) == 20
    np.testing.assert_allclose([s for _, s in seen], [t for t, _ in seen], atol=1e-9)
    for kwargs in ({"servo_rate": 0.0}, {"servo_rate": 300.0}, {"command_rate": 500.0}):
        with pytest.raises(ValueError):
            run_rollout(world, expert_agent(expert), 0.1, **kwargs)
    with pytest.raises(ValueError, match="duration"):
        run_rollout(world, expert_agent(expert), float("nan"))


class LiftingPolicy:
    """A stand-in for a model: each chunk moves the right arm 2 cm up from where the arm is and
    opens its gripper halfway, and records what it was shown."""

    def __init__(self):
        self.seen = []

    def predict(self, observation, seed):
        self.seen.append((observation, seed))
        state = observation.proprio.copy()
        right = arm_slice("right")
        chunk = np.repeat(state[None], 20, axis=0)
        chunk[:, right][:, POSITION] += np.linspace(0.001, 0.02, 20)[:, None] * [0.0, 0.0, 1.0]
        chunk[:, right.start + GRIPPER] = 0.5
        return chunk


def test_a_policy_agent_looks_once_a_chunk_and_its_actions_move_the_arm(make_world):
    world = make_world("lift_box_narrow")
    world.reset(0)
    start = measured_eef_poses(world)
    policy = LiftingPolicy()
    result = run_rollout(world, policy_agent(policy, world, "pick up the red box", seed=7), 2.5)
    # Chunks of 20 actions at 20 Hz: looks at 0, 1 and 2 s, with noise seeds 7, 8, 9.
    assert [seed for _, seed in policy.seen] == [7, 8, 9]
    first = policy.seen[0][0]
    assert first.instruction == "pick up the red box"
    assert [image.shape for image in (first.image_ego, first.image_wrist_left, first.image_wrist_right)] == [(240, 320, 3)] * 3
    for side in ("left", "right"):
        state = first.proprio[arm_slice(side)]
        np.testing.assert_allclose(state[POSITION], start[side][:3, 3], atol=1e-9)
        assert state[GRIPPER] == pytest.approx(1.0, abs=0.02)                   # open at home
    # Each chunk lifts 2 cm from where the arm then was; the left arm holds.
    rise = result.eef_poses["right"][-1][2, 3] - start["right"][2, 3]
    assert 0.03 < rise < 0.065, rise
    assert np.linalg.norm(result.eef_poses["left"][-1][:3, 3] - start["left"][:3, 3]) < 0.003
    assert result.grippers["right"][-1] < 0.7 * result.grippers["right"][0]
    assert result.interventions == {"left": {}, "right": {}}
    replanning = LiftingPolicy()
    world.reset(0)
    run_rollout(world, policy_agent(replanning, world, "pick up the red box", execution_horizon=5), 1.0)
    assert [seed for _, seed in replanning.seen] == [0, 1, 2, 3]                    # every 0.25 s
    with pytest.raises(ValueError, match="execution_horizon"):
        policy_agent(replanning, world, "x", execution_horizon=0)
