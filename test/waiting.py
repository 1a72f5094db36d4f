"""Waiting on a condition with a timeout, for every test folder (no ROS import)."""
from __future__ import annotations

import time
from typing import Any, Callable


def wait_for(condition: Callable[[], Any], timeout: float, what: str, poll: float = 0.02):
    """Poll until condition() is truthy; returns its value or fails saying what was awaited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}")
