"""LeRobotDataset v3.0 as TwinVLA reads it: the keys, the file layout and what one converted
episode hands to the dataset writer.

The facts (checked against the real lerobot 0.4.0 reader) that shape this package:
- `timestamp` is frame_index / fps exactly: video frames are looked up at
  from_timestamp + timestamp and must be within 1e-4 s of a decoded frame.
- `meta/tasks.parquet` holds the task strings as its pandas index (column `task_index`); a
  plain (task_index, task) table loads, and every sample's task silently becomes an integer.
- `info.total_frames` sets len(dataset); `episode_index` is the episode's row in meta/episodes;
  `index` is the global row number (never checked by the reader).
- A missing mp4 or metadata file sends lerobot to the Hugging Face Hub: a dataset is complete
  or it is not published at all.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from twinvla_ros.robot.bimanual import BIMANUAL_DIM

CODEBASE_VERSION = "v3.0"
STATE_KEY = "observation.state.ee_6d_pos"
ACTION_KEY = "action.ee_6d_pos"
# Topic camera name (robot.cameras.CAMERAS) -> TwinVLA's image feature key.
IMAGE_KEYS = {
    "ego": "observation.images.agentview",
    "wrist_left": "observation.images.wrist_left",
    "wrist_right": "observation.images.wrist_right",
}
TASK_KEY = "task"
DEFAULT_FEATURES = ("timestamp", "frame_index", "episode_index", "index", "task_index")

CHUNKS_SIZE = 1000
DATA_FILES_SIZE_MB = 100
VIDEO_FILES_SIZE_MB = 500
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"

# TwinVLA normalizes xyz only: [True]*3 + [False]*7 per arm.
XYZ_MASK = ([True] * 3 + [False] * 7) * 2
CODECS = {"av1": "libsvtav1", "h264": "libx264"}      # --codec -> the PyAV encoder


class DatasetError(RuntimeError):
    """A dataset that is not (or would not be) a valid LeRobot v3.0 dataset; the message says
    what is wrong and where."""


@dataclass
class StagedEpisode:
    """One converted episode, ready to be appended by the dataset writer.

    The per-episode videos are already encoded (one mp4 per camera key, exactly `length`
    frames at the dataset's fps, frame i shown at i / fps); the writer concatenates them into
    the dataset's video files without re-encoding.
    """

    task: str
    state: np.ndarray                       # (L, 20) float32, STATE_KEY
    action: np.ndarray                      # (L, 20) float32, ACTION_KEY
    videos: dict[str, Path]                 # {IMAGE_KEYS value: per-episode mp4}
    image_stats: dict[str, dict[str, np.ndarray]]   # {IMAGE_KEYS value: stats of sampled frames}
    source: str                             # the bag it came from
    report: dict = field(default_factory=dict)       # JSON-able conversion report (skew, gaps ...)

    def __post_init__(self) -> None:
        for name in ("state", "action"):
            value = getattr(self, name)
            if value.ndim != 2 or value.shape[1] != BIMANUAL_DIM:
                raise ValueError(f"{name} must be (L, {BIMANUAL_DIM}), got {value.shape}")
        if self.state.shape != self.action.shape:
            raise ValueError(f"state {self.state.shape} and action {self.action.shape} differ in length")
        if not self.task:
            raise ValueError("an episode needs a task")

    @property
    def length(self) -> int:
        return int(self.state.shape[0])
