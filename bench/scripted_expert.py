#!/usr/bin/env python3
"""Benchmark of the scripted experts: success rate per sim task over 50 seeds, offline.

    python bench/scripted_expert.py                 # every task, seeds 0..49
    python bench/scripted_expert.py --tasks handover_box --seeds 20

The first line describes the machine. Each demo runs as the teleop node's sim_expert backend
records it (reset with the seed, plan from the object poses and the measured start poses), but
through twinvla_ros.evaluation.sim_rollout: the arm driver's ArmController in sim time, no ROS.
Per task it prints the success rate, the seeds that failed (with the check's reason), the
demos in which the driver had to step in (clamps, rejections, holds, unreachable targets), the
mean demo length (simulated s) and the wall time one rollout costs here.
"""
from __future__ import annotations

import argparse
import time

import mujoco
import numpy as np
from common import machine_line

from twinvla_ros.evaluation.sim_rollout import run_expert
from twinvla_ros.sim import SimConfig, SimWorld

TASKS = ("lift_box", "lift_box_narrow", "handover_box", "empty")


def bench_task(task: str, seeds: int) -> None:
    world = SimWorld(SimConfig(task=task))
    failures, interventions, durations, costs = [], [], [], []
    for seed in range(seeds):
        started = time.perf_counter()
        try:
            expert, result = run_expert(world, seed)
        except ValueError as error:          # a plan the expert refuses counts as a failure
            failures.append(f"{seed}: {error}")
            continue
        costs.append(time.perf_counter() - started)
        durations.append(expert.duration)
        if not result.success:
            failures.append(f"{seed}: {result.reason}")
        if any(result.interventions.values()):
            interventions.append(f"{seed}: {result.interventions}")
    world.close()
    print(f"{task}_success_rate={(seeds - len(failures)) / seeds:.3f} ({seeds - len(failures)}/{seeds} seeds)")
    print(f"{task}_demos_with_interventions={len(interventions)}")
    if durations:
        print(f"{task}_demo_length_s={np.mean(durations):.1f} (min {min(durations):.1f}, max {max(durations):.1f})")
        print(f"{task}_rollout_wall_s={np.median(costs):.2f} (median; {np.median(costs) / np.mean(durations):.3f} "
              f"wall s per simulated s)")
    for line in failures + interventions:
        print(f"  {task} seed {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--seeds", type=int, default=50)
    args = parser.parse_args()
    print(machine_line(mujoco=mujoco.__version__))
    for task in args.tasks:
        bench_task(task, args.seeds)


if __name__ == "__main__":
    main()
