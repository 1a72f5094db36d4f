"""Observation assembly: match the camera and state streams by stamp, then refuse stale data.

ApproximateTimeMatcher behaves like ROS 2's Python ``message_filters.ApproximateTimeSynchronizer``
and is called the same way on its output side (``registerCallback(cb, *args)``, then
``cb(*msgs, *args)``), so the node wires one callback to whichever of the two exists. Its input
side is ``add(stream_index, stamp_ns, msg)`` instead of a list of subscriber filters.

ObservationGate then decides, on every tick, whether the latest data may be used: each stream
within its maximum age, all streams within a maximum skew of each other.
"""
from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple, Sequence


class ApproximateTimeMatcher:
    """Pure-Python equivalent of ``message_filters.ApproximateTimeSynchronizer`` (ROS 2).

    Same policy: one queue per stream holding at most ``queue_size`` messages keyed by stamp
    (the oldest stamp is evicted first). When a message arrives, every other stream's queue is
    searched for stamps within ``slop`` seconds of it, each list ordered by closeness; the first
    combination (in that order) whose overall spread is strictly below ``slop`` is emitted and
    its messages removed from the queues. Unmatched older messages stay queued until evicted.
    Stamps are integer nanoseconds, as in ROS time; ``slop`` is truncated to nanoseconds like
    ``rclpy.duration.Duration(seconds=slop)``.
    """

    def __init__(self, num_streams: int, queue_size: int, slop: float) -> None:
        if num_streams < 1 or queue_size < 1 or slop < 0:
            raise ValueError("need num_streams >= 1, queue_size >= 1, slop >= 0")
        self.queue_size = queue_size
        self.slop = slop
        self._slop_ns = int(slop * 1e9)
        self._queues: list[dict[int, Any]] = [{} for _ in range(num_streams)]  # stamp_ns -> msg
        self._callbacks: list[tuple[Callable[..., Any], tuple]] = []
        self._lock = threading.Lock()  # ROS callbacks may come from several executor threads

    def register_callback(self, callback: Callable[..., Any], *args: Any) -> int:
        """``callback(*matched_msgs, *args)`` is called for every matched set, messages in
        stream order. Returns a connection index, as message_filters does."""
        self._callbacks.append((callback, args))
        return len(self._callbacks) - 1

    # The message_filters spelling, so node code is the same for both implementations.
    registerCallback = register_callback

    def add(self, stream_index: int, stamp_ns: int, msg: Any) -> None:
        with self._lock:
            matched = self._match(stream_index, int(stamp_ns), msg)
        # Outside the lock, so a callback may add() again without deadlocking.
        if matched is not None:
            for callback, args in self._callbacks:
                callback(*matched, *args)

    def _match(self, stream_index: int, stamp: int, msg: Any) -> list[Any] | None:
        queue = self._queues[stream_index]
        queue[stamp] = msg
        while len(queue) > self.queue_size:
            del queue[min(queue)]
        if stamp not in queue:
            return None  # it arrived late and was itself the oldest: evicted at once
        candidates = []  # per other stream: its stamps within slop, closest first
        for index, other in enumerate(self._queues):
            if index == stream_index:
                continue
            near = [s for s in other if abs(s - stamp) <= self._slop_ns]
            if not near:
                return None
            # Stable sort on distance only: ties keep arrival order, as in message_filters.
            candidates.append(sorted(near, key=lambda s: abs(s - stamp)))
        for combination in itertools.product(*candidates):
            stamps = list(combination)
            stamps.insert(stream_index, stamp)
            if max(stamps) - min(stamps) < self._slop_ns:
                return [q.pop(s) for q, s in zip(self._queues, stamps)]
        return None


class GateStatus(NamedTuple):
    ok: bool
    reason: str  # empty when ok; otherwise every violation, "; "-separated


@dataclass(frozen=True)
class StreamLimit:
    name: str  # as it should read in a report, e.g. "wrist_left image"
    max_age: float  # seconds


class ObservationGate:
    """Holds the latest stamp (seconds) of each stream and judges whether they may be used now.

    Feed it from the matched-set callback (``update`` with every stream's stamp) or per stream
    for data outside the matcher. ``check(now)`` is cheap; call it before every inference.
    """

    def __init__(self, limits: Sequence[StreamLimit], max_skew: float) -> None:
        names = [limit.name for limit in limits]
        if not names or len(set(names)) != len(names):
            raise ValueError("need at least one stream and unique stream names")
        self._limits = tuple(limits)
        self.max_skew = max_skew
        self._stamps: dict[str, float] = {}
        self._lock = threading.Lock()

    def update(self, stamps: Mapping[str, float]) -> None:
        unknown = set(stamps) - {limit.name for limit in self._limits}
        if unknown:
            raise KeyError(f"unknown streams {sorted(unknown)}")
        with self._lock:
            self._stamps.update(stamps)

    def clear(self) -> None:
        """Forget all stamps, e.g. when the inputs are re-subscribed."""
        with self._lock:
            self._stamps.clear()

    def check(self, now: float) -> GateStatus:
        with self._lock:
            stamps = dict(self._stamps)
        problems = []
        for limit in self._limits:
            if limit.name not in stamps:
                problems.append(f"{limit.name}: no data received")
                continue
            age = now - stamps[limit.name]
            if age > limit.max_age:
                problems.append(f"{limit.name} is {age:.2f} s old (max {limit.max_age:.2f} s)")
        if len(stamps) > 1:
            newest = max(stamps, key=stamps.get)
            oldest = min(stamps, key=stamps.get)
            skew = stamps[newest] - stamps[oldest]
            if skew > self.max_skew:
                problems.append(
                    f"{oldest} lags {newest} by {skew:.3f} s (max skew {self.max_skew:.3f} s)"
                )
        return GateStatus(not problems, "; ".join(problems))
