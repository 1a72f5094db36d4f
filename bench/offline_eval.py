#!/usr/bin/env python3
"""A checkpoint in closed loop in the sim without ROS, in simulated time: the quick screen of a
training run's checkpoints before the real node graph's `twinvla-ros eval`.

    python bench/offline_eval.py --checkpoint runs/lift/final [--task lift_box] [--episodes 20]
                                 [--seed 1000] [--execution-horizon H] [--cfg-scale S] [--chunk-offset N]

Per seed: the sim resets, the policy (twinvla_ros.evaluation.sim_rollout.policy_agent) looks at
t = 0 and after every H actions (default: the whole 20-step chunk, the policy node's sync mode),
its actions drive the arm driver's control core at 20 Hz, and the task's success check runs
after --seconds of simulated time. The model's compute takes no simulated time, so the figure is
repeatable and independent of the machine's load, and it leaves out what the real graph adds
(latency, chunk switching, DDS). First line: the machine. Figures:
  offline_success_rate      successes / episodes, with the 95 % Wilson interval
  offline_rollout_s         wall seconds per episode (render + model + physics)
"""
from __future__ import annotations

import argparse
import time

import torch
from common import machine_line

from twinvla_ros.evaluation.closed_loop import wilson_interval
from twinvla_ros.evaluation.sim_rollout import policy_agent, run_rollout
from twinvla_ros.model import TwinVLAPolicy
from twinvla_ros.sim import SimConfig, SimWorld
from twinvla_ros.sim.scene import task_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder")
    parser.add_argument("--task", default="lift_box")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1000, help="first seed (record --sim demos use 0, 1, ...)")
    parser.add_argument("--seconds", type=float, default=20.0, help="simulated seconds per episode")
    parser.add_argument("--execution-horizon", type=int, default=None, help="actions executed before looking again")
    parser.add_argument("--cfg-scale", type=float, default=None, help="default: the checkpoint's")
    parser.add_argument("--chunk-offset", type=int, default=0, help="drop each chunk's first N steps (TwinVLAPolicy)")
    args = parser.parse_args()
    print(machine_line())
    policy = TwinVLAPolicy.from_pretrained(args.checkpoint, chunk_offset=args.chunk_offset)
    if args.cfg_scale is not None:
        policy.cfg_scale = args.cfg_scale
    world = SimWorld(SimConfig(task=args.task))
    instruction = task_spec(args.task).instruction
    successes, started = 0, time.monotonic()
    for seed in range(args.seed, args.seed + args.episodes):
        world.reset(seed)
        agent = policy_agent(policy, world, instruction, seed=seed, execution_horizon=args.execution_horizon)
        result = run_rollout(world, agent, args.seconds)
        successes += result.success
        print(f"seed {seed}: {'success' if result.success else 'failed'} ({result.reason})", flush=True)
    low, high = wilson_interval(successes, args.episodes)
    print(f"offline_success_rate {successes / args.episodes:.2f} ({successes}/{args.episodes}, 95 % CI "
          f"{low:.2f}-{high:.2f}; {args.task}, horizon {args.execution_horizon or 'chunk'}, chunk offset "
          f"{args.chunk_offset}, cfg {policy.cfg_scale})")
    print(f"offline_rollout_s {(time.monotonic() - started) / args.episodes:.1f} (torch threads {torch.get_num_threads()})")


if __name__ == "__main__":
    main()
