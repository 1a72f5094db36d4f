"""Feature statistics in lerobot's field set: meta/stats.json, per-episode stats in
meta/episodes, and TwinVLA's dataset_statistics.json (which normalizes with q01/q99).

Fields: min, max, mean, std, count, q01, q10, q50, q90, q99. Our choices, where they differ
from lerobot 0.4.0:
- Vector and scalar features (state, action, timestamp, indices): the quantiles are TRUE
  GLOBAL quantiles over all frames (np.quantile, linear interpolation), not lerobot's
  count-weighted mean of per-episode quantiles (which can be far off: action q01 -2.29 where
  the true one is -2.57). Per-episode stats are the episode's own.
- std is the population std (ddof=0) everywhere, as in lerobot.
- Cameras: per episode, at most ~100 sampled frames, downsampled so the short side is at most
  150 px, values in [0, 1] per channel; std computed in float64 (lerobot 0.4.0 squares uint8
  and reports 0). Episodes are pooled exactly for min/max/mean/std; pixels are not kept, so
  the dataset's camera quantiles are the count-weighted mean of the episodes' (lerobot's way).
Shapes: vectors (D,), scalars (1,), count (1,) int64, cameras (3, 1, 1). For integer features
min/max stay int64 and the rest is float64 (the column types lerobot writes).
"""
from __future__ import annotations

import numpy as np

from twinvla_ros.data.lerobot.format import XYZ_MASK, DatasetError

QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
STAT_FIELDS = ("min", "max", "mean", "std", "count", *QUANTILES)

MAX_SAMPLED_FRAMES = 100
MAX_SHORT_SIDE_PX = 150
PIXEL_LEVELS = 256


def vector_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """Stats over the rows of an (N, D) array (N >= 1)."""
    values = np.asarray(values)
    if values.ndim != 2 or values.shape[0] == 0:
        raise DatasetError(f"stats need a non-empty (N, D) array, got shape {values.shape}")
    as_float = values.astype(np.float64)
    extreme_type = np.int64 if np.issubdtype(values.dtype, np.integer) else np.float64
    stats = {
        "min": values.min(axis=0).astype(extreme_type),
        "max": values.max(axis=0).astype(extreme_type),
        "mean": as_float.mean(axis=0),
        "std": as_float.std(axis=0),
        "count": np.array([values.shape[0]], dtype=np.int64),
    }
    quantiles = np.quantile(as_float, list(QUANTILES.values()), axis=0)
    stats.update({name: quantiles[k] for k, name in enumerate(QUANTILES)})
    return stats


def _quantiles_from_histogram(histogram: np.ndarray, fractions: list[float]) -> np.ndarray:
    """np.quantile's linear interpolation on the sorted values that a (levels,) histogram of
    integer levels stands for, without materializing them."""
    cumulative = np.cumsum(histogram)
    total = int(cumulative[-1])
    positions = np.asarray(fractions) * (total - 1)
    below = np.floor(positions).astype(np.int64)
    above = np.minimum(below + 1, total - 1)
    # The k-th sorted value (0-based) is the first level whose cumulative count exceeds k.
    low = np.searchsorted(cumulative, below, side="right")
    high = np.searchsorted(cumulative, above, side="right")
    return low + (positions - below) * (high - low)


class ImageStatsAccumulator:
    """Streaming stats of one camera over one episode, from sampled, downsampled frames.

    Frames are sampled every `stride`-th; whenever more than `max_frames` are kept, every other
    kept one is dropped and the stride doubles, so between max_frames / 2 and max_frames evenly
    spaced frames remain whatever the episode's length. Only a per-channel histogram of each
    sampled frame is kept (exact, since pixels are 8-bit), never the frames.
    """

    def __init__(self, max_frames: int = MAX_SAMPLED_FRAMES, max_short_side: int = MAX_SHORT_SIDE_PX) -> None:
        if max_frames < 2:
            raise ValueError("max_frames must be at least 2")
        self.max_frames = max_frames
        self.max_short_side = max_short_side
        self._stride = 1
        self._seen = 0
        self._histograms: list[np.ndarray] = []        # (3, 256) int64 per sampled frame
        self._shape: tuple[int, ...] | None = None

    def downsampled(self, frame: np.ndarray) -> np.ndarray:
        """The frame as sampled: every k-th pixel so that the short side is <= max_short_side."""
        step = -(-min(frame.shape[:2]) // self.max_short_side)
        return frame[::step, ::step]

    def add(self, frame: np.ndarray) -> None:
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise DatasetError(f"image stats take uint8 HxWx3 frames, got {frame.dtype} {frame.shape}")
        if self._shape is None:
            self._shape = frame.shape
        elif frame.shape != self._shape:
            raise DatasetError(f"frame {self._seen} is {frame.shape}, earlier frames {self._shape}")
        if self._seen % self._stride == 0:
            pixels = self.downsampled(frame).reshape(-1, 3)
            offsets = np.arange(3) * PIXEL_LEVELS
            counts = np.bincount((pixels + offsets).ravel(), minlength=3 * PIXEL_LEVELS)
            self._histograms.append(counts.reshape(3, PIXEL_LEVELS).astype(np.int64))
            if len(self._histograms) > self.max_frames:
                self._histograms = self._histograms[::2]
                self._stride *= 2
        self._seen += 1

    @property
    def sampled_frames(self) -> int:
        return len(self._histograms)

    def result(self) -> dict[str, np.ndarray]:
        """min/max/mean/std/q* as (3, 1, 1) float64 in [0, 1]; count (1,) = frames sampled."""
        if not self._histograms:
            raise DatasetError("image stats of an episode without frames")
        histogram = np.sum(self._histograms, axis=0)          # (3, 256)
        levels = np.arange(PIXEL_LEVELS, dtype=np.float64) / (PIXEL_LEVELS - 1)
        pixels = histogram.sum(axis=1)
        mean = histogram @ levels / pixels
        variance = (histogram * (levels[None, :] - mean[:, None]) ** 2).sum(axis=1) / pixels
        present = histogram > 0
        per_channel = {
            "min": np.array([levels[np.argmax(row)] for row in present]),
            "max": np.array([levels[PIXEL_LEVELS - 1 - np.argmax(row[::-1])] for row in present]),
            "mean": mean,
            "std": np.sqrt(variance),
        }
        quantiles = np.stack([_quantiles_from_histogram(row, list(QUANTILES.values())) for row in histogram])
        for k, name in enumerate(QUANTILES):
            per_channel[name] = quantiles[:, k] / (PIXEL_LEVELS - 1)
        stats = {name: value.reshape(3, 1, 1).astype(np.float64) for name, value in per_channel.items()}
        stats["count"] = np.array([self.sampled_frames], dtype=np.int64)
        return {name: stats[name] for name in STAT_FIELDS}


def aggregate_image_stats(per_episode: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """A camera's dataset stats from its episodes' (all frames of one camera have one size, so
    weighting by sampled frames is weighting by pixels): min/max global, mean/std exactly
    pooled, count summed, quantiles the count-weighted mean (the pixels are not kept)."""
    if not per_episode:
        raise DatasetError("image stats of a dataset without episodes")
    counts = np.array([float(stats["count"][0]) for stats in per_episode])
    weights = (counts / counts.sum()).reshape(-1, 1, 1, 1)
    stacked = {name: np.stack([np.asarray(stats[name], dtype=np.float64) for stats in per_episode])
               for name in STAT_FIELDS if name != "count"}
    mean = (weights * stacked["mean"]).sum(axis=0)
    # Within-episode variance plus the spread of the episode means (no E[x^2] - E[x]^2 cancellation).
    variance = (weights * (stacked["std"] ** 2 + (stacked["mean"] - mean) ** 2)).sum(axis=0)
    result = {
        "min": stacked["min"].min(axis=0),
        "max": stacked["max"].max(axis=0),
        "mean": mean,
        "std": np.sqrt(variance),
        "count": np.array([int(counts.sum())], dtype=np.int64),
    }
    for name in QUANTILES:
        result[name] = (weights * stacked[name]).sum(axis=0)
    return {name: result[name] for name in STAT_FIELDS}


def stats_to_json(stats: dict[str, np.ndarray]) -> dict[str, list]:
    return {name: np.asarray(value).tolist() for name, value in stats.items()}


def dataset_statistics(state: np.ndarray, action: np.ndarray, unnorm_key: str,
                       num_trajectories: int) -> dict:
    """TwinVLA's dataset_statistics.json: the state ("proprio") and action stats of
    meta/stats.json plus the xyz normalization mask."""
    if len(state) != len(action):
        raise DatasetError(f"{len(state)} state rows but {len(action)} action rows")
    return {unnorm_key: {
        "action": {**stats_to_json(vector_stats(action)), "mask": list(XYZ_MASK)},
        "proprio": {**stats_to_json(vector_stats(state)), "mask": list(XYZ_MASK)},
        "num_transitions": int(len(action)),
        "num_trajectories": int(num_trajectories),
    }}
