#!/usr/bin/env python3
"""Benchmark of the arm kinematics (pinocchio): FK and IK timings, cold-start success.

    python bench/kinematics.py [--samples 2000]

Prints `name=value` lines: ik_warm_p50_ms, ik_warm_p99_ms, ik_cold_success_rate,
ik_cold_p50_ms, fk_p50_us. Warm: seeded 0.05 rad from the answer (a servo loop tracking a
moving target). Cold: seeded at home, random restarts allowed. Targets are FK of uniformly
random joint configurations within the limits, both arms.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from common import machine_line

import pinocchio

from twinvla_ros.robot.kinematics import ArmKinematics


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000, help="targets per arm")
    args = parser.parse_args(argv)
    print(machine_line(pinocchio=pinocchio.__version__), flush=True)
    rng = np.random.default_rng(0)
    warm, cold, fk, successes = [], [], [], 0
    for side in ("left", "right"):
        arm = ArmKinematics.for_arm(side, seed=1)
        for q in rng.uniform(arm.lower, arm.upper, size=(args.samples, 6)):
            start = time.perf_counter()
            target = arm.fk(q)
            fk.append(time.perf_counter() - start)
            seed = np.clip(q + rng.uniform(-0.05, 0.05, 6), arm.lower, arm.upper)
            start = time.perf_counter()
            arm.ik(target, seed)
            warm.append(time.perf_counter() - start)
            start = time.perf_counter()
            successes += arm.ik(target).reached
            cold.append(time.perf_counter() - start)
    print(f"ik_warm_p50_ms={np.percentile(warm, 50) * 1e3:.3f}")
    print(f"ik_warm_p99_ms={np.percentile(warm, 99) * 1e3:.3f}")
    print(f"ik_cold_success_rate={successes / len(cold):.4f}")
    print(f"ik_cold_p50_ms={np.percentile(cold, 50) * 1e3:.3f}")
    print(f"fk_p50_us={np.percentile(fk, 50) * 1e6:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
