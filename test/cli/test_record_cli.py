"""`twinvla-ros record` as a user runs it: the unattended sim recording in a process of its own,
and the argument checks."""
import json
import subprocess
import sys

import pytest

from twinvla_ros.cli.main import main


@pytest.mark.ros
@pytest.mark.sim
def test_record_sim_writes_marked_episodes(tmp_path):
    out = tmp_path / "lift"
    result = subprocess.run([sys.executable, "-m", "twinvla_ros.cli.main", "record", "--sim", "--task", "lift_box",
                             "--episodes", "1", "--seed", "5", "--out", str(out), "--isolate"],
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "1/1 episodes succeeded" in result.stdout, result.stdout[-2000:]
    sidecar = json.loads((out / "episode_000000" / "episode.json").read_text())
    assert sidecar["status"] == "complete" and sidecar["success"] is True
    assert sidecar["extra"] == {"seed": "5", "source": "scripted_expert"}
    assert main(["episodes", str(out)]) == 0


@pytest.mark.parametrize("argv,message", [
    (["record", "--sim", "--task", "lift_box", "--out", "x"], "--episodes"),
    (["record", "--out", "x"], "--task"),
])
def test_record_refuses_incomplete_arguments(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err
