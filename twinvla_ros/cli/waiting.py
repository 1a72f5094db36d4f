"""Waiting for a running graph, with a deadline and a reason."""
from __future__ import annotations

import time
from typing import Any, Callable


def wait_until(condition: Callable[[], Any], timeout: float, what: str,
               failed: Callable[[], dict] | None = None, poll: float = 0.05) -> Any:
    """condition()'s first truthy value; TimeoutError naming `what` after `timeout` seconds, or
    RuntimeError at once when `failed()` (a ProcessGraphRunner's exited nodes) reports any."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if failed is not None and failed():
            raise RuntimeError(f"node process(es) exited: {failed()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)
