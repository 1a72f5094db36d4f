"""EpisodeRecorder and RecordingDirectory on real MCAP files with real CDR messages: what is
offered is what rosbags' AnyReader, the mcap reader with the ROS 2 decoder and bag_summary read
back; discard, resume, config checks, readiness checks, rate flags and queue drops."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import yaml
from mcap.reader import make_reader
from mcap.records import Message
from mcap_ros2.decoder import DecoderFactory
from rosbags.highlevel import AnyReader

import bag_messages as m
from twinvla_ros.data.bags import (ConfigMismatch, EpisodeRecorder, RecordingDirectory, RecordingError,
                                   TopicSpec, bag_summary)
from twinvla_ros.data.bags.recovery import McapScan
from waiting import wait_for

CONFIG = {"cameras": {"ego": {"width": 64, "height": 48, "fps": 30}}, "joints": m.JOINT_NAMES}
TOPICS = [TopicSpec("/cameras/ego/color/image_raw", m.IMAGE, min_rate=10),
          TopicSpec("/cameras/ego/color/image_raw/compressed", m.COMPRESSED),
          TopicSpec("/joint_states", m.JOINTS, min_rate=50,
                    qos="- history: keep_last\n  depth: 10\n  reliability: reliable\n  durability: volatile\n"
                        "  deadline: {sec: 0, nsec: 0}\n  lifespan: {sec: 0, nsec: 0}\n"
                        "  liveliness: automatic\n  liveliness_lease_duration: {sec: 0, nsec: 0}\n"
                        "  avoid_ros_namespace_conventions: false\n"),
          TopicSpec("/left_arm/eef_pose", m.POSE),
          TopicSpec("/instruction", m.STRING),
          TopicSpec("/diagnostics", m.DIAGNOSTICS)]


class FakeClock:
    """The recorder's clock, set by the test: rates are then exact."""

    def __init__(self, ns: int = 1_000_000_000_000):
        self.ns = ns

    def __call__(self) -> int:
        return self.ns


def directory(tmp_path, **kwargs) -> RecordingDirectory:
    return RecordingDirectory(tmp_path / "demos", min_free_bytes=kwargs.pop("min_free_bytes", 0), **kwargs)


def record_messages(recorder, clock, seconds: float, rates: dict[str, float], start_ns: int):
    """Offer each topic at its rate for `seconds` of fake time; returns {topic: [(t, cdr)]}."""
    events = sorted((start_ns + int(k * 1e9 / rate), topic) for topic, rate in rates.items()
                    for k in range(int(seconds * rate)))
    offered: dict[str, list] = {topic: [] for topic in rates}
    msgtypes = {spec.name: spec.msgtype for spec in recorder.topics.values()}
    for seed, (t, topic) in enumerate(events):
        clock.ns = t
        data = m.cdr(m.message(msgtypes[topic], t, seed=seed), msgtypes[topic])
        assert recorder.offer(topic, data, t)
        offered[topic].append((t, data))
    return offered


def test_episode_reads_back_with_every_reader(tmp_path):
    clock = FakeClock()
    recorder = EpisodeRecorder(directory(tmp_path), TOPICS, clock_ns=clock)
    index = recorder.start("hand over the box", config=CONFIG, operator_note="first try",
                           extra={"operator": "kim"})
    assert index == 0 and recorder.recording and recorder.current_index == 0
    rates = {"/cameras/ego/color/image_raw": 30, "/cameras/ego/color/image_raw/compressed": 30,
             "/joint_states": 100, "/left_arm/eef_pose": 100, "/instruction": 1, "/diagnostics": 2}
    start = clock.ns
    offered = record_messages(recorder, clock, 2.0, rates, start + 1)
    clock.ns = start + 2_000_000_000
    summary = recorder.stop(success=True)
    assert not recorder.recording and recorder.current_index is None
    assert summary.flagged == [] and summary.dropped == 0 and summary.success is True
    assert {name: s.count for name, s in summary.topics.items()} == {t: len(v) for t, v in offered.items()}
    assert summary.topics["/joint_states"].rate_hz == pytest.approx(100, rel=0.02)
    assert "/joint_states" in summary.format()

    # rosbags: counts and decoded contents; metadata.yaml: custom_data and QoS.
    with AnyReader([summary.path], default_typestore=m.STORE) as reader:
        assert {c.topic: c.msgcount for c in reader.connections} == {t: len(v) for t, v in offered.items()}
        read = {topic: [] for topic in offered}
        for connection, t, raw in reader.messages():
            read[connection.topic].append((t, bytes(raw)))
        assert read == offered
        joint_msg = reader.deserialize(read["/joint_states"][3][1], m.JOINTS)
        assert list(joint_msg.name) == m.JOINT_NAMES
    metadata = yaml.safe_load((summary.path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert metadata["version"] == 9 and metadata["storage_identifier"] == "mcap"
    custom = metadata["custom_data"]
    assert (custom["task"], custom["operator_note"], custom["success"], custom["operator"]) == (
        "hand over the box", "first try", "true", "kim")
    joint_topic = next(t for t in metadata["topics_with_message_count"] if t["topic_metadata"]["name"] == "/joint_states")
    assert joint_topic["topic_metadata"]["offered_qos_profiles"][0]["reliability"] == "reliable"

    # The mcap library with the ROS 2 decoder (what Foxglove-like tools do): every message decodes.
    mcap_file = next(summary.path.glob("*.mcap"))
    with open(mcap_file, "rb") as file:
        reader = make_reader(file, decoder_factories=[DecoderFactory()])
        assert reader.get_header().profile == "ros2"
        schemas = {s.name: s for s in reader.get_summary().schemas.values()}
        assert set(schemas) == {spec.msgtype for spec in TOPICS}
        assert all(s.encoding == "ros2msg" for s in schemas.values())
        assert "MSG: std_msgs/Header" in schemas[m.IMAGE].data.decode()
        decoded = {topic: 0 for topic in offered}
        for _, channel, message, ros_msg in reader.iter_decoded_messages():
            decoded[channel.topic] += 1
            if channel.topic == "/cameras/ego/color/image_raw":
                assert (ros_msg.width, ros_msg.height, ros_msg.encoding) == (64, 48, "rgb8")
            if channel.topic == "/instruction":
                assert ros_msg.data.startswith("instruction ")
        assert decoded == {t: len(v) for t, v in offered.items()}

    info = bag_summary(summary.path)
    assert info.complete and info.sidecar["status"] == "complete"
    assert {name: t.count for name, t in info.topics.items()} == {t: len(v) for t, v in offered.items()}
    assert info.topics["/joint_states"].first_ns == offered["/joint_states"][0][0]
    assert info.topics["/joint_states"].last_ns == offered["/joint_states"][-1][0]
    assert info.custom_data["task"] == "hand over the box"
    assert "Topic: /diagnostics | Type: diagnostic_msgs/msg/DiagnosticArray | Count: 4" in info.format()


def test_discard_resume_and_notes(tmp_path):
    clock = FakeClock()
    dataset = directory(tmp_path)
    recorder = EpisodeRecorder(dataset, TOPICS[:1], clock_ns=clock)
    assert recorder.start("pick", config=CONFIG) == 0
    recorder.offer("/cameras/ego/color/image_raw", m.cdr(m.image(1), m.IMAGE), 1)
    discarded = recorder.discard()
    assert not discarded.exists() and not recorder.recording
    assert recorder.start("pick", config=CONFIG) == 0   # the discarded number again
    recorder.stop()
    assert recorder.start("place", config=CONFIG) == 1
    recorder.stop()
    assert recorder.discard() == dataset.episode_dir(1) and not dataset.episode_dir(1).exists()
    with pytest.raises(RecordingError, match="no episode to discard"):
        recorder.discard()   # never reaches back to episode 0
    assert dataset.episode_dir(0).exists()
    recorder.mark_success(False, index=0)

    # Re-opened directory (a new session): numbering continues, notes and success update both files.
    again = EpisodeRecorder(RecordingDirectory(dataset.root, min_free_bytes=0), TOPICS[:1], clock_ns=clock)
    assert again.start("pick", config=CONFIG) == 1
    again.set_note("gripper slipped")
    assert json.loads((dataset.episode_dir(1) / "episode.json").read_text())["operator_note"] == "gripper slipped"
    again.close()
    again.mark_success(True)
    again.set_note("gripper slipped, fine")
    records = dataset.episodes()
    assert [(r.index, r.task, r.success, r.status) for r in records] == [
        (0, "pick", False, "complete"), (1, "pick", True, "complete")]
    assert bag_summary(dataset.episode_dir(1)).custom_data["operator_note"] == "gripper slipped, fine"
    assert bag_summary(dataset.episode_dir(0)).custom_data["success"] == "false"
    assert again.start("x", config=CONFIG) == 2
    with pytest.raises(RecordingError, match="already recording episode 2"):
        again.start("y", config=CONFIG)
    again.discard()


def test_config_mismatch_lists_every_difference(tmp_path):
    dataset = directory(tmp_path)
    dataset.check_config(CONFIG)
    assert json.loads((dataset.root / "recording.json").read_text())["config"]["cameras"]["ego"]["width"] == 64
    dataset.check_config(json.loads(json.dumps(CONFIG)))   # the same config again is fine
    changed = {"cameras": {"ego": {"width": 640, "height": 48}, "wrist_left": {"width": 64}},
               "joints": m.JOINT_NAMES[:7]}
    with pytest.raises(ConfigMismatch) as caught:
        EpisodeRecorder(dataset, TOPICS[:1]).start("pick", config=changed)
    assert sorted(caught.value.differences) == sorted([
        "cameras.ego.width: dataset 64, now 640",
        "cameras.ego.fps: dataset 30, now missing",
        'cameras.wrist_left: dataset missing, now {"width": 64}',
        f"joints: dataset {json.dumps(m.JOINT_NAMES)}, now {json.dumps(m.JOINT_NAMES[:7])}"])
    assert dataset.episodes() == []


def test_root_that_cannot_be_created_is_refused(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    recorder = EpisodeRecorder(RecordingDirectory(tmp_path / "a_file" / "demos", min_free_bytes=0), TOPICS[:1])
    with pytest.raises(RecordingError, match="cannot write to"):
        recorder.start("pick", config=CONFIG)
    assert (tmp_path / "a_file").read_text() == "not a folder"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_unwritable_root_is_refused_before_any_file(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        recorder = EpisodeRecorder(RecordingDirectory(locked / "demos", min_free_bytes=0), TOPICS[:1])
        with pytest.raises(RecordingError, match="cannot write to"):
            recorder.start("pick", config=CONFIG)
        recorder = EpisodeRecorder(RecordingDirectory(locked, min_free_bytes=0), TOPICS[:1])
        with pytest.raises(RecordingError, match="cannot write to"):
            recorder.start("pick", config=CONFIG)
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


def test_too_little_free_space_is_refused_before_any_file(tmp_path):
    import shutil

    free = shutil.disk_usage(tmp_path).free
    recorder = EpisodeRecorder(RecordingDirectory(tmp_path / "demos", min_free_bytes=free * 4), TOPICS[:1])
    with pytest.raises(RecordingError, match=r"only .* GiB free on .*, the minimum is .* GiB \(min_free_gb\)"):
        recorder.start("pick", config=CONFIG)
    assert [p for p in (tmp_path / "demos").iterdir()] == []   # not even recording.json


def test_rate_below_minimum_is_flagged(tmp_path):
    clock = FakeClock()
    camera, joints = "/cameras/ego/color/image_raw", "/joint_states"
    topics = [TopicSpec(camera, m.IMAGE, min_rate=20), TopicSpec(joints, m.JOINTS, min_rate=50)]
    recorder = EpisodeRecorder(directory(tmp_path), topics, clock_ns=clock, rate_window=1.0)
    recorder.start("pick", config=CONFIG)
    start = clock.ns
    # Ticks of 10 ms: joint states every tick (100 Hz); a camera frame every third tick (33 Hz),
    # none from 1.00 s to 1.59 s.
    for k in range(300):
        t = start + k * 10_000_000
        clock.ns = t
        recorder.offer(joints, m.cdr(m.joints(t), m.JOINTS), t)
        if k % 3 == 0 and not 100 <= k < 160:
            recorder.offer(camera, m.cdr(m.image(t), m.IMAGE), t)
        if k == 150:   # the last second, (0.5 s, 1.5 s]: camera frames at ticks 51..99
            assert recorder.live_rates() == {camera: 17, joints: 100}
    clock.ns = start + 3_000_000_000
    summary = recorder.stop()
    # The worst window, (0.99 s, 1.99 s], holds the frames of ticks 162..198: 13.
    assert summary.topics[camera].worst_window_rate_hz == 13
    assert summary.topics[joints].worst_window_rate_hz == 99   # (2.0 s, 3.0 s] holds ticks 201..299
    assert summary.flagged == [f"{camera}: 13.0 Hz in the worst 1 s window, below its minimum 20 Hz"]
    assert recorder.live_rates() == {camera: 0.0, joints: 0.0}   # not recording


def test_stalled_and_silent_topics_are_flagged(tmp_path):
    clock = FakeClock()
    recorder = EpisodeRecorder(directory(tmp_path), TOPICS[:3], clock_ns=clock)
    recorder.start("pick", config=CONFIG)
    start = clock.ns
    camera = "/cameras/ego/color/image_raw"
    for k in range(60):   # 30 Hz for 1 s, then nothing for 2 s
        clock.ns = start + k * 33_000_000 // 2
        recorder.offer(camera, m.cdr(m.image(clock.ns), m.IMAGE), clock.ns)
    clock.ns = start + 3_000_000_000
    summary = recorder.stop()
    assert summary.topics[camera].worst_window_rate_hz == 0
    assert f"{camera}: 0.0 Hz in the worst 1 s window, below its minimum 10 Hz" in summary.flagged
    assert "/joint_states: no messages, its minimum is 50 Hz" in summary.flagged
    sidecar = json.loads((summary.path / "episode.json").read_text())
    assert sidecar["flags"] == summary.flagged
    assert json.loads(bag_summary(summary.path).custom_data["flags"]) == summary.flagged


def test_queue_overflow_drops_are_counted_and_flagged_and_offer_never_waits(tmp_path):
    recorder = EpisodeRecorder(directory(tmp_path), TOPICS[:1], max_queue_bytes=600_000)
    recorder.start("pick", config=CONFIG)
    camera = "/cameras/ego/color/image_raw"
    frame = m.cdr(m.image(0, width=320, height=240), m.IMAGE)   # 230 KB: two fit in the queue
    results = [recorder.offer(camera, frame, k) for k in range(400)]
    assert not recorder.offer(camera, b"x" * 600_001, 401)   # bigger than the whole queue
    summary = recorder.stop()
    accepted, dropped = results.count(True), results.count(False) + 1
    # The loop offers far faster than 230 KB frames are written: the full queue refuses them
    # instead of making offer() wait for the writer.
    assert results.count(False) > 0
    assert summary.topics[camera].count == accepted and summary.topics[camera].dropped == dropped
    assert summary.dropped == dropped
    assert any(f.startswith(f"{camera}: {dropped} messages dropped") for f in summary.flagged)
    with AnyReader([summary.path], default_typestore=m.STORE) as reader:
        assert sum(1 for _ in reader.messages()) == accepted


def test_offers_outside_an_episode_or_for_unknown_topics_are_refused(tmp_path):
    recorder = EpisodeRecorder(directory(tmp_path), TOPICS[:1])
    data = m.cdr(m.string("hi"), m.STRING)
    assert not recorder.offer("/instruction", data, 1)   # not recording
    recorder.start("pick", config=CONFIG)
    assert not recorder.offer("/instruction", data, 1)
    assert recorder.unknown_offers == 1
    recorder.add_topic(TopicSpec("/instruction", m.STRING))   # mid-episode: a new channel
    assert recorder.offer("/instruction", data, 2)
    with pytest.raises(RecordingError, match="recorded as"):
        recorder.add_topic(TopicSpec("/instruction", m.POSE))
    summary = recorder.stop()
    assert summary.topics["/instruction"].count == 1 and summary.dropped == 0
    with AnyReader([summary.path], default_typestore=m.STORE) as reader:
        assert [reader.deserialize(raw, c.msgtype).data for c, _, raw in reader.messages()] == ["hi"]
    with pytest.raises(RecordingError, match="not recording"):
        recorder.stop()


def test_an_old_chunk_reaches_the_disk_without_more_messages(tmp_path):
    """A slow topic set: one small message, far below the chunk size, is on disk within about
    chunk_seconds while the episode is still recording."""
    recorder = EpisodeRecorder(directory(tmp_path), TOPICS[4:5], chunk_seconds=0.2)
    recorder.start("pick", config=CONFIG)
    data = m.cdr(m.string("slow"), m.STRING)
    assert recorder.offer("/instruction", data, 5)
    mcap_file = next(recorder.directory.episode_dir(0).glob("*.mcap"))

    def messages_on_disk():
        return [r.data for r in McapScan(mcap_file).records() if isinstance(r, Message)]

    assert wait_for(messages_on_disk, 10.0, "the open chunk to be closed by age") == [data]
    assert recorder.recording
    recorder.stop()


def test_episode_records_list_sidecars(tmp_path):
    clock = FakeClock()
    dataset = directory(tmp_path)
    recorder = EpisodeRecorder(dataset, TOPICS[:1], clock_ns=clock)
    recorder.start("pick", config=CONFIG)
    clock.ns += 1_500_000_000
    recorder.stop(success=False)
    recorder.start("place", config=CONFIG)   # left recording: a crashed session looks like this
    records = dataset.episodes()
    assert [(r.index, r.task, r.status, r.success) for r in records] == [
        (0, "pick", "complete", False), (1, "place", "recording", None)]
    assert records[0].duration_s == pytest.approx(1.5)
    assert records[1].sidecar["config"] == json.loads(json.dumps(CONFIG))
    recorder.discard()
    assert np.array_equal([r.index for r in dataset.episodes()], [0])
