"""Many bags -> one dataset, through worker processes and the CLI: every converted episode in
input order, a truncated bag skipped with the reason, resume adds only new bags, a convert
killed mid-way leaves no dataset, and `dataset check` / `dataset show` work on the result."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from episode_bags import EpisodeSpec, write_episode
from waiting import wait_for
from twinvla_ros.cli.main import main as cli
from twinvla_ros.data.conversion import ConversionOptions, convert, convert_episode, find_bags
from twinvla_ros.data.lerobot.check import check_dataset
from twinvla_ros.data.lerobot.format import ACTION_KEY, STATE_KEY
from twinvla_ros.data.lerobot.reader import LeRobotEpisodes

OPTIONS = ConversionOptions(fps=20, image_size=(32, 48), codec="h264")
SPECS = [EpisodeSpec(duration_s=1.2, task="lift the box"), EpisodeSpec(duration_s=1.6, task="hand over the box"),
         EpisodeSpec(duration_s=1.0, task="lift the box", compressed=True)]


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    root = tmp_path_factory.mktemp("demos")
    for spec in SPECS:
        write_episode(root, spec)
    return root


def truncate(bag: Path) -> None:
    (mcap,) = bag.glob("*.mcap")
    data = mcap.read_bytes()
    mcap.write_bytes(data[: len(data) // 2])


def test_every_bag_becomes_an_episode_in_input_order(recording, tmp_path):
    events = []
    result = convert([recording], tmp_path / "lift", OPTIONS, workers=2,
                     on_event=lambda bag, stage, done, total: events.append((Path(bag).name, stage)))
    assert [Path(bag).name for bag, _ in result.converted] == [f"episode_{i:06d}" for i in range(3)]
    assert not result.skipped
    dataset = LeRobotEpisodes(tmp_path / "lift", load_images=False)
    assert dataset.num_episodes == 3 and dataset.tasks == ["lift the box", "hand over the box"]
    for index, bag in enumerate(find_bags([recording])):
        alone = convert_episode(bag, tmp_path / f"alone{index}", OPTIONS)       # the same, one at a time
        episode = dataset.episode(index)
        assert np.array_equal(episode["state"], alone.state) and np.array_equal(episode["action"], alone.action)
        assert episode["task"] == SPECS[index].task
    assert check_dataset(tmp_path / "lift").ok
    stages = {stage for _, stage in events}
    assert {"read", "frames", "done"} <= stages             # per-episode progress reached the caller


def test_a_truncated_bag_is_skipped_with_the_reason_and_the_rest_converted(recording, tmp_path):
    demos = tmp_path / "demos"
    for spec in SPECS[:2]:
        write_episode(demos, spec)
    truncate(demos / "episode_000001")
    result = convert([demos], tmp_path / "out", OPTIONS, workers=1)
    assert [Path(bag).name for bag, _ in result.converted] == ["episode_000000"]
    ((bag, reason),) = result.skipped
    assert Path(bag).name == "episode_000001" and "cannot be read" in reason
    assert check_dataset(tmp_path / "out").ok


def test_nothing_convertible_publishes_nothing(tmp_path):
    demos = tmp_path / "demos"
    write_episode(demos, EpisodeSpec(success=False))
    result = convert([demos], tmp_path / "out", OPTIONS, workers=1)
    assert result.dataset is None and not (tmp_path / "out").exists()
    assert "failed demonstration" in result.skipped[0][1]
    assert not list(tmp_path.glob(".out.*"))                 # no partial folder left either


def test_resume_adds_only_the_bags_not_yet_in_the_dataset(tmp_path):
    demos = tmp_path / "demos"
    write_episode(demos, SPECS[0])
    first = convert([demos], tmp_path / "ds", OPTIONS, workers=1, resume=True)     # nothing there: a new one
    assert first.dataset.episodes == 1
    write_episode(demos, SPECS[1])
    second = convert([demos], tmp_path / "ds", OPTIONS, workers=1, resume=True)
    assert second.skipped == [(str((demos / "episode_000000").resolve()), "already in the dataset")]
    assert second.dataset.episodes == 2 and second.dataset.new_episodes == 1
    dataset = LeRobotEpisodes(tmp_path / "ds", load_images=False)
    assert [dataset.episode_task(e) for e in range(2)] == [SPECS[0].task, SPECS[1].task]
    provenance = json.loads((tmp_path / "ds/meta/twinvla_ros.json").read_text())
    assert [Path(e["source"]).name for e in provenance["episodes"]] == ["episode_000000", "episode_000001"]


def children(pid: int) -> list[int]:
    """Live processes whose parent is `pid` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def run_cli(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "twinvla_ros.cli.main", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_convert_killed_mid_way_leaves_no_dataset_and_the_next_one_completes(recording, tmp_path):
    out = tmp_path / "ds"
    process = run_cli("convert", recording, "--out", out, "--image-size", "32x48", "--codec", "h264",
                      "--workers", "1")
    partial = tmp_path / ".ds.partial"
    wait_for(lambda: list(partial.glob(".staging/*/*.mp4")) or process.poll() is not None, 120,
             "the first staged video")
    assert process.poll() is None, "the convert ended before it could be killed"
    helpers = children(process.pid)                  # the worker and the progress queue's server
    assert helpers
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not out.exists()
    wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in helpers), 20,
             "the converter's helper processes to end with it")
    completed = run_cli("convert", recording, "--out", out, "--image-size", "32x48", "--codec", "h264")
    stdout, stderr = completed.communicate(timeout=300)
    assert completed.returncode == 0, stderr
    assert "3 episodes (3 new)" in stdout
    assert check_dataset(out).ok and not partial.exists()


def test_the_cli_converts_checks_and_shows(recording, tmp_path, capsys):
    out = tmp_path / "ds"
    assert cli(["convert", str(recording), "--out", str(out), "--image-size", "32x48", "--codec", "h264",
                "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "episode_000001: 3" in printed and "oldest frame" in printed and "3 episodes (3 new)" in printed
    assert cli(["dataset", "check", str(out)]) == 0
    assert "3 episodes" in capsys.readouterr().out
    assert cli(["dataset", "show", str(out), "--episode", "1", "--out", str(tmp_path / "show")]) == 0
    assert len(list((tmp_path / "show").glob("*.png"))) == 2
    assert cli(["convert", str(recording), "--out", str(out)]) == 1              # exists, no --resume
    assert "--resume" in capsys.readouterr().err
    assert cli(["convert", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    assert cli(["dataset", "show", str(out), "--episode", "7", "--out", str(tmp_path / "show")]) == 1


def test_dataset_check_names_a_broken_file(recording, tmp_path, capsys):
    out = tmp_path / "ds"
    assert convert([recording], out, OPTIONS, workers=1).dataset is not None
    (next((out / "videos").rglob("*.mp4"))).unlink()
    assert cli(["dataset", "check", str(out)]) == 1
    assert ".mp4" in capsys.readouterr().out


def test_the_rows_hold_what_training_reads(recording, tmp_path):
    """The dataset's vectors through the reader the fine-tuning uses: a 20-step action chunk
    from each row, padded past the episode's end."""
    out = tmp_path / "ds"
    convert([recording], out, OPTIONS, workers=1)
    dataset = LeRobotEpisodes(out, load_images=True)
    sample = dataset[len(dataset) - 3]                       # three rows before the last one
    assert sample["action"].shape == (20, 20) and sample["action_is_pad"].tolist() == [False] * 3 + [True] * 17
    assert sample["state"].shape == (20,) and sample["images"]["observation.images.agentview"].shape == (32, 48, 3)
    assert set(dataset.stats) >= {STATE_KEY, ACTION_KEY}
