"""The high-level policy API: encode/sample split, batching, loading, statistics, readout slots."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from twinvla_ros.model import TwinVLA, TwinVLAConfig, TwinVLAPolicy, default_statistics
from twinvla_ros.model.processing_twinvla import READOUT


def test_predict_equals_sample_of_encode(policy, obs):
    a = policy.predict(obs, seed=5)
    assert a.shape == (policy.horizon, policy.action_dim) == (20, 20)
    assert np.array_equal(a, policy.sample(policy.encode(obs), seed=5))
    assert np.array_equal(a, policy.predict(obs, seed=5))


@pytest.mark.parametrize("exact", [False, True])
def test_sampling_runs_only_the_head(policy, obs, monkeypatch, exact):
    policy = TwinVLAPolicy(policy.model, policy.tokenizer, policy.statistics, exact=exact)
    ctx = policy.encode(obs)
    calls = []
    monkeypatch.setattr(policy.model, "run_twin_llm", lambda *a, **k: calls.append("llm"))
    monkeypatch.setattr(policy.model.vision_c, "forward", lambda *a, **k: calls.append("vision"))
    steps = []
    net = policy.model.decoder_c.net
    name = "forward_embedded" if exact else "forward_tokens"  # the reference's step / the fused one
    original = getattr(net, name)
    monkeypatch.setattr(net, name, lambda x, *rest: steps.append(x.shape[0]) or original(x, *rest))
    policy.sample(ctx, seed=0)
    policy.sample(ctx, seed=1)
    assert calls == []
    # One DiT call per flow step, cond + uncond batched: [x, x] for the 2 rows -> 4.
    assert steps == [4] * (2 * policy.num_flow_steps)


@pytest.mark.parametrize("exact", [False, True])
def test_predict_batch_rows_equal_single_predictions(policy, make_observation, exact):
    policy = TwinVLAPolicy(policy.model, policy.tokenizer, policy.statistics, exact=exact)
    batch = [
        make_observation(10, instruction="pick up the red cube"),
        make_observation(11, instruction="hand over the box to the other arm please", sizes=((100, 100), (64, 48), (300, 200))),
        make_observation(12, instruction="fold"),
    ]
    seeds = [3, 4, 5]
    out = policy.predict_batch(batch, seeds=seeds)
    assert out.shape == (3, 20, 20)
    singles = [policy.predict(o, seed=s) for o, s in zip(batch, seeds)]
    for i, single in enumerate(singles):
        np.testing.assert_allclose(out[i], single, rtol=1e-4, atol=1e-5, err_msg=f"row {i}")
    # Rows are not interchangeable: the per-sample slot order matters.
    assert not np.allclose(singles[0], singles[1], atol=1e-3)


def test_from_pretrained_needs_a_tokenizer_and_a_key(tmp_path, policy, obs):
    policy.model.save_pretrained(tmp_path)  # weights + config only, like the published repos
    (tmp_path / "dataset_statistics.json").write_text(
        json.dumps({"a": default_statistics(), "b": default_statistics((0, 0, 0), (1, 1, 1))})
    )
    with pytest.raises(FileNotFoundError, match="tokenizer_path"):
        TwinVLAPolicy.from_pretrained(tmp_path, unnorm_key="a")
    tok_dir = tmp_path / "tok"
    policy.tokenizer.save_pretrained(str(tok_dir))
    with pytest.raises(ValueError, match="unnorm_key"):
        TwinVLAPolicy.from_pretrained(tmp_path, tokenizer_path=tok_dir)
    loaded = TwinVLAPolicy.from_pretrained(tmp_path, tokenizer_path=tok_dir, unnorm_key="b", num_flow_steps=4, cfg_scale=2.0)
    assert loaded.num_flow_steps == 4 and loaded.cfg_scale == 2.0 and loaded.normalizer.key == "b"
    assert loaded.predict(obs, seed=0).shape == (20, 20)


def test_tiny_statistics_are_used(obs):
    entry = default_statistics(xyz_q01=(0.0, 0.0, 0.0), xyz_q99=(0.001, 0.001, 0.001))
    p = TwinVLAPolicy.tiny(seed=0, statistics=entry)
    out = p.predict(obs, seed=0)
    xyz = out[:, [0, 1, 2, 10, 11, 12]]
    # Normalized actions are clamped to [-5, 5] -> xyz within a few mm of the tiny range.
    assert np.all(np.abs(xyz) <= 0.0031)
    assert np.abs(out[:, 3:10]).max() > 0.01  # rotation/gripper dims are not scaled


def test_learned_or_eos_readout_slots(obs):
    tiny = TwinVLAConfig.preset("tiny")
    for as_eos in (False, True):
        cfg = dataclasses.replace(tiny, readout_token_as_eos=as_eos)
        model = TwinVLA.random(cfg, seed=0)
        p = TwinVLAPolicy(model, TwinVLAPolicy.tiny().tokenizer, {"k": default_statistics()})
        inputs = p.processor([obs.instruction], [(obs.image_ego, obs.image_wrist_left, obs.image_wrist_right)], np.zeros((1, 20)))
        with torch.no_grad():
            h = model.embed_inputs(inputs)
        slots = h[inputs.modal == READOUT]
        if as_eos:
            assert "action_token_l" not in model.state_dict()
            assert torch.equal(slots, model.embed_tokens_c.weight[0].expand(2, -1))
        else:
            assert torch.equal(slots, torch.cat([model.action_token_l, model.action_token_r]))


def test_proprio_slots_in_per_sample_order(policy, make_observation):
    obs = [make_observation(20), make_observation(21)]
    proprio = np.stack([o.proprio for o in obs])
    inputs = policy.processor([o.instruction for o in obs], [(o.image_ego, o.image_wrist_left, o.image_wrist_right) for o in obs], proprio)
    model = policy.model
    with torch.no_grad():
        h = model.embed_inputs(inputs)
        slots = h[inputs.modal == 4].reshape(2, 2, -1)
        for b in range(2):
            for arm in range(2):
                x = torch.tensor(proprio[b, 10 * arm : 10 * arm + 10], dtype=torch.float32)
                assert torch.allclose(slots[b, arm], model.embed_arm_state(x[None])[0], atol=1e-6)
