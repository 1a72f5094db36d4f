"""Small LeRobot v3.0 datasets written by our own DatasetWriter, for the tests in this folder.

Everything that goes in is reproducible from a seed, so a test can compare what it reads
with what was written: episode k of `make_dataset(..., seed=s)` is made from seed s + k by
`episode_arrays` (state/action) and `frame_pixels` (every camera's frames). Frames are smooth
(codec error small) and their brightness steps with the frame index, so reading the frame
next to the right one fails a comparison.

Tests import this module (`import lerobot_datasets`); conftest.py turns it into fixtures.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from twinvla_ros.data.lerobot.format import IMAGE_KEYS, StagedEpisode
from twinvla_ros.data.lerobot.stats import ImageStatsAccumulator
from twinvla_ros.data.lerobot.video import VideoEncoder
from twinvla_ros.data.lerobot.writer import DatasetWriter
from twinvla_ros.robot.bimanual import BIMANUAL_DIM

IMAGE_SIZE = (64, 80)                     # (height, width)
LENGTHS = (25, 32, 40)
TASKS = ("lift the box", "hand over the box")
CAMERAS = tuple(IMAGE_KEYS.values())


def episode_arrays(seed: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Random but smooth (L, 20) float32 state and action (action leads state by a bit)."""
    rng = np.random.default_rng(seed)
    time = np.arange(length + 3)[:, None] / 20.0
    frequency = rng.uniform(0.2, 1.0, BIMANUAL_DIM)
    phase = rng.uniform(0, 2 * np.pi, BIMANUAL_DIM)
    amplitude = rng.uniform(0.05, 0.3, BIMANUAL_DIM)
    offset = rng.uniform(-0.5, 0.5, BIMANUAL_DIM)
    path = offset + amplitude * np.sin(2 * np.pi * frequency * time + phase)
    for gripper in (9, 19):
        path[:, gripper] = 0.5 + 0.5 * np.sin(2 * np.pi * frequency[gripper] * time[:, 0] + phase[gripper])
    return path[:length].astype(np.float32), path[3:].astype(np.float32)


def frame_pixels(seed: int, camera: int, frame_index: int, image_size: tuple[int, int] = IMAGE_SIZE) -> np.ndarray:
    """One smooth uint8 (H, W, 3) frame; red steps by 37 levels (mod 180) per frame index, far
    more than the codec's error, so the neighbouring frame never passes for this one."""
    height, width = image_size
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    level = 30 + (37 * frame_index + 40 * camera + 17 * seed) % 180
    red = np.full_like(x, level) + 20 * x / width
    green = 40 + 150 * x / width + 10 * camera
    blue = 60 + 120 * y / height + 3 * (seed % 10)
    return np.clip(np.stack([red, green, blue], axis=-1), 0, 255).astype(np.uint8)


def make_episode(directory: Path, *, seed: int, length: int, task: str, fps: int = 20,
                 image_size: tuple[int, int] = IMAGE_SIZE, codec: str = "av1") -> StagedEpisode:
    """A StagedEpisode with its three mp4s encoded into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    videos, image_stats = {}, {}
    for camera, key in enumerate(CAMERAS):
        path = directory / f"{key}.mp4"
        accumulator = ImageStatsAccumulator()
        with VideoEncoder(path, fps=fps, width=image_size[1], height=image_size[0], codec=codec) as encoder:
            for frame_index in range(length):
                frame = frame_pixels(seed, camera, frame_index, image_size)
                encoder.write(frame)
                accumulator.add(frame)
        videos[key], image_stats[key] = path, accumulator.result()
    state, action = episode_arrays(seed, length)
    return StagedEpisode(task=task, state=state, action=action, videos=videos, image_stats=image_stats,
                         source=f"bags/episode_{seed:04d}", report={"seed": seed, "skew_ms": 1.5})


def make_dataset(root: Path, episodes: int = 3, fps: int = 20, *, lengths: tuple[int, ...] | None = None,
                 tasks: tuple[str, ...] = TASKS, image_size: tuple[int, int] = IMAGE_SIZE, codec: str = "av1",
                 seed: int = 0, resume: bool = False) -> Path:
    """Writes (or with resume, appends) `episodes` episodes; episode k has seed seed + k, length
    lengths[k] (default cycling 25, 32, 40) and task tasks[k % len(tasks)]. Returns root."""
    lengths = lengths or tuple(LENGTHS[k % len(LENGTHS)] for k in range(episodes))
    with DatasetWriter(root, fps=fps, image_size=image_size, codec=codec, resume=resume) as writer:
        for k in range(episodes):
            writer.add(make_episode(writer.staging_dir / f"episode_{k}", seed=seed + k, length=lengths[k],
                                    task=tasks[k % len(tasks)], fps=fps, image_size=image_size, codec=codec))
        writer.finalize()
    return Path(root)
