"""The operator's keyboard loop over a real recorder core: keys and the clock in, episodes on
disk out. The control below maps the core's calls to the answers the recorder node's services
give (twinvla_ros.ros.nodes.recorder_node), so the loop meets real refusals (a full disk)."""
import io
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twinvla_ros.cli.record import KeyboardSession
from twinvla_ros.data.bags import EpisodeRecorder, RecordingDirectory, TopicSpec
from twinvla_ros.ros.nodes.recorder_node import summary_dict

TASK = "fold the towel"


OPEN = []


@pytest.fixture(autouse=True)
def close_recorders():
    yield
    while OPEN:
        OPEN.pop().close()


class CoreControl:
    """The recorder node's episode services, on the core (no ROS)."""

    def __init__(self, root, min_free_bytes=0):
        self.directory = RecordingDirectory(root, min_free_bytes=min_free_bytes)
        self.recorder = EpisodeRecorder(self.directory, [TopicSpec("/ticks", "std_msgs/msg/String")])
        OPEN.append(self.recorder)

    def start_episode(self):
        index = self.recorder.start(TASK, config={"robot": "test"})
        return {"index": index, "task": TASK}

    def stop_episode(self):
        return summary_dict(self.recorder.stop())

    def discard_episode(self):
        path = self.recorder.discard()
        return {"discarded": str(path), "next_index": self.directory.next_index()}

    def mark_success(self, success):
        self.recorder.mark_success(success)

    def live_rates(self):
        return self.recorder.live_rates()


def sidecars(root):
    return {int(p.name.split("_")[1]): json.loads((p / "episode.json").read_text())
            for p in sorted(root.glob("episode_*"))}


def run(session, script):
    """script: (time, key or None) pairs; None just advances the clock."""
    for now, key in script:
        if key is None:
            session.tick(now)
        else:
            session.handle(key, now)


def test_reset_record_review_until_enough_episodes(tmp_path):
    control, out = CoreControl(tmp_path), io.StringIO()
    session = KeyboardSession(control, out, episodes=2, reset_time=3.0, now=0.0)
    run(session, [(1.0, None), (3.0, None)])             # the reset period ends: recording starts
    assert session.state == "recording" and control.recorder.recording
    run(session, [(5.0, "right"), (5.5, "y")])           # end, success
    run(session, [(6.0, "space"), (8.0, "right"), (8.2, "n")])   # skip the reset, end, failure
    assert session.done and session.kept == 2
    assert {i: s["success"] for i, s in sidecars(tmp_path).items()} == {0: True, 1: False}
    assert "2 episode(s) recorded" in out.getvalue()


def test_left_arrow_discards_and_the_episode_is_recorded_again(tmp_path):
    control = CoreControl(tmp_path)
    session = KeyboardSession(control, io.StringIO(), episodes=1, reset_time=1.0, now=0.0)
    run(session, [(1.0, None), (2.0, "left")])           # discard while recording
    assert session.state == "reset" and not sidecars(tmp_path)
    run(session, [(3.0, None), (4.0, "right"), (4.1, "left")])   # discard in the review
    assert session.kept == 0 and not sidecars(tmp_path)
    run(session, [(5.1, None), (6.0, "right"), (6.1, "enter")])
    assert session.done and list(sidecars(tmp_path)) == [0]
    assert sidecars(tmp_path)[0]["success"] is None


def test_esc_ends_the_episode_keeping_it_and_quits(tmp_path):
    control = CoreControl(tmp_path)
    session = KeyboardSession(control, io.StringIO(), reset_time=0.5, now=0.0)
    run(session, [(0.5, None), (2.0, "esc")])
    assert session.done and not control.recorder.recording
    assert sidecars(tmp_path)[0]["status"] == "complete"


def test_a_refused_start_is_shown_and_retried_after_the_reset_period(tmp_path):
    control, out = CoreControl(tmp_path, min_free_bytes=2**62), io.StringIO()
    session = KeyboardSession(control, out, reset_time=2.0, now=0.0)
    run(session, [(0.1, "right")])
    assert session.state == "reset" and "!!" in out.getvalue() and "free" in out.getvalue()
    control.directory.min_free_bytes = 0                 # the operator made room
    run(session, [(1.0, None)])
    assert session.state == "reset"                      # waits a full period after the refusal
    run(session, [(2.2, None)])
    assert session.state == "recording"


def test_the_episode_time_limit_ends_an_episode(tmp_path):
    control = CoreControl(tmp_path)
    session = KeyboardSession(control, io.StringIO(), reset_time=0.0, episode_time=4.0, now=0.0)
    run(session, [(0.0, None), (3.9, None)])
    assert session.state == "recording"
    run(session, [(4.0, None)])
    assert session.state == "review"


KEYS = st.sampled_from(["right", "left", "space", "enter", "y", "n", "esc", "x", None])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.floats(0.0, 3.0), KEYS), max_size=25))
def test_any_key_sequence_keeps_disk_and_session_consistent(tmp_path_factory, steps):
    root = tmp_path_factory.mktemp("keys")
    control = CoreControl(root)
    session = KeyboardSession(control, io.StringIO(), reset_time=1.0, now=0.0)
    now = 0.0
    for dt, key in steps:
        now += dt
        if key is None:
            session.tick(now)
        else:
            session.handle(key, now)
        on_disk = sidecars(root)
        recording = control.recorder.recording
        assert recording == (session.state == "recording")
        assert len(on_disk) == session.kept + (1 if recording else 0)
        assert list(on_disk) == list(range(len(on_disk)))          # numbering has no holes
    control.recorder.close()
