"""The settings of a fine-tuning run (defaults: the reference recipe, see recipe.py). No torch
import here: the CLI builds its options from these defaults."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 8                 # per process
    learning_rate: float = 1e-4
    warmup_ratio: float = 0.01
    weight_decay: float = 1e-5
    betas: tuple[float, float] = (0.95, 0.999)
    eps: float = 1e-8
    grad_clip: float = 1.0
    freeze_vision: bool | None = None  # None: frozen from a checkpoint, trained from a random preset
    mask_padding: bool = True           # leave the steps past an episode's end out of the loss
    proprio_dropout: float = 0.0        # share of samples trained without their state (zeros)
    proprio_noise: float = 0.0          # m: std of Gaussian noise on each arm's xyz in the state
    image_shift: int = 0                # px: random shift of each image by up to this (model input size)
    diffusion_batch: int | None = None  # noise draws per sample in the flow loss; None: the model's (16, as the reference)
    image_size: int | None = None       # px, from a random preset only; None: the preset's own
    fused_gradient: bool = False        # train through the fused twin LLM (true re-weighting gradient)
    save_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    cache_gb: float = 8.0               # decoded frames held in memory (see training/data.py)
    seed: int = 42

    def __post_init__(self) -> None:
        problems = []
        if self.steps < 1:
            problems.append(f"steps must be at least 1, got {self.steps}")
        if self.batch_size < 1:
            problems.append(f"batch_size must be at least 1, got {self.batch_size}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            problems.append(f"learning_rate must be a positive number, got {self.learning_rate}")
        if not 0 <= self.proprio_dropout < 1:
            problems.append(f"proprio_dropout must be in [0, 1), got {self.proprio_dropout}")
        if not 0 <= self.warmup_ratio < 1:
            problems.append(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.image_shift < 0:
            problems.append(f"image_shift must be at least 0 px, got {self.image_shift}")
        if not (0 <= self.proprio_noise < 1):
            problems.append(f"proprio_noise must be in [0, 1) m, got {self.proprio_noise}")
        if self.diffusion_batch is not None and self.diffusion_batch < 1:
            problems.append(f"diffusion_batch must be at least 1, got {self.diffusion_batch}")
        if self.image_size is not None and self.image_size < 1:
            problems.append(f"image_size must be at least 1 px, got {self.image_size}")
        if not (self.cache_gb > 0 and math.isfinite(self.cache_gb)):
            problems.append(f"cache_gb must be a positive number, got {self.cache_gb}")
        if self.save_every < 1 or self.log_every < 1 or self.keep_checkpoints < 1:
            problems.append("save_every, log_every and keep_checkpoints must be at least 1")
        if problems:
            raise ValueError("; ".join(problems))
        self.betas = tuple(self.betas)

    @property
    def warmup_steps(self) -> int:
        return math.ceil(self.warmup_ratio * self.steps)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)
