"""`twinvla-ros demo`, the README's first command, as a user runs it: the whole sim graph in
processes of their own, the shipped default policy, a short run."""
import json
import subprocess
import sys

import pytest

from twinvla_ros.data.lerobot.video import probe_video

pytestmark = [pytest.mark.ros, pytest.mark.sim, pytest.mark.slow]


def test_the_demo_runs_the_default_policy_and_says_whether_the_box_was_lifted(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "twinvla_ros.cli.main", "demo", "--duration", "4",
                             "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "lift_box_narrow" and summary["instruction"] == "pick up the red box"
    assert summary["checkpoint"] == "default"
    assert isinstance(summary["task_success"], bool) and summary["task_reason"]
    assert f"[demo] lift_box_narrow: {'done' if summary['task_success'] else 'not done'}" in result.stdout
    assert summary["published_actions"] > 20 and summary["chunks"] >= 2
    assert probe_video(out / "ego.mp4").frames >= 4
    assert (out / "trajectories.png").stat().st_size > 10_000
