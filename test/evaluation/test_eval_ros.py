"""`twinvla-ros eval` through the real node graph (sim, arm driver and policy node in processes
of their own, real DDS), on a checkpoint that `twinvla-ros train` wrote."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from twinvla_ros.cli.main import main as cli
from twinvla_ros.data.lerobot.video import probe_video
from twinvla_ros.sim import SimWorld
from twinvla_ros.sim.world import SimConfig
from twinvla_ros.training.config import TrainConfig
from twinvla_ros.training.trainer import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data" / "lerobot"))
from lerobot_datasets import make_dataset  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.sim, pytest.mark.slow]


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory):
    """Two steps of fine-tuning from the tiny preset: the policy node runs what train writes."""
    dataset = make_dataset(tmp_path_factory.mktemp("data") / "lift_box", codec="h264")
    run = Trainer(dataset, tmp_path_factory.mktemp("run"), config=TrainConfig(steps=2, batch_size=2)).run()
    return run.final


def test_eval_reports_two_rollouts_with_videos_and_a_contact_sheet(trained_checkpoint, tmp_path, capsys):
    out = tmp_path / "eval"
    code = cli(["eval", "--checkpoint", str(trained_checkpoint), "--task", "lift_box", "--episodes", "2",
                "--seed", "5", "--max-seconds", "6", "--videos", "1", "--out", str(out),
                "--policy-param", "injected_latency=0.05", "--policy-param", "execution_horizon=5"])
    printed = capsys.readouterr()
    assert code == 0, printed.err[-3000:]
    report = json.loads((out / "eval_report.json").read_text())
    assert report["task"] == "lift_box" and report["instruction"] == "pick up the red box"
    assert report["num_episodes"] == 2 and [e["seed"] for e in report["episodes"]] == [5, 6]
    low, high = report["confidence_interval_95"]
    assert 0.0 <= low <= report["success_rate"] <= high <= 1.0
    assert report["successes"] == sum(e["success"] for e in report["episodes"])
    assert "mean_time_to_success_s" in report and report["execution_mode"] == "rtc"
    for episode in report["episodes"]:
        assert episode["success"] or episode["seconds"] >= 6.0
        # The sim was reset with the episode's seed: the box starts where a reset with it puts it.
        world = SimWorld(SimConfig(task="lift_box"))
        expected = world.reset(episode["seed"])["box"]
        world.close()
        np.testing.assert_allclose(episode["initial_objects"]["box"], expected, atol=1e-5)
    first, second = report["episodes"]
    assert first["video"] and second["video"] is None
    video = probe_video(first["video"])
    assert video.frames >= 20 and (video.width, video.height) == (320, 240)
    assert Path(report["contact_sheet"]).stat().st_size > 10_000
    assert f"lift_box: {report['successes']}/2 succeeded" in printed.out
    # The policy node ran with the settings given, and its chunk-execution figures are reported.
    assert report["policy_settings"] == {"injected_latency": 0.05, "execution_horizon": 5}
    policy = report["policy"]
    assert policy["chunks"] >= 2 and policy["inference_p50_ms"] > 0
    assert policy["latency_estimate_s"] >= 0.05                 # the injected latency is part of it
    assert policy["mean_boundary_jump"] >= 0 and policy["mean_plan_change"] >= 0


@pytest.mark.parametrize("items, expected", [
    (["injected_latency=0.15", "execution_horizon=5", "synchronizer=twinvla_ros"],
     {"injected_latency": 0.15, "execution_horizon": 5, "synchronizer": "twinvla_ros"}),
    (["cfg_scale = 1.5"], {"cfg_scale": 1.5}), ([], {}),
])
def test_policy_parameters_are_read_as_ros2_run_reads_them(items, expected):
    from twinvla_ros.cli.eval import _parameters

    assert _parameters(items) == expected


@pytest.mark.parametrize("item", ["injected_latency", "=3", "execution_mode=sync", "checkpoint=x"])
def test_a_malformed_or_reserved_policy_parameter_is_refused_before_anything_starts(item, capsys):
    assert cli(["eval", "--checkpoint", "tiny", "--policy-param", item]) == 2
    assert "--policy-param" in capsys.readouterr().err


def test_eval_refuses_an_unknown_task(capsys):
    assert cli(["eval", "--checkpoint", "tiny", "--task", "fold_towel"]) == 2
    assert "unknown task 'fold_towel'" in capsys.readouterr().err
