#!/usr/bin/env python3
"""Benchmark of the MuJoCo sim (and, later, the arm driver): prints `name=value` lines.

    python bench/sim_driver.py                    # every figure
    python bench/sim_driver.py --only sim_realtime_factor

The first line describes the machine. Each figure is one function in FIGURES returning its
value; add a figure (e.g. the arm driver's `arm_driver_loop_hz`) by writing a function and
appending it to FIGURES. Figures here are throughput on this machine, not pass/fail tests.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # run from a source checkout

from twinvla_ros.sim import SimConfig, SimWorld  # noqa: E402  (also selects MUJOCO_GL)


def machine() -> str:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import mujoco

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    # Other processes share these cores: the load average says how much the figures are shared.
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f'cpu="{cpu}", cores={cores}, python={platform.python_version()}, '
            f'mujoco={mujoco.__version__}, MUJOCO_GL={os.environ.get("MUJOCO_GL")}, '
            f'loadavg_1min={load:.2f}')


def _render_fps(height: int, width: int, seconds: float) -> float:
    """Frames per second of render_all() (all three cameras) at one resolution, default scene
    and render settings (no multisampling)."""
    with SimWorld(SimConfig(image_height=height, image_width=width)) as world:
        world.render_all()   # context creation and first-frame setup are not throughput
        world.render_all()
        frames, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            world.render_all()
            frames += 1
        return frames / (time.perf_counter() - start)


def sim_render_fps_3cams_240x320(seconds: float) -> float:
    return _render_fps(240, 320, seconds)


def sim_render_fps_3cams_480x640(seconds: float) -> float:
    return _render_fps(480, 640, seconds)


def sim_realtime_factor(seconds: float) -> float:
    """Simulated seconds per wall second, physics only (no rendering), default scene, one
    step() call per 2 ms step as a real-time loop makes them, with the arms tracking moving
    joint targets and a joint_state() read every 5 ms (the sim bus at 200 Hz)."""
    import math

    with SimWorld(SimConfig()) as world:
        home = dict(zip(world.joint_names, world.joint_state()[0]))
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            if steps % 5 == 0:
                phase = 2 * math.pi * 0.5 * world.time
                world.set_joint_targets({"left_joint1": home["left_joint1"] + 0.3 * math.sin(phase),
                                         "right_joint3": home["right_joint3"] + 0.2 * math.sin(phase)})
                world.joint_state()
            world.step(1)
            steps += 1
        wall = time.perf_counter() - start
        return steps * world.config.timestep / wall


FIGURES: list[Callable[[float], float]] = [
    sim_render_fps_3cams_240x320,
    sim_render_fps_3cams_480x640,
    sim_realtime_factor,
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="run only this figure (repeatable)")
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring time per figure")
    args = parser.parse_args(argv)
    figures = [f for f in FIGURES if not args.only or f.__name__ in args.only]
    unknown = set(args.only) - {f.__name__ for f in FIGURES}
    if unknown:
        parser.error(f"unknown figure(s) {sorted(unknown)}; known: {[f.__name__ for f in FIGURES]}")
    print(f"machine={machine()}", flush=True)
    for figure in figures:
        print(f"{figure.__name__}={figure(args.seconds):.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
