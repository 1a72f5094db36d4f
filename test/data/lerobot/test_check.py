"""The dataset checker: a good dataset passes; each way of breaking one is named by a problem."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from twinvla_ros.data.lerobot.check import check_dataset
from twinvla_ros.data.lerobot.format import IMAGE_KEYS, STATE_KEY
from twinvla_ros.data.lerobot.video import VideoEncoder

DATA = "data/chunk-000/file-000.parquet"
EPISODES = "meta/episodes/chunk-000/file-000.parquet"
CAMERAS = tuple(IMAGE_KEYS.values())
TASKS = ("lift the box", "hand over the box")


@pytest.fixture(scope="module")
def good(tmp_path_factory, dataset_factory) -> Path:
    return dataset_factory(tmp_path_factory.mktemp("good") / "tiny", lengths=(25, 32, 40), tasks=TASKS, codec="h264")


@pytest.fixture
def copy(good, tmp_path) -> Path:
    return Path(shutil.copytree(good, tmp_path / "tiny"))


def edit_json(path: Path, change) -> None:
    content = json.loads(path.read_text())
    change(content)
    path.write_text(json.dumps(content))


def edit_table(path: Path, column: str, change) -> None:
    """Rewrites one column of a parquet file, keeping its schema (metadata included)."""
    table = pq.read_table(path)
    values = table[column].to_numpy(zero_copy_only=False).copy()
    change(values)
    position = table.schema.get_field_index(column)
    field = table.schema.field(column)
    table = table.set_column(position, field, pa.array(values, type=field.type))
    pq.write_table(table, path)


def test_a_good_dataset_has_no_problems(good):
    check = check_dataset(good)
    assert check.ok, check.problems
    assert (check.episodes, check.frames, check.fps, check.tasks) == (3, 97, 20.0, list(TASKS))
    assert check.duration_s == pytest.approx(97 / 20)
    assert check.cameras == {key: (97, 80, 64, "h264") for key in CAMERAS}
    summary = check.format()
    assert "OK" in summary and "3 episodes, 97 frames at 20 fps" in summary and "problem" not in summary


def drop_mp4(root: Path) -> None:
    (root / f"videos/{CAMERAS[1]}/chunk-000/file-000.mp4").unlink()


def tasks_without_index(root: Path) -> None:
    tasks = pd.read_parquet(root / "meta/tasks.parquet")
    tasks.reset_index().to_parquet(root / "meta/tasks.parquet", index=False)


def timestamp_off_by_3ms(root: Path) -> None:
    def shift(values):
        values[30] += 0.003                     # a frame of episode 1 (rows 25..56)
    edit_table(root / DATA, "timestamp", shift)


def total_frames_off_by_one(root: Path) -> None:
    edit_json(root / "meta/info.json", lambda info: info.__setitem__("total_frames", info["total_frames"] - 1))


def wrong_episode_index_in_meta(root: Path) -> None:
    def change(values):
        values[2] = 5
    edit_table(root / EPISODES, "episode_index", change)


def wrong_episode_index_in_data(root: Path) -> None:
    def change(values):
        values[60:65] = 1                       # rows of episode 2 labelled episode 1
    edit_table(root / DATA, "episode_index", change)


def nan_in_stats(root: Path) -> None:
    edit_json(root / "meta/stats.json", lambda stats: stats[STATE_KEY]["mean"].__setitem__(0, float("nan")))


def unordered_quantiles(root: Path) -> None:
    edit_json(root / "meta/stats.json", lambda stats: stats["action.ee_6d_pos"].__setitem__(
        "q01", [value + 10 for value in stats["action.ee_6d_pos"]["q01"]]))


def statistics_differ_from_stats(root: Path) -> None:
    edit_json(root / "dataset_statistics.json", lambda s: s["tiny"]["action"]["q99"].__setitem__(3, 7.0))


def extra_data_column(root: Path) -> None:
    table = pq.read_table(root / DATA)
    pq.write_table(table.append_column("observation.effort", pa.array(np.zeros(table.num_rows))), root / DATA)


def wrong_index(root: Path) -> None:
    def change(values):
        values[40] = 0
    edit_table(root / DATA, "index", change)


def short_video(root: Path) -> None:
    path = root / f"videos/{CAMERAS[0]}/chunk-000/file-000.mp4"
    with VideoEncoder(path, fps=20, width=80, height=64, codec="h264") as encoder:
        for _ in range(90):
            encoder.write(np.zeros((64, 80, 3), np.uint8))


def wrong_to_timestamp(root: Path) -> None:
    def change(values):
        values[1] += 0.05
    edit_table(root / EPISODES, f"videos/{CAMERAS[2]}/to_timestamp", change)


def bad_codebase_version(root: Path) -> None:
    edit_json(root / "meta/info.json", lambda info: info.__setitem__("codebase_version", "v2.1"))


@pytest.mark.parametrize("corrupt, expected", [
    (drop_mp4, f"videos/{CAMERAS[1]}/chunk-000/file-000.mp4: missing"),
    (tasks_without_index, "task strings are not the pandas index"),
    (timestamp_off_by_3ms, "episode 1: timestamp off frame_index/fps by up to 3.0"),
    (total_frames_off_by_one, "total_frames 96"),
    (wrong_episode_index_in_meta, "meta/episodes row 2: episode_index 5"),
    (wrong_episode_index_in_data, "episode 2: episode_index differs"),
    (nan_in_stats, f"meta/stats.json: {STATE_KEY}/mean has non-finite values"),
    (unordered_quantiles, "action.ee_6d_pos quantiles not ordered"),
    (statistics_differ_from_stats, "tiny/action/q99 differs from meta/stats.json"),
    (extra_data_column, "extra ['observation.effort']"),
    (wrong_index, "episode 1: index is not the global row number"),
    (short_video, f"videos/{CAMERAS[0]}/chunk-000/file-000.mp4: 90 frames"),
    (wrong_to_timestamp, f"episode 1 {CAMERAS[2]}: to_timestamp - from_timestamp"),
    (bad_codebase_version, "codebase_version 'v2.1'"),
], ids=lambda value: getattr(value, "__name__", None))
def test_each_corruption_is_named_by_a_problem(copy, corrupt, expected):
    corrupt(copy)
    check = check_dataset(copy)
    assert not check.ok
    assert any(expected in problem for problem in check.problems), check.problems
    assert expected in check.format()


def test_decoding_finds_an_episode_whose_last_frame_is_missing(copy):
    short_video(copy)
    problems = check_dataset(copy).problems
    assert any(f"episode 2 {CAMERAS[0]}: last frame" in problem for problem in problems), problems
    assert not any("last frame" in problem for problem in check_dataset(copy, decode=False).problems)


def test_a_directory_without_info_json_is_one_problem(tmp_path):
    check = check_dataset(tmp_path)
    assert check.problems == [f"{tmp_path / 'meta/info.json'}: missing"]
