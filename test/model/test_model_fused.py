"""The fused inference path (the default) against the exact one (the reference's ops).

Same function, different rounding: actions agree within 1e-4 in float32 on the tiny presets and
on the reference-sized tiny config, CFG 1.5 and 1.0, both readout variants, with and without
real-time-chunking guidance. Plus the pieces: the log-alpha form of the re-weighting, the
fused-weight cache, gradients, bfloat16, the action head on oneDNN-packed weights.
"""
from __future__ import annotations

import copy
import dataclasses
import io
import math
import platform
import shutil

import numpy as np
import pytest
import torch
from transformers.models.qwen2.modeling_qwen2 import rotate_half

from twinvla_ros.model import Guidance, TwinVLA, TwinVLAConfig, TwinVLAPolicy, default_statistics, flow, packed_linear
from twinvla_ros.model.action_head import _PACKED_CACHE
from twinvla_ros.model.twin_llm import JointLayout, pair_rotary_dims, reweight_attention, rotate_pairs

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


# ---- the action head on oneDNN-packed weights (the CPU float32 inference default) -------------
needs_onednn = pytest.mark.skipif(not packed_linear.available(), reason="this torch build has no oneDNN linear")


def test_x86_builds_run_the_head_on_packed_weights():
    """Else the fast-vs-exact tests above would silently check the plain modules only."""
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("checked on x86 only")
    assert packed_linear.available()


def _head_inputs(net, rows: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    L, A = net.positional_embedding.shape[0] - 1, net.x_embedder.linear.in_features
    W = net.positional_embedding.shape[1]
    return torch.randn(rows, L, A, generator=gen), torch.randn(rows, 1, W, generator=gen)


def _plain_step(net, monkeypatch):
    """forward_tokens on the nn.Linear modules, for comparison."""
    def plain(x, c):
        with monkeypatch.context() as m:
            m.setattr(net, "packed_weights", lambda x: None)
            return net.forward_tokens(x, c)
    return plain


@needs_onednn
@pytest.mark.parametrize("preset", ["tiny", "tiny-reference"])
@pytest.mark.parametrize("rows", [2, 4, 12])  # no CFG, CFG, a batch of 3 observations with CFG
def test_packed_head_step_equals_the_plain_modules(preset, rows, monkeypatch):
    net = TwinVLA.random(TwinVLAConfig.preset(preset), seed=0).decoder_c.net.requires_grad_(False)
    x, c = _head_inputs(net, rows)
    assert net.packed_weights(x) is not None
    with torch.inference_mode():
        packed, plain = net.forward_tokens(x, c), _plain_step(net, monkeypatch)(x, c)
    assert packed.shape == (rows, *x.shape[1:])
    torch.testing.assert_close(packed, plain, rtol=0, atol=1e-5)
    assert not torch.allclose(packed[0], packed[1], atol=1e-3)  # rows are their own


@needs_onednn
def test_guidance_runs_the_head_on_the_plain_modules():
    """oneDNN's linear has no autograd kernel: an input that needs its gradient (real-time
    chunking's VJP) takes nn.Linear, and the unguided steps' packing stays cached."""
    net = TwinVLA.random(TwinVLAConfig.preset("tiny-reference"), seed=0).decoder_c.net.requires_grad_(False)
    x, c = _head_inputs(net, 4, seed=1)
    assert net.packed_weights(x) is not None
    xg = x.clone().requires_grad_(True)
    assert net.packed_weights(xg) is None
    (g,) = torch.autograd.grad(net.forward_tokens(xg, c), xg, grad_outputs=torch.randn_like(x))
    assert torch.isfinite(g).all() and g.abs().max() > 1e-3
    assert net in _PACKED_CACHE


@needs_onednn
def test_packed_weights_follow_parameter_changes_and_stay_out_of_copies(monkeypatch):
    policy = TwinVLAPolicy.tiny(seed=4)
    net = policy.model.decoder_c.net
    x, c = _head_inputs(net, 4)
    with torch.inference_mode():
        before = net.forward_tokens(x, c)
        with torch.no_grad():
            net.blocks[0].mlp.fc1.weight.mul_(1.3)  # in place: same storage, new version
        after = net.forward_tokens(x, c)
        assert not torch.allclose(before, after, atol=1e-4)
        torch.testing.assert_close(after, _plain_step(net, monkeypatch)(x, c), rtol=0, atol=1e-5)
    # oneDNN's packed tensors have no storage: the model must stay copyable and savable.
    copied = copy.deepcopy(policy.model)
    torch.save(policy.model.state_dict(), io.BytesIO())
    torch.save(policy.model, io.BytesIO())
    with torch.inference_mode():
        torch.testing.assert_close(copied.decoder_c.net.forward_tokens(x, c), after, rtol=0, atol=0)


def test_plain_modules_run_where_packing_does_not_apply():
    net = TwinVLA.random(TwinVLAConfig.preset("tiny"), seed=0).decoder_c.net
    x, _ = _head_inputs(net, 4)
    assert net.packed_weights(x) is None  # trainable weights: autograd must reach them
    net.requires_grad_(False)
    assert net.packed_weights(x.bfloat16()) is None
    if packed_linear.available():
        assert net.packed_weights(x) is net.packed_weights(x)  # packed once, then cached
        assert net in _PACKED_CACHE
        net.requires_grad_(True)  # training again: the packed copy is freed
        assert net.packed_weights(x) is None and net not in _PACKED_CACHE


def test_pair_ordered_rotation_is_hf_rotary_embedding():
    """The fused path permutes each q/k head's dims so that HF's rotate_half pairs sit side by
    side, and rotates them as complex numbers: the same rotation, and q . k is unchanged."""
    torch.manual_seed(0)
    T, heads, hd = 37, 3, 16
    q, k = torch.randn(T, 1, heads, hd), torch.randn(T, 1, heads, hd)
    freqs = torch.arange(T, dtype=torch.float32)[:, None, None] * (1e6 ** (-torch.arange(0, hd, 2) / hd))
    emb = torch.cat([freqs, freqs], dim=-1)  # HF's cos/sin layout: (T, 1, hd)
    cos, sin = emb.cos()[:, :, None], emb.sin()[:, :, None]
    rotation = torch.complex(freqs.cos(), freqs.sin())[:, :, None]
    hf = lambda x: x * cos + rotate_half(x) * sin  # noqa: E731
    pairs = pair_rotary_dims(hd)
    assert sorted(pairs.tolist()) == list(range(hd)) and pairs[:4].tolist() == [0, hd // 2, 1, hd // 2 + 1]
    rq, rk = rotate_pairs(q[..., pairs], rotation), rotate_pairs(k[..., pairs], rotation)
    torch.testing.assert_close(rq, hf(q)[..., pairs], rtol=0, atol=1e-6)
    torch.testing.assert_close((rq * rk).sum(-1), (hf(q) * hf(k)).sum(-1), rtol=0, atol=1e-5)
    assert rotate_pairs(q.bfloat16()[..., pairs], rotation).dtype == torch.bfloat16


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None, reason="inductor needs a C++ compiler on the CPU")
def test_compiled_head_matches_the_fast_path(obs):
    """compile=True traces the head's plain modules (packing stays out of the graph; inductor
    chooses its own kernels): the same actions as the uncompiled fast path."""
    fast = TwinVLAPolicy.tiny(seed=0)
    compiled = TwinVLAPolicy(TwinVLAPolicy.tiny(seed=0).model, fast.tokenizer, fast.statistics, compile=True)
    np.testing.assert_allclose(compiled.predict(obs, seed=0), fast.predict(obs, seed=0), rtol=0, atol=TOL)
