"""recover_bag on what a killed recorder really leaves (SIGKILL of a recording process), and on
randomly truncated and damaged files (hypothesis): every complete chunk comes back, readable by
rosbags and the mcap reader; damage gives RecoveryError with a reason, never a crash."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from mcap.reader import make_reader
from mcap.records import Message
from mcap_ros2.decoder import DecoderFactory
from rosbags.highlevel import AnyReader

import bag_messages as m
from twinvla_ros.data.bags import (EpisodeRecorder, RecordingDirectory, RecordingError, RecoveryError,
                                   TopicSpec, bag_summary, recover_bag)
from twinvla_ros.data.bags.recovery import McapScan
from waiting import wait_for

HERE = Path(__file__).parent


def read_all(bag: Path) -> dict[str, list[tuple[int, bytes]]]:
    """Every message by topic, through rosbags; the mcap reader must decode the same number."""
    with AnyReader([bag], default_typestore=m.STORE) as reader:
        messages: dict[str, list] = {c.topic: [] for c in reader.connections}
        for connection, t, raw in reader.messages():
            messages[connection.topic].append((t, bytes(raw)))
    with open(next(bag.glob("*.mcap")), "rb") as file:
        decoded = sum(1 for _ in make_reader(file, decoder_factories=[DecoderFactory()]).iter_decoded_messages())
    assert decoded == sum(len(v) for v in messages.values())
    return messages


def test_sigkill_mid_episode_loses_only_the_open_chunk(tmp_path):
    root = tmp_path / "demos"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(HERE.parents[1])]))
    process = subprocess.Popen([sys.executable, str(HERE / "bag_crash_writer.py"), str(root)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        bag = root / "episode_000000"

        def closed_chunks_on_disk():
            files = list(bag.glob("*.mcap"))
            if not files:
                return None
            scan = McapScan(files[0])
            messages = [(r.channel_id, r.log_time, r.data) for r in scan.records() if isinstance(r, Message)]
            return messages if scan.chunks >= 4 else None

        before_kill = wait_for(closed_chunks_on_disk, 60.0, "4 chunks of the recording on disk")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()[-2000:]
    assert json.loads((bag / "episode.json").read_text())["status"] == "recording"
    assert not (bag / "metadata.yaml").exists()
    assert not bag_summary(bag).complete

    report = recover_bag(bag)
    assert report.action == "recovered" and "recovered" in report.format()
    assert (bag / f"{bag.name}_0.mcap.truncated").exists()
    recovered = read_all(bag)
    channel_topic = {1: "/cameras/ego/color/image_raw", 2: "/joint_states"}
    kept = {(channel_topic[c], t, d) for c, t, d in before_kill}
    assert kept <= {(topic, t, d) for topic, msgs in recovered.items() for t, d in msgs}
    assert sum(report.counts.values()) == sum(len(v) for v in recovered.values()) >= len(before_kill)
    assert report.counts == {topic: len(msgs) for topic, msgs in recovered.items()}
    sidecar = json.loads((bag / "episode.json").read_text())
    assert sidecar["status"] == "recovered" and sidecar["task"] == "crash test"
    assert any(flag.startswith("recovered after the recorder stopped writing") for flag in sidecar["flags"])
    summary = bag_summary(bag)
    assert summary.complete and summary.custom_data["task"] == "crash test"
    assert summary.custom_data["operator_note"] == "killed on purpose"

    again = recover_bag(bag)   # complete now: nothing to do, nothing touched
    assert again.action == "nothing to do" and not again.changed
    assert read_all(bag) == recovered


@pytest.fixture(scope="module")
def complete_bag(tmp_path_factory) -> tuple[Path, list[tuple[int, int, int]]]:
    """A small complete episode of many chunks, and its chunks as (end offset, first, last time)."""
    root = tmp_path_factory.mktemp("fuzz") / "demos"
    recorder = EpisodeRecorder(RecordingDirectory(root, min_free_bytes=0),
                               [TopicSpec("/joint_states", m.JOINTS), TopicSpec("/instruction", m.STRING)],
                               chunk_size=4096)
    recorder.start("fuzz", config={})
    for k in range(200):
        recorder.offer("/joint_states", m.cdr(m.joints(k, seed=k), m.JOINTS), 1000 + k)
        if k % 20 == 0:
            recorder.offer("/instruction", m.cdr(m.string(f"say {k}"), m.STRING), 1000 + k)
    path = recorder.stop().path
    with open(next(path.glob("*.mcap")), "rb") as file:
        chunks = [(c.chunk_start_offset + c.chunk_length, c.message_start_time, c.message_end_time)
                  for c in make_reader(file).get_summary().chunk_indexes]
    assert len(chunks) > 10
    return path, chunks


def damaged_copy(bag: Path, workdir: Path, cut: int | None, flips: list[tuple[int, int]]) -> Path:
    copy = workdir / bag.name
    shutil.copytree(bag, copy)
    mcap_file = next(copy.glob("*.mcap"))
    data = bytearray(mcap_file.read_bytes())
    for position, value in flips:
        data[position % len(data)] ^= value
    mcap_file.write_bytes(bytes(data[:cut] if cut is not None else data))
    (copy / "metadata.yaml").unlink()   # as after a crash
    return copy


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fraction=st.floats(0.0, 0.999))
def test_truncated_anywhere_keeps_exactly_the_complete_chunks(complete_bag, fraction):
    bag, chunks = complete_bag
    size = next(bag.glob("*.mcap")).stat().st_size
    cut = int(size * fraction)
    with tempfile.TemporaryDirectory() as workdir:
        copy = damaged_copy(bag, Path(workdir), cut, [])
        if cut < 8:
            with pytest.raises(RecoveryError, match="not an MCAP file"):
                recover_bag(copy)
            return
        report = recover_bag(copy)
        # Messages have distinct, increasing times: those of chunks wholly before the cut survive.
        expected = {t for end, first, last in chunks if end <= cut for t in range(first, last + 1)}
        recovered = read_all(copy)
        times = {t for messages in recovered.values() for t, _ in messages}
        assert times == expected
        # At most the open chunk is lost: chunk_size plus the message that filled it.
        assert report.bytes_dropped == cut - McapScan(next(copy.glob("*.truncated"))).complete_end < 4096 + 1000
        assert bag_summary(copy).complete


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fraction=st.floats(0.05, 1.0),
       flips=st.lists(st.tuples(st.integers(0, 2**20), st.integers(1, 255)), min_size=1, max_size=4))
def test_damaged_files_give_a_reason_never_a_crash(complete_bag, fraction, flips):
    bag, _ = complete_bag
    size = next(bag.glob("*.mcap")).stat().st_size
    with tempfile.TemporaryDirectory() as workdir:
        copy = damaged_copy(bag, Path(workdir), int(size * fraction), flips)
        try:
            summary = bag_summary(copy)
            assert summary.message_count >= 0
        except RecordingError as error:
            assert str(error)
        try:
            report = recover_bag(copy)
        except RecoveryError as error:
            assert str(error)
            return
        assert (copy / "metadata.yaml").exists()
        if report.action == "recovered":   # the rewritten file reads back in full
            assert sum(len(v) for v in read_all(copy).values()) == sum(report.counts.values())
