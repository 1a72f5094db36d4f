"""DiT action head with in-context conditioning (`decoder_c`), shared by both arms.

No adaLN: the condition token c = t_emb + z_emb is prepended to the action tokens. Module and
parameter names follow the published checkpoints (`combine`, `net.x_embedder.linear`,
`net.t_embedder.mlp.{0,2}`, `net.z_embedder.{linear,uncondition}`, `net.positional_embedding`,
`net.blocks.{i}.attn.{qkv,proj}`, `net.blocks.{i}.mlp.{fc1,fc2}`, `net.final_layer.linear`).
"""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import packed_linear
from .configuration_twinvla import TwinVLAConfig
from .packed_linear import PackedLinear

FREQ_DIM = 256


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(FREQ_DIM, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    @staticmethod
    def sinusoid(t: torch.Tensor, dim: int = FREQ_DIM, max_period: float = 10000.0) -> torch.Tensor:
        """[cos, sin] of raw t in [0, 1] (no x1000 scaling). (N,) -> (N, dim)."""
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(0, half, dtype=torch.float32) / half).to(t.device)
        args = t[:, None].float() * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if dim % 2:
            emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
        return emb

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.sinusoid(t).to(self.mlp[0].weight.dtype))


class ActionEmbedder(nn.Module):
    def __init__(self, action_dim: int, hidden: int):
        super().__init__()
        self.linear = nn.Linear(action_dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class ConditionEmbedder(nn.Module):
    """Projects the (combined) readout z; `uncondition` is the learned null condition for CFG."""

    def __init__(self, token_size: int, hidden: int, enable_cfg: bool):
        super().__init__()
        self.linear = nn.Linear(token_size, hidden)
        self.uncondition = nn.Parameter(torch.zeros(1, token_size)) if enable_cfg else None

    def forward(self, z: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        """z (N, 1, token_size). With drop_prob > 0 each row is replaced by `uncondition` with
        that probability (one torch.rand(N) draw, as the reference does during training)."""
        if drop_prob > 0 and self.uncondition is not None:
            drop = torch.rand(z.shape[0], device=z.device) < drop_prob
            z = torch.where(drop[:, None, None].expand(z.shape[0], *self.uncondition.shape), self.uncondition, z)
        return self.linear(z)


class Attention(nn.Module):
    """timm's ViT attention (qkv bias, non-causal, fused sdpa)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.mix(self.qkv(x)))

    def mix(self, qkv: torch.Tensor) -> torch.Tensor:
        """(B, N, 3C) projected q|k|v -> (B, N, C) attention output, heads concatenated."""
        B, N, C3 = qkv.shape
        C = C3 // 3
        q, k, v = qkv.reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, C)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class DiTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.attn = Attention(dim, heads)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = x.shape[-1]
        x = x + self.attn(F.layer_norm(x, (d,), eps=1e-6))
        return x + self.mlp(F.layer_norm(x, (d,), eps=1e-6))


class FinalLayer(nn.Module):
    def __init__(self, dim: int, out: int):
        super().__init__()
        self.linear = nn.Linear(dim, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(F.layer_norm(x, (x.shape[-1],), eps=1e-6))


@dataclass
class PackedDiTWeights:
    """The DiT's linear maps packed for oneDNN (CPU float32 inference; see packed_linear).
    Derived from the parameters, never saved."""

    x_embedder: PackedLinear
    blocks: list[tuple[PackedLinear, PackedLinear, PackedLinear, PackedLinear]]  # qkv, proj, fc1, fc2
    final: PackedLinear


# DiT -> (parameter key, PackedDiTWeights). Outside the module: oneDNN's packed tensors have no
# storage, so copy.deepcopy or torch.save of a module holding them would fail.
_PACKED_CACHE: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


class DiT(nn.Module):
    def __init__(self, config: TwinVLAConfig):
        super().__init__()
        depth, width, heads = config.dit_dims
        self.x_embedder = ActionEmbedder(config.action_dim, width)
        self.t_embedder = TimestepEmbedder(width)
        self.z_embedder = ConditionEmbedder(config.hidden_size, width, config.enable_cfg)
        self.positional_embedding = nn.Parameter(width**-0.5 * torch.randn(config.action_len + 1, width))
        self.blocks = nn.ModuleList(DiTBlock(width, heads) for _ in range(depth))
        self.final_layer = FinalLayer(width, config.action_dim)

    def forward_embedded(self, x: torch.Tensor, t_emb: torch.Tensor, z_emb: torch.Tensor) -> torch.Tensor:
        """x (N, L, A) noisy actions, t_emb (N or 1, W), z_emb (N, 1, W) -> (N, L, A) velocity.
        The split lets the sampler embed the condition once per chunk (it does not change
        across flow steps)."""
        x = self.x_embedder(x)
        c = t_emb.unsqueeze(1) + z_emb
        x = torch.cat((c, x), dim=1) + self.positional_embedding
        for block in self.blocks:
            x = block(x)
        return self.final_layer(x)[:, 1:, :]

    def forward(self, x: torch.Tensor, t: torch.Tensor, z: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        return self.forward_embedded(x, self.t_embedder(t), self.z_embedder(z, drop_prob))

    # The fused sampler's split: what does not depend on x is computed once per chunk.
    def condition_tokens(self, t: torch.Tensor, z_emb: torch.Tensor) -> torch.Tensor:
        """t (steps,), z_emb (N, 1, W) -> (steps, N, 1, W): the prepended token of every flow
        step, positional embedding included (t_emb + z_emb + pos[0], as forward_embedded adds)."""
        return self.t_embedder(t)[:, None, None, :] + z_emb + self.positional_embedding[0]

    def forward_tokens(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x (N, L, A), c (N, 1, W) from condition_tokens -> (N, L, A) velocity."""
        packed = self.packed_weights(x)
        if packed is not None:
            return self._forward_tokens_packed(x, c, packed)
        x = torch.cat((c, self.x_embedder(x) + self.positional_embedding[1:]), dim=1)
        for block in self.blocks:
            x = block(x)
        return self.final_layer(x[:, 1:, :])

    def _forward_tokens_packed(self, x: torch.Tensor, c: torch.Tensor, w: PackedDiTWeights) -> torch.Tensor:
        """forward_tokens on oneDNN-packed weights, on (N * T, W) rows (T = L + 1 tokens)."""
        N, L, A = x.shape
        W = c.shape[-1]
        h = w.x_embedder(x.reshape(N * L, A)).view(N, L, W) + self.positional_embedding[1:]
        h = torch.cat((c, h), dim=1).view(N * (L + 1), W)
        for block, (qkv, proj, fc1, fc2) in zip(self.blocks, w.blocks):
            mixed = block.attn.mix(qkv(F.layer_norm(h, (W,), eps=1e-6)).view(N, L + 1, 3 * W))
            h = h + proj(mixed.view(N * (L + 1), W))
            h = h + fc2(fc1.gelu_tanh(F.layer_norm(h, (W,), eps=1e-6)))
        h = h.view(N, L + 1, W)[:, 1:].reshape(N * L, W)
        return w.final(F.layer_norm(h, (W,), eps=1e-6)).view(N, L, A)

    def packed_weights(self, x: torch.Tensor) -> PackedDiTWeights | None:
        """The oneDNN-packed weights for a float32 CPU input, cached and rebuilt when a parameter
        is replaced or changed in place (its storage or version counter moves). None where the
        plain modules run: another device or dtype, a torch without oneDNN, trainable weights,
        inside torch.compile (inductor packs on its own), or an input that needs its gradient
        (real-time chunking's guidance: autograd through nn.Linear was faster there for the
        small heads a CPU runs, 95 vs 105 ms a guided chunk of the tiny model)."""
        if torch.compiler.is_compiling() or x.requires_grad:
            return None
        params = list(self.parameters())
        if (x.device.type != "cpu" or x.dtype != torch.float32 or params[0].device.type != "cpu"
                or self.final_layer.linear.weight.dtype != torch.float32 or any(p.requires_grad for p in params)
                or not packed_linear.available()):
            _PACKED_CACHE.pop(self, None)  # e.g. moved to a GPU or training: free the packed copy
            return None
        key = tuple((p.data_ptr(), p._version) for p in params)
        cached = _PACKED_CACHE.get(self)
        if cached is None or cached[0] != key:
            rows = 4 * self.positional_embedding.shape[0]  # CFG's 4 rows of one observation
            blocks = [tuple(PackedLinear.of(lin, rows) for lin in (b.attn.qkv, b.attn.proj, b.mlp.fc1, b.mlp.fc2))
                      for b in self.blocks]
            cached = (key, PackedDiTWeights(PackedLinear.of(self.x_embedder.linear, rows), blocks,
                                            PackedLinear.of(self.final_layer.linear, rows)))
            _PACKED_CACHE[self] = cached
        return cached[1]


class ActionHead(nn.Module):
    """`decoder_c`: `combine` merges each arm's readout with that arm's normalized proprio."""

    def __init__(self, config: TwinVLAConfig):
        super().__init__()
        self.combine = nn.Linear(config.hidden_size + config.state_dim, config.hidden_size)
        self.net = DiT(config)

    def condition(self, readouts: torch.Tensor, proprio_rows: torch.Tensor) -> torch.Tensor:
        """readouts (2B, 1, hidden), proprio_rows (2B, state_dim) -> z (2B, 1, hidden)."""
        return self.combine(torch.cat([readouts.squeeze(1), proprio_rows], dim=-1)).unsqueeze(1)
