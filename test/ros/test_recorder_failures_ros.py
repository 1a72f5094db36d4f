"""The recorder's failure paths over real DDS: killed with SIGKILL mid-episode (the bag tools
recover what reached the disk), an output directory that cannot be written, a disk with too
little room (refused before anything is written)."""
import json
import os
import signal
from pathlib import Path

import pytest
from sensor_msgs.msg import JointState

from bag_readers import bag_messages, mcap_counts
from ros_probe import Probe, wait_for
from twinvla_ros.bringup.graph import RECORDER, sim_robot, teleop_record
from twinvla_ros.bringup.runner import GraphRunner, ProcessGraphRunner
from twinvla_ros.ros.episode_client import EpisodeClient, EpisodeControlError
from twinvla_ros.ros.qos import COMMAND_QOS

pytestmark = [pytest.mark.ros, pytest.mark.sim]


def test_a_recorder_killed_mid_episode_leaves_a_bag_the_bag_tools_recover(tmp_path):
    from twinvla_ros.cli.main import main as cli

    out = tmp_path / "demos"
    recorder = [s for s in teleop_record(sim=True, task="lift_box", output_dir=str(out)) if s.name == RECORDER.name]
    with GraphRunner(sim_robot()) as robot, ProcessGraphRunner(recorder) as process:
        probe = Probe(robot.context)
        probe.record(JointState, "/joint_states", COMMAND_QOS)
        robot.add_node(probe)
        client = EpisodeClient(context=robot.context)
        robot.add_node(client)
        started = wait_for(lambda: _started(client), 60.0, "the recorder to start an episode")
        bag = Path(started["path"])
        # Several 1 MiB chunks on disk (three 240x320 rgb8 streams: ~3.5 MB/s), then SIGKILL.
        wait_for(lambda: sum(f.stat().st_size for f in bag.glob("*.mcap")) > 4 * 2**20, 30.0, "4 MiB on disk")
        pid = process.processes[RECORDER.name].pid
        os.kill(pid, signal.SIGKILL)
        process.processes[RECORDER.name].wait(timeout=10)
    assert not (bag / "metadata.yaml").exists()
    assert json.loads((bag / "episode.json").read_text())["status"] == "recording"
    assert cli(["bag", "recover", str(out)]) == 0
    messages = bag_messages(bag)
    assert mcap_counts(bag) == {topic: len(items) for topic, items in messages.items()}
    # Over 4 MiB were on disk at the kill, all of it closed chunks (the open one is in memory):
    # at least 3 MiB of camera frames come back, from every camera.
    cameras = [t for t in messages if t.endswith("/color/image_raw")]
    assert len(cameras) == 3
    assert sum(len(m.data) for t in cameras for _, m in messages[t]) >= 3 * 2**20
    assert json.loads((bag / "episode.json").read_text())["status"] == "recovered"
    # No hole: every joint state the probe got between the first and last recovered one is there.
    recorded = [(m.header.stamp.sec, m.header.stamp.nanosec) for _, m in messages["/joint_states"]]
    received = [(m.header.stamp.sec, m.header.stamp.nanosec) for m in probe.messages("/joint_states")]
    assert set(s for s in received if recorded[0] <= s <= recorded[-1]) <= set(recorded)


def _started(client):
    try:
        return client.start_episode()
    except EpisodeControlError as error:
        assert "streams missing" in str(error), error
        return None


@pytest.mark.parametrize("problem", ["unwritable", "full"])
def test_no_episode_starts_where_it_cannot_be_written(tmp_path, problem):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    params = {"min_rates": [""]}
    if problem == "unwritable":
        out = blocker / "demos"                # under a file: not creatable, even by root
    else:
        out = tmp_path / "demos"
        params["min_free_gb"] = 1e6            # more room than any disk has
    recorder = [s for s in teleop_record(sim=True, task="lift_box", output_dir=str(out),
                                         recorder_node=params) if s.name == RECORDER.name]
    with GraphRunner(recorder) as runner:
        client = EpisodeClient(context=runner.context)
        runner.add_node(client)
        with pytest.raises(EpisodeControlError) as refused:
            client.start_episode()
    text = str(refused.value)
    assert ("free" in text and "min_free_gb" in text) if problem == "full" else str(out) in text, text
    assert not list(tmp_path.glob("demos/episode_*"))
