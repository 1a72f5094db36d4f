"""A loop's period over a sliding window (p50/p99), for /diagnostics and the benches."""
from __future__ import annotations

import time
from collections import deque

import numpy as np


class RateMeter:
    def __init__(self, window: int = 400):
        self._stamps: deque[float] = deque(maxlen=window)

    def tick(self, now: float | None = None) -> None:
        self._stamps.append(time.monotonic() if now is None else now)

    def periods(self) -> np.ndarray:
        return np.diff(np.asarray(self._stamps))

    def summary(self) -> dict[str, str]:
        periods = self.periods()
        if periods.size == 0:
            return {"rate_hz": "0"}
        return {"rate_hz": f"{1.0 / periods.mean():.1f}",
                "period_p50_ms": f"{np.percentile(periods, 50) * 1e3:.2f}",
                "period_p99_ms": f"{np.percentile(periods, 99) * 1e3:.2f}"}
