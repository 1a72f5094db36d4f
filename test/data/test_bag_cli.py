"""`twinvla-ros bag info|recover` and `twinvla-ros episodes` on real bags: output and exit codes
(0 ok, 1 problem found or unrecoverable, 2 usage)."""
from __future__ import annotations

import pytest

import bag_messages as m
from twinvla_ros.cli.main import main
from twinvla_ros.data.bags import EpisodeRecorder, RecordingDirectory, TopicSpec


@pytest.fixture
def dataset(tmp_path):
    """Episode 0 complete, episode 1 as a killed recorder leaves it (chunks on disk, no footer)."""
    root = tmp_path / "demos"
    recorder = EpisodeRecorder(RecordingDirectory(root, min_free_bytes=0),
                               [TopicSpec("/joint_states", m.JOINTS, min_rate=1)], chunk_size=2048)
    for task in ("pick the cube", "place the cube"):
        recorder.start(task, config={"joints": 14})
        for k in range(50):
            recorder.offer("/joint_states", m.cdr(m.joints(k), m.JOINTS), 10**9 + k * 10**7)
        recorder.stop(success=task.startswith("pick"))
    bag = root / "episode_000001"
    mcap_file = next(bag.glob("*.mcap"))
    mcap_file.write_bytes(mcap_file.read_bytes()[: mcap_file.stat().st_size * 2 // 3])
    (bag / "metadata.yaml").unlink()
    return root


def test_info_recover_and_episodes(dataset, capsys):
    assert main(["bag", "info", str(dataset / "episode_000000")]) == 0
    out = capsys.readouterr().out
    assert "Topic: /joint_states | Type: sensor_msgs/msg/JointState | Count: 50" in out
    assert "task: pick the cube" in out

    assert main(["bag", "info", str(dataset / "episode_000001")]) == 1   # incomplete
    assert "INCOMPLETE" in capsys.readouterr().out

    assert main(["episodes", str(dataset)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["index", "task", "duration", "success", "status", "flags"]
    assert table[1].split()[:5] == ["0", "pick", "the", "cube", "0.0"] and "yes" in table[1]
    assert "place the cube" in table[2] and "no" in table[2]

    assert main(["bag", "recover", str(dataset)]) == 0   # the dataset: only episode 1 needs it
    out = capsys.readouterr().out
    assert "episode_000001: recovered" in out and "1 bag(s) complete, nothing to do" in out
    assert main(["bag", "info", str(dataset / "episode_000001")]) == 0
    assert "recovered" in capsys.readouterr().out
    assert main(["episodes", str(dataset)]) == 0
    assert "recovered" in capsys.readouterr().out.splitlines()[2]


def test_problems_and_usage_exit_codes(tmp_path, capsys):
    not_a_bag = tmp_path / "junk"
    not_a_bag.mkdir()
    (not_a_bag / "junk_0.mcap").write_bytes(b"definitely not mcap")
    assert main(["bag", "recover", str(not_a_bag)]) == 1
    assert "not an MCAP file" in capsys.readouterr().err
    assert main(["bag", "info", str(not_a_bag)]) == 1
    assert main(["bag", "info", str(tmp_path / "missing")]) == 2
    assert main(["episodes", str(tmp_path / "missing")]) == 2
    with pytest.raises(SystemExit) as caught:
        main(["bag"])
    assert caught.value.code == 2
