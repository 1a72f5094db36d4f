"""High-level policy API: observation in robot units -> (action_len, 20) chunk in robot units.

encode() runs the VLM once (vision + twin LLM + readouts + condition embedding); sample() runs
only the action head per flow step, so a chunk can be re-sampled (other noise, RTC guidance)
without touching the VLM. predict(obs, seed=s) == sample(encode(obs), seed=s).

Two paths (TwinVLAPolicy(exact=...)): the default fused one (the same function, ~1e-6 apart in
fp32; see twin_llm), and exact=True, the reference's ops for bit parity with the authors' code.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from . import flow
from .configuration_twinvla import TwinVLAConfig
from .modeling_twinvla import TwinVLA
from .processing_twinvla import (
    Normalizer,
    TwinVLAProcessor,
    build_tiny_tokenizer,
    default_statistics,
    has_tokenizer,
    load_statistics,
    load_tokenizer,
)


@dataclass
class Observation:
    instruction: str
    image_ego: np.ndarray  # uint8 HxWx3 RGB, any size
    image_wrist_left: np.ndarray  # uint8 HxWx3 RGB
    image_wrist_right: np.ndarray  # uint8 HxWx3 RGB
    proprio: np.ndarray  # (20,) robot units: [L xyz, L 6D, L grip, R xyz, R 6D, R grip]


@dataclass
class Guidance:
    """Real-time chunking (Black et al. 2025, arXiv 2506.07339)."""

    actions: np.ndarray  # (H, 20) robot units: the previous chunk aligned to the new chunk's steps
    weights: np.ndarray  # (H,) in [0, 1]: 1 on the frozen prefix, decaying to 0
    max_weight: float = 5.0  # beta, the guidance-weight clip


@dataclass
class PolicyContext:
    """Everything a chunk needs from the VLM, for `batch_size` observations."""

    conditioning: flow.Conditioning  # embedded conditions, rows [s0 left, s0 right, ...]
    batch_size: int


class TwinVLAPolicy:
    def __init__(
        self,
        model: TwinVLA,
        tokenizer,
        statistics: dict[str, Any],
        *,
        unnorm_key: str | None = None,
        cfg_scale: float | None = None,
        num_flow_steps: int | None = None,
        compile: bool = False,
        exact: bool = False,
        chunk_offset: int = 0,
    ):
        """exact: run the reference's ops (bit parity with the authors' code) instead of the
        fused path. chunk_offset: drop a chunk's first steps, so its step 0 is the model's step
        `chunk_offset` (horizon L - offset). The model's steps 0..L/2-1 come from the
        left-conditioned head row, which sees only the left arm's state: a small policy trained
        on few demos may predict the right arm's near steps poorly there (bench/RESULTS.md, the
        fourth default-policy attempt: offset L/2 took it from 0/8 to 8/8).
        compile: torch.compile the fused path's flow step, and on a GPU its twin LLM (first calls
        slow; CUDA graphs there); never the exact path, whose ops are the point."""
        cfg = model.config
        self.model = model.eval()
        self.config = cfg
        self.tokenizer = tokenizer
        self.processor = TwinVLAProcessor(cfg, tokenizer)
        self.statistics = statistics
        self.normalizer = Normalizer(statistics, unnorm_key, cfg.normalization)
        if not 0 <= int(chunk_offset) < cfg.action_len:
            raise ValueError(f"chunk_offset must be in [0, {cfg.action_len}), got {chunk_offset}")
        self.chunk_offset = int(chunk_offset)
        self.horizon = cfg.action_len - self.chunk_offset
        self.action_dim = 2 * cfg.action_dim
        # The reference's predict_action default: CFG 1.5 (1.0 = no CFG) with enable_cfg.
        self.cfg_scale = float(cfg_scale if cfg_scale is not None else (1.5 if cfg.enable_cfg else 1.0))
        self.num_flow_steps = int(num_flow_steps or cfg.test_denoising_steps)
        self.exact = bool(exact)
        for p in self.model.parameters():
            p.requires_grad_(False)
        if compile:
            # Shapes are fixed per instruction length: one graph each. "reduce-overhead" replays
            # CUDA graphs (the small per-step kernels are launch-bound on a GPU).
            cuda = self.model.device.type == "cuda"
            mode = "reduce-overhead" if cuda else None
            net = self.model.decoder_c.net
            net.forward_tokens = torch.compile(net.forward_tokens, dynamic=False, mode=mode)
            if cuda:
                # Not on the CPU: there each expert gathers its tokens, a data-dependent size
                # that breaks the graph and recompiles per count.
                self.model.fused_stack = torch.compile(self.model.fused_stack, dynamic=False, mode=mode)

    # ---- construction --------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        path,
        *,
        unnorm_key: str | None = None,
        device="cpu",
        dtype: torch.dtype | None = None,
        tokenizer_path=None,
        cfg_scale: float | None = None,
        num_flow_steps: int | None = None,
        compile: bool = False,
        exact: bool = False,
        chunk_offset: int = 0,
    ) -> "TwinVLAPolicy":
        path = Path(path)
        if tokenizer_path is None:
            if not has_tokenizer(path):
                raise FileNotFoundError(
                    f"no tokenizer files in {path}. The published checkpoints use the tokenizer of "
                    "nvidia/Eagle2-1B: put its tokenizer files in a local directory and pass tokenizer_path="
                )
            tokenizer_path = path
        model = TwinVLA.from_pretrained(path, device=device, dtype=dtype)
        return cls(
            model,
            load_tokenizer(tokenizer_path),
            load_statistics(path),
            unnorm_key=unnorm_key,
            cfg_scale=cfg_scale,
            num_flow_steps=num_flow_steps,
            compile=compile,
            exact=exact,
            chunk_offset=chunk_offset,
        )

    @classmethod
    def tiny(cls, *, seed: int = 0, unnorm_key: str = "anubis_sim", statistics: dict[str, Any] | None = None, exact: bool = False,
             chunk_offset: int = 0) -> "TwinVLAPolicy":
        """Random tiny model + tiny tokenizer, in memory (CPU demo and tests). `statistics` is one
        dataset_statistics.json entry ({"action": {...}, "proprio": {...}}) or a whole file's dict."""
        if statistics is None:
            statistics = {unnorm_key: default_statistics()}
        elif "action" in statistics:
            statistics = {unnorm_key: statistics}
        key = unnorm_key if unnorm_key in statistics else None  # a one-dataset file: its only key
        model = TwinVLA.random(TwinVLAConfig.preset("tiny"), seed=seed)
        return cls(model, build_tiny_tokenizer(), statistics, unnorm_key=key, exact=exact, chunk_offset=chunk_offset)

    def save_pretrained(self, path) -> None:
        path = Path(path)
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(str(path))
        (path / "dataset_statistics.json").write_text(json.dumps(self.statistics, indent=2) + "\n")

    # ---- input checks --------------------------------------------------------------------
    def validate(self, obs: Observation) -> None:
        if not isinstance(obs.instruction, str) or not obs.instruction.strip():
            raise ValueError(f"instruction must be a non-empty string, got {obs.instruction!r}")
        for name in ("image_ego", "image_wrist_left", "image_wrist_right"):
            img = getattr(obs, name)
            if not isinstance(img, np.ndarray):
                raise ValueError(f"{name} must be a numpy array, got {type(img).__name__}")
            if img.dtype != np.uint8:
                raise ValueError(f"{name} must be uint8 RGB, got dtype {img.dtype}")
            if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] < 1 or img.shape[1] < 1:
                raise ValueError(f"{name} must be HxWx3 RGB, got shape {img.shape}")
        proprio = np.asarray(obs.proprio)
        n = 2 * self.config.state_dim
        if proprio.shape != (n,):
            raise ValueError(f"proprio must have shape ({n},), got {proprio.shape}")
        if not np.issubdtype(proprio.dtype, np.number) or not np.all(np.isfinite(proprio)):
            raise ValueError(f"proprio must be finite numbers, got {proprio}")

    # ---- inference -----------------------------------------------------------------------
    @torch.inference_mode()  # no_grad and no autograd bookkeeping at all: a few % on small ops
    def encode_batch(self, observations: Sequence[Observation]) -> PolicyContext:
        for obs in observations:
            self.validate(obs)
        proprio = np.stack([self.normalizer.normalize_proprio(np.asarray(o.proprio, dtype=np.float64)) for o in observations])
        model = self.model
        inputs = self.processor(
            [o.instruction for o in observations],
            [(o.image_ego, o.image_wrist_left, o.image_wrist_right) for o in observations],
            proprio,
            # The exact path resizes on the CPU, as the reference; the fused one where the model is.
            device="cpu" if self.exact else model.device,
            exact=self.exact,
        ).to(model.device)
        z = model.condition(model.encode(inputs, exact=self.exact), inputs)
        return PolicyContext(flow.embed_condition(model.decoder_c.net, z, self.cfg_scale), len(observations))

    def encode(self, obs: Observation) -> PolicyContext:
        return self.encode_batch([obs])

    def initial_noise(self, seed: int | None = None, noise=None) -> torch.Tensor:
        """(2, L, A) start of the flow for one observation. Reference layouts: a CPU
        torch.randn(4, L, A) after manual_seed (rows 0-1 used) with CFG, randn(2, L, A) without."""
        cfg = self.config
        shape = (cfg.action_len, cfg.action_dim)
        if noise is not None:
            noise = torch.as_tensor(noise, dtype=torch.float32)
            if noise.ndim != 3 or noise.shape[0] not in (2, 4) or tuple(noise.shape[1:]) != shape:
                raise ValueError(f"noise must have shape (4, {shape[0]}, {shape[1]}) or (2, {shape[0]}, {shape[1]}), got {tuple(noise.shape)}")
            return noise[:2]
        rows = 4 if self.cfg_scale > 1.0 else 2
        gen = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        return torch.randn((rows, *shape), generator=gen)[:2]

    def _rows_to_chunks(self, x: torch.Tensor, batch: int) -> np.ndarray:
        # (2B, L, A) -> (B, L, 2A): the left-conditioned row carries steps 0..L/2-1, the right one
        # steps L/2..L-1 (training reshaped each (L, 2A) chunk with view(-1, L, A)).
        normalized = x.reshape(batch, self.config.action_len, -1).cpu().float().numpy()
        return self.normalizer.unnormalize_action(normalized[:, self.chunk_offset:])

    def _guidance_rows(self, guidance: Guidance) -> flow.RowGuidance:
        L, n, offset = self.config.action_len, self.action_dim, self.chunk_offset
        actions = np.asarray(guidance.actions, dtype=np.float64)
        weights = np.asarray(guidance.weights, dtype=np.float64)
        if actions.ndim != 2 or actions.shape[1] != n or actions.shape[0] > self.horizon or weights.shape != actions.shape[:1]:
            raise ValueError(f"guidance needs actions (H, {n}) and weights (H,) with H <= {self.horizon}; "
                             f"got {actions.shape} and {weights.shape}")
        if not (np.all(np.isfinite(actions)) and np.all(np.isfinite(weights))):
            raise ValueError("guidance actions and weights must be finite")
        H = actions.shape[0]
        target = np.zeros((L, n))
        target[offset:offset + H] = self.normalizer.normalize_action(actions)
        w = np.zeros(L)                          # the dropped leading steps are left free
        w[offset:offset + H] = np.clip(weights, 0.0, 1.0)
        shape = (-1, L, self.config.action_dim)  # the output-layout quirk, so weights hit their steps
        device, dtype = self.model.device, self.model.head_dtype
        return flow.RowGuidance(
            torch.from_numpy(target).reshape(shape).to(device=device, dtype=dtype),
            torch.from_numpy(np.repeat(w[:, None], n, axis=1)).reshape(shape).to(device=device, dtype=dtype),
            float(guidance.max_weight),
        )

    def sample_batch(self, ctx: PolicyContext, *, seeds: Sequence[int | None] | None = None, noises=None, guidance: Guidance | None = None) -> np.ndarray:
        B = ctx.batch_size
        seeds = list(seeds) if seeds is not None else [None] * B
        noises = list(noises) if noises is not None else [None] * B
        if len(seeds) != B or len(noises) != B:
            raise ValueError(f"need {B} seeds/noises, got {len(seeds)}/{len(noises)}")
        x = torch.cat([self.initial_noise(s, n) for s, n in zip(seeds, noises)])
        x = x.to(device=self.model.device, dtype=self.model.head_dtype)
        rows = None
        if guidance is not None:
            if B != 1:
                raise ValueError("guided sampling takes one observation")
            rows = self._guidance_rows(guidance)
        sampler = flow.sample if self.exact else flow.sample_fused
        x = sampler(self.model.decoder_c.net, x, ctx.conditioning, self.num_flow_steps, rows)
        return self._rows_to_chunks(x.detach(), B)

    def sample(self, ctx: PolicyContext, *, seed: int | None = None, noise=None, guidance: Guidance | None = None) -> np.ndarray:
        return self.sample_batch(ctx, seeds=[seed], noises=[noise], guidance=guidance)[0]

    def predict(self, obs: Observation, *, seed: int | None = None, noise=None) -> np.ndarray:
        return self.sample(self.encode(obs), seed=seed, noise=noise)

    def predict_batch(self, obs: Sequence[Observation], *, seeds: Sequence[int | None] | None = None) -> np.ndarray:
        return self.sample_batch(self.encode_batch(list(obs)), seeds=seeds)

    # ---- training ------------------------------------------------------------------------
    def training_inputs(self, observations: Sequence[Observation], actions: np.ndarray):
        """(ModelInputs, normalized actions (B, L, 20) float32) as the training pipeline makes
        them: instruction lower-cased, proprio and actions normalized with clipping to [-1, 1]."""
        for obs in observations:
            self.validate(obs)
        norm = self.normalizer
        proprio = np.stack([norm.normalize_for_training(np.asarray(o.proprio, dtype=np.float64), "proprio") for o in observations])
        inputs = self.processor(
            [o.instruction.lower() for o in observations],
            [(o.image_ego, o.image_wrist_left, o.image_wrist_right) for o in observations],
            proprio.astype(np.float32),
        )
        target = norm.normalize_for_training(np.asarray(actions, dtype=np.float64), "action").astype(np.float32)
        return inputs, torch.from_numpy(target)
