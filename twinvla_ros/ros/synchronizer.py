"""Approximate-time matching of the policy's input streams, one interface for two implementations.

ROS 2's `message_filters.ApproximateTimeSynchronizer` when it is importable (a robot with ROS
installed), else twinvla_ros.execution.observation.ApproximateTimeMatcher, which follows the same policy.
The node feeds each stream's messages to `feed(stream_index, msg)` from its own subscriptions
and gets `callback(*matched_msgs)`; nothing else in the node depends on which one runs.
"""
from __future__ import annotations

from typing import Any, Callable

from twinvla_ros.execution.observation import ApproximateTimeMatcher


def stamp_ns(msg: Any) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


class StreamSynchronizer:
    def __init__(self, num_streams: int, queue_size: int, slop: float,
                 callback: Callable[..., None], implementation: str = "auto"):
        if implementation not in ("auto", "message_filters", "twinvla_ros"):
            raise ValueError(f"unknown synchronizer implementation '{implementation}'")
        message_filters = None
        if implementation in ("auto", "message_filters"):
            try:
                import message_filters
            except ImportError:
                if implementation == "message_filters":
                    raise
        if message_filters is not None:
            self._inputs = [message_filters.SimpleFilter() for _ in range(num_streams)]
            sync = message_filters.ApproximateTimeSynchronizer(self._inputs, queue_size, slop)
            sync.registerCallback(callback)
            self._sync = sync
            self.implementation = "message_filters"
        else:
            self._sync = ApproximateTimeMatcher(num_streams, queue_size, slop)
            self._sync.registerCallback(callback)
            self.implementation = "twinvla_ros"

    def feed(self, stream_index: int, msg: Any) -> None:
        if self.implementation == "message_filters":
            self._inputs[stream_index].signalMessage(msg)
        else:
            self._sync.add(stream_index, stamp_ns(msg), msg)
