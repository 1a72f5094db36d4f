#!/usr/bin/env python3
"""Benchmark of `twinvla-ros train` and `twinvla-ros eval`: fine-tuning speed of the tiny preset
on this CPU, and what a trained policy does in closed loop.

    python bench/train_eval.py                          # record 2 sim demos, convert, time training
    python bench/train_eval.py --dataset datasets/lift  # time training on a dataset you have
    python bench/train_eval.py --eval --checkpoint DIR [--task lift_box] [--eval-episodes 50]
                               [--mode-episodes 20] [--jump-episodes 10]

The first line describes the machine. Input: lift_box demonstrations recorded by the real graph
(`twinvla-ros record --sim`) converted at 20 Hz, 240x320, h264, unless --dataset names one.
Training: the tiny preset from random weights, batch 8, the reference recipe, torch threads as
the machine gives them; `--steps` timed steps after 3 warm-up steps, batches read and decoded
inside the timing (as in a real run). Figures:
  train_steps_per_s_tiny_cpu            reference (straight-through re-weighting) gradient
  train_steps_per_s_tiny_cpu_fused      --fused-gradient
  train_samples_per_s_tiny_cpu          the first figure x batch size

--eval: closed-loop rollouts of a checkpoint through the real node graph (`twinvla-ros eval`, one
process per node), on seeds from 1000 on (`record --sim` demos use 0, 1, ...). Figures:
  sim_success_rate_default   rtc (the default mode), --eval-episodes seeds, with the 95 % interval
  success_rate_rtc           the same run
  success_rate_sync          sync, the first --mode-episodes of those seeds
  boundary_jump_async        mean L2 jump of the 20-D action at chunk switches (m, 6-D rotation,
  boundary_jump_rtc          gripper 0..1), 150 ms injected latency, execution horizon 5, the
                             first --jump-episodes seeds each; with the success rate of those runs
The scripted expert's success rate is bench/scripted_expert.py's.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
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


def evaluate(checkpoint: str, task: str, out: Path, mode: str, episodes: int, *params: str) -> dict:
    command = [sys.executable, "-m", "twinvla_ros.cli.main", "eval", "--checkpoint", checkpoint, "--task", task,
               "--episodes", str(episodes), "--seed", "1000", "--mode", mode, "--videos", "0", "--out", str(out)]
    for param in params:
        command += ["--policy-param", param]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"eval failed ({' '.join(command)}):\n{done.stderr[-3000:]}")
    return json.loads((out / "eval_report.json").read_text())


def rate(report: dict) -> str:
    low, high = report["confidence_interval_95"]
    return f"{report['success_rate']:.2f} ({report['successes']}/{report['num_episodes']}, 95 % CI {low:.2f}-{high:.2f})"


def run_evaluations(checkpoint: str, task: str, work: Path, episodes: int, mode_episodes: int,
                    jump_episodes: int) -> None:
    started = time.monotonic()
    print(f"task {task}, checkpoint {checkpoint}", flush=True)
    rtc = evaluate(checkpoint, task, work / "rtc", "rtc", episodes)
    mean = rtc["mean_time_to_success_s"]
    print(f"sim_success_rate_default {rate(rtc)}, mean time to success "
          + (f"{mean:.1f} s" if mean is not None else "-"), flush=True)
    print(f"success_rate_rtc {rate(rtc)}", flush=True)
    sync = evaluate(checkpoint, task, work / "sync", "sync", mode_episodes)
    print(f"success_rate_sync {rate(sync)}", flush=True)
    for mode in ("async", "rtc"):
        report = evaluate(checkpoint, task, work / f"{mode}_150ms", mode, jump_episodes,
                          "injected_latency=0.15", "execution_horizon=5")
        policy = report["policy"]
        print(f"boundary_jump_{mode} {policy.get('mean_boundary_jump', float('nan')):.4f} (plan change "
              f"{policy.get('mean_plan_change', float('nan')):.4f}, {policy.get('chunks', 0):.0f} chunks, "
              f"success {rate(report)}, 150 ms injected, execution horizon 5)", flush=True)
    print(f"eval_wall_s {time.monotonic() - started:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=None, help="a LeRobot v3.0 dataset (default: record and convert)")
    parser.add_argument("--episodes", type=int, default=2, help="sim demos to record (default 2)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--eval", action="store_true", help="closed-loop figures of --checkpoint instead of training speed")
    parser.add_argument("--checkpoint", default="tiny", help="--eval: checkpoint folder (tiny: random weights)")
    parser.add_argument("--task", default="lift_box", help="--eval: sim task (default lift_box)")
    parser.add_argument("--eval-episodes", type=int, default=50, help="--eval: seeds of the rtc run (default 50)")
    parser.add_argument("--mode-episodes", type=int, default=20, help="--eval: seeds of the sync run (default 20)")
    parser.add_argument("--jump-episodes", type=int, default=10, help="--eval: seeds of each 150 ms run (default 10)")
    args = parser.parse_args()
    print(machine_line())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    work = Path(tempfile.mkdtemp(prefix="bench_train_"))
    if args.eval:
        try:
            run_evaluations(args.checkpoint, args.task, work, args.eval_episodes, args.mode_episodes, args.jump_episodes)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return
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
