"""ApproximateTimeMatcher (message_filters' policy, pure Python) and ObservationGate."""
from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from twinvla_ros.execution import ApproximateTimeMatcher, ObservationGate, StreamLimit

MS = 1_000_000  # nanoseconds


def collecting_matcher(num_streams=3, queue_size=10, slop=0.02):
    matcher = ApproximateTimeMatcher(num_streams, queue_size, slop)
    matched = []
    matcher.registerCallback(lambda *msgs: matched.append(msgs))
    return matcher, matched


# --- ApproximateTimeMatcher ----------------------------------------------------------------------


def test_messages_within_slop_are_emitted_as_one_set_in_stream_order():
    matcher, matched = collecting_matcher()
    matcher.add(2, 1000 * MS, "state@1000")
    matcher.add(0, 1005 * MS, "ego@1005")
    assert matched == []  # wrist_left still missing
    matcher.add(1, 990 * MS, "left@990")
    assert matched == [("ego@1005", "left@990", "state@1000")]


def test_sets_spread_wider_than_slop_are_not_emitted():
    matcher, matched = collecting_matcher()
    matcher.add(0, 1000 * MS, "ego")
    matcher.add(1, 1015 * MS, "left")  # each within 20 ms of the ego image...
    matcher.add(2, 985 * MS, "state")  # ...but 30 ms between left and state
    assert matched == []
    matcher.add(2, 1010 * MS, "state2")
    assert matched == [("ego", "left", "state2")]


def test_spread_must_be_strictly_below_slop_as_in_message_filters():
    matcher, matched = collecting_matcher(num_streams=2)
    matcher.add(0, 1000 * MS, "a")
    matcher.add(1, 1020 * MS, "b")  # exactly 20 ms apart
    assert matched == []
    matcher.add(1, 1019 * MS, "c")
    assert matched == [("a", "c")]


def test_the_closest_candidate_wins_and_matched_messages_are_consumed():
    matcher, matched = collecting_matcher(num_streams=2)
    matcher.add(1, 1000 * MS, "far")
    matcher.add(1, 1012 * MS, "near")
    matcher.add(0, 1010 * MS, "ego")
    assert matched == [("ego", "near")]
    matcher.add(0, 1011 * MS, "ego2")  # "near" was consumed; "far" is still queued
    assert matched[-1] == ("ego2", "far")


def test_queue_keeps_only_the_newest_queue_size_stamps():
    matcher, matched = collecting_matcher(num_streams=2, queue_size=2)
    for stamp in (1000, 1100, 1200):
        matcher.add(0, stamp * MS, f"ego@{stamp}")
    matcher.add(1, 1001 * MS, "left@1001")  # its partner was evicted
    assert matched == []
    matcher.add(1, 1101 * MS, "left@1101")
    assert matched == [("ego@1100", "left@1101")]


def test_a_late_message_older_than_a_full_queue_is_dropped():
    matcher, matched = collecting_matcher(num_streams=2, queue_size=1)
    matcher.add(0, 1000 * MS, "ego@1000")
    matcher.add(0, 900 * MS, "ego@900")  # arrives late: the oldest of a full queue
    matcher.add(1, 905 * MS, "left@905")
    assert matched == []
    matcher.add(1, 1001 * MS, "left@1001")
    assert matched == [("ego@1000", "left@1001")]


def test_callback_receives_extra_registered_arguments():
    matcher = ApproximateTimeMatcher(2, 5, 0.01)
    got = []
    matcher.registerCallback(lambda a, b, tag: got.append((a, b, tag)), "images")
    matcher.add(0, 5 * MS, 1)
    matcher.add(1, 6 * MS, 2)
    assert got == [(1, 2, "images")]


def random_arrivals(seed, num_streams=3, count=300):
    """Streams at ~30 Hz with jitter, drops, and out-of-order delivery between streams."""
    rng = random.Random(seed)
    arrivals = []
    for stream in range(num_streams):
        offset = rng.uniform(0, 30)
        for frame in range(count // num_streams):
            if rng.random() < 0.1:
                continue  # dropped frame
            stamp = int((1000 + frame * 33.3 + offset + rng.gauss(0, 3)) * MS)
            arrivals.append((stamp + rng.randint(0, 40) * MS, stream, stamp))
    arrivals.sort()
    return [(stream, stamp) for _, stream, stamp in arrivals]


RANDOM_SCENARIOS = [(3, 5, 0.015), (4, 1, 0.03), (5, 8, 0.1)]  # seed, queue_size, slop


@pytest.mark.parametrize("seed, queue_size, slop", RANDOM_SCENARIOS)
def test_matches_message_filters_on_a_random_stream(seed, queue_size, slop):
    message_filters = pytest.importorskip("message_filters")
    from rclpy.time import Time

    arrivals = random_arrivals(seed)
    ours, ours_matched = collecting_matcher(3, queue_size, slop)
    inputs = [message_filters.SimpleFilter() for _ in range(3)]
    theirs = message_filters.ApproximateTimeSynchronizer(inputs, queue_size, slop)
    theirs_matched = []
    theirs.registerCallback(lambda *msgs: theirs_matched.append(tuple(m.id for m in msgs)))
    for index, (stream, stamp) in enumerate(arrivals):
        ours.add(stream, stamp, index)
        header = SimpleNamespace(stamp=Time(nanoseconds=stamp))
        inputs[stream].signalMessage(SimpleNamespace(header=header, id=index))
    assert len(ours_matched) > 20
    assert ours_matched == theirs_matched


@pytest.mark.parametrize("seed, queue_size, slop", RANDOM_SCENARIOS)
def test_random_stream_matches_respect_slop(seed, queue_size, slop):
    # The same scenarios without message_filters: every emitted set is within slop and unique.
    arrivals = random_arrivals(seed)
    matcher, matched = collecting_matcher(3, queue_size, slop)
    for index, (stream, stamp) in enumerate(arrivals):
        matcher.add(stream, stamp, (stream, stamp, index))
    assert len(matched) > 20
    used = [msg[2] for group in matched for msg in group]
    assert len(used) == len(set(used))
    for group in matched:
        assert [msg[0] for msg in group] == [0, 1, 2]
        stamps = [msg[1] for msg in group]
        assert max(stamps) - min(stamps) < slop * 1e9


# --- ObservationGate -----------------------------------------------------------------------------


def make_gate():
    return ObservationGate(
        [
            StreamLimit("ego image", 0.3),
            StreamLimit("wrist_left image", 0.3),
            StreamLimit("eef state", 0.1),
        ],
        max_skew=0.05,
    )


def test_missing_streams_are_named():
    gate = make_gate()
    gate.update({"ego image": 10.0})
    ok, reason = gate.check(10.01)
    assert not ok
    assert "wrist_left image: no data received" in reason
    assert "eef state: no data received" in reason
    assert "ego image" not in reason


def test_stale_stream_is_reported_with_its_age_and_limit():
    gate = make_gate()
    gate.update({"ego image": 10.0, "wrist_left image": 10.0, "eef state": 10.0})
    assert gate.check(10.05) == (True, "")
    gate.update({"ego image": 10.8, "eef state": 10.8})  # the left wrist camera stopped
    ok, reason = gate.check(10.82)
    assert not ok
    assert "wrist_left image is 0.82 s old (max 0.30 s)" in reason
    assert "ego image is" not in reason


def test_skew_between_streams_is_reported():
    gate = make_gate()
    gate.update({"ego image": 10.0, "wrist_left image": 10.02, "eef state": 10.09})
    ok, reason = gate.check(10.1)
    assert not ok
    assert reason == "ego image lags eef state by 0.090 s (max skew 0.050 s)"


def test_gate_recovers_when_fresh_data_returns():
    gate = make_gate()
    gate.update({"ego image": 1.0, "wrist_left image": 1.0, "eef state": 1.0})
    assert not gate.check(5.0).ok
    gate.update({"ego image": 5.0, "wrist_left image": 5.01, "eef state": 5.02})
    status = gate.check(5.05)
    assert status.ok and status.reason == ""


def test_gate_rejects_unknown_streams_and_can_forget():
    gate = make_gate()
    with pytest.raises(KeyError):
        gate.update({"wrist_right image": 1.0})
    gate.update({"ego image": 1.0, "wrist_left image": 1.0, "eef state": 1.0})
    gate.clear()
    assert not gate.check(1.0).ok
