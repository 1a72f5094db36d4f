"""Fine-tuning: a LeRobot v3.0 dataset + an initial TwinVLA -> checkpoints in the published layout.

  out/
    checkpoints/step_000500/   config.json, singlevla_config/, model.safetensors, tokenizer
                               files, dataset_statistics.json (the layout `from_pretrained`
                               and the policy node load) + training_state.pt (resume)
    final/                     the last step's model, without training state
    train_log.jsonl            one line per logged step: step, loss, lr, grad_norm, seconds
    loss.png                   the loss curve, redrawn at every checkpoint

Several processes (`torchrun --nproc-per-node N -m twinvla_ros.cli.main train ...`, or
`accelerate launch`, which sets the same RANK / WORLD_SIZE / LOCAL_RANK variables) train one
model with DistributedDataParallel: NCCL on GPUs, gloo on CPUs. Each process draws its own
stream of batches (its rank seeds it); rank 0 alone writes files.

Resume (`resume=True`) continues from the newest checkpoint in `out`: the step count, the
optimizer's moments, the schedule, the random state and the position in the batch stream; the
recipe must be the one the run started with (a difference is refused, listed).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from twinvla_ros.model.configuration_twinvla import TwinVLAConfig
from twinvla_ros.model.inference import TwinVLAPolicy
from twinvla_ros.model.modeling_twinvla import TwinVLA
from twinvla_ros.model.processing_twinvla import ModelInputs, build_tiny_tokenizer, has_tokenizer, load_tokenizer
from twinvla_ros.model.single_arm import is_single_arm_checkpoint, twin_from_single_arm
from twinvla_ros.training.config import TrainConfig
from twinvla_ros.data.lerobot.reader import read_info
from twinvla_ros.robot.bimanual import ARMS, POSITION, arm_slice
from twinvla_ros.training.data import Batch, TrainingBatches, load_dataset_statistics, model_batch
from twinvla_ros.training.recipe import build_optimizer, build_schedule, freeze_for_training

STATE_FILE = "training_state.pt"
CHECKPOINTS = "checkpoints"
# Recipe fields a resumed run may change (they do not alter what is learned).
RESUME_MAY_CHANGE = ("save_every", "keep_checkpoints", "log_every")
PRESETS = ("tiny", "tiny-reference")
IMAGE_FIELDS = ("image_ego", "image_wrist_left", "image_wrist_right")    # the Observation's images


@dataclass
class TrainResult:
    out: Path
    final: Path
    steps: int                                   # the run's last step (counted from the start)
    steps_this_run: int
    seconds: float
    losses: list[tuple[int, float]] = field(default_factory=list)   # (step, loss) as logged

    @property
    def steps_per_s(self) -> float:
        return self.steps_this_run / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls) -> "Distributed":
        """The launcher's variables (torchrun, accelerate launch, SLURM via torchrun)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        return cls(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


class _Loss(nn.Module):
    """The loss as a module's forward, which DistributedDataParallel synchronises."""

    def __init__(self, model: TwinVLA, fused: bool, mask_padding: bool) -> None:
        super().__init__()
        self.model, self.fused, self.mask_padding = model, fused, mask_padding

    def forward(self, inputs, target: torch.Tensor, valid_steps: torch.Tensor) -> torch.Tensor:
        return self.model.compute_loss(inputs, target, exact=not self.fused,
                                       valid_steps=valid_steps if self.mask_padding else None)


def initial_model(init: str, *, seed: int, device: torch.device, tokenizer_path: str | Path | None = None,
                  image_size: int | None = None):
    """(TwinVLA in float32 on `device`, tokenizer) from a preset name, a twin checkpoint directory
    or a single-arm (SingleVLA) one. image_size: a preset's images in px instead of its own; a
    checkpoint's encoder keeps its size, so another one is a ValueError."""
    if init in PRESETS:
        config = TwinVLAConfig.preset(init)
        model = TwinVLA.random(config if image_size is None else config.with_image_size(image_size), seed=seed)
        tokenizer = build_tiny_tokenizer()
    else:
        path = Path(init)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"--init {init}: neither a preset ({', '.join(PRESETS)}) nor a checkpoint "
                                    "directory with config.json")
        tokenizer_path = Path(tokenizer_path) if tokenizer_path is not None else path
        if not has_tokenizer(tokenizer_path):
            raise FileNotFoundError(f"no tokenizer files in {tokenizer_path}: pass the directory of the "
                                    "checkpoint's tokenizer (nvidia/Eagle2-1B for the published ones)")
        if is_single_arm_checkpoint(path):        # the published SingleVLA: build the twin from it
            model = twin_from_single_arm(path, seed=seed)
        else:
            model = TwinVLA.from_pretrained(path, dtype=torch.float32)
        tokenizer = load_tokenizer(tokenizer_path)
        if image_size is not None and image_size != model.config.image_size:
            raise ValueError(f"--init {init}: its vision encoder takes {model.config.image_size} px images; "
                             "another image size is for a random preset only")
    return model.to(device), tokenizer


def _checkpoint_dirs(out: Path) -> list[Path]:
    return sorted(p for p in (out / CHECKPOINTS).glob("step_*") if (p / STATE_FILE).is_file())


def _save_model(policy: TwinVLAPolicy, path: Path) -> Path:
    """The model's files in a directory next to `path`, which _publish renames into place: a
    checkpoint is whole or absent."""
    partial = path.with_name(path.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    policy.save_pretrained(partial)
    return partial


def _publish(partial: Path, path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
    partial.rename(path)


def plot_losses(losses: list[tuple[int, float]], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.array([s for s, _ in losses])
    values = np.array([v for _, v in losses])
    figure, axis = plt.subplots(figsize=(7, 4))
    axis.plot(steps, values, lw=0.8, alpha=0.5, label="loss")
    if len(values) >= 10:
        window = max(5, len(values) // 20)
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")
        axis.plot(steps[window - 1:], smooth, lw=1.6, label=f"mean of {window}")
    axis.set_xlabel("step")
    axis.set_ylabel("flow-matching loss")
    axis.set_yscale("log")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


class Trainer:
    def __init__(self, dataset: str | Path, out: str | Path, *, init: str = "tiny", config: TrainConfig | None = None,
                 resume: bool = False, device: str | None = None, tokenizer_path: str | Path | None = None,
                 progress: Callable[[int, int, float], None] | None = None) -> None:
        """progress(step, total steps, loss) after every step (rank 0)."""
        self.dataset_root = Path(dataset)
        self.out = Path(out)
        self.config = config or TrainConfig()
        # A dataset that cannot be trained on is refused before anything is built or written.
        read_info(self.dataset_root)
        self.statistics = load_dataset_statistics(self.dataset_root)
        self.distributed = Distributed.from_environment()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.device.type == "cuda":
            self.device = torch.device("cuda", self.distributed.local_rank)
            torch.cuda.set_device(self.device)
        self.progress = progress
        self.init = init
        self.tokenizer_path = tokenizer_path
        self._resume_state: dict | None = None
        self.resume_from = self._resume_point() if resume else None
        if not resume and _checkpoint_dirs(self.out):
            raise FileExistsError(f"{self.out} already holds checkpoints: pass --resume to continue that run, "
                                  "or choose another --out")

    # ---- set-up ---------------------------------------------------------------------------

    def _resume_point(self) -> Path | None:
        checkpoints = _checkpoint_dirs(self.out)
        if not checkpoints:
            return None              # nothing saved yet: start from the beginning
        state = torch.load(checkpoints[-1] / STATE_FILE, map_location="cpu", weights_only=False)
        saved = TrainConfig(**state["config"])
        different = [f"{name}: {getattr(saved, name)} at the start, {getattr(self.config, name)} now"
                     for name in saved.to_json() if name not in RESUME_MAY_CHANGE
                     and getattr(saved, name) != getattr(self.config, name)]
        if different:
            raise ValueError(f"cannot resume {self.out} with another recipe: " + "; ".join(different))
        if state["dataset"] != str(self.dataset_root.resolve()):
            raise ValueError(f"{self.out} was trained on {state['dataset']}, not {self.dataset_root.resolve()}")
        self._resume_state = state
        return checkpoints[-1]

    @property
    def freeze_vision(self) -> bool:
        """The recipe's choice, or by default: frozen when starting from a checkpoint (a
        pretrained encoder, as the reference keeps it), trained from a random preset (a random
        frozen encoder would leave the policy nearly blind)."""
        if self.config.freeze_vision is not None:
            return self.config.freeze_vision
        return self.init not in PRESETS

    @property
    def resume_step(self) -> int:
        """The step a resumed run continues after (0 for a new run)."""
        return int(self._resume_state["step"]) if self._resume_state is not None else 0

    def _build(self):
        source = str(self.resume_from) if self.resume_from is not None else self.init
        model, tokenizer = initial_model(source, seed=self.config.seed, device=self.device,
                                         tokenizer_path=self.tokenizer_path if self.resume_from is None else None,
                                         image_size=self.config.image_size)
        if self.config.diffusion_batch is not None:       # not saved in checkpoints: set again on resume
            model.config.diffusion_batch = self.config.diffusion_batch
        # The policy object is the model's processor and normalizer (the dataset's statistics)
        # and writes checkpoints; it sets requires_grad off, which training turns back on.
        policy = TwinVLAPolicy(model, tokenizer, self.statistics)
        freeze_for_training(model, self.freeze_vision)
        model.train()
        return policy

    # ---- the loop -------------------------------------------------------------------------

    def run(self) -> TrainResult:
        config, dist = self.config, self.distributed
        if dist.world_size > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        policy = self._build()
        model = policy.model
        loss_module: nn.Module = _Loss(model, config.fused_gradient, config.mask_padding)
        if dist.world_size > 1:
            loss_module = nn.parallel.DistributedDataParallel(
                loss_module, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True)
        optimizer = build_optimizer(model, config)
        schedule = build_schedule(optimizer, config)
        step, losses = 0, []
        torch.manual_seed(config.seed + dist.rank)
        if self._resume_state is not None:
            state = self._resume_state
            optimizer.load_state_dict(state["optimizer"])
            schedule.load_state_dict(state["schedule"])
            step, losses = int(state["step"]), [tuple(x) for x in state["losses"]]
            rng = state["rng"][dist.rank] if dist.rank < len(state["rng"]) else None
            if rng is not None:
                torch.set_rng_state(rng)
        batches = TrainingBatches(self.dataset_root, horizon=policy.horizon, batch_size=config.batch_size,
                                  image_size=model.config.image_size, cache_bytes=config.cache_gb * 1e9,
                                  seed=config.seed, rank=dist.rank).stream(skip=step)
        if dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
        log = (self.out / "train_log.jsonl").open("a") if dist.main else None
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda"
                    else contextlib.nullcontext())
        trainable = [p for p in model.parameters() if p.requires_grad]
        started, first_step = time.monotonic(), step
        try:
            while step < config.steps:
                batch = next(batches)
                if config.proprio_noise > 0:
                    batch = with_noisy_positions(batch, config.proprio_noise)
                if config.image_shift > 0:
                    batch = with_shifted_images(batch, config.image_shift)
                inputs, target, valid = model_batch(policy, batch)
                if config.proprio_dropout > 0:
                    inputs = without_some_proprio(inputs, config.proprio_dropout)
                inputs = inputs.to(self.device)
                with autocast:
                    loss = loss_module(inputs, target.to(self.device), valid.to(self.device))
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"step {step + 1}: the loss is {loss.item()}; the last good "
                                             f"checkpoint is in {self.out / CHECKPOINTS}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(trainable, config.grad_clip)
                optimizer.step()
                schedule.step()
                step += 1
                value = _mean_over_processes(loss.detach(), dist)
                if dist.main:
                    if step % config.log_every == 0 or step == config.steps or step == first_step + 1:
                        losses.append((step, value))
                        log.write(json.dumps({"step": step, "loss": value, "lr": schedule.get_last_lr()[0],
                                              "grad_norm": float(grad_norm),
                                              "seconds": round(time.monotonic() - started, 3)}) + "\n")
                        log.flush()
                    if self.progress is not None:
                        self.progress(step, config.steps, value)
                if step % config.save_every == 0 and step < config.steps:
                    self._checkpoint(policy, optimizer, schedule, step, losses)
            self._checkpoint(policy, optimizer, schedule, step, losses)
            final = self.out / "final"
            if dist.main:
                _publish(_save_model(policy, final), final)
        finally:
            if log is not None:
                log.close()
        return TrainResult(self.out, final, step, step - first_step, time.monotonic() - started, losses)

    def _checkpoint(self, policy: TwinVLAPolicy, optimizer, schedule, step: int, losses) -> None:
        """Every process's random state goes in (gathered to rank 0), so a resumed multi-process
        run continues each stream."""
        dist = self.distributed
        rng = torch.get_rng_state()
        states = [rng]
        if dist.world_size > 1:
            states = [None] * dist.world_size
            torch.distributed.all_gather_object(states, rng)
        if not dist.main:
            return
        path = self.out / CHECKPOINTS / f"step_{step:06d}"
        partial = _save_model(policy, path)
        torch.save({"step": step, "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                    "config": self.config.to_json(), "rng": states, "losses": losses,
                    "dataset": str(self.dataset_root.resolve()), "init": self.init}, partial / STATE_FILE)
        _publish(partial, path)
        for old in _checkpoint_dirs(self.out)[:-self.config.keep_checkpoints]:
            shutil.rmtree(old)
        if losses:
            plot_losses(losses, self.out / "loss.png", f"{self.dataset_root.name}: step {step} of {self.config.steps}")


def with_noisy_positions(batch: Batch, std: float) -> Batch:
    """The batch with Gaussian noise of `std` m added to each arm's xyz in the state, the actions
    (absolute targets) left as they are (torch's generator: part of the saved random state).
    A demo only shows states on the expert's path; off it, the same targets now pull back
    toward the path, which is what a policy needs once its own small errors add up."""
    noise = (torch.randn(len(batch.observations), len(ARMS), 3, dtype=torch.float64) * std).numpy()
    observations = []
    for observation, offsets in zip(batch.observations, noise):
        proprio = np.array(observation.proprio, dtype=np.float64)
        for side, offset in zip(ARMS, offsets):
            proprio[arm_slice(side)][POSITION] += offset
        observations.append(dataclasses.replace(observation, proprio=proprio))
    return dataclasses.replace(batch, observations=observations)


def with_shifted_images(batch: Batch, pixels: int) -> Batch:
    """The batch with every camera image shifted by a random whole number of pixels in
    [-pixels, pixels] along each axis, the edge rows and columns repeated into the gap (the
    random-shift augmentation of DrQ and Diffusion Policy; torch's generator). A vision encoder
    trained from scratch on 50 demos otherwise learns their exact frames: a box a few pixels
    from where a demo had it changes its plan."""
    shifts = torch.randint(-pixels, pixels + 1, (len(batch.observations), len(IMAGE_FIELDS), 2)).numpy()
    observations = []
    for observation, offsets in zip(batch.observations, shifts):
        images = {}
        for name, (dy, dx) in zip(IMAGE_FIELDS, offsets):
            image = getattr(observation, name)
            height, width = image.shape[:2]
            padded = np.pad(image, ((pixels, pixels), (pixels, pixels), (0, 0)), mode="edge")
            images[name] = padded[pixels + dy: pixels + dy + height, pixels + dx: pixels + dx + width]
        observations.append(dataclasses.replace(observation, **images))
    return dataclasses.replace(batch, observations=observations)


def without_some_proprio(inputs: ModelInputs, share: float) -> ModelInputs:
    """The batch with the normalized state of a random `share` of its samples zeroed (torch's
    generator: part of the saved random state). A policy that always sees the arm's pose can
    learn to copy it and never look for the object; without it, only the cameras tell."""
    keep = (torch.rand(inputs.proprio.shape[0]) >= share).to(inputs.proprio.dtype)
    return dataclasses.replace(inputs, proprio=inputs.proprio * keep[:, None].to(inputs.proprio.device))


def _mean_over_processes(loss: torch.Tensor, dist: Distributed) -> float:
    if dist.world_size > 1:
        loss = loss.clone()
        torch.distributed.all_reduce(loss)
        loss /= dist.world_size
    return float(loss)

