"""Writes converted episodes as a LeRobot v3.0 dataset, all at once or appended (resume).

A dataset is published whole or not at all (lerobot goes to the Hugging Face Hub for any file
it misses): everything is built in a sibling directory `.<name>.partial` and renamed to the
dataset's name only after check_dataset found nothing wrong with it. A crash leaves the
partial directory (removed by the next writer) and either no dataset or the previous one.

Resume builds the new version in the partial directory too: the existing data and video files
are hard-linked (copied where links are impossible) and never rewritten, the new episodes go to
new data/video files (the next file index), and all metadata (info, stats over all frames,
tasks, episodes) is rewritten. Then the old version is swapped out.

Per writer session each camera gets one new mp4 (the episodes' own mp4s concatenated by
stream copy), rolling to the next file index at VIDEO_FILES_SIZE_MB; new data rows go to one
parquet file rolling at DATA_FILES_SIZE_MB, one row group per episode.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from twinvla_ros import __version__
from twinvla_ros.data.lerobot.check import check_dataset
from twinvla_ros.data.lerobot.format import (ACTION_KEY, CHUNKS_SIZE, CODEBASE_VERSION, CODECS, DATA_FILES_SIZE_MB,
                                             DATA_PATH, DEFAULT_FEATURES, EPISODES_PATH, IMAGE_KEYS, STATE_KEY,
                                             VIDEO_FILES_SIZE_MB, VIDEO_PATH, DatasetError, StagedEpisode)
from twinvla_ros.data.lerobot.stats import (STAT_FIELDS, aggregate_image_stats, dataset_statistics, stats_to_json,
                                            vector_stats)
from twinvla_ros.data.lerobot.video import concatenate_videos, probe_video
from twinvla_ros.robot.bimanual import BIMANUAL_DIM

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
PROVENANCE_PATH = "meta/twinvla_ros.json"
VECTOR_KEYS = (STATE_KEY, ACTION_KEY)
VIDEO_KEYS = tuple(IMAGE_KEYS.values())
INTEGER_FEATURES = ("frame_index", "episode_index", "index", "task_index")
MEGABYTE = 1024 * 1024


@dataclass(frozen=True)
class DatasetSummary:
    root: Path
    episodes: int
    frames: int
    new_episodes: int
    tasks: list[str]
    size_bytes: int


@dataclass
class _Pending:
    """An added episode: its arrays and where its mp4s are, until finalize."""

    episode: StagedEpisode
    index: int
    task_index: int
    video_bytes: dict[str, int]


def feature_spec(fps: int, image_size: tuple[int, int], video_info: dict[str, dict] | None = None) -> dict:
    """info.json's `features`: state, action, cameras, then lerobot's five defaults."""
    height, width = image_size
    features: dict[str, dict] = {key: {"dtype": "float32", "shape": [BIMANUAL_DIM], "names": None}
                                 for key in VECTOR_KEYS}
    for key in VIDEO_KEYS:
        features[key] = {"dtype": "video", "shape": [height, width, 3], "names": ["height", "width", "channels"]}
        if video_info is not None:
            features[key]["info"] = video_info[key]
    features["timestamp"] = {"dtype": "float32", "shape": [1], "names": None}
    for key in INTEGER_FEATURES:
        features[key] = {"dtype": "int64", "shape": [1], "names": None}
    return features


def next_file(chunk_index: int, file_index: int) -> tuple[int, int]:
    return (chunk_index, file_index + 1) if file_index + 1 < CHUNKS_SIZE else (chunk_index + 1, 0)


def _data_schema() -> pa.Schema:
    vector = pa.list_(pa.field("element", pa.float32()), BIMANUAL_DIM)
    fields = [pa.field(key, vector) for key in VECTOR_KEYS] + [pa.field("timestamp", pa.float32())]
    fields += [pa.field(key, pa.int64()) for key in INTEGER_FEATURES]
    # The datasets Features JSON lerobot's writer leaves in every data file.
    value = {"float32": {"dtype": "float32", "_type": "Value"}, "int64": {"dtype": "int64", "_type": "Value"}}
    hf_features = {key: {"feature": value["float32"], "length": BIMANUAL_DIM, "_type": "List"} for key in VECTOR_KEYS}
    hf_features["timestamp"] = value["float32"]
    hf_features.update({key: value["int64"] for key in INTEGER_FEATURES})
    return pa.schema(fields, metadata={"huggingface": json.dumps({"info": {"features": hf_features}})})


def _stat_type(feature: str, stat: str) -> pa.DataType:
    if stat == "count":
        return pa.list_(pa.int64())
    if feature in VIDEO_KEYS:
        return pa.list_(pa.list_(pa.list_(pa.float64())))
    if feature in INTEGER_FEATURES and stat in ("min", "max"):
        return pa.list_(pa.int64())
    return pa.list_(pa.float64())


def episodes_schema() -> pa.Schema:
    """meta/episodes' columns, in lerobot's order."""
    fields = [("episode_index", pa.int64()), ("tasks", pa.list_(pa.string())), ("length", pa.int64()),
              ("data/chunk_index", pa.int64()), ("data/file_index", pa.int64()),
              ("dataset_from_index", pa.int64()), ("dataset_to_index", pa.int64())]
    for key in VIDEO_KEYS:
        fields += [(f"videos/{key}/chunk_index", pa.int64()), (f"videos/{key}/file_index", pa.int64()),
                   (f"videos/{key}/from_timestamp", pa.float64()), (f"videos/{key}/to_timestamp", pa.float64())]
    for feature in (*VECTOR_KEYS, *VIDEO_KEYS, *DEFAULT_FEATURES):
        fields += [(f"stats/{feature}/{stat}", _stat_type(feature, stat)) for stat in STAT_FIELDS]
    fields += [("meta/episodes/chunk_index", pa.int64()), ("meta/episodes/file_index", pa.int64())]
    return pa.schema(fields)


class _Existing:
    """The dataset a resume appends to, as far as the new version needs it."""

    def __init__(self, root: Path) -> None:
        self.info = json.loads((root / "meta/info.json").read_text())
        tasks = pd.read_parquet(root / "meta/tasks.parquet").sort_values("task_index")
        self.tasks = [str(task) for task in tasks.index]
        episode_files = sorted((root / "meta/episodes").glob("*/*.parquet"))
        episodes = pa.concat_tables([pq.read_table(path) for path in episode_files])
        schema = episodes_schema()
        missing = [name for name in schema.names if name not in episodes.column_names]
        if missing:
            raise DatasetError(f"{root}: meta/episodes lacks {missing[:5]}{' ...' if len(missing) > 5 else ''}: "
                               "cannot append to it")
        episodes = episodes.select(schema.names).cast(schema)
        # All episodes go to one rewritten meta/episodes file, whatever files they were in.
        zeros = pa.array(np.zeros(episodes.num_rows, dtype=np.int64))
        for name in ("meta/episodes/chunk_index", "meta/episodes/file_index"):
            episodes = episodes.set_column(schema.get_field_index(name), name, zeros)
        self.episodes = episodes
        data_files = sorted((root / "data").glob("*/*.parquet"))
        data = pa.concat_tables([pq.read_table(path, columns=[*VECTOR_KEYS, *DEFAULT_FEATURES]) for path in data_files])
        self.columns = {key: data.column(key).combine_chunks() for key in data.column_names}
        self.stats = json.loads((root / "meta/stats.json").read_text())
        provenance_path = root / PROVENANCE_PATH
        self.provenance = json.loads(provenance_path.read_text()) if provenance_path.exists() else None
        self.last_data_file = max((int(p.parent.name.split("-")[1]), int(p.stem.split("-")[1])) for p in data_files)
        self.last_video_file = {}
        for key in VIDEO_KEYS:
            files = (root / "videos" / key).glob("*/*.mp4")
            self.last_video_file[key] = max((int(p.parent.name.split("-")[1]), int(p.stem.split("-")[1]))
                                            for p in files)

    @property
    def num_episodes(self) -> int:
        return self.episodes.num_rows

    @property
    def num_frames(self) -> int:
        return len(self.columns["index"])

    def vectors(self, key: str) -> np.ndarray:
        column = self.columns[key]
        if pa.types.is_fixed_size_list(column.type) or pa.types.is_list(column.type):
            return np.asarray(column.flatten().to_numpy(zero_copy_only=False)).reshape(len(column), -1)
        return column.to_numpy(zero_copy_only=False).reshape(-1, 1)


def _differences(info: dict, fps: int, image_size: tuple[int, int], codec: str, robot_type: str) -> list[str]:
    found = []
    if info.get("fps") != fps:
        found.append(f"fps {info.get('fps')} (this writer: {fps})")
    if info.get("robot_type") != robot_type:
        found.append(f"robot_type {info.get('robot_type')!r} (this writer: {robot_type!r})")
    features = info.get("features", {})
    expected = feature_spec(fps, image_size)
    if set(features) != set(expected):
        found.append(f"features {sorted(features)} (this writer: {sorted(expected)})")
    for key, spec in expected.items():
        if key not in features:
            continue
        if (features[key].get("dtype"), list(features[key].get("shape", []))) != (spec["dtype"], spec["shape"]):
            what = "image size (height, width, channels)" if key in VIDEO_KEYS else "dtype/shape"
            found.append(f"{key} {what} {features[key].get('dtype')} {features[key].get('shape')} "
                         f"(this writer: {spec['dtype']} {spec['shape']})")
        if key in VIDEO_KEYS:
            stored = features[key].get("info", {}).get("video.codec")
            if stored is not None and stored != codec:
                found.append(f"{key} codec {stored} (this writer: {codec})")
    return found


class DatasetWriter:
    """Collects StagedEpisodes and publishes them as one LeRobot v3.0 dataset in finalize().

    As a context manager: an exception inside (or leaving without finalize) aborts, removing
    the partial directory; a finalize whose final check fails keeps it for inspection.
    """

    def __init__(self, root: str | Path, *, fps: int, image_size: tuple[int, int], codec: str = "av1",
                 robot_type: str = "anubis", resume: bool = False) -> None:
        if codec not in CODECS:
            raise DatasetError(f"unknown codec {codec!r}, expected one of {sorted(CODECS)}")
        if fps <= 0 or int(fps) != fps:
            raise DatasetError(f"fps must be a positive integer, got {fps}")
        height, width = image_size
        if height <= 0 or width <= 0 or height % 2 or width % 2:
            raise DatasetError(f"image size {height}x{width} must be positive and even")
        self.root = Path(root)
        self.fps, self.image_size, self.codec, self.robot_type = int(fps), (int(height), int(width)), codec, robot_type
        self.partial_dir = self.root.parent / f".{self.root.name}.partial"
        self.old_dir = self.root.parent / f".{self.root.name}.old"
        self.notes: list[str] = []
        self._pending: list[_Pending] = []
        self._tasks: list[str] = []
        self._state = "open"
        self._recover_interrupted_swap()

        self._existing: _Existing | None = None
        if resume:
            self._existing = self._open_existing()
            self._tasks = list(self._existing.tasks)
        elif self.root.exists() and (not self.root.is_dir() or any(self.root.iterdir())):
            raise DatasetError(f"{self.root} exists; --resume to append")

        if self.partial_dir.exists():
            shutil.rmtree(self.partial_dir)
            self._note(f"removed {self.partial_dir}, left by an earlier writer that did not finish")
        self.partial_dir.mkdir(parents=True)
        self.staging_dir.mkdir()
        if self._existing is not None:
            self._link_existing_files()

    # --- setup -------------------------------------------------------------------------------

    def _note(self, text: str) -> None:
        self.notes.append(text)
        log.warning(text)

    def _recover_interrupted_swap(self) -> None:
        """A crash between the two renames of a resume's swap leaves `.<name>.old` and no
        dataset: the old version is still the valid one."""
        if not self.old_dir.exists():
            return
        if self.root.exists():
            shutil.rmtree(self.old_dir)
            self._note(f"removed {self.old_dir}, the previous version left by an interrupted swap")
        else:
            self.old_dir.rename(self.root)
            self._note(f"restored {self.root} from {self.old_dir} (a resume was interrupted while swapping)")

    def _open_existing(self) -> _Existing:
        if not (self.root / "meta/info.json").exists():
            raise DatasetError(f"{self.root}: no dataset to resume (no meta/info.json)")
        check = check_dataset(self.root, decode=False)
        if not check.ok:
            raise DatasetError(f"{self.root}: cannot resume an invalid dataset:\n  " + "\n  ".join(check.problems))
        existing = _Existing(self.root)
        differences = _differences(existing.info, self.fps, self.image_size, self.codec, self.robot_type)
        if differences:
            raise DatasetError(f"{self.root}: cannot resume, the dataset differs from this writer's settings:\n  "
                               + "\n  ".join(differences))
        return existing

    def _link_existing_files(self) -> None:
        for folder in ("data", "videos"):
            for source in sorted((self.root / folder).rglob("*")):
                if not source.is_file():
                    continue
                target = self.partial_dir / source.relative_to(self.root)
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(source, target)
                except OSError:
                    shutil.copy2(source, target)

    @property
    def existing_sources(self) -> list[str]:
        """The sources (bags) of the episodes already in a resumed dataset, as its provenance
        file records them; empty for a new dataset."""
        provenance = self._existing.provenance if self._existing is not None else None
        return [episode["source"] for episode in (provenance or {}).get("episodes", [])]

    @property
    def staging_dir(self) -> Path:
        """Where converter workers put per-episode mp4s; removed by finalize."""
        return self.partial_dir / ".staging"

    # --- adding ------------------------------------------------------------------------------

    def _require_open(self) -> None:
        if self._state != "open":
            raise DatasetError(f"{self.root}: the writer is {self._state}")

    def add(self, episode: StagedEpisode) -> int:
        """Validates one episode and assigns it the next episode index."""
        self._require_open()
        where = f"episode from {episode.source}"
        for name in ("state", "action"):
            values = getattr(episode, name)
            if not np.all(np.isfinite(values)):
                raise DatasetError(f"{where}: {name} has non-finite values")
        if episode.length == 0:
            raise DatasetError(f"{where}: no frames")
        if set(episode.videos) != set(VIDEO_KEYS):
            raise DatasetError(f"{where}: videos for {sorted(episode.videos)}, expected {sorted(VIDEO_KEYS)}")
        if set(episode.image_stats) != set(VIDEO_KEYS):
            raise DatasetError(f"{where}: image stats for {sorted(episode.image_stats)}, expected {sorted(VIDEO_KEYS)}")
        video_bytes = {}
        for key in VIDEO_KEYS:
            path = Path(episode.videos[key])
            if not path.is_file():
                raise DatasetError(f"{where}: {key} video {path} does not exist")
            info = probe_video(path)
            wrong = []
            if info.frames != episode.length:
                wrong.append(f"{info.frames} frames (episode length {episode.length})")
            if (info.height, info.width) != self.image_size:
                wrong.append(f"size {info.height}x{info.width} (dataset {self.image_size[0]}x{self.image_size[1]})")
            if info.codec != self.codec:
                wrong.append(f"codec {info.codec} (dataset {self.codec})")
            if abs(info.fps - self.fps) > 1e-6:
                wrong.append(f"fps {info.fps:g} (dataset {self.fps})")
            if info.pix_fmt != "yuv420p":
                wrong.append(f"pix_fmt {info.pix_fmt} (dataset yuv420p)")
            if wrong:
                raise DatasetError(f"{where}: {key} video {path}: " + ", ".join(wrong))
            video_bytes[key] = path.stat().st_size
            _validate_image_stats(episode.image_stats[key], f"{where}: {key} image stats")
        if episode.task not in self._tasks:
            self._tasks.append(episode.task)
        index = self._first_new_episode + len(self._pending)
        self._pending.append(_Pending(episode=episode, index=index, task_index=self._tasks.index(episode.task),
                                      video_bytes=video_bytes))
        return index

    @property
    def _first_new_episode(self) -> int:
        return self._existing.num_episodes if self._existing is not None else 0

    # --- finalize ----------------------------------------------------------------------------

    def finalize(self, progress: Progress | None = None) -> DatasetSummary:
        """Writes data, videos and metadata, checks the result and publishes it as `root`."""
        self._require_open()
        if not self._pending and self._existing is None:
            raise DatasetError(f"{self.root}: no episodes to write")
        report = progress or (lambda stage, done, total: None)
        self._state = "finalizing"
        video_spans = {key: self._write_videos(key, report) for key in VIDEO_KEYS}
        data_files, frame_offsets = self._write_data(report)
        rows = self._episode_rows(data_files, frame_offsets, video_spans, report)
        self._write_meta(rows, report)

        report("check", 0, 1)
        check = check_dataset(self.partial_dir, decode=True)
        report("check", 1, 1)
        if not check.ok:
            self._state = "failed its check"
            raise DatasetError(f"{self.root}: the written dataset fails its check (kept in {self.partial_dir}):\n  "
                               + "\n  ".join(check.problems))
        shutil.rmtree(self.staging_dir)
        self._publish()
        self._state = "finalized"
        return DatasetSummary(root=self.root, episodes=check.episodes, frames=check.frames,
                              new_episodes=len(self._pending), tasks=list(self._tasks),
                              size_bytes=sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file()))

    def _write_videos(self, key: str, report: Progress) -> list[tuple[int, int, float, float]]:
        """Concatenates the new episodes' mp4s of one camera; (chunk, file, from, to) per episode."""
        stage = f"concatenate {key}"
        report(stage, 0, len(self._pending))
        if self._existing is not None:
            position = next_file(*self._existing.last_video_file[key])
        else:
            position = (0, 0)
        groups: list[tuple[tuple[int, int], list[_Pending]]] = []
        size = 0
        for pending in self._pending:
            if groups and size + pending.video_bytes[key] <= VIDEO_FILES_SIZE_MB * MEGABYTE:
                groups[-1][1].append(pending)
                size += pending.video_bytes[key]
            else:
                if groups:
                    position = next_file(*position)
                groups.append((position, [pending]))
                size = pending.video_bytes[key]
        spans: list[tuple[int, int, float, float]] = []
        for (chunk_index, file_index), members in groups:
            output = self.partial_dir / VIDEO_PATH.format(video_key=key, chunk_index=chunk_index, file_index=file_index)
            done_before = len(spans)
            joined = concatenate_videos([Path(p.episode.videos[key]) for p in members], output,
                                        on_input_done=lambda n: report(stage, done_before + n, len(self._pending)))
            spans += [(chunk_index, file_index, start, end) for start, end in joined]
        return spans

    def _write_data(self, report: Progress) -> tuple[list[tuple[int, int]], list[int]]:
        """New data files; per new episode its (chunk, file) and first global frame index."""
        report("write data", 0, len(self._pending))
        schema = _data_schema()
        position = next_file(*self._existing.last_data_file) if self._existing is not None else (0, 0)
        next_frame = self._existing.num_frames if self._existing is not None else 0
        locations, offsets = [], []
        writer: pq.ParquetWriter | None = None
        written_bytes = 0
        try:
            for done, pending in enumerate(self._pending, start=1):
                table = self._episode_table(pending, next_frame, schema)
                if writer is not None and written_bytes + table.nbytes > DATA_FILES_SIZE_MB * MEGABYTE:
                    writer.close()
                    writer, position = None, next_file(*position)
                if writer is None:
                    path = self.partial_dir / DATA_PATH.format(chunk_index=position[0], file_index=position[1])
                    path.parent.mkdir(parents=True, exist_ok=True)
                    writer = pq.ParquetWriter(path, schema, compression="snappy")
                    written_bytes = 0
                writer.write_table(table, row_group_size=table.num_rows)
                written_bytes += table.nbytes
                locations.append(position)
                offsets.append(next_frame)
                next_frame += pending.episode.length
                report("write data", done, len(self._pending))
        finally:
            if writer is not None:
                writer.close()
        return locations, offsets

    def _episode_table(self, pending: _Pending, first_frame: int, schema: pa.Schema) -> pa.Table:
        length = pending.episode.length
        frame_index = np.arange(length, dtype=np.int64)
        columns = {key: pa.FixedSizeListArray.from_arrays(
            pa.array(np.ascontiguousarray(values, dtype=np.float32).ravel()), type=schema.field(key).type)
            for key, values in ((STATE_KEY, pending.episode.state), (ACTION_KEY, pending.episode.action))}
        columns["timestamp"] = pa.array(self._timestamps(length))
        columns["frame_index"] = pa.array(frame_index)
        columns["episode_index"] = pa.array(np.full(length, pending.index, dtype=np.int64))
        columns["index"] = pa.array(first_frame + frame_index)
        columns["task_index"] = pa.array(np.full(length, pending.task_index, dtype=np.int64))
        return pa.Table.from_pydict(columns, schema=schema)

    def _timestamps(self, length: int) -> np.ndarray:
        # In float64 first: lerobot matches video frames at from_timestamp + timestamp within 1e-4 s.
        return (np.arange(length, dtype=np.float64) / self.fps).astype(np.float32)

    def _default_columns(self, pending: _Pending, first_frame: int) -> dict[str, np.ndarray]:
        length = pending.episode.length
        return {
            "timestamp": self._timestamps(length).reshape(-1, 1),
            "frame_index": np.arange(length, dtype=np.int64).reshape(-1, 1),
            "episode_index": np.full((length, 1), pending.index, dtype=np.int64),
            "index": (first_frame + np.arange(length, dtype=np.int64)).reshape(-1, 1),
            "task_index": np.full((length, 1), pending.task_index, dtype=np.int64),
        }

    def _episode_rows(self, data_files: list[tuple[int, int]], frame_offsets: list[int],
                      video_spans: dict[str, list[tuple[int, int, float, float]]], report: Progress) -> pa.Table:
        schema = episodes_schema()
        rows: dict[str, list] = {name: [] for name in schema.names}
        report("stats", 0, len(self._pending) + 1)
        for done, (pending, (chunk_index, file_index), first_frame) in enumerate(
                zip(self._pending, data_files, frame_offsets), start=1):
            episode = pending.episode
            values = {
                "episode_index": pending.index, "tasks": [episode.task], "length": episode.length,
                "data/chunk_index": chunk_index, "data/file_index": file_index,
                "dataset_from_index": first_frame, "dataset_to_index": first_frame + episode.length,
                "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0,
            }
            for key in VIDEO_KEYS:
                video_chunk, video_file, start, end = video_spans[key][done - 1]
                values.update({f"videos/{key}/chunk_index": video_chunk, f"videos/{key}/file_index": video_file,
                               f"videos/{key}/from_timestamp": start, f"videos/{key}/to_timestamp": end})
            feature_stats = {STATE_KEY: vector_stats(episode.state), ACTION_KEY: vector_stats(episode.action),
                             **{key: episode.image_stats[key] for key in VIDEO_KEYS},
                             **{key: vector_stats(column)
                                for key, column in self._default_columns(pending, first_frame).items()}}
            for feature, stats in feature_stats.items():
                for stat in STAT_FIELDS:
                    values[f"stats/{feature}/{stat}"] = np.asarray(stats[stat]).tolist()
            for name in schema.names:
                rows[name].append(values[name])
            report("stats", done, len(self._pending) + 1)
        new_rows = pa.Table.from_pydict(rows, schema=schema)
        if self._existing is None:
            return new_rows
        return pa.concat_tables([self._existing.episodes, new_rows])

    def _all_frames(self, key: str) -> np.ndarray:
        """One feature over every frame of the new version (existing frames first)."""
        parts = [self._existing.vectors(key)] if self._existing is not None else []
        if key in VECTOR_KEYS:
            parts += [getattr(p.episode, "state" if key == STATE_KEY else "action") for p in self._pending]
        else:
            first_frame = self._existing.num_frames if self._existing is not None else 0
            for pending in self._pending:
                parts.append(self._default_columns(pending, first_frame)[key])
                first_frame += pending.episode.length
        return np.concatenate(parts)

    def _write_meta(self, episodes: pa.Table, report: Progress) -> None:
        meta = self.partial_dir / "meta"
        meta.mkdir(exist_ok=True)
        num_episodes = episodes.num_rows
        dataset_stats = {key: vector_stats(self._all_frames(key)) for key in (*VECTOR_KEYS, *DEFAULT_FEATURES)}
        for key in VIDEO_KEYS:
            per_episode = [p.episode.image_stats[key] for p in self._pending]
            if self._existing is not None:
                # Pooling is associative: the old dataset's camera stats count as one block.
                per_episode.insert(0, {name: np.asarray(value) for name, value in self._existing.stats[key].items()})
            dataset_stats[key] = aggregate_image_stats(per_episode)
        ordered_stats = {key: stats_to_json(dataset_stats[key])
                         for key in (*VECTOR_KEYS, *VIDEO_KEYS, *DEFAULT_FEATURES)}
        (meta / "stats.json").write_text(json.dumps(ordered_stats, indent=4))
        report("stats", len(self._pending) + 1, len(self._pending) + 1)

        total_frames = int(dataset_stats["index"]["count"][0])
        video_info = {key: self._video_info(key) for key in VIDEO_KEYS}
        info = {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": self.robot_type,
            "total_episodes": num_episodes,
            "total_frames": total_frames,
            "total_tasks": len(self._tasks),
            "chunks_size": CHUNKS_SIZE,
            "data_files_size_in_mb": DATA_FILES_SIZE_MB,
            "video_files_size_in_mb": VIDEO_FILES_SIZE_MB,
            "fps": self.fps,
            "splits": {"train": f"0:{num_episodes}"},
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH,
            "features": feature_spec(self.fps, self.image_size, video_info),
        }
        (meta / "info.json").write_text(json.dumps(info, indent=4))

        tasks = pd.DataFrame({"task_index": np.arange(len(self._tasks), dtype=np.int64)},
                             index=pd.Index(self._tasks, name="task"))
        # lerobot reads the task strings from the pandas index (sample["task"] = tasks.iloc[i].name).
        tasks.to_parquet(meta / "tasks.parquet")

        episodes_path = self.partial_dir / EPISODES_PATH.format(chunk_index=0, file_index=0)
        episodes_path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(episodes, episodes_path, compression="snappy")

        statistics = dataset_statistics(self._all_frames(STATE_KEY), self._all_frames(ACTION_KEY),
                                        unnorm_key=self.root.name, num_trajectories=num_episodes)
        (self.partial_dir / "dataset_statistics.json").write_text(json.dumps(statistics, indent=4))
        (self.partial_dir / PROVENANCE_PATH).write_text(json.dumps(self._provenance(), indent=2))

    def _video_info(self, key: str) -> dict:
        if self._pending:
            probed = probe_video(self._pending[0].episode.videos[key])
            pix_fmt = probed.pix_fmt
        else:
            pix_fmt = self._existing.info["features"][key]["info"]["video.pix_fmt"]
        height, width = self.image_size
        return {"video.height": height, "video.width": width, "video.codec": self.codec, "video.pix_fmt": pix_fmt,
                "video.is_depth_map": False, "video.fps": self.fps, "video.channels": 3, "has_audio": False}

    def _provenance(self) -> dict:
        """Our own record of where each episode came from (lerobot ignores extra meta files)."""
        earlier = self._existing.provenance if self._existing is not None else None
        earlier = earlier or {"sessions": [], "episodes": []}
        session = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   "converter_version": __version__,
                   "episodes": [p.index for p in self._pending]}
        episodes = [{"episode_index": p.index, "source": p.episode.source, "report": p.episode.report}
                    for p in self._pending]
        return {"sessions": earlier["sessions"] + [session], "episodes": earlier["episodes"] + episodes}

    def _publish(self) -> None:
        if self._existing is not None:
            self.root.rename(self.old_dir)
            self.partial_dir.rename(self.root)
            shutil.rmtree(self.old_dir)
            return
        if self.root.exists():          # an empty directory (checked in __init__)
            self.root.rmdir()
        self.partial_dir.rename(self.root)

    # --- abort -------------------------------------------------------------------------------

    def abort(self) -> None:
        """Drops everything this writer built; `root` stays as it was."""
        if self._state == "finalized":
            return
        shutil.rmtree(self.partial_dir, ignore_errors=True)
        self._state = "aborted"

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._state in ("finalized", "aborted", "failed its check"):
            return
        if exc_type is None:
            self._note(f"{self.root}: writer closed without finalize(); nothing published")
        self.abort()


def _validate_image_stats(stats: dict, where: str) -> None:
    missing = [name for name in STAT_FIELDS if name not in stats]
    if missing:
        raise DatasetError(f"{where}: missing {missing}")
    for name in STAT_FIELDS:
        value = np.asarray(stats[name])
        expected = (1,) if name == "count" else (3, 1, 1)
        if value.shape != expected or not np.all(np.isfinite(value)):
            raise DatasetError(f"{where}: {name} is {value.shape} {value.ravel()[:3]}, expected finite {expected}")
