"""Bit-exact agreement with a second, deliberately naive rendering of the reference's procedure.

The naive path below follows the authors' code structure as described in the reference facts
(role ids, boolean-mask gathers, position ids by cumsum, the 4-D mask with finfo.min, eager
softmax + re-weighting, MoE by stacking both experts, the batch-of-4 CFG loop with in-place
updates, float64 un-normalization). It shares only the weights with the implementation.
The bit parity is that of the exact path (exact=True); the default fused path is held to it
within a tolerance in test_model_fused.py.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from twinvla_ros.model import TwinVLAPolicy
from twinvla_ros.model.processing_twinvla import READOUT, preprocess_image
from twinvla_ros.model.twin_llm import JointLayout, apply_rotary_pos_emb, repeat_kv
from twinvla_ros.model.vision import pixel_shuffle


def naive_ci_ids(C: int, S: int) -> torch.Tensor:
    return torch.tensor([[0] * C + [1] * S + [2] * S])


def naive_position_ids(ci):
    m0, m1, m2 = ci == 0, ci == 1, ci == 2
    pos = torch.zeros_like(ci)
    pos = torch.where(m0, torch.cumsum(m0.long(), 1) - 1, pos)
    c0 = m0.long().sum(1, keepdim=True)
    pos = torch.where(m1, c0 + torch.cumsum(m1.long(), 1) - 1, pos)
    return torch.where(m2, c0 + torch.cumsum(m2.long(), 1) - 1, pos)


def naive_mask(ci, dtype):
    B, T = ci.shape
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool)).expand(B, -1, -1).clone()
    q, k = ci.unsqueeze(2), ci.unsqueeze(1)
    n = int((ci[0] == 1).sum())
    tri = torch.tril(torch.ones(B, n, n, dtype=torch.bool)).view(-1)
    causal[(q == 1) & (k == 2)] = tri
    causal[(q == 2) & (k == 1)] = tri
    out = torch.full((B, 1, T, T), torch.finfo(dtype).min)
    return out.masked_fill_(causal.unsqueeze(1), 0.0)


def naive_twin_llm(model, h, ci):
    B, D = h.shape[0], h.shape[-1]
    hd = model.head_dim
    pos = naive_position_ids(ci)
    inv = 1.0 / (model.qwen2_config.rope_parameters["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    freqs = (inv[None, :, None].expand(B, -1, 1) @ pos[:, None, :].float()).transpose(1, 2)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos().to(h.dtype), emb.sin().to(h.dtype)
    mask = naive_mask(ci, h.dtype)
    cm, lm, rm = ci == 0, ci == 1, ci == 2
    fuse = lambda fl, fr, x: (fl(x) + fr(x)) / 2.0  # noqa: E731
    for i in range(model.config.num_layers):
        L, R = model.backbone_l[i], model.backbone_r[i]
        res = h
        c = fuse(L.input_layernorm, R.input_layernorm, h[cm].view(B, -1, D))
        l, r = L.input_layernorm(h[lm].view(B, -1, D)), R.input_layernorm(h[rm].view(B, -1, D))
        proj = lambda name: [  # noqa: E731
            fuse(getattr(L.self_attn, name), getattr(R.self_attn, name), c).view(B, c.shape[1], -1, hd).transpose(1, 2),
            getattr(L.self_attn, name)(l).view(B, l.shape[1], -1, hd).transpose(1, 2),
            getattr(R.self_attn, name)(r).view(B, r.shape[1], -1, hd).transpose(1, 2),
        ]
        q, k, v = (torch.cat(proj(n), dim=2) for n in ("q_proj", "k_proj", "v_proj"))
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        k, v = repeat_kv(k, model.num_kv_groups), repeat_kv(v, model.num_kv_groups)
        w = torch.matmul(q, k.transpose(2, 3)) * model.scaling + mask
        w = F.softmax(w, dim=-1, dtype=torch.float32)
        match = (ci[:, None, :] != 0).unsqueeze(1).expand(-1, w.shape[1], w.shape[2], -1)
        with torch.no_grad():
            rw = w * (match + 2.0 * (~match))
            rw = rw / rw.sum(dim=-1, keepdim=True).clamp(min=1e-6)
        w = (w + (rw - w).detach()).to(v.dtype)
        o = torch.matmul(w, v).transpose(1, 2).contiguous().reshape(B, h.shape[1], -1).contiguous()
        o = torch.cat([fuse(L.self_attn.o_proj, R.self_attn.o_proj, o[cm].view(B, -1, D)),
                       L.self_attn.o_proj(o[lm].view(B, -1, D)), R.self_attn.o_proj(o[rm].view(B, -1, D))], dim=1)
        h = res + o
        res = h
        c = fuse(L.post_attention_layernorm, R.post_attention_layernorm, h[cm].view(B, -1, D))
        l, r = L.post_attention_layernorm(h[lm].view(B, -1, D)), R.post_attention_layernorm(h[rm].view(B, -1, D))
        scores = F.softmax(model.gates[i](c), dim=-1)
        hard = F.one_hot(torch.argmax(scores, dim=-1).view(-1), num_classes=2).float().view(*scores.shape[:-1], 2)
        ste = (hard - scores).detach() + scores
        c = (torch.stack([L.mlp(c), R.mlp(c)], dim=-1) * ste.unsqueeze(-2)).sum(dim=-1)
        h = res + torch.cat([c, L.mlp(l), R.mlp(r)], dim=1)
    return model.norm(h)


def naive_predict(policy, obs, seed):
    """The reference's predict_action for one observation, CFG 1.5, 10 steps."""
    model, cfg, proc = policy.model, policy.config, policy.processor
    stats = policy.statistics[policy.normalizer.key]
    low, high, mask = (np.array(stats["proprio"][k]) for k in ("q01", "q99", "mask"))
    st = obs.proprio
    st = np.concatenate([np.where(mask, (st[..., :10] - low) * 2 / (high - low + 1e-6) - 1, st[..., :10]),
                         np.where(mask, (st[..., 10:] - low) * 2 / (high - low + 1e-6) - 1, st[..., 10:])], axis=-1)
    proprio = torch.tensor(st).unsqueeze(0).unsqueeze(0).to(torch.float32)  # (1, 1, 20)
    ids, roles, _ = proc.tokens([obs.instruction])
    C, S = ids.shape[1] - 2 * len(proc.arm_ids), len(proc.arm_ids)
    ci = naive_ci_ids(C, S)
    h = model.embed_tokens_c(ids)
    side = cfg.image_size // cfg.patch_size

    def img(im):
        feats = model.vision_c(preprocess_image(im, cfg.image_size)[None]).reshape(1, side, side, -1)
        feats = pixel_shuffle(feats, 0.5)
        return model.mlp1(feats.reshape(1, -1, feats.shape[-1]))

    for role, im in ((1, obs.image_ego), (2, obs.image_wrist_left), (3, obs.image_wrist_right)):
        h[roles == role] = img(im).reshape(-1, h.shape[-1])
    sl = model.embed_arm_state(proprio[:, :, :10])
    sr = model.embed_arm_state(proprio[:, :, 10:])
    h[roles == 4] = torch.cat([sl, sr], axis=0).reshape(-1, h.shape[-1])
    h[roles == READOUT] = torch.cat([model.action_token_l.repeat(1, 1), model.action_token_r.repeat(1, 1)], axis=0)
    h = naive_twin_llm(model, h, ci)
    tok = h[roles == READOUT].reshape(-1, 1, h.shape[-1])
    states = proprio[:, 0, :].reshape(-1, 10)
    head = model.decoder_c
    z = head.combine(torch.cat([tok.squeeze(1), states], dim=-1)).unsqueeze(1)
    z = torch.cat([z, head.net.z_embedder.uncondition.unsqueeze(0).expand(2, 1, -1)], 0)
    torch.manual_seed(seed)
    x = torch.randn((4, cfg.action_len, cfg.action_dim)).to(z.dtype)
    for k in range(10):
        kt = torch.tensor([1 - k / 10])
        half = x[: len(x) // 2]
        out = head.net(torch.cat([half, half], dim=0), kt, z)
        cond_eps, uncond_eps = torch.split(out, len(out) // 2, dim=0)
        half_eps = uncond_eps + 1.5 * (cond_eps - uncond_eps)
        x += -1 / 10 * torch.cat([half_eps, half_eps], dim=0)
        x = torch.clamp(x, -5, 5)
    a = x[:2].reshape(1, cfg.action_len, -1).cpu().float().numpy()
    low, high, mask = (np.array(stats["action"][k]) for k in ("q01", "q99", "mask"))
    a = np.concatenate([np.where(mask, (a[..., :10] + 1) * (high - low + 1e-6) / 2 + low, a[..., :10]),
                        np.where(mask, (a[..., 10:] + 1) * (high - low + 1e-6) / 2 + low, a[..., 10:])], axis=-1)
    return a[0]


def test_twin_llm_matches_naive_rendering_bitwise(policy):
    model = policy.model
    torch.manual_seed(1)
    C, S = 7, 5
    h = torch.randn(1, C + 2 * S, model.config.hidden_size)
    with torch.no_grad():
        ours = model.run_twin_llm(h, JointLayout.build([C], S), exact=True)
        ref = naive_twin_llm(model, h, naive_ci_ids(C, S))
    assert torch.equal(ours, ref)


def test_predict_matches_naive_reference_procedure_bitwise(policy, obs):
    with torch.no_grad():
        ref = naive_predict(policy, obs, seed=7)
    ours = TwinVLAPolicy(policy.model, policy.tokenizer, policy.statistics, exact=True).predict(obs, seed=7)
    assert ours.dtype == np.float64 and ref.dtype == np.float64
    assert np.array_equal(ours, ref)
