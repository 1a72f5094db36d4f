"""What users and the network hand the recorder, fuzzed: every bad value is refused with a
RecordingError saying why, nothing is written for a refused start, and good values work."""
from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

import bag_messages as m
from twinvla_ros.data.bags import ConfigMismatch, EpisodeRecorder, RecordingDirectory, RecordingError, TopicSpec

CAMERA = TopicSpec("/cameras/ego/color/image_raw", m.IMAGE)
anything = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30),
                     st.binary(max_size=30), st.lists(st.integers(), max_size=3))


@settings(max_examples=150, deadline=None)
@given(name=st.one_of(st.text(max_size=40), st.from_regex(r"(/[a-z_][a-z0-9_]{0,8}){1,3}", fullmatch=True), anything),
       msgtype=st.one_of(st.sampled_from([m.IMAGE, m.JOINTS, "sensor_msgs/msg/Nope", "sensor_msgs/Image"]), anything),
       min_rate=st.one_of(st.floats(allow_nan=True), anything),
       qos=st.one_of(st.sampled_from(["", "- {depth: 1}", "depth: 1", "[", "- 3"]), anything))
def test_topic_specs_are_checked(name, msgtype, min_rate, qos):
    try:
        spec = TopicSpec(name, msgtype, min_rate, qos)
    except RecordingError as error:
        assert str(error)
        return
    assert spec.name.startswith("/") and "//" not in spec.name and not spec.name.endswith("/")
    assert spec.msgtype in (m.IMAGE, m.JOINTS)
    assert math.isfinite(spec.min_rate) and spec.min_rate >= 0


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    recorder = EpisodeRecorder(RecordingDirectory(tmp_path_factory.mktemp("offer"), min_free_bytes=0), [CAMERA])
    recorder.start("fuzz offers", config={})
    yield recorder
    recorder.stop()


@settings(max_examples=200, deadline=None)
@given(topic=st.one_of(st.just(CAMERA.name), st.text(max_size=20), anything),
       data=st.one_of(st.binary(max_size=64), st.builds(bytearray, st.binary(max_size=8)), anything),
       timestamp=st.one_of(st.integers(-2**64, 2**64), anything))
def test_offer_refuses_bad_arguments(recording, topic, data, timestamp):
    try:
        accepted = recording.offer(topic, data, timestamp)
    except RecordingError as error:
        assert str(error)
        return
    assert accepted == (topic == CAMERA.name)
    assert isinstance(data, (bytes, bytearray)) and isinstance(timestamp, int) and 0 <= timestamp < 2**63


@settings(max_examples=60, deadline=None)
@given(task=st.one_of(st.text(max_size=1100), st.just(" \t"), st.just("a\x00b"), anything),
       note=st.one_of(st.text(max_size=50), anything),
       extra=st.one_of(st.none(), st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=2), anything))
def test_start_refuses_bad_arguments_before_writing(task, note, extra):
    with tempfile.TemporaryDirectory() as root:
        recorder = EpisodeRecorder(RecordingDirectory(Path(root) / "demos", min_free_bytes=0), [CAMERA])
        try:
            index = recorder.start(task, config={"cameras": 1}, operator_note=note, extra=extra)
        except RecordingError as error:
            assert str(error) and not (Path(root) / "demos").exists()
            return
        assert index == 0 and isinstance(task, str) and task.strip() and len(task.strip()) <= 1000
        assert "\x00" not in task
        recorder.discard()


json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5)),
                           lambda children: st.one_of(st.lists(children, max_size=3),
                                                      st.dictionaries(st.text(max_size=5), children, max_size=3),
                                                      st.dictionaries(st.integers(), children, max_size=2)),
                           max_leaves=12)


@settings(max_examples=120, deadline=None)
@given(config=st.one_of(st.dictionaries(st.text(max_size=5), json_values, max_size=4), anything),
       extra_key=st.text(min_size=1, max_size=5).filter(lambda k: k.isidentifier()))
def test_check_config_refuses_what_json_cannot_hold_and_finds_changes(config, extra_key):
    with tempfile.TemporaryDirectory() as root:
        dataset = RecordingDirectory(root, min_free_bytes=0)
        try:
            dataset.check_config(config)
        except RecordingError as error:
            assert str(error) and not (Path(root) / "recording.json").exists()
            return
        dataset.check_config(config)   # the same config again
        changed = dict(config)
        changed[f"{extra_key}_added"] = 1
        with pytest.raises(ConfigMismatch) as caught:
            dataset.check_config(changed)
        assert caught.value.differences == [f"{extra_key}_added: dataset missing, now 1"]
