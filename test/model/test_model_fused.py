"""The fused inference path (the default) against the exact one (the reference's ops).

Same function, different rounding: actions agree within 1e-4 in float32 on the tiny presets and
on the reference-sized tiny config, CFG 1.5 and 1.0, both readout variants, with and without
real-time-chunking guidance. Plus the pieces: the log-alpha form of the re-weighting, the
fused-weight cache, gradients, bfloat16.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from twinvla_ros.model import Guidance, TwinVLA, TwinVLAConfig, TwinVLAPolicy, default_statistics, flow
from twinvla_ros.model.twin_llm import JointLayout, reweight_attention

TOL = 1e-4


def policies(config: TwinVLAConfig, tokenizer, cfg_scale: float, seed: int = 0):
    model = TwinVLA.random(config, seed=seed)
    stats = {"k": default_statistics()}
    return (TwinVLAPolicy(model, tokenizer, stats, cfg_scale=cfg_scale),
            TwinVLAPolicy(model, tokenizer, stats, cfg_scale=cfg_scale, exact=True))


def guidance_for(chunk: np.ndarray) -> Guidance:
    H, d = 12, 5
    weights = np.concatenate([np.ones(d), np.linspace(1, 0, H - d + 2)[1:-1]])
    return Guidance(chunk[:H] + 0.02, weights)


def assert_paths_agree(fast: TwinVLAPolicy, exact: TwinVLAPolicy, observation) -> None:
    ctx_f, ctx_e = fast.encode(observation), exact.encode(observation)
    for name in ("cond", "uncond"):
        a, b = getattr(ctx_f.conditioning, name), getattr(ctx_e.conditioning, name)
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=0, atol=TOL)
    free = exact.sample(ctx_e, seed=3)
    np.testing.assert_allclose(fast.sample(ctx_f, seed=3), free, rtol=0, atol=TOL)
    guided_e = exact.sample(ctx_e, seed=4, guidance=guidance_for(free))
    guided_f = fast.sample(ctx_f, seed=4, guidance=guidance_for(free))
    np.testing.assert_allclose(guided_f, guided_e, rtol=0, atol=TOL)
    assert not np.allclose(guided_e, exact.sample(ctx_e, seed=4), atol=1e-3)  # the guidance acts


@pytest.mark.parametrize("cfg_scale", [1.5, 1.0])
@pytest.mark.parametrize("as_eos", [False, True])
def test_fused_equals_exact_tiny(policy, obs, cfg_scale, as_eos):
    config = dataclasses.replace(TwinVLAConfig.preset("tiny"), readout_token_as_eos=as_eos)
    assert_paths_agree(*policies(config, policy.tokenizer, cfg_scale), obs)


@pytest.mark.parametrize("cfg_scale", [1.5, 1.0])
@pytest.mark.parametrize("as_eos", [True, False])
def test_fused_equals_exact_reference_size(policy, make_observation, cfg_scale, as_eos):
    """24 layers, 448 px (256 tokens per camera), DiT-S: the config timed against the authors' code."""
    config = dataclasses.replace(TwinVLAConfig.preset("tiny-reference"), readout_token_as_eos=as_eos)
    observation = make_observation(5, sizes=((480, 640), (240, 320), (240, 320)))
    assert_paths_agree(*policies(config, policy.tokenizer, cfg_scale, seed=1), observation)


def test_log_alpha_bias_is_the_reweighting():
    torch.manual_seed(0)
    C, S = 5, 3
    layout = JointLayout.build([C, 3], S)
    scores = torch.randn(2, 2, C + 2 * S, C + 2 * S) * 3
    add = layout.additive_mask(torch.float32)
    reweighted = reweight_attention(torch.softmax(scores + add, dim=-1), layout.shared_keys, alpha=2.0)
    shared_mask, arm_mask = layout.sdpa_masks(torch.float32, math.log(2.0))
    assert layout.padded and shared_mask is not None
    torch.testing.assert_close(torch.softmax(scores[:, :, C:] + arm_mask, dim=-1), reweighted[:, :, C:], rtol=0, atol=1e-6)
    # Shared queries see only shared keys: scaling them all alone changes nothing.
    torch.testing.assert_close(torch.softmax(scores[:, :, :C, :C] + shared_mask, dim=-1), reweighted[:, :, :C, :C], rtol=0, atol=1e-6)
    assert JointLayout.build([C, C], S).sdpa_masks(torch.float32, 0.7)[0] is None  # unpadded: plain causal


def test_fused_weight_cache_follows_parameter_changes(obs):
    fast = TwinVLAPolicy.tiny(seed=2)
    exact = TwinVLAPolicy(fast.model, fast.tokenizer, fast.statistics, exact=True)
    before = fast.predict(obs, seed=0)
    with torch.no_grad():
        fast.model.backbone_r[1].self_attn.q_proj.weight.mul_(1.5)  # in place: same storage
        fast.model.backbone_l[2].input_layernorm.weight.add_(0.3)
    after = fast.predict(obs, seed=0)
    assert not np.allclose(before, after, atol=1e-3)
    np.testing.assert_allclose(after, exact.predict(obs, seed=0), rtol=0, atol=TOL)


def test_training_defaults_to_the_reference_gradient(policy, obs):
    model = TwinVLA.random(TwinVLAConfig.preset("tiny"), seed=3).train()
    inputs = policy.processor([obs.instruction], [(obs.image_ego, obs.image_wrist_left, obs.image_wrist_right)], np.zeros((1, 20)))
    with torch.no_grad():
        h = model.embed_inputs(inputs).requires_grad_(True)

    def grads(exact):
        model.zero_grad()
        out = model.run_twin_llm(h, inputs.layout, exact=exact)
        (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
        return out, model.backbone_l[0].self_attn.q_proj.weight.grad.clone()

    out_default, g_default = grads(None)
    out_exact, g_exact = grads(True)
    out_fused, g_fused = grads(False)
    assert torch.equal(out_default, out_exact) and torch.equal(g_default, g_exact)
    torch.testing.assert_close(out_fused, out_exact, rtol=0, atol=1e-4)
    # The fused path differentiates the re-weighted softmax itself, not the straight-through form.
    assert torch.isfinite(g_fused).all() and not torch.allclose(g_fused, g_exact, rtol=1e-3, atol=1e-6)
    assert model.gates[0].weight.grad is not None and model.gates[0].weight.grad.abs().sum() > 0


def test_bfloat16_runs_near_float32_with_a_float32_head(obs):
    f32 = TwinVLAPolicy.tiny(seed=0)
    bf16 = TwinVLAPolicy.tiny(seed=0)
    bf16.model.set_dtype(torch.bfloat16)
    assert bf16.model.dtype == torch.bfloat16 and bf16.model.head_dtype == torch.float32
    ctx = bf16.encode(obs)
    assert ctx.conditioning.cond.dtype == torch.float32
    a, b = f32.predict(obs, seed=0), bf16.sample(ctx, seed=0)
    assert np.isfinite(b).all()
    np.testing.assert_allclose(b, a, rtol=0, atol=0.02)  # measured ~5e-3


def test_time_embedding_is_computed_once_per_chunk(policy, obs, monkeypatch):
    net = policy.model.decoder_c.net
    calls = []
    original = net.t_embedder.forward
    monkeypatch.setattr(net.t_embedder, "forward", lambda t: calls.append(tuple(t.shape)) or original(t))
    ctx = policy.encode(obs)
    x = policy.initial_noise(0)
    flow.sample_fused(net, x, ctx.conditioning, 10)
    assert calls == [(10,)]
