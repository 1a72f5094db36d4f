"""Checks a LeRobot v3.0 dataset against what lerobot's reader and TwinVLA's loader rely on,
most of which they never check themselves (a wrong `index`, a tasks table without its pandas
index, a short `total_frames`, a missing mp4 all load silently wrong or go to the Hub).

The checker reads the files on its own (pyarrow, pandas, PyAV through video.probe_video /
decode_frames), never through the writer, so it catches the writer's mistakes. Each problem
is one line naming the file, episode or feature at fault.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from twinvla_ros.data.lerobot.format import ACTION_KEY, CODEBASE_VERSION, STATE_KEY, XYZ_MASK, DatasetError
from twinvla_ros.data.lerobot.stats import STAT_FIELDS
from twinvla_ros.data.lerobot.video import TIMESTAMP_TOLERANCE_S, decode_frames, probe_video

REQUIRED_INFO = ("codebase_version", "fps", "features", "total_episodes", "total_frames", "total_tasks",
                 "data_path", "video_path")


@dataclass
class DatasetCheck:
    root: Path
    problems: list[str] = field(default_factory=list)
    episodes: int = 0
    frames: int = 0
    fps: float = 0.0
    duration_s: float = 0.0
    tasks: list[str] = field(default_factory=list)
    cameras: dict[str, tuple[int, int, int, str]] = field(default_factory=dict)   # key: (frames, w, h, codec)

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self) -> str:
        minutes, seconds = divmod(self.duration_s, 60)
        lines = [f"{self.root}: {'OK' if self.ok else f'{len(self.problems)} problem(s)'}",
                 f"  {self.episodes} episodes, {self.frames} frames at {self.fps:g} fps "
                 f"({int(minutes)}:{seconds:04.1f}), {len(self.tasks)} task(s)"]
        lines += [f"  task {index}: {task}" for index, task in enumerate(self.tasks)]
        lines += [f"  {key}: {frames} frames, {width}x{height}, {codec}"
                  for key, (frames, width, height, codec) in self.cameras.items()]
        lines += [f"  problem: {problem}" for problem in self.problems]
        return "\n".join(lines)


def check_dataset(root: str | Path, *, decode: bool = True) -> DatasetCheck:
    """Every problem found in the dataset at `root`; `decode` also decodes each episode's first
    and last frame of every camera where lerobot would look them up."""
    result = DatasetCheck(root=Path(root))
    info = _load_info(result)
    if info is None:
        return result
    fps = float(info["fps"])
    result.fps = fps
    result.tasks = _check_tasks(result, info)
    episodes = _load_episodes(result, info)
    if episodes is None:
        return result
    result.episodes = len(episodes["episode_index"])
    lengths = episodes["length"]
    _check_referenced_files(result, info, episodes)
    data = _check_data(result, info, episodes)
    result.frames = int(info["total_frames"])
    result.duration_s = int(lengths.sum()) / fps if fps > 0 else 0.0
    _check_stats(result, info)
    _check_dataset_statistics(result, info)
    _check_videos(result, info, episodes, data, decode)
    return result


def _load_json(result: DatasetCheck, name: str, why_needed: str = "") -> dict | None:
    """A JSON file of the dataset, or None with the problem noted."""
    path = result.root / name
    if not path.is_file():
        result.problems.append(f"{path}: missing" + (f" ({why_needed})" if why_needed else ""))
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        result.problems.append(f"{path}: not parsable JSON ({error})")
        return None


def _load_info(result: DatasetCheck) -> dict | None:
    path = result.root / "meta/info.json"
    info = _load_json(result, "meta/info.json")
    if info is None:
        return None
    missing = [key for key in REQUIRED_INFO if key not in info]
    if missing:
        result.problems.append(f"{path}: lacks {missing}")
        return None
    if info["codebase_version"] != CODEBASE_VERSION:
        result.problems.append(f"{path}: codebase_version {info['codebase_version']!r}, expected {CODEBASE_VERSION!r}")
    if not isinstance(info["fps"], (int, float)) or info["fps"] <= 0:
        result.problems.append(f"{path}: fps {info['fps']!r} is not a positive number")
        return None
    return info


def _check_tasks(result: DatasetCheck, info: dict) -> list[str]:
    path = result.root / "meta/tasks.parquet"
    if not path.is_file():
        result.problems.append(f"{path}: missing")
        return []
    try:
        tasks = pd.read_parquet(path)
    except Exception as error:   # any unreadable parquet, whichever library layer raises
        result.problems.append(f"{path}: unreadable ({error})")
        return []
    if "task_index" not in tasks.columns:
        result.problems.append(f"{path}: no task_index column")
        return []
    if not all(isinstance(name, str) for name in tasks.index) or isinstance(tasks.index, pd.RangeIndex):
        result.problems.append(f"{path}: the task strings are not the pandas index (lerobot would give every "
                               f"sample an integer task); index is {tasks.index.dtype}, columns {list(tasks.columns)}")
        return []
    if not np.array_equal(tasks["task_index"].to_numpy(), np.arange(len(tasks))):
        result.problems.append(f"{path}: task_index is {tasks['task_index'].tolist()}, expected 0..{len(tasks) - 1} "
                               "in row order")
    if info["total_tasks"] != len(tasks):
        result.problems.append(f"meta/info.json: total_tasks {info['total_tasks']} but {path.name} has {len(tasks)}")
    return [str(name) for name in tasks.index]


def _load_episodes(result: DatasetCheck, info: dict) -> dict[str, np.ndarray] | None:
    files = sorted((result.root / "meta/episodes").glob("*/*.parquet"))
    if not files:
        result.problems.append(f"{result.root / 'meta/episodes'}: no episode files")
        return None
    try:
        table = pa.concat_tables([pq.read_table(path) for path in files], promote_options="default")
    except (OSError, pa.ArrowException) as error:
        result.problems.append(f"meta/episodes: unreadable ({error})")
        return None
    video_keys = [key for key, spec in info["features"].items() if spec.get("dtype") == "video"]
    needed = ["episode_index", "tasks", "length", "data/chunk_index", "data/file_index",
              "dataset_from_index", "dataset_to_index"]
    for key in video_keys:
        needed += [f"videos/{key}/{name}" for name in ("chunk_index", "file_index", "from_timestamp", "to_timestamp")]
    missing = [name for name in needed if name not in table.column_names]
    if missing:
        result.problems.append(f"meta/episodes: lacks columns {missing}")
        return None
    episodes = {name: np.asarray(table.column(name).to_pylist(), dtype=object if name == "tasks" else None)
                for name in needed}
    count = len(episodes["episode_index"])
    if info["total_episodes"] != count:
        result.problems.append(f"meta/info.json: total_episodes {info['total_episodes']} but meta/episodes has {count}")
    wrong = np.flatnonzero(episodes["episode_index"] != np.arange(count))
    for row in wrong[:5]:
        result.problems.append(f"meta/episodes row {row}: episode_index {episodes['episode_index'][row]} "
                               f"(lerobot looks episodes up by row: must be {row})")
    lengths = episodes["length"]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    for row in np.flatnonzero(lengths <= 0)[:5]:
        result.problems.append(f"episode {row}: length {lengths[row]}")
    for row in np.flatnonzero(episodes["dataset_from_index"] != starts)[:5]:
        result.problems.append(f"episode {row}: dataset_from_index {episodes['dataset_from_index'][row]}, "
                               f"expected {starts[row]} (the sum of the earlier lengths)")
    for row in np.flatnonzero(episodes["dataset_to_index"] - episodes["dataset_from_index"] != lengths)[:5]:
        result.problems.append(f"episode {row}: dataset_to_index - dataset_from_index != length {lengths[row]}")
    if info["total_frames"] != int(lengths.sum()):
        result.problems.append(f"meta/info.json: total_frames {info['total_frames']} but the episodes' lengths "
                               f"sum to {int(lengths.sum())}")
    return episodes


def _file_path(template: str, chunk_index: int, file_index: int, **keys: str) -> str:
    return template.format(chunk_index=int(chunk_index), file_index=int(file_index), **keys)


def _check_referenced_files(result: DatasetCheck, info: dict, episodes: dict[str, np.ndarray]) -> None:
    missing: dict[str, int] = {}
    references = [(info["data_path"], "data", {})]
    references += [(info["video_path"], f"videos/{key}", {"video_key": key})
                   for key, spec in info["features"].items() if spec.get("dtype") == "video"]
    for template, prefix, keys in references:
        for row, (chunk_index, file_index) in enumerate(zip(episodes[f"{prefix}/chunk_index"],
                                                            episodes[f"{prefix}/file_index"])):
            relative = _file_path(template, chunk_index, file_index, **keys)
            if relative not in missing and not (result.root / relative).is_file():
                missing[relative] = row
    for relative, row in missing.items():
        result.problems.append(f"{relative}: missing (referenced by episode {row}; lerobot would try the Hub)")


def _check_data(result: DatasetCheck, info: dict, episodes: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    """The data rows, checked against the episodes; returns the columns when they line up."""
    files = sorted((result.root / "data").glob("*/*.parquet"))
    if not files:
        result.problems.append(f"{result.root / 'data'}: no data files")
        return None
    expected_columns = {key for key, spec in info["features"].items() if spec.get("dtype") not in ("video", "image")}
    tables, file_rows = [], {}
    row = 0
    for path in files:
        relative = str(path.relative_to(result.root))
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowException) as error:
            result.problems.append(f"{relative}: unreadable ({error})")
            return None
        columns = set(table.column_names)
        if columns != expected_columns:
            extra, missing = sorted(columns - expected_columns), sorted(expected_columns - columns)
            result.problems.append(f"{relative}: columns differ from info.json's features "
                                   f"(extra {extra}, missing {missing})")
            return None
        tables.append(table.select(sorted(expected_columns)))
        file_rows[relative] = (row, row + table.num_rows)
        row += table.num_rows
    data = pa.concat_tables(tables, promote_options="permissive")
    lengths = episodes["length"]
    if data.num_rows != info["total_frames"]:
        result.problems.append(f"data: {data.num_rows} rows but info.json's total_frames is {info['total_frames']} "
                               "(lerobot's len(dataset))")
    if data.num_rows != int(lengths.sum()):
        result.problems.append(f"data: {data.num_rows} rows but the episodes' lengths sum to {int(lengths.sum())}; "
                               "per-episode row checks skipped")
        return None
    for episode, (chunk_index, file_index, start, end) in enumerate(zip(
            episodes["data/chunk_index"], episodes["data/file_index"],
            episodes["dataset_from_index"], episodes["dataset_to_index"])):
        relative = _file_path(info["data_path"], chunk_index, file_index)
        span = file_rows.get(relative)
        if span is not None and not (span[0] <= start and end <= span[1]):
            result.problems.append(f"episode {episode}: rows {start}..{end - 1} are not in {relative} "
                                   f"(it holds rows {span[0]}..{span[1] - 1})")

    columns = {name: _column_array(data.column(name)) for name in data.column_names}
    episode_of_row = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.repeat(np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    frame_index = np.arange(data.num_rows) - starts

    def report(mask: np.ndarray, what: str) -> None:
        for episode in np.unique(episode_of_row[mask])[:5]:
            rows = int(np.count_nonzero(mask & (episode_of_row == episode)))
            result.problems.append(f"episode {episode}: {what} in {rows} row(s)")

    if "episode_index" in columns:
        report(columns["episode_index"] != episode_of_row, "episode_index differs from the episode's index "
                                                           "(data rows not grouped per episode in order)")
    if "frame_index" in columns:
        report(columns["frame_index"] != frame_index, "frame_index is not 0..length-1")
    if "index" in columns:
        report(columns["index"] != np.arange(data.num_rows), "index is not the global row number")
    if "timestamp" in columns:
        error = np.abs(columns["timestamp"].astype(np.float64) - frame_index / result.fps)
        for episode in np.unique(episode_of_row[error >= TIMESTAMP_TOLERANCE_S])[:5]:
            worst = float(error[episode_of_row == episode].max())
            result.problems.append(f"episode {episode}: timestamp off frame_index/fps by up to {worst * 1e3:.3f} ms "
                                   f"(lerobot needs < {TIMESTAMP_TOLERANCE_S * 1e3:g} ms)")
    if "task_index" in columns:
        task_index = columns["task_index"]
        report((task_index < 0) | (task_index >= max(len(result.tasks), 1)),
               f"task_index outside the {len(result.tasks)} tasks of meta/tasks.parquet")
        if result.tasks:
            for episode, (start, listed) in enumerate(zip(episodes["dataset_from_index"], episodes["tasks"])):
                index = int(task_index[start])
                if 0 <= index < len(result.tasks) and result.tasks[index] not in list(listed):
                    result.problems.append(f"episode {episode}: task {result.tasks[index]!r} of its rows is not in "
                                           f"its meta/episodes tasks {list(listed)}")
    for key in (STATE_KEY, ACTION_KEY):
        if key not in columns:
            continue
        values = columns[key]
        shape = list(info["features"][key].get("shape", []))
        if values.ndim != 2 or [values.shape[1]] != shape:
            result.problems.append(f"data: {key} has shape {values.shape[1:]} per row, info.json says {shape}")
            continue
        report(~np.all(np.isfinite(values), axis=1), f"{key} is not finite")
    return columns


def _column_array(column: pa.ChunkedArray) -> np.ndarray:
    column = column.combine_chunks()
    if pa.types.is_fixed_size_list(column.type) or pa.types.is_list(column.type) \
            or pa.types.is_large_list(column.type):
        flat = np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=np.float64)
        return flat.reshape(len(column), -1) if len(column) else flat.reshape(0, 0)
    return column.to_numpy(zero_copy_only=False)


def _stat_shape(spec: dict, stat: str) -> tuple[int, ...]:
    if stat == "count":
        return (1,)
    if spec.get("dtype") in ("video", "image"):
        return (3, 1, 1)
    return tuple(spec.get("shape", []))


def _check_stats(result: DatasetCheck, info: dict) -> None:
    stats = _load_json(result, "meta/stats.json", "TwinVLA normalizes with its q01/q99")
    if stats is None:
        return
    for feature, spec in info["features"].items():
        if feature not in stats:
            result.problems.append(f"meta/stats.json: no stats for {feature}")
            continue
        entry = stats[feature]
        missing = [stat for stat in STAT_FIELDS if stat not in entry]
        if missing:
            result.problems.append(f"meta/stats.json: {feature} lacks {missing}")
            continue
        values = {}
        for stat in STAT_FIELDS:
            try:
                value = np.asarray(entry[stat], dtype=np.float64)
            except (TypeError, ValueError):
                result.problems.append(f"meta/stats.json: {feature}/{stat} is not numeric")
                continue
            if value.shape != _stat_shape(spec, stat):
                result.problems.append(f"meta/stats.json: {feature}/{stat} has shape {value.shape}, "
                                       f"expected {_stat_shape(spec, stat)}")
            elif not np.all(np.isfinite(value)):
                result.problems.append(f"meta/stats.json: {feature}/{stat} has non-finite values")
            else:
                values[stat] = value
        if all(stat in values for stat in ("q01", "q50", "q99")):
            if not (np.all(values["q01"] <= values["q50"]) and np.all(values["q50"] <= values["q99"])):
                result.problems.append(f"meta/stats.json: {feature} quantiles not ordered (q01 <= q50 <= q99)")


def _check_dataset_statistics(result: DatasetCheck, info: dict) -> None:
    path = result.root / "dataset_statistics.json"
    if not path.is_file():
        result.problems.append(f"{path}: missing (TwinVLA's normalization statistics)")
        return
    try:
        statistics = json.loads(path.read_text())
        stats = json.loads((result.root / "meta/stats.json").read_text())
    except (OSError, ValueError) as error:
        result.problems.append(f"{path}: unreadable with meta/stats.json ({error})")
        return
    if not isinstance(statistics, dict) or len(statistics) != 1:
        result.problems.append(f"{path}: expected one unnorm_key, found {list(statistics)[:5]}")
        return
    (key, entry), = statistics.items()
    for name, feature in (("action", ACTION_KEY), ("proprio", STATE_KEY)):
        part = entry.get(name) if isinstance(entry, dict) else None
        if not isinstance(part, dict) or feature not in stats:
            result.problems.append(f"{path}: {key}/{name} missing")
            continue
        if part.get("mask") != list(XYZ_MASK):
            result.problems.append(f"{path}: {key}/{name}/mask is not the xyz mask {XYZ_MASK}")
        for stat in STAT_FIELDS:
            try:
                same = stat in part and stat in stats[feature] and np.allclose(
                    np.asarray(part[stat], dtype=np.float64), np.asarray(stats[feature][stat], dtype=np.float64),
                    rtol=1e-9, atol=1e-12)
            except (TypeError, ValueError):
                same = False
            if not same:
                result.problems.append(f"{path}: {key}/{name}/{stat} differs from meta/stats.json's {feature}")
    if isinstance(entry, dict):
        if entry.get("num_transitions") != info["total_frames"]:
            result.problems.append(f"{path}: num_transitions {entry.get('num_transitions')}, "
                                   f"total_frames {info['total_frames']}")
        if entry.get("num_trajectories") != info["total_episodes"]:
            result.problems.append(f"{path}: num_trajectories {entry.get('num_trajectories')}, "
                                   f"total_episodes {info['total_episodes']}")


def _check_videos(result: DatasetCheck, info: dict, episodes: dict[str, np.ndarray],
                  data: dict[str, np.ndarray] | None, decode: bool) -> None:
    fps = result.fps
    lengths = episodes["length"]
    for key, spec in info["features"].items():
        if spec.get("dtype") != "video":
            continue
        height, width = spec["shape"][:2]
        expected_codec = spec.get("info", {}).get("video.codec")
        files: dict[str, list[int]] = {}
        for row, (chunk_index, file_index) in enumerate(zip(episodes[f"videos/{key}/chunk_index"],
                                                            episodes[f"videos/{key}/file_index"])):
            files.setdefault(_file_path(info["video_path"], chunk_index, file_index, video_key=key), []).append(row)
        total_frames, codec = 0, "?"
        for relative, rows in files.items():
            path = result.root / relative
            if not path.is_file():
                continue                    # reported as a missing referenced file
            try:
                probed = probe_video(path)
            except DatasetError as error:
                result.problems.append(str(error))
                continue
            total_frames += probed.frames
            codec = probed.codec
            expected_frames = int(lengths[rows].sum())
            if probed.frames != expected_frames:
                result.problems.append(f"{relative}: {probed.frames} frames, its episodes {rows[:3]}"
                                       f"{'...' if len(rows) > 3 else ''} have {expected_frames}")
            if (probed.height, probed.width) != (height, width):
                result.problems.append(f"{relative}: {probed.width}x{probed.height}, info.json says {width}x{height}")
            if expected_codec is not None and probed.codec != expected_codec:
                result.problems.append(f"{relative}: codec {probed.codec}, info.json says {expected_codec}")
            previous_end = -math.inf
            for row in sorted(rows, key=lambda r: episodes[f"videos/{key}/from_timestamp"][r]):
                start = float(episodes[f"videos/{key}/from_timestamp"][row])
                end = float(episodes[f"videos/{key}/to_timestamp"][row])
                where = f"episode {row} {key}"
                if abs((end - start) - lengths[row] / fps) >= TIMESTAMP_TOLERANCE_S:
                    result.problems.append(f"{where}: to_timestamp - from_timestamp = {end - start:.6f} s, "
                                           f"length/fps = {lengths[row] / fps:.6f} s")
                if start < previous_end - TIMESTAMP_TOLERANCE_S or start < 0:
                    result.problems.append(f"{where}: from_timestamp {start:.6f} s overlaps the episode before it "
                                           f"in {relative} (ends {previous_end:.6f} s)")
                if end > probed.duration_s + TIMESTAMP_TOLERANCE_S:
                    result.problems.append(f"{where}: to_timestamp {end:.6f} s past the end of {relative} "
                                           f"({probed.duration_s:.6f} s)")
                previous_end = end
                if decode:
                    _check_decoded(result, path, row, key, start, _episode_times(data, episodes, row, fps),
                                   (height, width))
        result.cameras[key] = (total_frames, width, height, codec)


def _episode_times(data: dict[str, np.ndarray] | None, episodes: dict[str, np.ndarray], row: int,
                   fps: float) -> tuple[float, float]:
    """The first and last frame's timestamps as lerobot would read them (from the data rows)."""
    length = int(episodes["length"][row])
    if data is not None and "timestamp" in data:
        start = int(episodes["dataset_from_index"][row])
        return float(data["timestamp"][start]), float(data["timestamp"][start + length - 1])
    return 0.0, (length - 1) / fps


def _check_decoded(result: DatasetCheck, path: Path, row: int, key: str, start: float,
                   times: tuple[float, float], size: tuple[int, int]) -> None:
    for which, time_s in zip(("first", "last"), times):
        try:
            frame = decode_frames(path, start + time_s, 1, result.fps)[0]
        except DatasetError as error:
            result.problems.append(f"episode {row} {key}: {which} frame at {start + time_s:.6f} s: {error}")
            continue
        if frame.shape != (*size, 3):
            result.problems.append(f"episode {row} {key}: {which} frame is {frame.shape}, expected {(*size, 3)}")
