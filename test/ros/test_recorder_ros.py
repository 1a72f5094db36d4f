"""The teleop_record graph in the sim, end to end over real DDS: the scripted expert drives the
arms through the arm driver, the recorder writes one MCAP bag per episode, and the bags are
opened by two independent readers (rosbags' AnyReader and the `mcap` library with its ROS 2
decoder). The failure paths are in test_recorder_failures_ros.py."""
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from sensor_msgs.msg import JointState
from std_msgs.msg import String

from bag_readers import bag_messages, mcap_counts
from ros_probe import Probe
from twinvla_ros.bringup.graph import teleop_record
from twinvla_ros.bringup.runner import GraphRunner
from twinvla_ros.cli.record import record_sim_episodes
from twinvla_ros.data.conversion import ConversionOptions, convert
from twinvla_ros.data.lerobot.check import check_dataset
from twinvla_ros.data.lerobot.reader import LeRobotEpisodes
from twinvla_ros.ros.episode_client import EpisodeClient
from twinvla_ros.ros.nodes.recorder_node import DEFAULT_TOPICS
from twinvla_ros.ros.qos import COMMAND_QOS

pytestmark = [pytest.mark.ros, pytest.mark.sim]

PROBE_TOPIC = "/test/ticks"
EPISODES = 3


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """Three lift_box episodes recorded unattended, as `twinvla-ros record --sim` does, while a
    probe publishes a numbered stream (50 Hz) and watches /joint_states."""
    out = tmp_path_factory.mktemp("demos")
    specs = teleop_record(sim=True, task="lift_box", output_dir=str(out),
                          recorder_node={"topics": [*DEFAULT_TOPICS, PROBE_TOPIC]})
    with GraphRunner(specs) as runner:
        probe = Probe(runner.context)
        probe.record(JointState, "/joint_states", COMMAND_QOS)
        ticks = probe.create_publisher(String, PROBE_TOPIC, COMMAND_QOS)
        count = iter(range(10**9))
        probe.create_timer(0.02, lambda: ticks.publish(String(data=str(next(count)))))
        runner.add_node(probe)
        client = EpisodeClient(context=runner.context)
        runner.add_node(client)
        summaries = record_sim_episodes(client, EPISODES, seed=11)
        yield out, summaries, probe, runner, client


def test_every_episode_is_a_bag_both_readers_open(recording):
    out, summaries, probe, runner, client = recording
    bags = sorted(out.glob("episode_*"))
    assert [b.name for b in bags] == [f"episode_{i:06d}" for i in range(EPISODES)]
    for bag, summary in zip(bags, summaries):
        metadata = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
        assert metadata["version"] == 9 and metadata["storage_identifier"] == "mcap"
        custom = metadata["custom_data"]
        assert "pick up the red box" in json.dumps(custom)
        messages = bag_messages(bag)
        decoded_counts = mcap_counts(bag)
        counts = {topic: len(items) for topic, items in messages.items()}
        assert counts == decoded_counts
        assert counts == {topic: stats["count"] for topic, stats in summary["topics"].items() if stats["count"]}
        for topic in ("/joint_states", "/left_arm/eef_pose", "/right_arm/eef_pose", "/right_arm/eef_target",
                      "/right_arm/gripper_target", "/cameras/ego/color/image_raw",
                      "/cameras/wrist_right/color/camera_info", "/robot_description", "/instruction", PROBE_TOPIC):
            assert counts.get(topic, 0) > 0, f"{bag.name}: nothing on {topic}"
        assert [m.data for _, m in messages["/instruction"]] == ["pick up the red box"]
        image = messages["/cameras/ego/color/image_raw"][0][1]
        assert (image.encoding, image.width, image.height) == ("rgb8", 320, 240)


def test_nothing_published_during_an_episode_is_missing(recording):
    """The numbered stream is contiguous in every bag, and every /joint_states message the probe
    received between an episode's first and last recorded one is in that episode's bag."""
    out, summaries, probe, runner, client = recording
    received = [(m.header.stamp.sec, m.header.stamp.nanosec) for m in probe.messages("/joint_states")]
    for bag in sorted(out.glob("episode_*")):
        messages = bag_messages(bag)
        ticks = [int(m.data) for _, m in messages[PROBE_TOPIC]]
        assert ticks == list(range(ticks[0], ticks[0] + len(ticks))), f"{bag.name}: ticks lost"
        recorded = [(m.header.stamp.sec, m.header.stamp.nanosec) for _, m in messages["/joint_states"]]
        inside = [s for s in received if recorded[0] <= s <= recorded[-1]]
        assert set(inside) <= set(recorded)
        assert len(recorded) == len(set(recorded)) == len(inside)


def test_the_scripted_expert_succeeds_and_marks_the_episodes(recording):
    out, summaries, probe, runner, client = recording
    assert [s["success"] for s in summaries] == [True] * EPISODES
    seeds = []
    for bag in sorted(out.glob("episode_*")):
        sidecar = json.loads((bag / "episode.json").read_text())
        assert sidecar["success"] is True and sidecar["task"] == "pick up the red box"
        seeds.append(sidecar["extra"]["seed"])
    assert seeds == [str(11 + i) for i in range(EPISODES)]
    # Flags say which stream fell below its minimum rate (config/teleop_record.yaml): exactly the
    # topics whose worst 1 s window was below it (a loaded machine may slow the state streams).
    minimum = {"/joint_states": 40, "/left_arm/eef_pose": 40, "/right_arm/eef_pose": 40}
    minimum.update({f"/cameras/{c}/color/image_raw": 10 for c in ("ego", "wrist_left", "wrist_right")})
    for summary in summaries:
        assert summary["dropped"] == 0
        slow = {t for t, stats in summary["topics"].items() if t in minimum
                and stats["worst_window_rate_hz"] < minimum[t]}
        assert {flag.split(":")[0] for flag in summary["flagged"]} == slow, summary["flagged"]


def test_the_episodes_convert_to_a_dataset_the_training_reader_loads(recording, tmp_path):
    """The recorder's first bag through the converter (the many-bag paths are tested on
    written bags in test/data/conversion): a valid dataset whose rows follow the recorded EEF
    poses (each row's xyz between the poses recorded around its tick)."""
    out, summaries, probe, runner, client = recording
    # Gaps up to 1 s pass: the sim's cameras slow down when this machine is loaded; whether the
    # expert succeeded is another test's.
    options = ConversionOptions(fps=20, image_size=(120, 160), codec="h264", max_gap_s=1.0, include_failed=True)
    result = convert([out / "episode_000000"], tmp_path / "lift_box", options, workers=1)
    assert not result.skipped and len(result.converted) == 1
    assert check_dataset(tmp_path / "lift_box").ok
    dataset = LeRobotEpisodes(tmp_path / "lift_box")
    assert dataset.tasks == ["pick up the red box"] and dataset.num_episodes == 1
    for index, (bag, report) in enumerate(result.converted):
        episode = dataset.episode(index)
        assert len(episode["state"]) == report["frames"] >= 20 * 8          # the demos last > 8 s
        poses = [m for _, m in bag_messages(Path(bag))["/right_arm/eef_pose"]]
        stamps = np.array([m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in poses])
        xs = np.array([m.pose.position.x for m in poses])
        for row in (0, len(episode["state"]) // 2, len(episode["state"]) - 1):
            tick = report["start_ns"] + row * 10**9 // 20
            after = int(np.searchsorted(stamps, tick))
            around = xs[max(after - 1, 0): after + 1]
            assert around.min() - 1e-6 <= episode["state"][row][10] <= around.max() + 1e-6
        frames = episode["images"]["observation.images.agentview"]
        assert frames.shape == (len(episode["state"]), 120, 160, 3) and frames.std() > 5   # a rendered scene


def test_discard_removes_the_episode_and_it_is_recorded_again(recording):
    out, summaries, probe, runner, client = recording
    last = out / f"episode_{EPISODES - 1:06d}"
    result = client.discard_episode()
    assert Path(result["discarded"]) == last and not last.exists()
    assert result["next_index"] == EPISODES - 1
    (again,) = record_sim_episodes(client, 1, seed=11)
    assert again["index"] == EPISODES - 1 and last.exists() and again["success"]
