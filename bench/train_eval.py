#!/usr/bin/env python3
"""Benchmark of `twinvla-ros train`: fine-tuning speed of the tiny preset on this CPU.

    python bench/train_eval.py                          # record 2 sim demos, convert, time training
    python bench/train_eval.py --dataset datasets/lift  # time training on a dataset you have

The first line describes the machine. Input: lift_box demonstrations recorded by the real graph
(`twinvla-ros record --sim`) converted at 20 Hz, 240x320, h264, unless --dataset names one.
Training: the tiny preset from random weights, batch 8, the reference recipe, torch threads as
the machine gives them; `--steps` timed steps after 3 warm-up steps, batches read and decoded
inside the timing (as in a real run). Figures:
  train_steps_per_s_tiny_cpu            reference (straight-through re-weighting) gradient
  train_steps_per_s_tiny_cpu_fused      --fused-gradient
  train_samples_per_s_tiny_cpu          the first figure x batch size
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import machine_line, record_sim_demos

from twinvla_ros.data.conversion import ConversionOptions, convert
from twinvla_ros.training.config import TrainConfig
from twinvla_ros.training.trainer import Trainer

WARMUP_STEPS = 3


def make_dataset(work: Path, episodes: int) -> Path:
    bags = work / "demos"
    record_sim_demos(bags, episodes)
    options = ConversionOptions(fps=20, image_size=(240, 320), codec="h264", max_gap_s=1.0)
    result = convert([bags], work / "lift_box", options, workers=2)
    if result.dataset is None:
        sys.exit(f"conversion failed: {result.skipped}")
    return work / "lift_box"


def steps_per_s(dataset: Path, out: Path, steps: int, batch_size: int, fused: bool) -> float:
    times: list[float] = []
    config = TrainConfig(steps=WARMUP_STEPS + steps, batch_size=batch_size, fused_gradient=fused,
                         save_every=10**6, log_every=10**6)
    Trainer(dataset, out, config=config, device="cpu", progress=lambda *_: times.append(time.perf_counter())).run()
    return steps / (times[-1] - times[WARMUP_STEPS - 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=None, help="a LeRobot v3.0 dataset (default: record and convert)")
    parser.add_argument("--episodes", type=int, default=2, help="sim demos to record (default 2)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    print(machine_line())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    work = Path(tempfile.mkdtemp(prefix="bench_train_"))
    try:
        dataset = Path(args.dataset) if args.dataset else make_dataset(work, args.episodes)
        reference = steps_per_s(dataset, work / "run_reference", args.steps, args.batch_size, fused=False)
        fused = steps_per_s(dataset, work / "run_fused", args.steps, args.batch_size, fused=True)
        print(f"train_steps_per_s_tiny_cpu {reference:.3f} (batch {args.batch_size})")
        print(f"train_steps_per_s_tiny_cpu_fused {fused:.3f} (batch {args.batch_size})")
        print(f"train_samples_per_s_tiny_cpu {reference * args.batch_size:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
