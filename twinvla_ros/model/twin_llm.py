"""Twin Qwen2 stacks with joint attention, the cross-arm mask, MoE gates and attention re-weighting.

Sequence per sample: [shared | left | right]. The shared block (prompt, ego image) is processed
by both stacks averaged ((f_l(x) + f_r(x)) / 2 for every norm and projection); each arm block
only by its own stack. All three blocks attend jointly in every layer.

Batches may mix instructions of different lengths: the shared block is left-padded to the
longest one; pad tokens are masked out as keys and see only themselves, so a padded sample
computes what it computes alone (up to float summation order).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Qwen2Config
from transformers.models.qwen2.modeling_qwen2 import (
    Qwen2DecoderLayer,
    Qwen2RMSNorm,
    Qwen2RotaryEmbedding,
    apply_rotary_pos_emb,
    repeat_kv,
)

from .configuration_twinvla import TwinVLAConfig

REWEIGHT_ALPHA = 2.0


def joint_mask(shared: int, arm: int, device=None) -> torch.Tensor:
    """(T, T) bool, True = may attend. Causal over [shared | left | right], except that the
    left->right and right->left blocks are lower-triangular: arm token i sees the other arm's
    tokens <= i (the arms share positions, so "earlier" means the same index range)."""
    total = shared + 2 * arm
    allowed = torch.ones(total, total, dtype=torch.bool, device=device).tril()
    tri = torch.ones(arm, arm, dtype=torch.bool, device=device).tril()
    left, right = slice(shared, shared + arm), slice(shared + arm, total)
    allowed[left, right] = tri
    allowed[right, left] = tri
    return allowed


@dataclass
class JointLayout:
    """Positions and masks of one batch. C = padded shared length, S = arm block length."""

    C: int
    S: int
    position_ids: torch.Tensor  # (B, T) long
    allowed: torch.Tensor  # (B, 1, T, T) bool
    shared_keys: torch.Tensor  # (B, 1, 1, T) bool: shared-block keys (pads included; their weight is 0)

    @classmethod
    def build(cls, shared_lens: list[int], arm_len: int, device=None) -> "JointLayout":
        C, S = max(shared_lens), arm_len
        T = C + 2 * S
        base = joint_mask(C, S, device)
        pos, allowed = [], []
        for c in shared_lens:
            pad = C - c
            shared_pos = (torch.arange(C, device=device) - pad).clamp(min=0)
            arm_pos = c + torch.arange(S, device=device)
            # Both arm blocks share positions C..C+S-1 (in unpadded terms).
            pos.append(torch.cat([shared_pos, arm_pos, arm_pos]))
            a = base.clone()
            a[:, :pad] = False
            idx = torch.arange(pad, device=device)
            a[idx, idx] = True
            allowed.append(a)
        shared_keys = torch.zeros(T, dtype=torch.bool, device=device)
        shared_keys[:C] = True
        return cls(
            C=C,
            S=S,
            position_ids=torch.stack(pos),
            allowed=torch.stack(allowed)[:, None],
            shared_keys=shared_keys.expand(len(shared_lens), T)[:, None, None, :],
        )

    def to(self, device) -> "JointLayout":
        return JointLayout(self.C, self.S, self.position_ids.to(device), self.allowed.to(device), self.shared_keys.to(device))

    def additive_mask(self, dtype: torch.dtype) -> torch.Tensor:
        # As the reference: a float32 tensor filled with finfo(model dtype).min, 0 where allowed.
        mask = torch.full(self.allowed.shape, torch.finfo(dtype).min, dtype=torch.float32, device=self.allowed.device)
        return mask.masked_fill_(self.allowed, 0.0)


def reweight_attention(weights: torch.Tensor, shared_keys: torch.Tensor, alpha: float = REWEIGHT_ALPHA) -> torch.Tensor:
    """Multiply post-softmax weights on shared-block keys by alpha, renormalise rows (clamp 1e-6).
    Returned as weights + (reweighted - weights).detach(): the reference's straight-through
    form, whose forward value differs in the last bit from the reweighted tensor itself."""
    factor = ~shared_keys + alpha * shared_keys  # 1.0 on arm keys, alpha on shared keys (float32)
    with torch.no_grad():
        rw = weights * factor
        rw = rw / rw.sum(dim=-1, keepdim=True).clamp(min=1e-6)
    return weights + (rw - weights).detach()


def moe_mlp(gate: nn.Linear, mlp_l: nn.Module, mlp_r: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Shared tokens: hard argmax over softmax(gate(x)) picks MLP_left (0) or MLP_right (1),
    straight-through for gradients. In the forward pass the STE mask is exactly one-hot
    ((1 - s) + s == 1 exactly for s >= 0.5), so the output is exactly the chosen MLP's."""
    scores = F.softmax(gate(x), dim=-1)
    hard = F.one_hot(scores.argmax(dim=-1), num_classes=2).float()
    ste = (hard - scores).detach() + scores
    return mlp_l(x) * ste[..., 0:1] + mlp_r(x) * ste[..., 1:2]


def _fuse(f_l: nn.Module, f_r: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return (f_l(x) + f_r(x)) / 2.0


class TwinLLM(nn.Module):
    """The twin language model. TwinVLA subclasses it so these modules keep the published
    top-level names (`embed_tokens_c.`, `backbone_l.{i}.`, `backbone_r.{i}.`, `gates.{i}.`, `norm.`)."""

    def __init__(self, config: TwinVLAConfig):
        super().__init__()
        config.check_supported()
        self.config = config
        qcfg = Qwen2Config(**config.llm_kwargs())
        self.qwen2_config = qcfg
        hidden = qcfg.hidden_size
        self.head_dim = getattr(qcfg, "head_dim", None) or hidden // qcfg.num_attention_heads
        self.num_kv_groups = qcfg.num_attention_heads // qcfg.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = float(qcfg.attention_dropout)
        self.reweight = bool(config.enable_moe and config.attn_reweighting)
        self.embed_tokens_c = nn.Embedding(qcfg.vocab_size, hidden)
        self.backbone_l = nn.ModuleList(Qwen2DecoderLayer(qcfg, i) for i in range(qcfg.num_hidden_layers))
        self.backbone_r = nn.ModuleList(Qwen2DecoderLayer(qcfg, i) for i in range(qcfg.num_hidden_layers))
        self.gates = nn.ModuleList(nn.Linear(hidden, 2) for _ in range(qcfg.num_hidden_layers))
        self.norm = Qwen2RMSNorm(hidden, eps=qcfg.rms_norm_eps)

    def rotary(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        # Computed per call instead of a buffer: nothing to re-create after a meta-device build.
        inv_freq, scaling = Qwen2RotaryEmbedding.compute_default_rope_parameters(self.qwen2_config)
        freqs = position_ids[..., None].float() * inv_freq.to(position_ids.device)
        emb = torch.cat((freqs, freqs), dim=-1)
        return (emb.cos() * scaling).to(dtype), (emb.sin() * scaling).to(dtype)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: JointLayout, add_mask) -> torch.Tensor:
        """(B, Hq, T, hd) x2, (B, Hkv, T, hd) -> (B, Hq, T, hd)."""
        k = repeat_kv(k, self.num_kv_groups)
        v = repeat_kv(v, self.num_kv_groups)
        dropout = self.attention_dropout if self.training else 0.0
        if not self.reweight:
            # Without re-weighting the boolean mask is all there is: sdpa computes the same softmax.
            return F.scaled_dot_product_attention(q, k, v, attn_mask=layout.allowed, dropout_p=dropout, scale=self.scaling)
        # Re-weighting needs the explicit softmax weights: follow the reference op for op.
        scores = torch.matmul(q, k.transpose(2, 3)) * self.scaling + add_mask
        weights = F.softmax(scores, dim=-1, dtype=torch.float32)
        weights = reweight_attention(weights, layout.shared_keys)
        weights = F.dropout(weights, p=dropout, training=self.training).to(v.dtype)
        return torch.matmul(weights, v)

    def run_twin_llm(self, h: torch.Tensor, layout: JointLayout) -> torch.Tensor:
        """(B, T, hidden) slot-filled embeddings -> (B, T, hidden) after the shared final norm."""
        cos, sin = self.rotary(layout.position_ids, h.dtype)
        add_mask = layout.additive_mask(h.dtype) if self.reweight else None
        C, S = layout.C, layout.S
        B, T, _ = h.shape
        hd = self.head_dim

        def split(x):
            return x[:, :C], x[:, C : C + S], x[:, C + S :]

        for i, (lay_l, lay_r) in enumerate(zip(self.backbone_l, self.backbone_r)):
            att_l, att_r = lay_l.self_attn, lay_r.self_attn
            xs, xl, xr = split(h)
            ns = _fuse(lay_l.input_layernorm, lay_r.input_layernorm, xs)
            nl, nr = lay_l.input_layernorm(xl), lay_r.input_layernorm(xr)
            q = torch.cat([_fuse(att_l.q_proj, att_r.q_proj, ns), att_l.q_proj(nl), att_r.q_proj(nr)], dim=1)
            k = torch.cat([_fuse(att_l.k_proj, att_r.k_proj, ns), att_l.k_proj(nl), att_r.k_proj(nr)], dim=1)
            v = torch.cat([_fuse(att_l.v_proj, att_r.v_proj, ns), att_l.v_proj(nl), att_r.v_proj(nr)], dim=1)
            q = q.view(B, T, -1, hd).transpose(1, 2)
            k = k.view(B, T, -1, hd).transpose(1, 2)
            v = v.view(B, T, -1, hd).transpose(1, 2)
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            o = self.attend(q, k, v, layout, add_mask).transpose(1, 2).reshape(B, T, -1)
            os_, ol, or_ = split(o)
            h = h + torch.cat([_fuse(att_l.o_proj, att_r.o_proj, os_), att_l.o_proj(ol), att_r.o_proj(or_)], dim=1)

            xs, xl, xr = split(h)
            ns = _fuse(lay_l.post_attention_layernorm, lay_r.post_attention_layernorm, xs)
            ms = moe_mlp(self.gates[i], lay_l.mlp, lay_r.mlp, ns).to(h.dtype)
            ml = lay_l.mlp(lay_l.post_attention_layernorm(xl))
            mr = lay_r.mlp(lay_r.post_attention_layernorm(xr))
            h = h + torch.cat([ms, ml, mr], dim=1)
        return self.norm(h)
