"""Twin Qwen2 stacks with joint attention, the cross-arm mask, MoE gates and attention re-weighting.

Sequence per sample: [shared | left | right]. The shared block (prompt, ego image) is processed
by both stacks averaged ((f_l(x) + f_r(x)) / 2 for every norm and projection); each arm block
only by its own stack. All three blocks attend jointly in every layer.

Batches may mix instructions of different lengths: the shared block is left-padded to the
longest one; pad tokens are masked out as keys and see only themselves, so a padded sample
computes what it computes alone (up to float summation order).

Two renderings of the same forward pass:
- exact (`_run_exact`): the reference op for op: eager softmax, the straight-through
  re-weighting, both experts for the shared tokens. Bit parity with the authors' code, and their
  gradient; training uses it unless told otherwise.
- fused (`_run_fused`, the inference default): the re-weighting folded into the softmax
  (multiplying the shared-key weights by alpha and renormalising is softmax(scores + log(alpha)
  on those columns); the 1e-6 clamp never acts, a row sums to >= 1) so attention runs in
  `scaled_dot_product_attention` without materialising (B, H, T, T) weights; the shared
  stream's averaged norms and projections pre-merged into one projection; on the CPU only the
  chosen expert runs per shared token. The same function up to float rounding (~1e-6 in fp32).
"""
from __future__ import annotations

import math
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
    padded: bool = False  # some sample's shared block is left-padded

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
            padded=min(shared_lens) < C,
        )

    def to(self, device) -> "JointLayout":
        return JointLayout(self.C, self.S, self.position_ids.to(device), self.allowed.to(device), self.shared_keys.to(device), self.padded)

    def sdpa_masks(self, dtype: torch.dtype, shared_bias: float) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Additive masks of the fused path (0 allowed, -inf not), queries split by block:
        shared queries (B, 1, C, C), or None when nothing is padded (then plain causal);
        arm queries (B, 1, 2S, T) with `shared_bias` (log alpha) on the shared-key columns.
        Shared queries need no bias: all the keys they see are shared, and a constant added to a
        whole row does not change its softmax."""
        C, device = self.C, self.allowed.device
        neg = torch.full((), float("-inf"), dtype=dtype, device=device)  # a fill, not a host copy
        bias = torch.zeros(self.allowed.shape[-1], dtype=dtype, device=device)
        bias[:C] = shared_bias
        arms = torch.where(self.allowed[:, :, C:], bias, neg)
        shared = torch.where(self.allowed[:, :, :C, :C], 0.0, neg) if self.padded else None
        return shared, arms

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


def pair_rotary_dims(head_dim: int) -> torch.Tensor:
    """The order [0, h, 1, h + 1, ...] (h = head_dim / 2) of a head's dims: HF's rotary embedding
    rotates dim d with dim d + h, and side by side each pair is one complex number, so the
    rotation is one complex multiply. Queries and keys are permuted alike, so q . k is unchanged."""
    half = head_dim // 2
    return torch.stack([torch.arange(half), torch.arange(half) + half], dim=-1).reshape(-1)


def rotate_pairs(x: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """HF's x*cos + rotate_half(x)*sin on pair-ordered dims, in float32 (there is no complex
    bfloat16). x (..., heads, hd), rotation (..., 1, hd/2) complex64 cos + i sin -> like x."""
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))
    return torch.view_as_real(pairs * rotation).flatten(-2).to(x.dtype)


@dataclass
class FusedLayerWeights:
    """Inference weights of one twin layer for the fused path, derived from its parameters (never
    saved). Per stream (shared, left, right) q/k/v stacked into one projection with the input
    RMSNorm weight folded in, each q and k head's dims in `pair_rotary_dims` order; for the shared
    stream the averages the exact path takes per token: (f_l(x) + f_r(x)) / 2 of a norm or linear
    map is that map with averaged weights."""

    qkv_weight: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # ((Hq + 2 Hkv) hd, hidden) each
    qkv_bias: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    o_shared: torch.Tensor  # (hidden, Hq hd)
    post_norm_shared: torch.Tensor  # (hidden,)

    @classmethod
    def build(cls, lay_l: nn.Module, lay_r: nn.Module) -> "FusedLayerWeights":
        a_l, a_r = lay_l.self_attn, lay_r.self_attn
        dtype = a_l.q_proj.weight.dtype
        hd = a_l.head_dim
        qk_rows = (lambda w: w.view(-1, hd, *w.shape[1:])[:, pair_rotary_dims(hd)].reshape(w.shape))  # noqa: E731
        # Derived in float32, stored in the model dtype.
        stack_w = lambda a: torch.cat([qk_rows(a.q_proj.weight), qk_rows(a.k_proj.weight), a.v_proj.weight]).float()  # noqa: E731
        stack_b = lambda a: torch.cat([qk_rows(a.q_proj.bias), qk_rows(a.k_proj.bias), a.v_proj.bias]).float()  # noqa: E731
        n_l, n_r = lay_l.input_layernorm.weight.float(), lay_r.input_layernorm.weight.float()
        w_l, w_r, b_l, b_r = stack_w(a_l), stack_w(a_r), stack_b(a_l), stack_b(a_r)
        # Shared: the averaged projection applied to the averaged norm's output.
        w_s, b_s = (w_l + w_r) / 2 * ((n_l + n_r) / 2), (b_l + b_r) / 2
        o_s = (a_l.o_proj.weight.float() + a_r.o_proj.weight.float()) / 2
        post_s = (lay_l.post_attention_layernorm.weight.float() + lay_r.post_attention_layernorm.weight.float()) / 2
        cast = lambda t: t.to(dtype)  # noqa: E731
        return cls(
            (cast(w_s), cast(w_l * n_l), cast(w_r * n_r)),
            (cast(b_s), cast(b_l), cast(b_r)),
            cast(o_s),
            cast(post_s),
        )


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

    def records_gradient(self) -> bool:
        """Whether autograd records through the twin stacks now (training, not inference)."""
        return torch.is_grad_enabled() and any(p.requires_grad for p in self.backbone_l.parameters())

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

    def run_twin_llm(self, h: torch.Tensor, layout: JointLayout, exact: bool | None = None) -> torch.Tensor:
        """(B, T, hidden) slot-filled embeddings -> (B, T, hidden) after the shared final norm.

        exact=True: the reference op for op (bit parity; the straight-through re-weighting
        gradient). exact=False: the fused path; under autograd its gradient is that of the
        re-weighted attention itself, not the straight-through one. None: exact while autograd
        records through the parameters (training keeps the reference's gradient), fused otherwise."""
        if exact is None:
            exact = self.records_gradient()
        return self._run_exact(h, layout) if exact else self._run_fused(h, layout)

    def _run_exact(self, h: torch.Tensor, layout: JointLayout) -> torch.Tensor:
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

    # ---- fused path ----------------------------------------------------------------------
    def fused_weights(self) -> list[FusedLayerWeights]:
        """Per-layer FusedLayerWeights. With autograd off they are cached, and rebuilt when any
        source parameter is replaced or changed in place (its storage or version counter moves:
        a load, .to(), an optimizer step); with autograd on they are derived anew, in the graph."""
        build = lambda: [FusedLayerWeights.build(l, r) for l, r in zip(self.backbone_l, self.backbone_r)]  # noqa: E731
        if torch.is_grad_enabled():
            return build()
        key = tuple((p.data_ptr(), p._version) for stack in (self.backbone_l, self.backbone_r) for p in stack.parameters())
        cached = getattr(self, "_fused_cache", None)
        if cached is None or cached[0] != key:
            cached = (key, build())
            self._fused_cache = cached
        return cached[1]

    def rotary_table(self, position_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) -> cos + i sin (T, B, 1, hd/2) complex64 for `rotate_pairs` on the
        sequence-first fused path. Qwen2's default rope (attention scaling 1), computed where
        the positions are: no host copy."""
        hd = self.head_dim
        exponent = torch.arange(0, hd, 2, dtype=torch.int64, device=position_ids.device).float() / hd
        inv_freq = 1.0 / (self.qwen2_config.rope_parameters["rope_theta"] ** exponent)
        freqs = (position_ids.t()[..., None].float() * inv_freq).unsqueeze(2)
        return torch.complex(freqs.cos(), freqs.sin())

    def joint_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, C: int, masks) -> tuple[torch.Tensor, torch.Tensor]:
        """(T, B, Hq, hd), (T, B, Hkv, hd) x2 -> shared rows (C * B, Hq * hd), arm rows
        (2S * B, Hq * hd), sequence-first. Shared queries see only shared keys, so they attend
        over the first C keys alone (causal unless padded); arm queries over all T with the arm
        mask (its log-alpha columns are the re-weighting)."""
        B = q.shape[1]
        q, k, v = (t.permute(1, 2, 0, 3) for t in (q, k, v))  # (B, heads, T, hd) views
        # CPU sdpa shares a KV head among its query heads itself; the masked CUDA kernels do not.
        gqa = q.device.type == "cpu"
        if not gqa:
            k, v = repeat_kv(k, self.num_kv_groups), repeat_kv(v, self.num_kv_groups)
        dropout = self.attention_dropout if self.training else 0.0
        shared_mask, arm_mask = masks
        sdpa = F.scaled_dot_product_attention
        o_s = sdpa(q[:, :, :C], k[:, :, :C], v[:, :, :C], attn_mask=shared_mask, dropout_p=dropout,
                   is_causal=shared_mask is None, scale=self.scaling, enable_gqa=gqa)
        o_a = sdpa(q[:, :, C:], k, v, attn_mask=arm_mask, dropout_p=dropout, scale=self.scaling, enable_gqa=gqa)
        # (B, heads, L, hd) -> (L * B, heads * hd): a view for one sample (sdpa's output is
        # sequence-major in memory), a copy for more.
        return tuple(o.permute(2, 0, 1, 3).reshape(o.shape[2] * B, -1) for o in (o_s, o_a))

    def twin_mlp(self, i: int, x: torch.Tensor, rows: tuple[slice, slice, slice], fw: FusedLayerWeights) -> torch.Tensor:
        """(T*B, hidden) unit-RMS rows -> MLP outputs: shared rows through the expert their gate
        picks, arm rows through their own stream's MLP."""
        lay_l, lay_r = self.backbone_l[i], self.backbone_r[i]
        ns = x[rows[0]] * fw.post_norm_shared
        nl = x[rows[1]] * lay_l.post_attention_layernorm.weight
        nr = x[rows[2]] * lay_r.post_attention_layernorm.weight
        if self.records_gradient():  # the gates learn through the straight-through form
            ms = moe_mlp(self.gates[i], lay_l.mlp, lay_r.mlp, ns).to(x.dtype)
            return torch.cat([ms, lay_l.mlp(nl), lay_r.mlp(nr)])
        # argmax of softmax(logits) is argmax of the logits (a tie picks the first, left).
        logits = self.gates[i](ns)
        right = logits[:, 1] > logits[:, 0]
        if x.device.type != "cpu":
            # Gathering tokens needs their count on the host (a sync, no CUDA graph): run both
            # experts on the shared rows and select.
            ms = torch.where(right[:, None], lay_r.mlp(ns), lay_l.mlp(ns))
            return torch.cat([ms, lay_l.mlp(nl), lay_r.mlp(nr)])
        # On the CPU each expert runs once, on the shared rows it won and its own arm's rows.
        out = torch.empty_like(x)
        for mlp, won, arm, n_arm in ((lay_l.mlp, ~right, rows[1], nl), (lay_r.mlp, right, rows[2], nr)):
            idx = won.nonzero().squeeze(1)
            y = mlp(torch.cat([ns[idx], n_arm]))
            out[idx] = y[: idx.shape[0]]
            out[arm] = y[idx.shape[0] :]
        return out

    def _run_fused(self, h: torch.Tensor, layout: JointLayout) -> torch.Tensor:
        return self.fused_stack(h, layout, self.fused_weights())

    def fused_stack(self, h: torch.Tensor, layout: JointLayout, weights: list[FusedLayerWeights]) -> torch.Tensor:
        """The fused twin LLM given its weights (separate so that torch.compile sees no cache)."""
        C, S = layout.C, layout.S
        B, T, D = h.shape
        Hq, hd = self.qwen2_config.num_attention_heads, self.head_dim
        Hkv = Hq // self.num_kv_groups
        eps = self.qwen2_config.rms_norm_eps
        rotation = self.rotary_table(layout.position_ids)
        masks = layout.sdpa_masks(h.dtype, math.log(REWEIGHT_ALPHA) if self.reweight else 0.0)
        # Sequence-first rows (T*B, hidden): every stream is one contiguous row range, any B.
        h = h.transpose(0, 1).reshape(T * B, D)
        rows = (slice(0, C * B), slice(C * B, (C + S) * B), slice((C + S) * B, T * B))
        for i, (fw, lay_l, lay_r) in enumerate(zip(weights, self.backbone_l, self.backbone_r)):
            x = F.rms_norm(h.float(), (D,), eps=eps).to(h.dtype)  # Qwen2RMSNorm's weight is folded into fw
            qkv = torch.cat([F.linear(x[r], w, b) for r, w, b in zip(rows, fw.qkv_weight, fw.qkv_bias)])
            qkv = qkv.view(T, B, Hq + 2 * Hkv, hd)
            qk = rotate_pairs(qkv[:, :, : Hq + Hkv], rotation)
            o_s, o_a = self.joint_attention(qk[:, :, :Hq], qk[:, :, Hq:], qkv[:, :, Hq + Hkv :], C, masks)
            o_l, o_r = lay_l.self_attn.o_proj, lay_r.self_attn.o_proj
            h = h + torch.cat([F.linear(o_s, fw.o_shared), o_l(o_a[: S * B]), o_r(o_a[S * B :])])
            h = h + self.twin_mlp(i, F.rms_norm(h.float(), (D,), eps=eps).to(h.dtype), rows, fw)
        return self.norm(h.view(T, B, D).transpose(0, 1))
