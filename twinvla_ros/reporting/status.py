"""Statuses and events of the pure-Python parts, shaped for /diagnostics and the ROS log.

A part (the arm controller, the policy runtime, the sim) keeps an EventLog and returns Status
objects; the node turns them into DiagnosticStatus messages and log lines.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Callable


class Level(IntEnum):
    """diagnostic_msgs/DiagnosticStatus levels."""
    OK = 0
    WARN = 1
    ERROR = 2


@dataclass
class Status:
    level: Level
    message: str
    values: dict[str, str] = field(default_factory=dict)


class EventLog:
    """Every event is counted under its kind; the log sees the first one of a kind at once and
    then at most one per `interval` seconds, saying how many were held back.

    A target stream that is clamped 20 times a second is then one log line every few seconds
    and a counter on /diagnostics, not a scrolling wall of warnings.
    """

    def __init__(self, prefix: str = "", interval: float = 2.0, clock: Callable[[], float] = time.monotonic):
        self._prefix = prefix
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: list[tuple[Level, str]] = []
        self._last_logged: dict[str, float] = {}
        self._held_back: dict[str, int] = {}
        self.counts: dict[str, int] = {}

    def add(self, kind: str, message: str, level: Level = Level.WARN) -> None:
        with self._lock:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            now = self._clock()
            last = self._last_logged.get(kind)
            if last is not None and now - last < self._interval:
                self._held_back[kind] = self._held_back.get(kind, 0) + 1
                return
            held = self._held_back.pop(kind, 0)
            suffix = f" ({held} more like it in the last {now - last:.1f} s)" if held else ""
            self._last_logged[kind] = now
            self._pending.append((level, f"{self._prefix}{message}{suffix}"))

    def drain(self) -> list[tuple[Level, str]]:
        """The log lines due since the last call: (level, message)."""
        with self._lock:
            pending, self._pending = self._pending, []
        return pending

    def count(self, kind: str) -> int:
        with self._lock:
            return self.counts.get(kind, 0)
