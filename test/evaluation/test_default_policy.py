"""The trained policy the package ships (policies/lift_box_narrow): where `checkpoint: default`
finds it, that it loads as the checkpoint it claims to be, and that it does its task in the sim
in closed loop on seeds its demos never used (the demos were recorded with seeds 0-49).

Cost (2-core machine): ~3 wall s per 20 simulated s episode."""
from __future__ import annotations

import json

import pytest

from twinvla_ros.evaluation.sim_rollout import policy_agent, run_rollout
from twinvla_ros.model import TwinVLAPolicy
from twinvla_ros.paths import (DEFAULT_POLICY, DEFAULT_POLICY_CHUNK_OFFSET, policy_path, resolve_checkpoint,
                               resolve_chunk_offset)
from twinvla_ros.sim import SimConfig, SimWorld
from twinvla_ros.sim.scene import task_spec

pytestmark = pytest.mark.sim


def test_checkpoint_settings_resolve_to_the_shipped_policy_the_tiny_model_or_a_directory(tmp_path):
    assert resolve_checkpoint("default") == str(policy_path(DEFAULT_POLICY))
    assert resolve_checkpoint("tiny") == resolve_checkpoint("") == resolve_checkpoint(" tiny ") == ""
    assert resolve_checkpoint(str(tmp_path)) == str(tmp_path)
    assert resolve_chunk_offset("default", -1) == DEFAULT_POLICY_CHUNK_OFFSET
    assert resolve_chunk_offset(str(tmp_path), -1) == 0 == resolve_chunk_offset("tiny", -1)
    assert resolve_chunk_offset("default", 0) == 0 and resolve_chunk_offset(str(tmp_path), 5) == 5


def test_the_shipped_policy_is_a_small_checkpoint_with_its_statistics():
    folder = policy_path()
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert size < 20e6, f"{size / 1e6:.1f} MB"
    statistics = json.loads((folder / "dataset_statistics.json").read_text())
    assert len(statistics) == 1                                  # one dataset: unnorm_key not needed
    policy = TwinVLAPolicy.from_pretrained(folder, chunk_offset=DEFAULT_POLICY_CHUNK_OFFSET)
    assert policy.config.image_size == 112 and policy.horizon == 20 - DEFAULT_POLICY_CHUNK_OFFSET


@pytest.fixture(scope="module")
def world():
    world = SimWorld(SimConfig(task=DEFAULT_POLICY))
    yield world
    world.close()


@pytest.mark.slow
def test_the_shipped_policy_lifts_the_box_on_seeds_its_demos_never_used(world):
    policy = TwinVLAPolicy.from_pretrained(policy_path(), chunk_offset=DEFAULT_POLICY_CHUNK_OFFSET)
    instruction = task_spec(DEFAULT_POLICY).instruction
    outcomes = []
    for seed in (1050, 1051, 1052):
        world.reset(seed)
        result = run_rollout(world, policy_agent(policy, world, instruction, seed=seed), 20.0)
        outcomes.append((seed, result.success, result.reason))
    # At least two of three: one unlucky noise draw may fumble a grasp (bench/RESULTS.md has
    # 50/50 over seeds 1000-1049); a policy that does not do the task lifts none.
    assert sum(success for _, success, _ in outcomes) >= 2, outcomes
