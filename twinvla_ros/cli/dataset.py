"""`twinvla-ros convert` (episode bags -> LeRobot v3.0) and `twinvla-ros dataset check|show`.

  twinvla-ros convert demos/lift --out datasets/lift_box [--fps 20] [--image-size 240x320]
                      [--codec av1|h264] [--task "..."] [--workers 2] [--resume]
  twinvla-ros dataset check datasets/lift_box
  twinvla-ros dataset show datasets/lift_box --episode 0 [--out show]

Progress: a bar per converting episode and per writer stage on a terminal, and one line per
episode either way (converted with its timing figures, or skipped with the reason).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_image_size(text: str) -> tuple[int, int]:
    """"240x320" (height x width) -> (240, 320)."""
    height, sep, width = text.lower().partition("x")
    try:
        size = (int(height), int(width))
    except ValueError:
        size = None
    if not sep or size is None or min(size) <= 0 or size[0] % 2 or size[1] % 2:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH with even positive numbers, got {text!r}")
    return size


class _Bars:
    """tqdm bars: one for the episodes, one per episode being converted, one per writer stage."""

    def __init__(self, total: int, enabled: bool) -> None:
        from tqdm import tqdm

        self._tqdm, self._enabled = tqdm, enabled
        self.episodes = tqdm(total=total, desc="episodes", unit="ep", disable=not enabled, position=0)
        self._bars: dict[str, object] = {}
        self._stage, self._stage_name = None, ""

    def episode(self, bag: str, stage: str, done: int, total: int) -> None:
        name = Path(bag).name
        if stage in ("done", "skipped"):
            bar = self._bars.pop(bag, None)
            if bar is not None:
                bar.close()
            self.episodes.update(1)
            return
        bar = self._bars.get(bag)
        if bar is None:
            bar = self._bars[bag] = self._tqdm(total=total, desc=f"{name} {stage}", unit="frame", leave=False,
                                               disable=not self._enabled, position=len(self._bars) + 1)
        if bar.total != total:
            bar.reset(total=total)
        bar.set_description(f"{name} {stage}", refresh=False)
        bar.n = done
        bar.refresh()

    def stage(self, name: str, done: int, total: int) -> None:
        if self._stage is None or self._stage_name != name:
            if self._stage is not None:
                self._stage.close()
            self._stage = self._tqdm(total=total, desc=name, disable=not self._enabled, leave=False)
            self._stage_name = name
        self._stage.n = done
        self._stage.refresh()

    def close(self) -> None:
        for bar in [*self._bars.values(), self._stage, self.episodes]:
            if bar is not None:
                bar.close()


def _episode_line(report: dict) -> str:
    oldest = report["oldest_frame"]
    worst = max(report["largest_gap_s"].items(), key=lambda item: item[1])
    return (f"{report['frames']} frames ({report['duration_s']:.1f} s), state from {report['state_source']}, "
            f"action from {report['action_source']}, oldest frame {oldest['age_s'] * 1e3:.0f} ms "
            f"({oldest['camera']}), largest gap {worst[1] * 1e3:.0f} ms ({worst[0]})")


def cmd_convert(args) -> int:
    from twinvla_ros.data.conversion import ConversionOptions, convert, find_bags
    from twinvla_ros.data.lerobot.format import DatasetError

    try:
        options = ConversionOptions(fps=args.fps, image_size=args.image_size, codec=args.codec, task=args.task,
                                    max_gap_s=args.max_gap, include_failed=args.include_failed)
        total = len(find_bags(args.inputs))
    except (ValueError, FileNotFoundError) as error:
        print(f"convert: {error}", file=sys.stderr)
        return 2
    bars = _Bars(total, enabled=sys.stderr.isatty())
    try:
        result = convert(args.inputs, args.out, options, workers=args.workers, resume=args.resume,
                         on_event=bars.episode, on_stage=bars.stage)
    except DatasetError as error:
        bars.close()
        print(f"convert: {error}", file=sys.stderr)
        return 1
    bars.close()
    for note in result.notes:
        print(f"[convert] {note}", file=sys.stderr)
    for bag, report in result.converted:
        print(f"[convert] {Path(bag).name}: {_episode_line(report)}")
    for bag, reason in result.skipped:
        print(f"[convert] {Path(bag).name}: skipped: {reason}", file=sys.stderr)
    if result.dataset is None:
        if result.skipped and all(reason == "already in the dataset" for _, reason in result.skipped):
            print(f"[convert] {args.out}: every bag is in the dataset already; nothing to add")
            return 0
        print(f"convert: no episode converted; nothing written to {args.out}", file=sys.stderr)
        return 1
    summary = result.dataset
    print(f"[convert] {summary.root}: {summary.episodes} episodes ({summary.new_episodes} new), "
          f"{summary.frames} frames, {len(summary.tasks)} task(s), {summary.size_bytes / 2**20:.1f} MiB")
    return 0


def cmd_dataset_check(args) -> int:
    from twinvla_ros.data.lerobot.check import check_dataset

    report = check_dataset(Path(args.dir), decode=not args.no_decode)
    print(report.format())
    return 0 if report.ok else 1


def cmd_dataset_show(args) -> int:
    from twinvla_ros.data.lerobot.format import DatasetError
    from twinvla_ros.data.lerobot.show import show_episode

    try:
        shown = show_episode(Path(args.dir), args.episode, Path(args.out))
    except DatasetError as error:
        print(f"dataset show: {error}", file=sys.stderr)
        return 1
    print(f"wrote {shown.plot} and {shown.contact_sheet}")
    return 0


def register(subparsers) -> None:
    convert = subparsers.add_parser("convert", help="episode bags -> a LeRobot v3.0 dataset (TwinVLA's keys)")
    convert.add_argument("inputs", nargs="+", metavar="BAGS_OR_DIRS", help="bag folders or recording folders")
    convert.add_argument("--out", required=True, help="dataset folder (its name is the dataset_statistics key)")
    convert.add_argument("--fps", type=int, default=20, help="rows per second (default 20, TwinVLA's chunk rate)")
    convert.add_argument("--image-size", type=parse_image_size, default=(240, 320), metavar="HxW",
                         help="video frame size, height x width (default 240x320)")
    convert.add_argument("--codec", choices=["av1", "h264"], default="av1", help="video codec (default av1, as LeRobot)")
    convert.add_argument("--task", default=None, help="task text for every episode (default: the recorded one)")
    convert.add_argument("--workers", type=int, default=2, help="episodes converted in parallel (default 2)")
    convert.add_argument("--resume", action="store_true", help="append to an existing dataset (bags already in it "
                         "are left out)")
    convert.add_argument("--max-gap", type=float, default=0.25, metavar="S",
                         help="reject an episode in which a stream is silent longer than this (default 0.25 s)")
    convert.add_argument("--include-failed", action="store_true", help="also convert episodes marked as failures")
    convert.set_defaults(func=cmd_convert)

    dataset = subparsers.add_parser("dataset", help="LeRobot v3.0 datasets: check, show")
    actions = dataset.add_subparsers(dest="dataset_command", required=True)
    check = actions.add_parser("check", help="validate files, frame counts, timestamps and stats")
    check.add_argument("dir", metavar="DIR")
    check.add_argument("--no-decode", action="store_true", help="skip decoding video frames")
    check.set_defaults(func=cmd_dataset_check)
    show = actions.add_parser("show", help="PNGs of an episode: state/action trajectories and a contact sheet")
    show.add_argument("dir", metavar="DIR")
    show.add_argument("--episode", type=int, default=0)
    show.add_argument("--out", default="dataset_show", help="output folder (default: dataset_show)")
    show.set_defaults(func=cmd_dataset_show)
