"""The dataset reader on real datasets written by our DatasetWriter: real parquet, real mp4s
decoded back, compared with what went in and with numpy recomputations."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lerobot_datasets as datasets
from twinvla_ros.data.lerobot.format import ACTION_KEY, IMAGE_KEYS, STATE_KEY, DatasetError, StagedEpisode
from twinvla_ros.data.lerobot.reader import LeRobotEpisodes
from twinvla_ros.data.lerobot.stats import ImageStatsAccumulator
from twinvla_ros.data.lerobot.video import VideoEncoder
from twinvla_ros.data.lerobot.writer import DatasetWriter


CAMERAS = tuple(IMAGE_KEYS.values())
INDEXED_SIZE = (48, 64)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """make_dataset's three episodes (25, 32, 40 frames, seeds 0..2, two tasks), AV1."""
    return datasets.make_dataset(tmp_path_factory.mktemp("reader") / "tiny")


@pytest.fixture(scope="module")
def tiny_vectors(tiny) -> LeRobotEpisodes:
    return LeRobotEpisodes(tiny, load_images=False)


def written_episode(k: int) -> tuple[np.ndarray, np.ndarray]:
    """(state, action) of episode k of make_dataset(seed=0), recomputed from its recipe."""
    return datasets.episode_arrays(k, datasets.LENGTHS[k % len(datasets.LENGTHS)])


def expected_chunk(action: np.ndarray, frame: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Independent recomputation of lerobot's delta_timestamps chunk: clamp into the episode."""
    rows, pads = [], []
    for step in range(horizon):
        pads.append(frame + step > len(action) - 1)
        rows.append(action[min(frame + step, len(action) - 1)])
    return np.stack(rows), np.array(pads)


# --- frames that tell their index: big colour steps, far above codec error ----------------

def indexed_frame(camera: int, episode: int, frame_index: int) -> np.ndarray:
    height, width = INDEXED_SIZE
    image = np.empty((height, width, 3), np.uint8)
    image[..., 0] = 40 + 12 * (frame_index % 16)
    image[..., 1] = 40 + 12 * (frame_index // 16 % 16)
    image[..., 2] = 40 + 40 * camera + 10 * episode
    return image


def indexed_state(episode: int, length: int) -> np.ndarray:
    return np.full((length, 20), episode, np.float32) + np.arange(length, dtype=np.float32)[:, None] / 100


def write_indexed_dataset(root: Path, lengths: tuple[int, ...], codec: str, *, resume: bool = False,
                          first_episode: int = 0) -> None:
    with DatasetWriter(root, fps=20, image_size=INDEXED_SIZE, codec=codec, resume=resume) as writer:
        for offset, length in enumerate(lengths):
            episode = first_episode + offset
            directory = writer.staging_dir / f"episode_{episode}"
            directory.mkdir()
            videos, image_stats = {}, {}
            for camera, key in enumerate(CAMERAS):
                videos[key] = directory / f"{camera}.mp4"
                accumulator = ImageStatsAccumulator()
                with VideoEncoder(videos[key], fps=20, width=INDEXED_SIZE[1], height=INDEXED_SIZE[0],
                                  codec=codec) as encoder:
                    for frame_index in range(length):
                        encoder.write(indexed_frame(camera, episode, frame_index))
                        accumulator.add(indexed_frame(camera, episode, frame_index))
                image_stats[key] = accumulator.result()
            state = indexed_state(episode, length)
            writer.add(StagedEpisode(task=f"task {episode % 2}", state=state, action=state + 0.5, videos=videos,
                                     image_stats=image_stats, source=f"episode {episode}"))
        writer.finalize()


def assert_indexed_frames(images: dict[str, np.ndarray], episode: int, frame_indices) -> None:
    for camera, key in enumerate(CAMERAS):
        for decoded, frame_index in zip(images[key], frame_indices):
            difference = np.abs(decoded.astype(float) - indexed_frame(camera, episode, frame_index)).mean()
            # The colour conversion costs ~2 levels; one frame off is 12 more in a channel.
            assert difference < 3.5, (key, episode, frame_index, difference)


@pytest.fixture(scope="module", params=["av1", "h264"])
def resumed(request, tmp_path_factory) -> Path:
    """Two writer sessions: episodes 0-1 in file-000 of data and videos, 2-3 in file-001."""
    root = tmp_path_factory.mktemp(f"resumed_{request.param}") / "indexed"
    write_indexed_dataset(root, (12, 9), request.param)
    write_indexed_dataset(root, (7, 10), request.param, resume=True, first_episode=2)
    return root


# --- tests -------------------------------------------------------------------------------

def test_metadata(tiny_vectors):
    assert len(tiny_vectors) == tiny_vectors.num_frames == 25 + 32 + 40
    assert tiny_vectors.num_episodes == 3
    assert tiny_vectors.episode_lengths.tolist() == [25, 32, 40]
    assert tiny_vectors.episode_starts.tolist() == [0, 25, 57]
    assert tiny_vectors.fps == 20
    assert tiny_vectors.image_sizes == {key: datasets.IMAGE_SIZE for key in CAMERAS}
    assert tiny_vectors.tasks == list(datasets.TASKS)
    states = np.concatenate([written_episode(k)[0] for k in range(3)]).astype(np.float64)
    assert tiny_vectors.stats[STATE_KEY]["mean"].dtype == np.float64
    np.testing.assert_allclose(tiny_vectors.stats[STATE_KEY]["mean"], states.mean(axis=0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(tiny_vectors.stats[STATE_KEY]["max"], states.max(axis=0), rtol=1e-6)


def test_every_sample_has_the_state_action_and_task_put_in(tiny_vectors):
    index = 0
    for k in range(3):
        state, action = written_episode(k)
        for frame in range(len(state)):
            sample = tiny_vectors[index]
            chunk, pad = expected_chunk(action, frame, 20)
            assert sample["state"].dtype == np.float32 and sample["action"].dtype == np.float32
            np.testing.assert_array_equal(sample["state"], state[frame])
            np.testing.assert_array_equal(sample["action"], chunk)
            np.testing.assert_array_equal(sample["action_is_pad"], pad)
            assert sample["task"] == datasets.TASKS[k % 2]
            assert (sample["episode_index"], sample["frame_index"]) == (k, frame)
            assert sample["timestamp"] == pytest.approx(frame / 20, abs=1e-6)
            assert sample["images"] == {}
            index += 1
    with pytest.raises(IndexError):
        tiny_vectors[index]
    np.testing.assert_array_equal(tiny_vectors[-1]["state"], written_episode(2)[0][-1])


def test_action_chunk_at_the_episode_end_repeats_the_last_action(tiny_vectors):
    _, action = written_episode(0)
    last = tiny_vectors[24]                       # episode 0's last frame; episode 1 starts at 25
    np.testing.assert_array_equal(last["action"], np.repeat(action[-1:], 20, axis=0))
    assert last["action_is_pad"].tolist() == [False] + [True] * 19
    five_before = tiny_vectors[20]
    assert five_before["action_is_pad"].tolist() == [False] * 5 + [True] * 15
    np.testing.assert_array_equal(five_before["action"][:5], action[20:25])
    np.testing.assert_array_equal(five_before["action"][5:], np.repeat(action[-1:], 15, axis=0))
    first = tiny_vectors[25]
    np.testing.assert_array_equal(first["action"], written_episode(1)[1][:20])
    assert not first["action_is_pad"].any()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(index=st.integers(0, 96), horizon=st.integers(1, 50))
def test_any_horizon_gives_the_clamped_chunk(tiny, index, horizon):
    dataset = LeRobotEpisodes(tiny, action_horizon=horizon, load_images=False)
    episode = int(np.searchsorted([25, 57, 97], index, side="right"))
    frame = index - [0, 25, 57][episode]
    chunk, pad = expected_chunk(written_episode(episode)[1], frame, horizon)
    sample = dataset[index]
    assert sample["action"].shape == (horizon, 20)
    np.testing.assert_array_equal(sample["action"], chunk)
    np.testing.assert_array_equal(sample["action_is_pad"], pad)


def test_images_are_the_encoded_frames(tiny):
    dataset = LeRobotEpisodes(tiny)
    for k, length in enumerate((25, 32, 40)):
        start = int(dataset.episode_starts[k])
        for frame in (0, length // 2, length - 1):
            sample = dataset[start + frame]
            assert set(sample["images"]) == set(CAMERAS)
            for camera, key in enumerate(CAMERAS):
                image = sample["images"][key]
                assert image.dtype == np.uint8 and image.shape == (*datasets.IMAGE_SIZE, 3)
                expected = datasets.frame_pixels(k, camera, frame).astype(float)
                assert np.abs(image.astype(float) - expected).mean() < 3.0, (k, frame, key)


def test_episode_holds_what_the_samples_hold(tiny):
    dataset = LeRobotEpisodes(tiny)
    episode = dataset.episode(1)
    state, action = written_episode(1)
    np.testing.assert_array_equal(episode["state"], state)
    np.testing.assert_array_equal(episode["action"], action)
    np.testing.assert_allclose(episode["timestamp"], np.arange(32) / 20, atol=1e-6)
    assert episode["task"] == datasets.TASKS[1] and episode["episode_index"] == 1
    for key in CAMERAS:
        assert episode["images"][key].shape == (32, *datasets.IMAGE_SIZE, 3)
    with pytest.raises(ValueError):
        episode["state"][0, 0] = 1.0              # shared by the cache: read-only
    for frame in range(32):
        sample = dataset[25 + frame]
        np.testing.assert_array_equal(sample["state"], episode["state"][frame])
        for key in CAMERAS:
            np.testing.assert_array_equal(sample["images"][key], episode["images"][key][frame])


def test_episode_cache_keeps_the_most_recent(tiny):
    dataset = LeRobotEpisodes(tiny, cached_episodes=2)
    first = dataset.episode(0)
    assert dataset.episode(0) is first
    dataset.episode(1)
    assert dataset.episode(0) is first            # 0 used last: 1 is the one to go
    dataset.episode(2)
    assert dataset.episode(0) is first
    dataset.episode(1)
    dataset.episode(2)
    again = dataset.episode(0)
    assert again is not first
    np.testing.assert_array_equal(again["images"][CAMERAS[0]], first["images"][CAMERAS[0]])


def test_episode_out_of_range_names_the_range(tiny_vectors):
    with pytest.raises(DatasetError, match=r"episode 3 out of range 0\.\.2"):
        tiny_vectors.episode(3)


def test_reads_across_data_and_video_files(resumed):
    assert len(list((resumed / "data").glob("*/*.parquet"))) == 2
    for key in CAMERAS:
        assert len(list((resumed / "videos" / key).glob("*/*.mp4"))) == 2
    episodes = pd.read_parquet(resumed / "meta" / "episodes")
    assert episodes[f"videos/{CAMERAS[0]}/file_index"].tolist() == [0, 0, 1, 1]
    assert episodes[f"videos/{CAMERAS[0]}/from_timestamp"].iloc[3] > 0      # starts mid-file

    dataset = LeRobotEpisodes(resumed)
    assert dataset.episode_lengths.tolist() == [12, 9, 7, 10]
    assert dataset.tasks == ["task 0", "task 1"]
    for index in range(len(dataset)):
        sample = dataset[index]
        episode, frame = sample["episode_index"], sample["frame_index"]
        np.testing.assert_array_equal(sample["state"], indexed_state(episode, frame + 1)[frame])
        assert sample["task"] == f"task {episode % 2}"
        assert_indexed_frames({key: image[None] for key, image in sample["images"].items()}, episode, [frame])
    # The boundary between the sessions: episode 1's last frame and episode 2's first.
    np.testing.assert_array_equal(dataset[20]["action"], np.repeat(indexed_state(1, 9)[-1:] + 0.5, 20, axis=0))
    assert dataset[20]["action_is_pad"].tolist() == [False] + [True] * 19
    np.testing.assert_array_equal(dataset[21]["action"][:7], indexed_state(2, 7) + 0.5)
    for episode in range(4):
        assert_indexed_frames(dataset.episode(episode)["images"], episode, range(dataset.episode_lengths[episode]))


# --- datasets that are not what TwinVLA needs ---------------------------------------------

@pytest.fixture
def broken_copy(tiny, tmp_path) -> Path:
    return Path(shutil.copytree(tiny, tmp_path / "copy"))


def edit_info(root: Path, edit) -> None:
    path = root / "meta" / "info.json"
    info = json.loads(path.read_text())
    edit(info)
    path.write_text(json.dumps(info))


@pytest.mark.parametrize("key", [ACTION_KEY, STATE_KEY, IMAGE_KEYS["wrist_left"]])
def test_a_missing_feature_is_named(broken_copy, key):
    edit_info(broken_copy, lambda info: info["features"].pop(key))
    with pytest.raises(DatasetError, match=f"features \\['{key}'\\] missing"):
        LeRobotEpisodes(broken_copy)


def test_a_state_of_the_wrong_shape_is_named(broken_copy):
    edit_info(broken_copy, lambda info: info["features"][STATE_KEY].update(shape=[14]))
    with pytest.raises(DatasetError, match=f"{STATE_KEY} has shape \\[14\\]"):
        LeRobotEpisodes(broken_copy)


def test_only_the_cameras_asked_for_are_needed(broken_copy):
    edit_info(broken_copy, lambda info: info["features"].pop(IMAGE_KEYS["wrist_left"]))
    dataset = LeRobotEpisodes(broken_copy, image_keys=(IMAGE_KEYS["ego"],))
    assert set(dataset[0]["images"]) == {IMAGE_KEYS["ego"]}


def test_another_codebase_version_is_refused(broken_copy):
    edit_info(broken_copy, lambda info: info.update(codebase_version="v2.1"))
    with pytest.raises(DatasetError, match="codebase_version 'v2.1'"):
        LeRobotEpisodes(broken_copy)


def test_total_frames_must_match_the_rows(broken_copy):
    edit_info(broken_copy, lambda info: info.update(total_frames=96))
    with pytest.raises(DatasetError, match="97 rows, info.json says total_frames 96"):
        LeRobotEpisodes(broken_copy)


def test_tasks_as_a_plain_column_are_refused(broken_copy):
    # lerobot would load this and hand out integer tasks.
    path = broken_copy / "meta" / "tasks.parquet"
    pd.DataFrame({"task_index": [0, 1], "task": list(datasets.TASKS)}).to_parquet(path, index=False)
    with pytest.raises(DatasetError, match="pandas index"):
        LeRobotEpisodes(broken_copy)


def test_a_missing_video_is_named(broken_copy):
    path = next((broken_copy / "videos" / IMAGE_KEYS["wrist_right"]).glob("*/*.mp4"))
    path.unlink()
    with pytest.raises(DatasetError, match="wrist_right/chunk-000/file-000.mp4"):
        LeRobotEpisodes(broken_copy)


def test_a_data_file_without_the_action_column_is_named(broken_copy):
    path = broken_copy / "data" / "chunk-000" / "file-000.parquet"
    table = pq.read_table(path)
    pq.write_table(table.drop_columns([ACTION_KEY]), path)
    with pytest.raises(DatasetError, match=f"file-000.parquet: columns \\['{ACTION_KEY}'\\] missing"):
        LeRobotEpisodes(broken_copy)
