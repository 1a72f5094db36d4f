"""`twinvla-ros bag info|recover|preview` and `twinvla-ros episodes`: episode bags without ROS.

  twinvla-ros bag info PATH...       what a bag holds, like `ros2 bag info` (1 if one is incomplete)
  twinvla-ros bag recover PATH...    complete bags whose recorder died; a dataset folder recovers
                                     every episode that needs it (1 if one cannot be recovered)
  twinvla-ros bag preview PATH...    a camera video and a commanded-vs-reached EEF plot per episode
  twinvla-ros episodes DIR           a dataset's episodes: index, task, duration, success, flags, status

Exit codes: 0 ok, 1 a problem was found or could not be fixed, 2 usage (e.g. a path that does
not exist).
"""
from __future__ import annotations

import sys
from pathlib import Path


def _missing(paths: list[str]) -> list[str]:
    missing = [p for p in paths if not Path(p).exists()]
    for path in missing:
        print(f"{path}: no such file or folder", file=sys.stderr)
    return missing


def cmd_bag_info(args) -> int:
    from twinvla_ros.data.bags import RecordingError, bag_summary

    if _missing(args.paths):
        return 2
    code = 0
    for path in args.paths:
        try:
            summary = bag_summary(path)
        except RecordingError as error:
            print(f"{path}: {error}", file=sys.stderr)
            code = 1
            continue
        print(summary.format())
        code = code or (0 if summary.complete else 1)
    return code


def _for_each_bag(paths: list[str], action, failure: str = "") -> tuple[int, list]:
    """action(bag) for every bag under `paths` (a dataset folder: each of its episodes). A
    RecordingError is printed (after `failure`) and makes the exit code 1; returns (exit code,
    [(bag, result)] of the bags that succeeded)."""
    from twinvla_ros.data.bags import RecordingError, bags_under

    code, done = 0, []
    for path in paths:
        for bag in bags_under(path):
            try:
                done.append((bag, action(bag)))
            except RecordingError as error:
                print(f"{bag}: {failure}{error}", file=sys.stderr)
                code = 1
    return code, done


def cmd_bag_recover(args) -> int:
    from twinvla_ros.data.bags import recover_bag

    if _missing(args.paths):
        return 2
    code, reports = _for_each_bag(args.paths, recover_bag, "cannot recover: ")
    for _, report in reports:
        if report.changed:
            print(report.format())
    untouched = sum(1 for _, report in reports if not report.changed)
    if untouched:
        print(f"{untouched} bag(s) complete, nothing to do")
    return code


def cmd_bag_preview(args) -> int:
    from twinvla_ros.data.bags import episode_preview

    if _missing(args.paths):
        return 2
    code, previews = _for_each_bag(args.paths, lambda bag: episode_preview(bag, args.out, args.camera))
    for bag, preview in previews:
        written = [str(p) for p in (preview.video, preview.plot) if p is not None]
        print(f"{bag.name}: {preview.frames} {args.camera} frames at {preview.fps:.1f} fps -> "
              + (", ".join(written) or "nothing to show"))
    return code


def format_episode_table(episodes) -> str:
    rows = [("index", "task", "duration", "success", "status", "flags")]
    for episode in episodes:
        duration = f"{episode.duration_s:.1f} s" if episode.duration_s is not None else "-"
        success = {True: "yes", False: "no"}.get(episode.success, "-")
        status = episode.status + (" (crashed? run `twinvla-ros bag recover`)"
                                   if episode.status == "recording" else "")
        task = episode.task if len(episode.task) <= 40 else episode.task[:37] + "..."
        rows.append((str(episode.index), task, duration, success, status, "; ".join(episode.flags) or "-"))
    widths = [max(len(row[col]) for row in rows) for col in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1]
                     for row in rows)


def cmd_episodes(args) -> int:
    from twinvla_ros.data.bags import RecordingDirectory

    if not Path(args.dir).is_dir():
        print(f"{args.dir}: no such folder", file=sys.stderr)
        return 2
    episodes = RecordingDirectory(args.dir).episodes()
    if not episodes:
        print(f"no episodes in {args.dir}")
        return 0
    print(format_episode_table(episodes))
    return 0


def register(subparsers) -> None:
    bag = subparsers.add_parser("bag", help="episode bags (rosbag2, MCAP): info, recover, preview")
    actions = bag.add_subparsers(dest="bag_command", required=True)
    info = actions.add_parser("info", help="topics, counts, rates, custom data (like ros2 bag info)")
    info.add_argument("paths", nargs="+", metavar="PATH", help="bag folder or .mcap file")
    info.set_defaults(func=cmd_bag_info)
    recover = actions.add_parser("recover", help="complete bags whose recorder died")
    recover.add_argument("paths", nargs="+", metavar="PATH", help="bag folder, .mcap file or dataset folder")
    recover.set_defaults(func=cmd_bag_recover)

    preview = actions.add_parser("preview", help="a camera video and an EEF plot of each episode")
    preview.add_argument("paths", nargs="+", metavar="PATH", help="bag folder or dataset folder")
    preview.add_argument("--out", default="previews", help="output folder (default: previews)")
    preview.add_argument("--camera", default="ego", help="ego, wrist_left or wrist_right")
    preview.set_defaults(func=cmd_bag_preview)

    episodes = subparsers.add_parser("episodes", help="list a dataset folder's episodes")
    episodes.add_argument("dir", metavar="DIR", help="dataset folder (holds episode_000000, ...)")
    episodes.set_defaults(func=cmd_episodes)
