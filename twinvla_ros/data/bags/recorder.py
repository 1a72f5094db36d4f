"""Episodes in, bags out: the recorder core that `recorder_node` feeds with raw CDR messages.

Threads: `offer()` is called from subscription callbacks and never waits on the disk. It takes
a short lock, appends (topic, time, bytes) to a queue bounded in bytes and returns; when the
queue is full the message is dropped and counted, so a slow disk costs messages (flagged in
the summary) rather than stalling the ROS executor. One writer thread per episode drains the
queue into a `BagFileWriter`, which closes chunks by size and by age, so a `kill -9` loses at
most the open chunk (~1 MiB or ~1 s). The queued bytes count until written, so the bound also
covers what the writer holds.

Rates are measured on the recorder's clock (`clock_ns`, at `offer`), not on message stamps:
what matters for a dataset is how often each stream reached the recorder, and the injected
clock makes rate checks exact in tests. An episode is flagged when a topic's worst
`rate_window` (sliding over the whole episode, start to stop) falls below its `min_rate`, when
messages were dropped, or when writing failed.

Each episode is one rosbag2 folder from `RecordingDirectory`; its `episode.json` is written
before the first message and finished at `stop()` together with metadata.yaml (see files.py).
"""
from __future__ import annotations

import bisect
import json
import shutil
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from .directory import RecordingDirectory, normalized_config
from .files import update_custom_data, update_sidecar, write_sidecar
from .topics import (MAX_NOTE_CHARS, MAX_TASK_CHARS, RecordingError, TopicSpec, validate_text)
from .writer import COMPRESSION, BagFileWriter

MAX_TIMESTAMP_NS = 2**63 - 1   # rosbag2 stores times as int64
RESERVED_CUSTOM_KEYS = {"task", "operator_note", "success", "start_time_ns", "end_time_ns",
                        "episode_index", "flags", "dropped", "recorder"}


@dataclass
class TopicStats:
    count: int                    # messages written
    bytes: int                    # their CDR bytes
    dropped: int                  # refused because the queue was full
    rate_hz: float                # count over the episode's duration
    worst_window_rate_hz: float   # the lowest rate in any rate_window of the episode


@dataclass
class EpisodeSummary:
    index: int
    path: Path
    task: str
    duration_s: float
    topics: dict[str, TopicStats]
    dropped: int
    flagged: list[str]            # reasons a person should look at this episode
    success: bool | None
    write_mb_per_s: float         # bytes written per second of episode (the disk load it made)

    def format(self) -> str:
        success = {True: "success", False: "failure", None: "success not marked"}[self.success]
        lines = [f"episode {self.index} ({self.path}): {self.task!r}, {self.duration_s:.1f} s, "
                 f"{success}, {self.write_mb_per_s:.1f} MB/s written"]
        width = max([len("topic")] + [len(name) for name in self.topics])
        lines.append(f"  {'topic':<{width}}  {'count':>7}  {'Hz':>6}  {'worst Hz':>8}  {'dropped':>7}  {'MB':>8}")
        for name, stats in self.topics.items():
            lines.append(f"  {name:<{width}}  {stats.count:>7}  {stats.rate_hz:>6.1f}  "
                         f"{stats.worst_window_rate_hz:>8.1f}  {stats.dropped:>7}  {stats.bytes / 1e6:>8.1f}")
        lines += [f"  FLAG: {reason}" for reason in self.flagged]
        return "\n".join(lines)


def window_rates(arrivals_ns: list[int], start_ns: int, end_ns: int, window_s: float) -> tuple[float, float]:
    """(mean rate, lowest rate in any window_s window) over [start, end]; an episode shorter
    than one window has one window, the whole episode."""
    duration_ns = end_ns - start_ns
    if duration_ns <= 0:
        return 0.0, 0.0
    rate = len(arrivals_ns) * 1e9 / duration_ns
    window_ns = int(window_s * 1e9)
    if duration_ns <= window_ns:
        return rate, rate
    last_start = end_ns - window_ns
    # The count in (s, s + window] only drops just as a message leaves the window, so the
    # minimum is at the episode start, at a message's time, or at the last possible start.
    starts = [start_ns] + [t for t in arrivals_ns if start_ns <= t <= last_start] + [last_start]
    fewest = min(bisect.bisect_right(arrivals_ns, s + window_ns) - bisect.bisect_right(arrivals_ns, s)
                 for s in starts)
    return rate, fewest / window_s


def _check_extra(extra: object) -> dict[str, str]:
    if extra is None:
        return {}
    if not isinstance(extra, dict):
        raise RecordingError(f"extra must be a dict of strings, got {type(extra).__name__}")
    checked = {}
    for key, value in extra.items():
        if not isinstance(key, str) or not key or not key.isidentifier():
            raise RecordingError(f"extra key {key!r} must be a non-empty identifier")
        if key in RESERVED_CUSTOM_KEYS:
            raise RecordingError(f"extra key {key!r} is one the recorder writes itself")
        checked[key] = validate_text(value, f"extra value {key!r}", MAX_NOTE_CHARS, required=False)
    return checked


class _Episode:
    """The state of the episode being recorded (owned by EpisodeRecorder)."""

    def __init__(self, index: int, path: Path, task: str, note: str, start_ns: int,
                 writer: BagFileWriter, sidecar: dict):
        self.index, self.path, self.task, self.note = index, path, task, note
        self.start_ns = start_ns
        self.writer = writer
        self.sidecar = sidecar
        self.success: bool | None = None
        self.error: BaseException | None = None   # what stopped the writer thread, if anything
        self.thread: threading.Thread | None = None


class EpisodeRecorder:
    def __init__(self, directory: RecordingDirectory, topics: Iterable[TopicSpec] = (), *,
                 max_queue_bytes: int = 256 * 2**20, chunk_size: int = 2**20, chunk_seconds: float = 1.0,
                 rate_window: float = 1.0, clock_ns: Callable[[], int] = time.time_ns,
                 compression: str = "none"):
        for name, value in (("max_queue_bytes", max_queue_bytes), ("chunk_size", chunk_size),
                            ("chunk_seconds", chunk_seconds), ("rate_window", rate_window)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise RecordingError(f"{name} must be a positive number, got {value!r}")
        if compression not in COMPRESSION:
            raise RecordingError(f"compression must be one of {sorted(COMPRESSION)}, got {compression!r}")
        self.directory = directory
        self.max_queue_bytes = max_queue_bytes
        self.chunk_size = chunk_size
        self.chunk_seconds = chunk_seconds
        self.rate_window = rate_window
        self.compression = compression
        self._clock_ns = clock_ns
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._topics: dict[str, TopicSpec] = {}
        self._queue: deque = deque()
        self._queued_bytes = 0
        self._arrivals: dict[str, list[int]] = {}
        self._dropped: dict[str, int] = {}
        self._stopping = False
        self._abandon = False
        self._episode: _Episode | None = None
        self._last: Path | None = None     # the last stopped episode (discard, mark_success, set_note)
        self.unknown_offers = 0            # offers for topics the recorder does not record
        for spec in topics:
            self.add_topic(spec)

    # --- state -------------------------------------------------------------------------------
    @property
    def recording(self) -> bool:
        return self._episode is not None and not self._stopping

    @property
    def current_index(self) -> int | None:
        episode = self._episode
        return episode.index if episode is not None else None

    @property
    def topics(self) -> dict[str, TopicSpec]:
        return dict(self._topics)

    def add_topic(self, spec: TopicSpec) -> None:
        if not isinstance(spec, TopicSpec):
            raise RecordingError(f"add_topic takes a TopicSpec, got {type(spec).__name__}")
        with self._lock:
            known = self._topics.get(spec.name)
            if known is not None:
                if known.msgtype != spec.msgtype:
                    raise RecordingError(f"{spec.name} is recorded as {known.msgtype}, not {spec.msgtype}")
                return
            self._topics[spec.name] = spec
            self._arrivals[spec.name] = []
            self._dropped[spec.name] = 0
            if self._episode is not None:
                # In the queue, so the channel is registered before the topic's first message.
                self._queue.append(("topic", spec, 0, b""))
                self._wake.set()

    # --- episodes ----------------------------------------------------------------------------
    def start(self, task: str, *, config: dict, operator_note: str = "",
              extra: dict[str, str] | None = None) -> int:
        task = validate_text(task, "task", MAX_TASK_CHARS, required=True)
        note = validate_text(operator_note, "operator note", MAX_NOTE_CHARS, required=False)
        extra = _check_extra(extra)
        if self._episode is not None:
            raise RecordingError(f"already recording episode {self._episode.index}; stop or discard it first")
        self.directory.check_ready()
        self.directory.check_config(config)
        index = self.directory.next_index()
        path = self.directory.episode_dir(index)
        try:
            path.mkdir()
        except OSError as error:
            raise RecordingError(f"cannot create {path}: {error.strerror or error}") from None
        start_ns = self._clock_ns()
        sidecar = {"index": index, "task": task, "operator_note": note, "config": normalized_config(config),
                   "extra": extra,
                   "status": "recording", "success": None, "start_time_ns": start_ns,
                   "start_time": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(start_ns / 1e9)),
                   "topics": [{"name": s.name, "type": s.msgtype, "min_rate": s.min_rate}
                              for s in self._topics.values()]}
        try:
            write_sidecar(path, sidecar)
            writer = BagFileWriter(path, chunk_size=self.chunk_size, chunk_seconds=self.chunk_seconds,
                                   compression=self.compression)
        except OSError as error:
            shutil.rmtree(path, ignore_errors=True)
            raise RecordingError(f"cannot start episode {index} in {path}: {error}") from None
        with self._lock:
            registered = list(self._topics.values())
        for spec in registered:   # outside the lock: offer() must not wait on this
            writer.add_topic(spec)
        with self._lock:
            self._queue.clear()
            # Topics added since the snapshot reach the writer through the queue.
            self._queue.extend(("topic", spec, 0, b"") for name, spec in self._topics.items()
                               if name not in writer.channels)
            self._queued_bytes = 0
            for name in self._topics:
                self._arrivals[name] = []
                self._dropped[name] = 0
            self._stopping = self._abandon = False
            self.unknown_offers = 0
            self._episode = _Episode(index, path, task, note, start_ns, writer, sidecar)
        thread = threading.Thread(target=self._write_loop, args=(self._episode,),
                                  name=f"bag-writer-{index}", daemon=True)
        self._episode.thread = thread
        thread.start()
        return index

    def offer(self, topic: str, cdr: bytes, timestamp_ns: int) -> bool:
        if not isinstance(topic, str):
            raise RecordingError(f"topic must be a string, got {type(topic).__name__}")
        if not isinstance(cdr, (bytes, bytearray, memoryview)):
            raise RecordingError(f"message data must be bytes (CDR), got {type(cdr).__name__}")
        if isinstance(timestamp_ns, bool) or not isinstance(timestamp_ns, int) \
                or not 0 <= timestamp_ns <= MAX_TIMESTAMP_NS:
            raise RecordingError(f"timestamp_ns must be an int in [0, 2**63), got {timestamp_ns!r}")
        data = cdr if isinstance(cdr, bytes) else bytes(cdr)
        with self._lock:
            if self._episode is None or self._stopping:
                return False
            if topic not in self._topics:
                self.unknown_offers += 1
                return False
            if self._episode.error is not None or self._queued_bytes + len(data) > self.max_queue_bytes:
                self._dropped[topic] += 1
                return False
            self._queue.append(("message", topic, timestamp_ns, data))
            self._queued_bytes += len(data)
            self._arrivals[topic].append(self._clock_ns())
        self._wake.set()
        return True

    def live_rates(self) -> dict[str, float]:
        now = self._clock_ns()
        since = now - int(self.rate_window * 1e9)
        with self._lock:
            if self._episode is None:
                return {name: 0.0 for name in self._topics}
            return {name: (len(arrivals) - bisect.bisect_right(arrivals, since)) / self.rate_window
                    for name, arrivals in self._arrivals.items()}

    def stop(self, success: bool | None = None) -> EpisodeSummary:
        if success is not None and not isinstance(success, bool):
            raise RecordingError(f"success must be True, False or None, got {success!r}")
        with self._lock:
            episode = self._episode
            if episode is None or self._stopping:
                raise RecordingError("not recording")
            self._stopping = True
            end_ns = self._clock_ns()
        self._wake.set()
        episode.thread.join()
        if success is not None:
            episode.success = success
        summary = self._summarize(episode, end_ns)
        custom = {"task": episode.task, "operator_note": episode.note,
                  "success": _success_text(episode.success), "episode_index": str(episode.index),
                  "start_time_ns": str(episode.start_ns), "end_time_ns": str(end_ns),
                  "flags": json.dumps(summary.flagged), "dropped": str(summary.dropped),
                  "recorder": "twinvla_ros", **episode.sidecar["extra"]}
        status = "complete"
        if episode.error is None:
            try:
                episode.writer.finish(custom)
            except OSError as error:
                episode.error = error
        if episode.error is not None:
            episode.writer.abort()
            status = "failed"
            summary.flagged.append(f"writing failed: {episode.error} (run `twinvla-ros bag recover "
                                   f"{episode.path}` to keep what reached the disk)")
        episode.sidecar.update(
            status=status, success=episode.success, operator_note=episode.note, end_time_ns=end_ns,
            duration_s=summary.duration_s, flags=summary.flagged, dropped=summary.dropped,
            counts={name: stats.count for name, stats in summary.topics.items()})
        write_sidecar(episode.path, episode.sidecar)
        with self._lock:
            self._episode = None
            self._stopping = False
            self._last = episode.path
        return summary

    def discard(self) -> Path:
        with self._lock:
            episode = self._episode
            if episode is not None and not self._stopping:
                self._abandon = self._stopping = True
                self._queue.clear()
                self._queued_bytes = 0
            elif episode is None and self._last is None:
                raise RecordingError("no episode to discard")
            elif episode is not None:
                raise RecordingError("the episode is being stopped")
        if episode is not None:
            self._wake.set()
            episode.thread.join()
            episode.writer.abort()
            path = episode.path
            with self._lock:
                self._episode = None
                self._stopping = self._abandon = False
        else:
            path = self._last
        shutil.rmtree(path, ignore_errors=True)
        # A second discard must not reach back to an older, kept episode.
        self._last = None
        return path

    def mark_success(self, success: bool, index: int | None = None) -> None:
        if not isinstance(success, bool):
            raise RecordingError(f"success must be True or False, got {success!r}")
        self._annotate(index, "success", "success", success, _success_text(success))

    def set_note(self, note: str) -> None:
        note = validate_text(note, "operator note", MAX_NOTE_CHARS, required=False)
        self._annotate(None, "note", "operator_note", note, note)

    def _annotate(self, index: int | None, attribute: str, key: str, value, custom_text: str) -> None:
        """Set a field of the running episode (its sidecar now, metadata.yaml at stop), or of a
        stopped one (sidecar and metadata.yaml's custom_data at once)."""
        episode = self._episode
        if episode is not None and index in (None, episode.index):
            setattr(episode, attribute, value)
            episode.sidecar[key] = value
            write_sidecar(episode.path, episode.sidecar)
            return
        path = self._stopped_episode(index)
        update_sidecar(path, **{key: value})
        update_custom_data(path, **{key: custom_text})

    def close(self) -> None:
        if self.recording:
            self.stop()

    # --- internals ---------------------------------------------------------------------------
    def _stopped_episode(self, index: int | None) -> Path:
        if index is None:
            if self._last is None:
                raise RecordingError("no episode recorded yet in this session; give its index")
            return self._last
        path = self.directory.episode_dir(index)
        if not path.is_dir():
            raise RecordingError(f"there is no episode {index} in {self.directory.root}")
        return path

    def _write_loop(self, episode: _Episode) -> None:
        writer = episode.writer
        while True:
            with self._lock:
                batch, self._queue = self._queue, deque()
                stopping, abandon = self._stopping, self._abandon
                idle = not batch and not stopping and not abandon
                if idle:
                    # Cleared under the lock: offer() and stop() change the queue or the flag
                    # under it and set the event after, so no wake-up is lost.
                    self._wake.clear()
            if abandon:
                return
            try:
                if idle:
                    age = writer.chunk_age()
                    if not self._wake.wait(None if age is None else max(0.0, self.chunk_seconds - age)):
                        writer.maybe_close_chunk()   # an aged chunk closes even when no message comes
                    continue
                for kind, topic, timestamp_ns, data in batch:
                    if kind == "topic":
                        writer.add_topic(topic)
                        continue
                    writer.write(topic, timestamp_ns, data)
                    with self._lock:
                        self._queued_bytes -= len(data)
                    if self._abandon:
                        return
            except Exception as error:   # noqa: BLE001 -- any failure ends the episode's writing, reported at stop
                with self._lock:
                    episode.error = error
                    self._queue.clear()
                    self._queued_bytes = 0
                return
            if stopping and not batch:
                return

    def _summarize(self, episode: _Episode, end_ns: int) -> EpisodeSummary:
        writer = episode.writer
        topics, flagged = {}, []
        for name, spec in self._topics.items():
            rate, worst = window_rates(self._arrivals[name], episode.start_ns, end_ns, self.rate_window)
            stats = TopicStats(count=writer.counts.get(name, 0), bytes=writer.bytes.get(name, 0),
                               dropped=self._dropped[name], rate_hz=rate, worst_window_rate_hz=worst)
            topics[name] = stats
            if spec.min_rate > 0 and stats.count == 0:
                flagged.append(f"{name}: no messages, its minimum is {spec.min_rate:g} Hz")
            elif spec.min_rate > 0 and worst < spec.min_rate:
                flagged.append(f"{name}: {worst:.1f} Hz in the worst {self.rate_window:g} s window, "
                               f"below its minimum {spec.min_rate:g} Hz")
            if stats.dropped:
                flagged.append(f"{name}: {stats.dropped} messages dropped, the recorder's queue was full "
                               f"(max_queue_bytes {self.max_queue_bytes}: the disk or writer is too slow)")
        duration_s = max(0, end_ns - episode.start_ns) / 1e9
        written = sum(stats.bytes for stats in topics.values())
        return EpisodeSummary(index=episode.index, path=episode.path, task=episode.task,
                              duration_s=duration_s, topics=topics,
                              dropped=sum(stats.dropped for stats in topics.values()), flagged=flagged,
                              success=episode.success,
                              write_mb_per_s=written / 1e6 / duration_s if duration_s > 0 else 0.0)


def _success_text(success: bool | None) -> str:
    return {True: "true", False: "false", None: "unknown"}[success]
