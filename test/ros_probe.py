"""A test's eyes and hands in a running graph: records topics, publishes, calls services."""
from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import Any, Callable

from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.node import Node

from waiting import wait_for


class Probe(Node):
    def __init__(self, context, name: str = "test_probe"):
        super().__init__(name, context=context)
        self._lock = threading.Lock()
        self.received: dict[str, list[tuple[float, Any]]] = defaultdict(list)

    def record(self, msg_type, topic: str, qos) -> None:
        def store(msg):
            with self._lock:
                self.received[topic].append((time.monotonic(), msg))
        self.create_subscription(msg_type, topic, store, qos)

    def messages(self, topic: str, since: float = 0.0) -> list:
        with self._lock:
            return [msg for stamp, msg in self.received[topic] if stamp >= since]

    def stamped(self, topic: str, since: float = 0.0) -> list[tuple[float, Any]]:
        with self._lock:
            return [(stamp, msg) for stamp, msg in self.received[topic] if stamp >= since]

    def latest(self, topic: str):
        with self._lock:
            return self.received[topic][-1][1] if self.received[topic] else None

    def lifecycle_state(self, node: str) -> str:
        """The label of managed node `node`'s state, as `ros2 lifecycle get` shows it."""
        return self.call(GetState, f"{node}/get_state", GetState.Request()).current_state.label

    def change_state(self, node: str, transition_id: int) -> bool:
        """`ros2 lifecycle set`: True when the transition succeeded."""
        request = ChangeState.Request()
        request.transition.id = transition_id
        return self.call(ChangeState, f"{node}/change_state", request).success

    def call(self, srv_type, name: str, request, timeout: float = 10.0):
        client = self.create_client(srv_type, name)
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise TimeoutError(f"service {name} not available")
            future = client.call_async(request)
            wait_for(future.done, timeout, f"reply from {name}")
            return future.result()
        finally:
            self.destroy_client(client)


def run_for(seconds: float, every: float, action: Callable[[], None]) -> None:
    """Call action() every `every` seconds for `seconds` (a publisher stream in a test)."""
    end = time.monotonic() + seconds
    next_time = time.monotonic()
    while next_time < end:
        action()
        next_time += every
        time.sleep(max(0.0, next_time - time.monotonic()))


def stream_until(action: Callable[[], None], condition: Callable[[], Any], timeout: float, what: str,
                 every: float = 0.05):
    """Call action() every `every` seconds until condition() is truthy; returns its value or
    fails saying what was awaited (a target streamed until the arm gets there)."""
    deadline = time.monotonic() + timeout
    next_time = time.monotonic()
    while time.monotonic() < deadline:
        action()
        value = condition()
        if value:
            return value
        next_time += every
        time.sleep(max(0.0, next_time - time.monotonic()))
    raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}")


def diagnostic_status(probe: Probe, name: str, since: float = 0.0):
    """The newest /diagnostics status called `name` (e.g. 'arm_driver_node: right arm') received
    after `since`, or None. The probe must record DiagnosticArray on /diagnostics."""
    for array in reversed(probe.messages("/diagnostics", since)):
        for status in array.status:
            if status.name == name:
                return status
    return None


def diagnostic_values(probe: Probe, name: str, since: float = 0.0) -> dict[str, str]:
    status = diagnostic_status(probe, name, since)
    return {} if status is None else {kv.key: kv.value for kv in status.values}
