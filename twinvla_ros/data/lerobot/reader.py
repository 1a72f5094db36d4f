"""The project's own LeRobot v3.0 reader: what fine-tuning trains on, without lerobot or torch.

It reads any v3.0 dataset that has TwinVLA's keys, ours or one written by lerobot itself, the
way lerobot 0.4.0's `LeRobotDataset` does:
- data rows are addressed by global position: every `data/*/*.parquet` in path order, one
  after the other; an episode is the rows [dataset_from_index, dataset_to_index) of its row in
  `meta/episodes/*/*.parquet` (also in path order; episode_index must equal that row);
- a frame of camera K is the one at `videos/K/from_timestamp` + the row's `timestamp` in the
  mp4 named by `videos/K/{chunk_index,file_index}` (within 1e-4 s), so episodes may start in
  the middle of a file, several per file, in any number of files and chunks;
- the task string of a row is `meta/tasks.parquet`'s pandas index at its task_index;
- the action chunk of frame i is the actions at i .. i+H-1 of the same episode; past the
  episode's end the last action repeats and `action_is_pad` is True (lerobot's
  delta_timestamps semantics; TwinVLA ignores the mask, our training should not).

Video is decoded with PyAV. Decoding one frame per sample means a seek and a GOP of decoding
for every camera and sample, so samples come from whole decoded episodes held in a small LRU
cache: `episode(e)` decodes each camera's segment of episode e once. The cache pays off when
samples are drawn episode by episode (shuffle the order of episodes, then the windows inside
each); drawing frames uniformly over the whole dataset decodes a whole episode per sample.
One cached episode holds length x cameras x H x W x 3 bytes of images (400 frames of three
240x320 cameras: 276 MB) plus 160 bytes of state and action per frame. A `frame_transform`
maps each camera's decoded (L, H, W, 3) frames before they are cached: training resizes them to
the model's input there (what the model would do to every sample anyway), so the same memory
holds more episodes.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from twinvla_ros.data.lerobot.format import (ACTION_KEY, CODEBASE_VERSION, IMAGE_KEYS, STATE_KEY, VIDEO_PATH,
                                             DatasetError)
from twinvla_ros.data.lerobot.video import TIMESTAMP_TOLERANCE_S, decode_frames
from twinvla_ros.robot.bimanual import BIMANUAL_DIM

VECTOR_KEYS = (STATE_KEY, ACTION_KEY)
ROW_COLUMNS = ("timestamp", "frame_index", "episode_index", "task_index")


def _vectors(table: pa.Table, key: str, where: Path) -> np.ndarray:
    """A list column of BIMANUAL_DIM numbers per row as (rows, BIMANUAL_DIM) float32."""
    column = table.column(key).combine_chunks()
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)
            or pa.types.is_fixed_size_list(column.type)):
        raise DatasetError(f"{where}: column {key} is {column.type}, expected a list of {BIMANUAL_DIM} numbers")
    lengths = pc.fill_null(pc.list_value_length(column), -1).to_numpy()
    if np.any(lengths != BIMANUAL_DIM):
        bad = int(np.flatnonzero(lengths != BIMANUAL_DIM)[0])
        raise DatasetError(f"{where}: column {key} row {bad} does not hold {BIMANUAL_DIM} values")
    values = pc.list_flatten(column).to_numpy(zero_copy_only=False)
    return values.astype(np.float32, copy=False).reshape(-1, BIMANUAL_DIM)


def read_info(root: str | Path, image_keys: tuple[str, ...] = tuple(IMAGE_KEYS.values())) -> dict:
    """meta/info.json of the dataset at `root`, after checking that it is v3.0 and has what
    TwinVLA reads (state, action, the cameras `image_keys`) with the right shapes; a
    DatasetError names what is wrong and what the dataset has instead."""
    root = Path(root)
    path = root / "meta" / "info.json"
    if not path.is_file():
        raise DatasetError(f"{root}: no meta/info.json: not a LeRobot v3.0 dataset "
                           "(make one from episode bags with `twinvla-ros convert`)")
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DatasetError(f"{path}: not JSON: {error}") from error
    if info.get("codebase_version") != CODEBASE_VERSION:
        raise DatasetError(f"{path}: codebase_version {info.get('codebase_version')!r}, "
                           f"this reader reads {CODEBASE_VERSION!r}")
    for key in ("fps", "features", "total_frames", "total_episodes"):
        if key not in info:
            raise DatasetError(f"{path}: no {key!r}")
    features = info["features"]
    missing = [key for key in (*VECTOR_KEYS, *ROW_COLUMNS, *image_keys) if key not in features]
    if missing:
        raise DatasetError(f"{path}: features {missing} missing: the dataset lacks {', '.join(missing)}; TwinVLA "
                           f"needs {list(VECTOR_KEYS)} and the cameras {list(image_keys)} "
                           f"(the dataset has: {', '.join(features)})")
    wrong = [f"{key} has shape {features[key].get('shape')}, expected [{BIMANUAL_DIM}] ([L xyz, L 6D, L gripper, "
             "R xyz, R 6D, R gripper])" for key in VECTOR_KEYS if list(features[key].get("shape", [])) != [BIMANUAL_DIM]]
    wrong += [f"{key} is {features[key].get('dtype')!r}, expected 'video'" for key in image_keys
              if features[key].get("dtype") != "video"]
    if wrong:
        raise DatasetError(f"{path}: " + "; ".join(wrong))
    return info


class LeRobotEpisodes:
    """A LeRobot v3.0 dataset as samples (`dataset[i]`) and as whole episodes (`episode(e)`).

    Attributes: root, info (info.json), fps, num_episodes, num_frames, tasks (by task_index),
    stats (meta/stats.json as {feature: {stat: float64 array}}, None without the file),
    episode_lengths and episode_starts (global index of each episode's first frame), image_keys,
    image_sizes ({key: (height, width)}; cameras may differ).
    """

    def __init__(self, root: str | Path, *, action_horizon: int = 20,
                 image_keys: tuple[str, ...] = tuple(IMAGE_KEYS.values()), load_images: bool = True,
                 cached_episodes: int = 2,
                 frame_transform: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        if action_horizon < 1:
            raise ValueError(f"action_horizon must be at least 1, got {action_horizon}")
        if cached_episodes < 1:
            raise ValueError(f"cached_episodes must be at least 1, got {cached_episodes}")
        self.frame_transform = frame_transform
        self.root = Path(root)
        self.action_horizon = action_horizon
        self.image_keys = tuple(image_keys)
        self.load_images = load_images
        self._cache: OrderedDict[int, dict] = OrderedDict()
        self.cached_episodes = cached_episodes   # the LRU cache size; training sets it to a memory budget

        self.info = read_info(self.root, self.image_keys)
        self.fps = int(self.info["fps"])
        self.image_sizes = {key: tuple(int(n) for n in self.info["features"][key]["shape"][:2])
                            for key in self.image_keys}
        self.tasks = self._read_tasks()
        self._read_episodes()
        self._read_data()
        self.stats = self._read_stats()

    # --- metadata ----------------------------------------------------------------------------

    def _read_tasks(self) -> list[str]:
        path = self.root / "meta" / "tasks.parquet"
        if not path.is_file():
            raise DatasetError(f"{self.root}: no meta/tasks.parquet")
        frame = pd.read_parquet(path)
        if "task_index" not in frame.columns:
            raise DatasetError(f"{path}: no task_index column")
        if not all(isinstance(task, str) for task in frame.index):
            # lerobot takes the task from the pandas index: such a file gives integer tasks.
            raise DatasetError(f"{path}: the task strings must be the pandas index (found {list(frame.index)[:3]})")
        frame = frame.sort_values("task_index")
        if not np.array_equal(frame["task_index"].to_numpy(), np.arange(len(frame))):
            raise DatasetError(f"{path}: task_index must be 0..{len(frame) - 1}, "
                               f"got {frame['task_index'].tolist()}")
        return [str(task) for task in frame.index]

    def _read_episodes(self) -> None:
        files = sorted((self.root / "meta" / "episodes").glob("*/*.parquet"))
        if not files:
            raise DatasetError(f"{self.root}: no meta/episodes/*/*.parquet")
        columns = ["episode_index", "length", "dataset_from_index", "dataset_to_index"]
        for key in self.image_keys:
            columns += [f"videos/{key}/chunk_index", f"videos/{key}/file_index", f"videos/{key}/from_timestamp"]
        tables = []
        for path in files:
            names = pq.read_schema(path).names
            missing = [column for column in columns if column not in names]
            if missing:
                raise DatasetError(f"{path}: columns {missing} missing")
            tables.append(pq.read_table(path, columns=columns))
        episodes = pa.concat_tables(tables).to_pandas()
        where = self.root / "meta" / "episodes"
        if not np.array_equal(episodes["episode_index"].to_numpy(), np.arange(len(episodes))):
            raise DatasetError(f"{where}: episode_index must equal the row (0..{len(episodes) - 1}) in path order")
        if len(episodes) != int(self.info["total_episodes"]):
            raise DatasetError(f"{where}: {len(episodes)} episodes, info.json says total_episodes "
                               f"{self.info['total_episodes']}")
        starts = episodes["dataset_from_index"].to_numpy(np.int64)
        ends = episodes["dataset_to_index"].to_numpy(np.int64)
        lengths = episodes["length"].to_numpy(np.int64)
        bad = np.flatnonzero((ends - starts != lengths) | (lengths < 1))
        if bad.size:
            e = int(bad[0])
            raise DatasetError(f"{where}: episode {e}: rows [{starts[e]}, {ends[e]}) but length {lengths[e]}")
        self.num_episodes = len(episodes)
        self.episode_starts = starts
        self.episode_lengths = lengths
        self._videos: dict[str, list[tuple[Path, float]]] = {}
        for key in self.image_keys:
            spans = []
            for chunk, file, start_s in zip(episodes[f"videos/{key}/chunk_index"], episodes[f"videos/{key}/file_index"],
                                            episodes[f"videos/{key}/from_timestamp"]):
                path = self.root / self.info.get("video_path", VIDEO_PATH).format(
                    video_key=key, chunk_index=int(chunk), file_index=int(file))
                spans.append((path, float(start_s)))
            self._videos[key] = spans
        for path in sorted({path for spans in self._videos.values() for path, _ in spans}):
            if not path.is_file():
                raise DatasetError(f"{self.root}: video {path.relative_to(self.root)} is referenced by "
                                   "meta/episodes but does not exist")

    def _read_data(self) -> None:
        files = sorted((self.root / "data").glob("*/*.parquet"))
        if not files:
            raise DatasetError(f"{self.root}: no data/*/*.parquet")
        vectors: dict[str, list[np.ndarray]] = {key: [] for key in VECTOR_KEYS}
        rows: dict[str, list[np.ndarray]] = {key: [] for key in ROW_COLUMNS}
        for path in files:
            names = pq.read_schema(path).names
            missing = [column for column in (*VECTOR_KEYS, *ROW_COLUMNS) if column not in names]
            if missing:
                raise DatasetError(f"{path}: columns {missing} missing")
            table = pq.read_table(path, columns=[*VECTOR_KEYS, *ROW_COLUMNS])
            for key in VECTOR_KEYS:
                vectors[key].append(_vectors(table, key, path))
            for key in ROW_COLUMNS:
                rows[key].append(table.column(key).to_numpy())
        self._state = np.concatenate(vectors[STATE_KEY])
        self._action = np.concatenate(vectors[ACTION_KEY])
        self._timestamp = np.concatenate(rows["timestamp"]).astype(np.float64)
        self._frame_index = np.concatenate(rows["frame_index"]).astype(np.int64)
        self._episode_index = np.concatenate(rows["episode_index"]).astype(np.int64)
        self._task_index = np.concatenate(rows["task_index"]).astype(np.int64)
        self.num_frames = len(self._state)
        where = self.root / "data"
        if self.num_frames != int(self.info["total_frames"]):
            # lerobot would silently drop rows past total_frames or fail with an IndexError.
            raise DatasetError(f"{where}: {self.num_frames} rows, info.json says total_frames "
                               f"{self.info['total_frames']}")
        if self.num_episodes and self.episode_starts[-1] + self.episode_lengths[-1] != self.num_frames:
            raise DatasetError(f"{where}: {self.num_frames} rows, meta/episodes ends at row "
                               f"{self.episode_starts[-1] + self.episode_lengths[-1]}")
        expected = np.repeat(np.arange(self.num_episodes), self.episode_lengths)
        if len(expected) != self.num_frames or not np.array_equal(expected, self._episode_index):
            bad = int(np.flatnonzero(expected != self._episode_index)[0]) if len(expected) == self.num_frames else 0
            raise DatasetError(f"{where}: row {bad} has episode_index {self._episode_index[bad]}, meta/episodes "
                               "puts it elsewhere")
        if self._task_index.size and (self._task_index.min() < 0 or self._task_index.max() >= len(self.tasks)):
            raise DatasetError(f"{where}: task_index outside 0..{len(self.tasks) - 1} (meta/tasks.parquet)")

    def _read_stats(self) -> dict[str, dict[str, np.ndarray]] | None:
        path = self.root / "meta" / "stats.json"
        if not path.is_file():
            return None
        try:
            stats = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise DatasetError(f"{path}: not JSON: {error}") from error
        return {feature: {name: np.asarray(value, dtype=np.float64) for name, value in fields.items()}
                for feature, fields in stats.items()}

    # --- episodes ----------------------------------------------------------------------------

    def _check_episode(self, episode: int) -> int:
        if not 0 <= episode < self.num_episodes:
            raise DatasetError(f"{self.root}: episode {episode} out of range 0..{self.num_episodes - 1}")
        return int(episode)

    def episode_task(self, episode: int) -> str:
        episode = self._check_episode(episode)
        return self.tasks[self._task_index[self.episode_starts[episode]]]

    def episode(self, episode: int) -> dict:
        """Episode e whole: state and action (L, 20) float32, images {key: (L, H, W, 3) uint8}
        (empty without load_images), timestamp (L,), frame_index (L,), task, episode_index.
        The arrays are read-only (they live in the cache)."""
        episode = self._check_episode(episode)
        if episode in self._cache:
            self._cache.move_to_end(episode)
            return self._cache[episode]
        rows = slice(self.episode_starts[episode], self.episode_starts[episode] + self.episode_lengths[episode])
        timestamps = self._timestamp[rows]
        data = {
            "state": self._state[rows], "action": self._action[rows], "timestamp": timestamps,
            "frame_index": self._frame_index[rows], "task": self.episode_task(episode), "episode_index": episode,
            "images": {key: self._decode(key, episode, timestamps) for key in self.image_keys}
            if self.load_images else {},
        }
        # Cached and shared by every sample of the episode: read-only, so no caller can alter it.
        for array in (data["state"], data["action"], data["timestamp"], data["frame_index"], *data["images"].values()):
            array.flags.writeable = False
        self._cache[episode] = data
        while len(self._cache) > self.cached_episodes:
            self._cache.popitem(last=False)
        return data

    def _decode(self, key: str, episode: int, timestamps: np.ndarray) -> np.ndarray:
        path, from_s = self._videos[key][episode]
        # One forward decode of the segment assumes the rows sit on the 1/fps grid, as
        # lerobot's lookup (within 1e-4 s of a decoded frame) effectively requires.
        off_grid = np.abs(timestamps - timestamps[0] - np.arange(len(timestamps)) / self.fps) > TIMESTAMP_TOLERANCE_S
        if off_grid.any():
            row = int(np.flatnonzero(off_grid)[0])
            raise DatasetError(f"{self.root}: episode {episode} frame {row}: timestamp {timestamps[row]:.6f} s is "
                               f"not on the 1/{self.fps} s grid from {timestamps[0]:.6f} s")
        try:
            frames = decode_frames(path, from_s + float(timestamps[0]), len(timestamps), self.fps)
        except DatasetError as error:
            raise DatasetError(f"episode {episode}, {key}: {error}") from error
        if frames.shape[1:3] != self.image_sizes[key]:
            height, width = self.image_sizes[key]
            raise DatasetError(f"{path}: frames are {frames.shape[1]}x{frames.shape[2]}, info.json says "
                               f"{height}x{width} for {key}")
        return frames if self.frame_transform is None else self.frame_transform(frames)

    # --- samples -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.num_frames

    def __getitem__(self, index: int) -> dict:
        """Frame `index` (global): state (20,), action (H, 20), action_is_pad (H,), images
        {key: (H_img, W_img, 3) uint8, or what frame_transform makes}, task, episode_index, frame_index, timestamp."""
        if index < 0:
            index += self.num_frames
        if not 0 <= index < self.num_frames:
            raise IndexError(f"frame {index} out of range for {self.num_frames} frames")
        episode_index = int(self._episode_index[index])
        episode = self.episode(episode_index)
        row = index - int(self.episode_starts[episode_index])
        steps = row + np.arange(self.action_horizon)
        length = int(self.episode_lengths[episode_index])
        return {
            "state": episode["state"][row].copy(),
            "action": episode["action"][np.minimum(steps, length - 1)],
            "action_is_pad": steps >= length,
            "images": {key: frames[row].copy() for key, frames in episode["images"].items()},
            "task": self.tasks[self._task_index[index]],
            "episode_index": episode_index,
            "frame_index": int(self._frame_index[index]),
            "timestamp": float(self._timestamp[index]),
        }
