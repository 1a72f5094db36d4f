"""The dataset writer, against the LeRobot v3.0 layout as the reference describes it (field by
field, types included), on real parquet and mp4 files read back independently."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from twinvla_ros.data.lerobot import writer as writer_module
from twinvla_ros.data.lerobot.check import check_dataset
from twinvla_ros.data.lerobot.format import ACTION_KEY, IMAGE_KEYS, STATE_KEY, XYZ_MASK, DatasetError
from twinvla_ros.data.lerobot.video import decode_frames, probe_video
from twinvla_ros.data.lerobot.writer import DatasetWriter, next_file

LENGTHS = [25, 32, 40]
TASKS = ("lift the box", "hand over the box")
CAMERAS = tuple(IMAGE_KEYS.values())
STATS = ["min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"]
DEFAULTS = ["timestamp", "frame_index", "episode_index", "index", "task_index"]
VIDEO_INFO = {"video.height": 64, "video.width": 80, "video.codec": "av1", "video.pix_fmt": "yuv420p",
              "video.is_depth_map": False, "video.fps": 20, "video.channels": 3, "has_audio": False}
TEST_DIR = Path(__file__).parent


@pytest.fixture(scope="module")
def kit(dataset_kit):
    return dataset_kit


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, kit) -> Path:
    """Written once (episode k from seed k, tasks alternating), only read by the tests that use it."""
    return kit.make_dataset(tmp_path_factory.mktemp("written") / "tiny", lengths=tuple(LENGTHS), tasks=TASKS)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_info_json_is_lerobots_field_by_field(dataset):
    vector = {"dtype": "float32", "shape": [20], "names": None}
    video = {"dtype": "video", "shape": [64, 80, 3], "names": ["height", "width", "channels"], "info": VIDEO_INFO}
    expected = {
        "codebase_version": "v3.0", "robot_type": "anubis", "total_episodes": 3, "total_frames": 97, "total_tasks": 2,
        "chunks_size": 1000, "data_files_size_in_mb": 100, "video_files_size_in_mb": 500, "fps": 20,
        "splits": {"train": "0:3"},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
        "features": {
            "observation.state.ee_6d_pos": vector, "action.ee_6d_pos": vector,
            "observation.images.agentview": video, "observation.images.wrist_left": video,
            "observation.images.wrist_right": video,
            "timestamp": {"dtype": "float32", "shape": [1], "names": None},
            **{key: {"dtype": "int64", "shape": [1], "names": None} for key in DEFAULTS[1:]},
        },
    }
    info = read_json(dataset / "meta/info.json")
    assert info == expected
    assert list(info) == list(expected) and list(info["features"]) == list(expected["features"])


def test_data_parquet_has_lerobots_schema_one_row_group_per_episode_and_the_values_put_in(dataset, kit):
    files = sorted((dataset / "data").rglob("*.parquet"))
    assert [f.relative_to(dataset).as_posix() for f in files] == ["data/chunk-000/file-000.parquet"]
    parquet = pq.ParquetFile(files[0])
    schema = parquet.schema_arrow
    vector = pa.list_(pa.field("element", pa.float32()), 20)
    assert schema.names == [STATE_KEY, ACTION_KEY, *DEFAULTS]
    assert [schema.field(name).type for name in schema.names] == [vector, vector, pa.float32(), *[pa.int64()] * 4]
    huggingface = json.loads(schema.metadata[b"huggingface"])["info"]["features"]
    assert huggingface[STATE_KEY] == {"feature": {"dtype": "float32", "_type": "Value"}, "length": 20, "_type": "List"}
    assert huggingface["timestamp"] == {"dtype": "float32", "_type": "Value"}
    assert huggingface["index"] == {"dtype": "int64", "_type": "Value"}
    assert [parquet.metadata.row_group(g).num_rows for g in range(parquet.num_row_groups)] == LENGTHS
    assert parquet.metadata.row_group(0).column(0).compression == "SNAPPY"

    table = parquet.read()
    frame_index = np.concatenate([np.arange(n) for n in LENGTHS])
    np.testing.assert_array_equal(table["frame_index"].to_numpy(), frame_index)
    np.testing.assert_array_equal(table["episode_index"].to_numpy(), np.repeat([0, 1, 2], LENGTHS))
    np.testing.assert_array_equal(table["index"].to_numpy(), np.arange(97))
    np.testing.assert_array_equal(table["task_index"].to_numpy(), np.repeat([0, 1, 0], LENGTHS))
    timestamp = table["timestamp"].to_numpy()
    assert timestamp.dtype == np.float32 and np.max(np.abs(timestamp - frame_index / 20)) < 1e-4
    state = np.stack(table[STATE_KEY].to_numpy(zero_copy_only=False))
    action = np.stack(table[ACTION_KEY].to_numpy(zero_copy_only=False))
    expected = [kit.episode_arrays(seed, n) for seed, n in enumerate(LENGTHS)]
    np.testing.assert_array_equal(state, np.concatenate([s for s, _ in expected]))
    np.testing.assert_array_equal(action, np.concatenate([a for _, a in expected]))


def test_tasks_read_back_with_pandas_as_strings_by_task_index(dataset):
    tasks = pd.read_parquet(dataset / "meta/tasks.parquet")
    assert list(tasks.columns) == ["task_index"] and tasks["task_index"].dtype == np.int64
    assert tasks.index.name == "task"
    # lerobot: sample["task"] = tasks.iloc[task_index].name
    assert [tasks.iloc[i].name for i in range(2)] == list(TASKS)


def episode_columns() -> list[str]:
    columns = ["episode_index", "tasks", "length", "data/chunk_index", "data/file_index",
               "dataset_from_index", "dataset_to_index"]
    for key in CAMERAS:
        columns += [f"videos/{key}/{name}" for name in ("chunk_index", "file_index", "from_timestamp", "to_timestamp")]
    for feature in (STATE_KEY, ACTION_KEY, *CAMERAS, *DEFAULTS):
        columns += [f"stats/{feature}/{stat}" for stat in STATS]
    return columns + ["meta/episodes/chunk_index", "meta/episodes/file_index"]


def test_episodes_parquet_has_lerobots_columns_in_order_with_their_types_and_values(dataset, kit):
    files = sorted((dataset / "meta/episodes").rglob("*.parquet"))
    assert [f.relative_to(dataset).as_posix() for f in files] == ["meta/episodes/chunk-000/file-000.parquet"]
    table = pq.read_table(files[0])
    assert table.column_names == episode_columns() and table.num_columns == 121
    types = dict(zip(table.schema.names, table.schema.types))
    assert types["tasks"] == pa.list_(pa.string()) and types["length"] == pa.int64()
    assert types[f"videos/{CAMERAS[0]}/from_timestamp"] == pa.float64()
    assert types[f"stats/{STATE_KEY}/mean"] == pa.list_(pa.float64())
    assert types[f"stats/{STATE_KEY}/count"] == pa.list_(pa.int64())
    assert types[f"stats/{CAMERAS[1]}/q99"] == pa.list_(pa.list_(pa.list_(pa.float64())))
    assert types["stats/frame_index/min"] == pa.list_(pa.int64())
    assert types["stats/frame_index/q50"] == pa.list_(pa.float64())
    assert types["stats/timestamp/min"] == pa.list_(pa.float64())

    rows = table.to_pylist()
    assert [r["episode_index"] for r in rows] == [0, 1, 2]
    assert [r["tasks"] for r in rows] == [[TASKS[0]], [TASKS[1]], [TASKS[0]]]
    assert [r["length"] for r in rows] == LENGTHS
    assert [(r["dataset_from_index"], r["dataset_to_index"]) for r in rows] == [(0, 25), (25, 57), (57, 97)]
    for key in CAMERAS:
        spans = [(r[f"videos/{key}/from_timestamp"], r[f"videos/{key}/to_timestamp"]) for r in rows]
        np.testing.assert_allclose(spans, [(0.0, 1.25), (1.25, 2.85), (2.85, 4.85)], atol=1e-9)
    for seed, row in enumerate(rows):
        state, _ = kit.episode_arrays(seed, LENGTHS[seed])
        np.testing.assert_allclose(row[f"stats/{STATE_KEY}/q01"], np.quantile(state.astype(np.float64), 0.01, axis=0))
        assert row[f"stats/{STATE_KEY}/count"] == [LENGTHS[seed]]
        assert row["stats/frame_index/max"] == [LENGTHS[seed] - 1]
        assert row["stats/index/min"] == [row["dataset_from_index"]]
        assert np.asarray(row[f"stats/{CAMERAS[0]}/mean"]).shape == (3, 1, 1)


def test_stats_cover_every_feature_and_equal_numpy_over_all_frames(dataset, kit):
    stats = read_json(dataset / "meta/stats.json")
    assert list(stats) == [STATE_KEY, ACTION_KEY, *CAMERAS, *DEFAULTS]
    state = np.concatenate([kit.episode_arrays(seed, n)[0] for seed, n in enumerate(LENGTHS)]).astype(np.float64)
    np.testing.assert_allclose(stats[STATE_KEY]["mean"], state.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats[STATE_KEY]["std"], state.std(axis=0), rtol=1e-10)
    np.testing.assert_allclose(stats[STATE_KEY]["q99"], np.quantile(state, 0.99, axis=0), rtol=1e-12)
    assert stats["index"]["max"] == [96] and stats["index"]["count"] == [97]
    assert stats["episode_index"]["mean"] == pytest.approx([(25 * 0 + 32 * 1 + 40 * 2) / 97])
    for key in CAMERAS:
        assert np.asarray(stats[key]["std"]).shape == (3, 1, 1) and np.all(np.asarray(stats[key]["std"]) > 0)
        assert stats[key]["count"] == [97]                                  # every frame sampled (< 100 each)


def test_dataset_statistics_equal_the_stats_with_the_xyz_mask(dataset):
    statistics = read_json(dataset / "dataset_statistics.json")
    stats = read_json(dataset / "meta/stats.json")
    assert list(statistics) == ["tiny"]
    entry = statistics["tiny"]
    assert (entry["num_transitions"], entry["num_trajectories"]) == (97, 3)
    for name, feature in (("action", ACTION_KEY), ("proprio", STATE_KEY)):
        assert entry[name] == {**stats[feature], "mask": XYZ_MASK}


def test_each_episodes_frames_are_at_from_timestamp_plus_timestamp(dataset, kit):
    episodes = pq.read_table(dataset / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    for camera, key in enumerate(CAMERAS):
        video = dataset / f"videos/{key}/chunk-000/file-000.mp4"
        assert probe_video(video).frames == 97
        for seed, row in enumerate(episodes):
            last = LENGTHS[seed] - 1
            frames = decode_frames(video, row[f"videos/{key}/from_timestamp"] + (last - 1) / 20, 2, 20)
            for frame, index in zip(frames, (last - 1, last)):
                error = np.abs(frame.astype(float) - kit.frame_pixels(seed, camera, index)).mean()
                assert error < 6


def test_provenance_records_each_episodes_source_and_report(dataset):
    provenance = read_json(dataset / "meta/twinvla_ros.json")
    assert [e["source"] for e in provenance["episodes"]] == [f"bags/episode_{k:04d}" for k in range(3)]
    assert provenance["episodes"][1]["report"] == {"seed": 1, "skew_ms": 1.5}
    assert provenance["sessions"][0]["episodes"] == [0, 1, 2] and provenance["sessions"][0]["converter_version"]
    assert not (dataset / ".staging").exists() and not (dataset.parent / ".tiny.partial").exists()


def test_resume_appends_episodes_leaving_the_old_files_untouched(tmp_path, kit):
    root = kit.make_dataset(tmp_path / "ds", episodes=2, lengths=(25, 32), tasks=TASKS, codec="h264")
    old_files = {p.relative_to(root): (p.stat().st_ino, p.read_bytes()) for p in root.rglob("*")
                 if p.is_file() and p.parts[len(root.parts)] in ("data", "videos")}

    kit.make_dataset(root, episodes=2, lengths=(25, 32), seed=10, tasks=("put it back", TASKS[0]), codec="h264",
                     resume=True)

    for relative, (inode, content) in old_files.items():
        assert (root / relative).stat().st_ino == inode and (root / relative).read_bytes() == content
    assert sorted(p.name for p in (root / "data/chunk-000").iterdir()) == ["file-000.parquet", "file-001.parquet"]
    new_data = pq.read_table(root / "data/chunk-000/file-001.parquet")
    np.testing.assert_array_equal(new_data["episode_index"].to_numpy(), np.repeat([2, 3], [25, 32]))
    np.testing.assert_array_equal(new_data["index"].to_numpy(), 57 + np.arange(57))
    np.testing.assert_array_equal(new_data["task_index"].to_numpy(), np.repeat([2, 0], [25, 32]))
    tasks = pd.read_parquet(root / "meta/tasks.parquet")
    assert list(tasks.index) == [*TASKS, "put it back"] and tasks["task_index"].tolist() == [0, 1, 2]
    episodes = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [(e["episode_index"], e["data/file_index"], e[f"videos/{CAMERAS[0]}/file_index"]) for e in episodes] == \
           [(0, 0, 0), (1, 0, 0), (2, 1, 1), (3, 1, 1)]
    assert episodes[2][f"videos/{CAMERAS[0]}/from_timestamp"] == 0.0
    info = read_json(root / "meta/info.json")
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"], info["splits"]) == \
           (4, 114, 3, {"train": "0:4"})
    state = np.concatenate([kit.episode_arrays(seed, n)[0] for seed, n in ((0, 25), (1, 32), (10, 25), (11, 32))])
    stats = read_json(root / "meta/stats.json")
    np.testing.assert_allclose(stats[STATE_KEY]["q01"], np.quantile(state.astype(np.float64), 0.01, axis=0), rtol=1e-12)
    assert stats[CAMERAS[0]]["count"] == [114]
    assert read_json(root / "dataset_statistics.json")["ds"]["proprio"]["q01"] == stats[STATE_KEY]["q01"]
    provenance = read_json(root / "meta/twinvla_ros.json")
    assert [s["episodes"] for s in provenance["sessions"]] == [[0, 1], [2, 3]]
    assert check_dataset(root).ok
    assert not any(p.name.startswith(".ds.") for p in tmp_path.iterdir())


def test_resume_with_other_settings_lists_every_difference(tmp_path, kit):
    root = kit.make_dataset(tmp_path / "ds", episodes=1)
    with pytest.raises(DatasetError) as error:
        DatasetWriter(root, fps=30, image_size=(48, 80), codec="av1", resume=True)
    message = str(error.value)
    assert "fps 20 (this writer: 30)" in message
    assert "observation.images.agentview image size" in message and "[48, 80, 3]" in message
    with pytest.raises(DatasetError, match="codec av1 \\(this writer: h264\\)"):
        DatasetWriter(root, fps=20, image_size=(64, 80), codec="h264", resume=True)
    assert not (tmp_path / ".ds.partial").exists()


def test_an_existing_dataset_is_not_overwritten_without_resume(tmp_path, kit):
    root = kit.make_dataset(tmp_path / "ds", episodes=1)
    with pytest.raises(DatasetError, match="exists; --resume to append"):
        DatasetWriter(root, fps=20, image_size=(64, 80))
    (tmp_path / "empty").mkdir()
    assert kit.make_dataset(tmp_path / "empty", episodes=1).joinpath("meta/info.json").is_file()


def test_an_exception_inside_the_writer_leaves_neither_root_nor_partial(tmp_path, kit):
    root = tmp_path / "ds"
    with pytest.raises(RuntimeError, match="bag unreadable"):
        with DatasetWriter(root, fps=20, image_size=(64, 80)) as writer:
            writer.add(kit.make_episode(writer.staging_dir / "e0", seed=0, length=10, task="t"))
            raise RuntimeError("bag unreadable")
    assert sorted(tmp_path.iterdir()) == []


def test_a_stale_partial_directory_is_removed_with_a_note(tmp_path, kit):
    stale = tmp_path / ".ds.partial"
    (stale / "data").mkdir(parents=True)
    with DatasetWriter(tmp_path / "ds", fps=20, image_size=(64, 80), codec="h264") as writer:
        assert any(str(stale) in note for note in writer.notes)
        assert not (writer.partial_dir / "data").exists()
        writer.add(kit.make_episode(writer.staging_dir / "e0", seed=0, length=10, task="t", codec="h264"))
        summary = writer.finalize()
    assert (summary.episodes, summary.frames, summary.new_episodes, summary.tasks) == (1, 10, 1, ["t"])
    assert summary.size_bytes == sum(p.stat().st_size for p in (tmp_path / "ds").rglob("*") if p.is_file())


def test_finalize_reports_each_stages_progress(tmp_path, kit):
    calls = []
    with DatasetWriter(tmp_path / "ds", fps=20, image_size=(64, 80), codec="h264") as writer:
        for k in range(2):
            writer.add(kit.make_episode(writer.staging_dir / f"e{k}", seed=k, length=6, task="t", codec="h264"))
        writer.finalize(lambda stage, done, total: calls.append((stage, done, total)))
    stages = list(dict.fromkeys(stage for stage, _, _ in calls))
    assert stages == [f"concatenate {key}" for key in CAMERAS] + ["write data", "stats", "check"]
    for stage in stages:
        done = [d for s, d, _ in calls if s == stage]
        totals = {t for s, _, t in calls if s == stage}
        assert done == sorted(done) and done[0] == 0 and len(totals) == 1 and done[-1] == totals.pop()
    assert (f"concatenate {CAMERAS[0]}", 1, 2) in calls


def test_an_interrupted_swap_is_undone_by_the_next_writer(tmp_path, kit):
    root = kit.make_dataset(tmp_path / "ds", episodes=1)
    root.rename(tmp_path / ".ds.old")            # a crash between a resume's two renames
    with DatasetWriter(root, fps=20, image_size=(64, 80), resume=True) as writer:
        assert any("restored" in note for note in writer.notes)
        assert writer.existing_sources == ["bags/episode_0000"]
        writer.abort()
    assert check_dataset(root).ok and not (tmp_path / ".ds.old").exists()


@pytest.mark.parametrize("change, message", [
    (lambda e: e.videos.pop(CAMERAS[2]), "videos for"),
    (lambda e: e.videos.__setitem__(CAMERAS[1], e.videos[CAMERAS[0]].with_name("short.mp4")), "9 frames"),
    (lambda e: e.state.__setitem__((3, 4), np.nan), "state has non-finite"),
    (lambda e: e.image_stats[CAMERAS[0]].pop("q50"), "image stats: missing"),
])
def test_add_refuses_an_inconsistent_episode_naming_its_source(tmp_path, change, message, kit):
    with DatasetWriter(tmp_path / "ds", fps=20, image_size=(64, 80)) as writer:
        episode = kit.make_episode(writer.staging_dir / "e0", seed=7, length=10, task="t")
        short = kit.make_episode(writer.staging_dir / "short", seed=7, length=9, task="t")
        short.videos[CAMERAS[0]].rename(episode.videos[CAMERAS[0]].with_name("short.mp4"))
        change(episode)
        with pytest.raises(DatasetError, match=message) as error:
            writer.add(episode)
        assert "bags/episode_0007" in str(error.value)


def test_add_refuses_a_video_of_another_size_or_codec(tmp_path, kit):
    with DatasetWriter(tmp_path / "ds", fps=20, image_size=(64, 80), codec="h264") as writer:
        with pytest.raises(DatasetError, match="codec av1 \\(dataset h264\\)"):
            writer.add(kit.make_episode(writer.staging_dir / "a", seed=1, length=5, task="t", codec="av1"))
        with pytest.raises(DatasetError, match="size 48x80 \\(dataset 64x80\\)"):
            writer.add(kit.make_episode(writer.staging_dir / "b", seed=1, length=5, task="t", codec="h264",
                                    image_size=(48, 80)))


def test_file_indices_roll_into_the_next_chunk():
    assert next_file(0, 0) == (0, 1) and next_file(0, 998) == (0, 999)
    assert next_file(0, 999) == (1, 0) and next_file(3, 999) == (4, 0)


def test_data_and_video_files_roll_at_their_size_limits(tmp_path, monkeypatch, kit):
    monkeypatch.setattr(writer_module, "VIDEO_FILES_SIZE_MB", 1e-6)      # every episode its own mp4
    monkeypatch.setattr(writer_module, "DATA_FILES_SIZE_MB", 1e-6)       # and its own parquet
    root = kit.make_dataset(tmp_path / "ds", episodes=3, lengths=tuple(LENGTHS), codec="h264")
    episodes = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [e["data/file_index"] for e in episodes] == [0, 1, 2]
    assert [e[f"videos/{CAMERAS[2]}/file_index"] for e in episodes] == [0, 1, 2]
    assert [e[f"videos/{CAMERAS[2]}/from_timestamp"] for e in episodes] == [0.0, 0.0, 0.0]
    assert [probe_video(root / f"videos/{CAMERAS[2]}/chunk-000/file-{k:03d}.mp4").frames for k in range(3)] == LENGTHS
    assert check_dataset(root).ok


CRASHING_WRITER = """
import signal, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from lerobot_datasets import make_episode
from twinvla_ros.data.lerobot.writer import DatasetWriter

writer = DatasetWriter(Path(sys.argv[2]), fps=20, image_size=(64, 80), codec="h264", resume=sys.argv[3] == "resume")
for k in range(2):
    writer.add(make_episode(writer.staging_dir / f"e{k}", seed=30 + k, length=12, task="t", codec="h264"))

def progress(stage, done, total):
    if stage == sys.argv[4] and done == total:
        print("stopping in", stage, flush=True)
        signal.pause()            # parked until the test kills this process

writer.finalize(progress)
"""


def kill_mid_finalize(root: Path, *, resume: bool, stage: str) -> None:
    process = subprocess.Popen([sys.executable, "-c", CRASHING_WRITER, str(TEST_DIR), str(root),
                                "resume" if resume else "fresh", stage],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("stopping in"), process.stderr.read()
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL


@pytest.mark.parametrize("stage", ["write data", "check"])
def test_a_writer_killed_mid_finalize_publishes_nothing(tmp_path, stage):
    root = tmp_path / "ds"
    kill_mid_finalize(root, resume=False, stage=stage)
    assert not root.exists()
    assert (tmp_path / ".ds.partial").is_dir()


def test_a_resume_killed_mid_finalize_leaves_the_previous_version(tmp_path, kit):
    root = kit.make_dataset(tmp_path / "ds", episodes=1, codec="h264")
    before = read_json(root / "meta/info.json")
    kill_mid_finalize(root, resume=True, stage="check")
    assert read_json(root / "meta/info.json") == before
    assert check_dataset(root).ok
