#!/usr/bin/env python3
"""Benchmark of `twinvla-ros convert`: how fast episode bags become a LeRobot v3.0 dataset.

    python bench/convert.py                       # record 4 sim demos, convert with av1 and h264
    python bench/convert.py --bags demos/lift     # convert bags you already have

The first line describes the machine. Input: lift_box demonstrations recorded by the real
graph (`twinvla-ros record --sim`, the scripted expert; three 320x240 rgb8 cameras, joint
states and EEF poses), unless --bags names a recording. Each codec converts all of them at
20 Hz and 240x320 with 2 workers, as the CLI does (progress events off). Figures:
  convert_realtime_factor_<codec>     seconds of recorded episode per second of conversion
  dataset_mb_per_episode_minute_<codec>   dataset size per minute of episode
  convert_s_per_episode_<codec>       wall time per episode
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from common import machine_line, record_sim_demos

from twinvla_ros.data.conversion import ConversionOptions, convert


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bags", default=None, help="a recording folder (default: record sim demos)")
    parser.add_argument("--episodes", type=int, default=4, help="sim demos to record (default 4)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--codecs", nargs="+", default=["av1", "h264"])
    args = parser.parse_args()
    print(machine_line())
    work = Path(tempfile.mkdtemp(prefix="bench_convert_"))
    try:
        bags = Path(args.bags) if args.bags else work / "demos"
        if not args.bags:
            started = time.perf_counter()
            record_sim_demos(bags, args.episodes)
            print(f"recorded {args.episodes} sim demos in {time.perf_counter() - started:.0f} s")
        for codec in args.codecs:
            # Gaps up to 1 s are accepted: the sim's cameras slow down on a loaded small machine,
            # and the figure is about the converter, not about the recording.
            options = ConversionOptions(fps=20, image_size=(240, 320), codec=codec, max_gap_s=1.0)
            out = work / f"dataset_{codec}"
            started = time.perf_counter()
            result = convert([bags], out, options, workers=args.workers)
            wall = time.perf_counter() - started
            for bag, reason in result.skipped:
                print(f"  skipped {Path(bag).name}: {reason}")
            recorded = sum(report["duration_s"] for _, report in result.converted)
            episodes = len(result.converted)
            megabytes = folder_bytes(out) / 1e6
            print(f"convert_realtime_factor_{codec}={recorded / wall:.2f} ({recorded:.1f} s of episodes "
                  f"in {wall:.1f} s, {args.workers} workers)")
            print(f"convert_s_per_episode_{codec}={wall / episodes:.2f}")
            print(f"dataset_mb_per_episode_minute_{codec}={megabytes / (recorded / 60):.2f} "
                  f"({megabytes:.1f} MB for {episodes} episodes, {result.dataset.frames} frames)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
