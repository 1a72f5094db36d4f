"""Training batches from a LeRobot v3.0 dataset: keys checked, block order, resumable stream."""
import json
import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinvla_ros.data.lerobot.format import ACTION_KEY, DatasetError
from twinvla_ros.data.lerobot.reader import LeRobotEpisodes, read_info
from twinvla_ros.model.processing_twinvla import preprocess_image, resize_frames
from twinvla_ros.training.data import EpisodeBlockSampler, TrainingBatches, episodes_that_fit

LENGTHS = st.lists(st.integers(1, 30), min_size=1, max_size=6)


def episode_of(starts, lengths, frame):
    return int(np.searchsorted(starts + lengths, frame, side="right"))


@given(lengths=LENGTHS, batch=st.integers(1, 12), per_block=st.integers(1, 3), skip=st.integers(0, 20),
       seed=st.integers(0, 5))
@settings(max_examples=80, deadline=None)
def test_the_stream_from_a_position_is_the_stream_without_its_first_batches(lengths, batch, per_block, skip, seed):
    lengths = np.array(lengths)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    sampler = EpisodeBlockSampler(starts, lengths, batch, seed=seed, episodes_per_block=per_block)
    whole = sampler.batches()
    full = [next(whole) for _ in range(skip + 5)]
    resumed = sampler.batches(skip=skip)
    for expected in full[skip:]:
        np.testing.assert_array_equal(next(resumed), expected)
    for indices in full:
        assert len(indices) == batch and np.all((0 <= indices) & (indices < lengths.sum()))


def test_an_epoch_covers_every_frame_once_block_by_block():
    lengths = np.array([25, 32, 40, 10, 7])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    stream = EpisodeBlockSampler(starts, lengths, 1, seed=3, episodes_per_block=2).batches()
    epoch = np.concatenate([next(stream) for _ in range(lengths.sum())])
    assert sorted(epoch) == list(range(lengths.sum()))
    episodes = np.array([episode_of(starts, lengths, f) for f in epoch])
    first = {e: int(np.flatnonzero(episodes == e)[0]) for e in range(len(lengths))}
    last = {e: int(np.flatnonzero(episodes == e)[-1]) for e in range(len(lengths))}
    order = sorted(first, key=first.get)
    blocks = [order[k:k + 2] for k in range(0, len(order), 2)]
    for block, following in zip(blocks, blocks[1:]):
        assert max(last[e] for e in block) < min(first[e] for e in following), (blocks, episodes)
    # Frames of a block are mixed, not episode after episode.
    assert len(set(episodes[:20])) == 2


def test_ranks_draw_different_streams():
    lengths = np.array([25, 32, 40])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    one, two = (EpisodeBlockSampler(starts, lengths, 8, seed=0, rank=r).batches() for r in (0, 1))
    assert not np.array_equal(next(one), next(two))


@given(lengths=LENGTHS, frame_bytes=st.integers(1, 1000), budget=st.floats(0, 1e5))
def test_the_cache_takes_as_many_episodes_as_fit_counting_the_longest(lengths, frame_bytes, budget):
    count = episodes_that_fit(np.array(lengths), frame_bytes, budget)
    longest_first = sorted(lengths, reverse=True)
    assert 1 <= count <= len(lengths)
    assert count == 1 or sum(longest_first[:count]) * frame_bytes <= budget
    assert count == len(lengths) or sum(longest_first[:count + 1]) * frame_bytes > budget


def test_a_dataset_that_fits_the_cache_is_one_block_and_a_larger_one_is_split(training_dataset):
    frame = 3 * 56 * 56 * 3                                   # lengths 25, 32, 40
    whole = TrainingBatches(training_dataset, horizon=20, batch_size=4, image_size=56, cache_bytes=97 * frame)
    split = TrainingBatches(training_dataset, horizon=20, batch_size=4, image_size=56, cache_bytes=96 * frame)
    assert (whole.episodes_per_block, split.episodes_per_block) == (3, 2)
    assert whole.dataset.cached_episodes == 3


def test_cached_frames_are_what_the_model_makes_of_the_full_size_image():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 48, 64, 3), dtype=np.uint8)
    frames[:, 10:30, 20:40] = [200, 30, 30]                   # an edge, where a resize differs most
    small = resize_frames(frames, 32)
    assert small.shape == (3, 32, 32, 3) and small.dtype == np.uint8
    for full, cached in zip(frames, small):
        difference = (preprocess_image(cached, 32) - preprocess_image(full, 32)).abs().max()
        assert difference <= 1.0 / 255 + 1e-6                  # rounding to uint8: half a level of [0, 255]
    assert resize_frames(small, 32) is small


def test_batches_hold_the_readers_frames_chunks_and_padding(training_dataset):
    reader = LeRobotEpisodes(training_dataset, action_horizon=20)
    batches = TrainingBatches(training_dataset, horizon=20, batch_size=16, image_size=56, cache_bytes=1e9, seed=1)
    indices = next(batches.sampler.batches())
    batch = next(iter(batches))
    assert len(batch.observations) == 16 and batch.actions.shape == (16, 20, 20)
    for row, index in enumerate(indices):
        sample = reader[int(index)]
        observation = batch.observations[row]
        assert observation.instruction == sample["task"]
        np.testing.assert_array_equal(observation.proprio, sample["state"])
        np.testing.assert_array_equal(observation.image_wrist_right,
                                      resize_frames(sample["images"]["observation.images.wrist_right"][None], 56)[0])
        np.testing.assert_array_equal(batch.actions[row], sample["action"])
        end = reader.episode_starts[sample["episode_index"]] + reader.episode_lengths[sample["episode_index"]]
        assert batch.valid_steps[row].tolist() == [index + k < end for k in range(20)]


def test_a_dataset_without_twinvlas_keys_is_refused_naming_them(training_dataset, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(training_dataset, broken)
    info_path = broken / "meta" / "info.json"
    info = json.loads(info_path.read_text())
    del info["features"][ACTION_KEY]
    info_path.write_text(json.dumps(info))
    with pytest.raises(DatasetError, match=f"lacks {ACTION_KEY}.*the dataset has: .*observation.state.ee_6d_pos"):
        read_info(broken)
    info["features"][ACTION_KEY] = {"dtype": "float32", "shape": [14]}
    info_path.write_text(json.dumps(info))
    with pytest.raises(DatasetError, match=r"shape \[14\], expected \[20\]"):
        read_info(broken)
    with pytest.raises(DatasetError, match="not a LeRobot v3.0 dataset"):
        read_info(tmp_path / "nothing")
