"""Shared vision encoder: SigLIP -> InternVL pixel shuffle -> `mlp1` projector.

One camera image becomes exactly `num_image_tokens` LLM tokens (256 for 448 px, patch 14,
shuffle 0.5); no tiling.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import SiglipVisionConfig, SiglipVisionModel

from .configuration_twinvla import TwinVLAConfig


class VisionTower(nn.Module):
    """`vision_c`. transformers 5 flattened SiglipVisionModel (no inner `.vision_model`), so the
    model sits under `.vision_model` here to keep the published key prefix `vision_c.vision_model.`."""

    def __init__(self, config: TwinVLAConfig):
        super().__init__()
        # No mask and no dropout in SigLIP: sdpa computes plain softmax attention.
        self.vision_model = SiglipVisionModel(SiglipVisionConfig(**config.vision_kwargs(), attn_implementation="sdpa"))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # (N, 3, S, S) -> (N, (S/patch)^2, vit_hidden), after post_layernorm
        return self.vision_model(pixel_values=pixel_values).last_hidden_state

    def reset_buffers(self) -> None:
        """Recreate the non-persistent buffers (after building on the meta device)."""
        emb = self.vision_model.embeddings
        emb.position_ids = torch.arange(emb.num_positions, device=emb.position_embedding.weight.device).expand((1, -1))


def pixel_shuffle(x: torch.Tensor, scale: float) -> torch.Tensor:
    """InternVL pixel shuffle, op for op (the view/permute order decides which patches merge).
    (N, W, H, C) -> (N, W*scale, H*scale, C/scale^2)."""
    n, w, h, c = x.size()
    x = x.view(n, w, int(h * scale), int(c / scale))
    x = x.permute(0, 2, 1, 3).contiguous()
    x = x.view(n, int(h * scale), int(w * scale), int(c / (scale * scale)))
    return x.permute(0, 2, 1, 3).contiguous()


def build_projector(config: TwinVLAConfig) -> nn.Sequential:
    """`mlp1`: LayerNorm -> Linear -> GELU (erf) -> Linear; state-dict indices 0, 1, 3."""
    vit = int(config.vision["hidden_size"])
    merged = vit * int(1 / config.downsample_ratio) ** 2
    return nn.Sequential(
        nn.LayerNorm(merged),
        nn.Linear(merged, config.hidden_size),
        nn.GELU(),
        nn.Linear(config.hidden_size, config.hidden_size),
    )


def image_tokens(tower: VisionTower, projector: nn.Sequential, pixel_values: torch.Tensor, downsample_ratio: float) -> torch.Tensor:
    """(N, 3, S, S) -> (N, num_image_tokens, llm_hidden)."""
    feats = tower(pixel_values)
    side = int(feats.shape[1] ** 0.5)
    feats = feats.reshape(feats.shape[0], side, side, -1)
    feats = pixel_shuffle(feats, downsample_ratio)
    feats = feats.reshape(feats.shape[0], -1, feats.shape[-1])
    return projector(feats)
