"""The fine-tuning recipe of the TwinVLA authors (scripts/configs/twinvla_config.py and
train_twinvla.sh in jellyho/TwinVLA): AdamW with betas (0.95, 0.999) and eps 1e-8, learning
rate 1e-4 per GPU on a cosine schedule after a linear warm-up over 1 % of the steps, weight decay
1e-5 on everything but biases and norms, gradients clipped to norm 1.0, bf16 autocast on a GPU,
the vision encoder frozen. They fine-tune with LoRA (rank 64) by default; this package trains
the full twin (the tiny presets are small enough, and LoRA can be added on top later).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from twinvla_ros.training.config import TrainConfig


def is_decay_exempt(name: str, parameter: nn.Parameter) -> bool:
    """Biases and norm scales: in TwinVLA exactly the 1-D parameters."""
    return parameter.ndim < 2 or name.endswith(".bias")


def freeze_for_training(model: nn.Module, freeze_vision: bool) -> None:
    """requires_grad on every parameter but the vision encoder's when it is frozen (the
    projector `mlp1` still trains, as in the reference)."""
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(not (freeze_vision and name.startswith("vision_c.")))


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    decay, exempt = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (exempt if is_decay_exempt(name, parameter) else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": exempt, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=config.betas, eps=config.eps)


def cosine_with_warmup(step: int, warmup_steps: int, total_steps: int) -> float:
    """The learning-rate factor at `step` (0-based): linear 0 -> 1 over the warm-up, then a half
    cosine from 1 to 0 at `total_steps` (transformers' get_cosine_schedule_with_warmup)."""
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


def build_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    warmup, total = config.warmup_steps, config.steps
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: cosine_with_warmup(step, warmup, total))
