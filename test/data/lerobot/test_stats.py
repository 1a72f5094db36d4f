"""Feature statistics against independent numpy recomputations."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from twinvla_ros.data.lerobot.format import XYZ_MASK, DatasetError
from twinvla_ros.data.lerobot.stats import (STAT_FIELDS, ImageStatsAccumulator, aggregate_image_stats,
                                            dataset_statistics, vector_stats)

QUANTILES = {"q01": 0.01, "q10": 0.1, "q50": 0.5, "q90": 0.9, "q99": 0.99}


def test_vector_stats_equal_numpy():
    values = np.random.default_rng(1).normal(size=(137, 20)).astype(np.float32)
    stats = vector_stats(values)
    as_float = values.astype(np.float64)
    assert list(stats) == list(STAT_FIELDS)
    np.testing.assert_array_equal(stats["min"], as_float.min(axis=0))
    np.testing.assert_array_equal(stats["max"], as_float.max(axis=0))
    np.testing.assert_allclose(stats["mean"], as_float.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats["std"], np.sqrt(((as_float - as_float.mean(axis=0)) ** 2).mean(axis=0)),
                               rtol=1e-12)                                   # population std
    for name, q in QUANTILES.items():
        np.testing.assert_allclose(stats[name], np.quantile(as_float, q, axis=0), rtol=1e-12)
    assert stats["count"].tolist() == [137] and stats["count"].dtype == np.int64
    assert all(stats[name].dtype == np.float64 and stats[name].shape == (20,)
               for name in STAT_FIELDS if name != "count")


def test_integer_features_keep_int64_extremes_and_float_moments():
    values = np.arange(3, 40, dtype=np.int64).reshape(-1, 1)
    stats = vector_stats(values)
    assert stats["min"].dtype == stats["max"].dtype == np.int64
    assert (stats["min"].tolist(), stats["max"].tolist()) == ([3], [39])
    assert stats["mean"].dtype == stats["q50"].dtype == np.float64
    assert stats["mean"].tolist() == [21.0] and stats["q50"].tolist() == [21.0]


def test_empty_values_are_an_error():
    with pytest.raises(DatasetError):
        vector_stats(np.zeros((0, 20), np.float32))


def test_dataset_quantiles_are_global_not_averaged_per_episode():
    rng = np.random.default_rng(2)
    # A long calm episode and a short wild one: averaging per-episode q01 would be far off.
    episodes = [rng.normal(0, 0.1, (400, 20)), rng.normal(0, 5.0, (40, 20))]
    pooled = np.concatenate(episodes).astype(np.float32)
    stats = dataset_statistics(pooled, pooled * 2, unnorm_key="tiny", num_trajectories=2)["tiny"]
    global_q01 = np.quantile(pooled.astype(np.float64), 0.01, axis=0)
    np.testing.assert_allclose(stats["proprio"]["q01"], global_q01, rtol=1e-12)
    averaged = (400 * np.quantile(episodes[0], 0.01, axis=0) + 40 * np.quantile(episodes[1], 0.01, axis=0)) / 440
    assert np.all(np.abs(np.asarray(stats["proprio"]["q01"]) - averaged) > 0.05)


def test_dataset_statistics_is_twinvlas_layout():
    rng = np.random.default_rng(3)
    state, action = rng.normal(size=(50, 20)).astype(np.float32), rng.normal(size=(50, 20)).astype(np.float32)
    statistics = dataset_statistics(state, action, unnorm_key="anubis_lift", num_trajectories=4)
    entry = statistics["anubis_lift"]
    assert set(entry) == {"action", "proprio", "num_transitions", "num_trajectories"}
    assert (entry["num_transitions"], entry["num_trajectories"]) == (50, 4)
    for name, values in (("action", action), ("proprio", state)):
        assert set(entry[name]) == {*STAT_FIELDS, "mask"}
        assert entry[name]["mask"] == XYZ_MASK == [True] * 3 + [False] * 7 + [True] * 3 + [False] * 7
        expected = vector_stats(values)
        for field in STAT_FIELDS:
            assert entry[name][field] == expected[field].tolist()


def sampled_pixels(frames: list[np.ndarray], stride: int, step: int) -> np.ndarray:
    return np.concatenate([f[::step, ::step].reshape(-1, 3) for f in frames[::stride]]).astype(np.float64) / 255


def test_image_stats_equal_numpy_on_the_sampled_downsampled_frames():
    rng = np.random.default_rng(4)
    frames = [rng.integers(0, 256, (240, 320, 3), dtype=np.uint8) for _ in range(250)]
    accumulator = ImageStatsAccumulator(max_frames=100)
    for frame in frames:
        accumulator.add(frame)
    stats = accumulator.result()
    # 250 frames with at most 100 kept: every 4th (63 frames); short side 240 -> every 2nd pixel.
    pixels = sampled_pixels(frames, stride=4, step=2)
    assert stats["count"].tolist() == [63] and stats["count"].dtype == np.int64
    assert all(stats[name].shape == (3, 1, 1) for name in STAT_FIELDS if name != "count")
    np.testing.assert_allclose(stats["mean"].ravel(), pixels.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats["std"].ravel(), pixels.std(axis=0), rtol=1e-10)
    np.testing.assert_array_equal(stats["min"].ravel(), pixels.min(axis=0))
    np.testing.assert_array_equal(stats["max"].ravel(), pixels.max(axis=0))
    for name, q in QUANTILES.items():
        np.testing.assert_allclose(stats[name].ravel(), np.quantile(pixels, q, axis=0), rtol=1e-12, atol=1e-15)
    # lerobot 0.4.0 reports 0 here (uint8 overflow); uniform noise has std ~0.29.
    assert np.all(stats["std"] > 0.25)


@settings(max_examples=40, deadline=None)
@given(frames=st.lists(arrays(np.uint8, (6, 8, 3)), min_size=1, max_size=12),
       quantile=st.sampled_from(sorted(QUANTILES)))
def test_image_quantiles_equal_numpy_for_any_frames(frames, quantile):
    accumulator = ImageStatsAccumulator()
    for frame in frames:
        accumulator.add(frame)
    pixels = sampled_pixels(frames, stride=1, step=1)
    np.testing.assert_allclose(accumulator.result()[quantile].ravel(), np.quantile(pixels, QUANTILES[quantile], axis=0),
                               rtol=1e-12, atol=1e-15)


def test_image_stats_refuse_frames_of_another_shape_or_type():
    accumulator = ImageStatsAccumulator()
    accumulator.add(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DatasetError):
        accumulator.add(np.zeros((8, 10, 3), np.uint8))
    with pytest.raises(DatasetError):
        accumulator.add(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(DatasetError):
        ImageStatsAccumulator().result()


def test_aggregated_image_stats_equal_the_pooled_pixels():
    rng = np.random.default_rng(5)
    episodes = [[np.clip(rng.normal(mean, 40, (48, 64, 3)), 0, 255).astype(np.uint8) for _ in range(count)]
                for mean, count in ((60, 30), (180, 11), (120, 7))]
    per_episode = []
    for frames in episodes:
        accumulator = ImageStatsAccumulator()
        for frame in frames:
            accumulator.add(frame)
        per_episode.append(accumulator.result())
    stats = aggregate_image_stats(per_episode)

    pooled = np.concatenate([sampled_pixels(frames, stride=1, step=1) for frames in episodes])
    np.testing.assert_allclose(stats["mean"].ravel(), pooled.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats["std"].ravel(), pooled.std(axis=0), rtol=1e-10)
    np.testing.assert_array_equal(stats["min"].ravel(), pooled.min(axis=0))
    np.testing.assert_array_equal(stats["max"].ravel(), pooled.max(axis=0))
    assert stats["count"].tolist() == [48]
    counts = np.array([30, 11, 7]).reshape(-1, 1, 1, 1)
    expected_q50 = (counts * np.stack([s["q50"] for s in per_episode])).sum(axis=0) / 48
    np.testing.assert_allclose(stats["q50"], expected_q50, rtol=1e-12)
