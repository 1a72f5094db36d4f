"""Training batches from a LeRobot v3.0 dataset with TwinVLA's keys (what `twinvla-ros convert`
writes, or lerobot itself).

A sample is one frame: the three camera images, the 20-D state, the task text, and the 20-step
action chunk that starts at the frame (`action_is_pad` marks the steps past the episode's end,
where the reader repeats the last action). Its normalization is the model's
(`TwinVLAPolicy.training_inputs`: xyz by the dataset's q01/q99, clipped to [-1, 1]).

Order: the reader decodes whole episodes into a cache, so batches are drawn episode block by
episode block (a shuffled order of episodes, `episodes_per_block` at a time, their frames
shuffled together) instead of uniformly over the dataset, which would decode an episode per
sample. The cache holds frames at the model's input size and as many episodes as fit its memory
budget: a dataset that fits is one block, every batch a uniform draw from all of it (50 sim
demos of ~14 s at 20 fps, three 224x224 cameras: 6.5 GB); a larger one trains block after
block, where each batch sees only the block's episodes. The stream of batches is infinite and a
pure function of (seed, rank, position): a resumed run skips the batches it already trained on
without decoding them, and each process of a multi-process run draws its own stream.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from twinvla_ros.data.lerobot.format import IMAGE_KEYS, DatasetError
from twinvla_ros.data.lerobot.reader import LeRobotEpisodes
from twinvla_ros.model.inference import Observation, TwinVLAPolicy
from twinvla_ros.model.processing_twinvla import load_statistics, resize_frames

STATISTICS_FILE = "dataset_statistics.json"


def load_dataset_statistics(root: str | Path) -> dict:
    """The dataset's TwinVLA statistics ({unnorm_key: {action, proprio, ...}}), which the trained
    checkpoint ships as its own dataset_statistics.json."""
    path = Path(root) / STATISTICS_FILE
    if not path.is_file():
        raise DatasetError(f"{path}: missing; `twinvla-ros convert` writes it (q01/q99 of state and action)")
    statistics = load_statistics(root)
    if len(statistics) != 1:
        raise DatasetError(f"{path}: expected one unnorm_key, found {sorted(statistics)}")
    return statistics


@dataclass(frozen=True)
class Batch:
    observations: list[Observation]
    actions: np.ndarray            # (B, H, 20) robot units
    valid_steps: np.ndarray        # (B, H) bool: False past the episode's end


class EpisodeBlockSampler:
    """Global frame indices in batches, episode block by episode block (see the module text)."""

    def __init__(self, episode_starts: np.ndarray, episode_lengths: np.ndarray, batch_size: int, *,
                 seed: int = 0, rank: int = 0, episodes_per_block: int = 2) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.starts = np.asarray(episode_starts, dtype=np.int64)
        self.lengths = np.asarray(episode_lengths, dtype=np.int64)
        if len(self.starts) == 0 or self.lengths.sum() == 0:
            raise DatasetError("the dataset has no frames to train on")
        self.batch_size, self.seed, self.rank = batch_size, seed, rank
        self.episodes_per_block = max(1, episodes_per_block)

    def _epoch(self, epoch: int) -> np.ndarray:
        """Every frame once, in this epoch's block order; the tail that does not fill a batch is
        left for the next epoch's shuffle."""
        rng = np.random.default_rng([self.seed, self.rank, epoch])
        order = rng.permutation(len(self.starts))
        frames = []
        for first in range(0, len(order), self.episodes_per_block):
            block = order[first:first + self.episodes_per_block]
            indices = np.concatenate([self.starts[e] + np.arange(self.lengths[e]) for e in block])
            frames.append(rng.permutation(indices))
        frames = np.concatenate(frames)
        return frames[: len(frames) - len(frames) % self.batch_size] if len(frames) >= self.batch_size else frames

    def batches(self, skip: int = 0) -> Iterator[np.ndarray]:
        """The infinite stream of batches from position `skip` on."""
        epoch = 0
        while True:
            frames = self._epoch(epoch)
            if len(frames) < self.batch_size:         # a dataset smaller than one batch: repeat it
                frames = np.resize(frames, self.batch_size)
            count = len(frames) // self.batch_size
            if skip >= count:
                skip -= count
            else:
                for index in range(skip, count):
                    yield frames[index * self.batch_size:(index + 1) * self.batch_size]
                skip = 0
            epoch += 1


def episodes_that_fit(episode_lengths: np.ndarray, frame_bytes: int, cache_bytes: float) -> int:
    """How many episodes, the longest ones counted, fit in `cache_bytes` (at least one)."""
    longest_first = np.sort(np.asarray(episode_lengths, dtype=np.int64))[::-1]
    return max(1, int(np.searchsorted(np.cumsum(longest_first) * frame_bytes, cache_bytes, side="right")))


class TrainingBatches:
    """Batches of the dataset at `root` for a policy of horizon `horizon` that sees
    `image_size` x `image_size` images, from position `skip`; `cache_bytes` bounds the decoded
    frames held in memory."""

    def __init__(self, root: str | Path, *, horizon: int, batch_size: int, image_size: int, cache_bytes: float,
                 seed: int = 0, rank: int = 0) -> None:
        self.dataset = LeRobotEpisodes(root, action_horizon=horizon,
                                       frame_transform=lambda frames: resize_frames(frames, image_size))
        frame_bytes = len(IMAGE_KEYS) * image_size * image_size * 3
        self.episodes_per_block = episodes_that_fit(self.dataset.episode_lengths, frame_bytes, cache_bytes)
        self.dataset.cached_episodes = self.episodes_per_block
        self.sampler = EpisodeBlockSampler(self.dataset.episode_starts, self.dataset.episode_lengths, batch_size,
                                           seed=seed, rank=rank, episodes_per_block=self.episodes_per_block)

    def __iter__(self) -> Iterator[Batch]:
        return self.stream()

    def stream(self, skip: int = 0) -> Iterator[Batch]:
        for indices in self.sampler.batches(skip):
            samples = [self.dataset[int(i)] for i in indices]
            yield Batch(
                observations=[Observation(
                    instruction=s["task"],
                    image_ego=s["images"][IMAGE_KEYS["ego"]],
                    image_wrist_left=s["images"][IMAGE_KEYS["wrist_left"]],
                    image_wrist_right=s["images"][IMAGE_KEYS["wrist_right"]],
                    proprio=s["state"].astype(np.float64)) for s in samples],
                actions=np.stack([s["action"] for s in samples]).astype(np.float64),
                valid_steps=~np.stack([s["action_is_pad"] for s in samples]),
            )


def model_batch(policy: TwinVLAPolicy, batch: Batch):
    """(ModelInputs, normalized actions (B, H, 20), valid steps (B, H) bool tensor)."""
    inputs, target = policy.training_inputs(batch.observations, batch.actions)
    return inputs, target, torch.from_numpy(batch.valid_steps)
