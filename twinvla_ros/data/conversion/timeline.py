"""Resampling recorded streams onto a fixed-rate timeline by their real timestamps.

The recorder keeps every message with its own stamp; a dataset wants one row per 1/fps tick.
Rules (the issue's, and what TwinVLA's training assumes):
- positions: linear interpolation between the samples around a tick;
- rotations: spherical linear interpolation (slerp) between the same two samples;
- grippers and other commands: zero-order hold (the latest value at or before the tick): a
  gripper command is a step, and interpolating it would invent commands nobody sent;
- images: the latest frame at or before the tick, never a later one (that frame would show
  the future relative to the state of the row).

Times are int nanoseconds (the recorder's clock) so that a tick grid never drifts.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

NS = 1_000_000_000


class TimelineError(ValueError):
    """Streams that cannot make a timeline (empty, unordered, gaps, no overlap); says which."""


def check_stamps(name: str, times_ns: np.ndarray) -> np.ndarray:
    """int64 stamps, non-empty and non-decreasing, or TimelineError naming the stream."""
    times = np.asarray(times_ns, dtype=np.int64)
    if times.ndim != 1 or times.size == 0:
        raise TimelineError(f"{name}: no messages")
    backwards = np.flatnonzero(np.diff(times) < 0)
    if backwards.size:
        i = int(backwards[0])
        raise TimelineError(f"{name}: stamps go backwards at message {i + 1} "
                            f"({(times[i] - times[i + 1]) / 1e6:.1f} ms)")
    return times


def tick_grid(start_ns: int, end_ns: int, fps: int) -> np.ndarray:
    """start + k / fps for every k with the tick at or before end; int64 ns. The k-th tick is
    computed from k (not by accumulating a period), so tick k is exactly k / fps after start."""
    if fps <= 0:
        raise TimelineError(f"fps must be positive, got {fps}")
    if end_ns < start_ns:
        return np.zeros(0, dtype=np.int64)
    count = (end_ns - start_ns) * fps // NS + 1
    return start_ns + (np.arange(count, dtype=np.int64) * NS) // fps


def latest_at_or_before(times_ns: np.ndarray, ticks_ns: np.ndarray) -> np.ndarray:
    """Index of the latest sample at or before each tick; TimelineError for a tick before the
    first sample (nothing was known yet)."""
    indices = np.searchsorted(times_ns, ticks_ns, side="right") - 1
    if indices.size and indices[0] < 0:
        raise TimelineError("a tick lies before the stream's first sample")
    return indices


def hold(times_ns: np.ndarray, values: np.ndarray, ticks_ns: np.ndarray) -> np.ndarray:
    """Zero-order hold: values (n, ...) at each tick -> (m, ...)."""
    return np.asarray(values)[latest_at_or_before(times_ns, ticks_ns)]


def _bracket(times_ns: np.ndarray, ticks_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each tick: the sample indices before/after it and the fraction between them."""
    if ticks_ns.size and (ticks_ns[0] < times_ns[0] or ticks_ns[-1] > times_ns[-1]):
        raise TimelineError("interpolation outside the stream's span")
    after = np.clip(np.searchsorted(times_ns, ticks_ns, side="left"), 0, len(times_ns) - 1)
    before = np.where(times_ns[after] == ticks_ns, after, np.maximum(after - 1, 0))
    span = (times_ns[after] - times_ns[before]).astype(np.float64)
    fraction = np.divide((ticks_ns - times_ns[before]).astype(np.float64), span,
                         out=np.zeros(len(ticks_ns)), where=span > 0)
    return before, after, fraction


def interpolate_poses(times_ns: np.ndarray, positions: np.ndarray, rotations: np.ndarray,
                      ticks_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Poses sampled at times (n,) -> at ticks (m,): positions (m, 3) linear, rotation matrices
    (m, 3, 3) by slerp. Samples sharing a stamp keep the last one (a repeated stamp is a
    re-sent message, not a jump in zero time)."""
    keep = np.append(np.diff(times_ns) > 0, True)
    times_ns, positions, rotations = times_ns[keep], np.asarray(positions)[keep], np.asarray(rotations)[keep]
    if len(times_ns) == 1:
        if np.any(ticks_ns != times_ns[0]):
            raise TimelineError("interpolation outside the stream's span")
        return np.repeat(positions, len(ticks_ns), 0), np.repeat(rotations, len(ticks_ns), 0)
    before, after, fraction = _bracket(times_ns, ticks_ns)
    xyz = positions[before] + fraction[:, None] * (positions[after] - positions[before])
    # Slerp over the whole stream in seconds since its first sample (float64 keeps ns
    # resolution over days); scipy picks the shorter arc between neighbouring samples.
    seconds = (times_ns - times_ns[0]) / NS
    slerp = Slerp(seconds, Rotation.from_matrix(rotations))
    return xyz, slerp((ticks_ns - times_ns[0]) / NS).as_matrix()


@dataclass(frozen=True)
class Gap:
    stream: str
    seconds: float
    at_s: float                     # where it starts, seconds after the timeline's start


def largest_gap(name: str, times_ns: np.ndarray, start_ns: int, end_ns: int) -> Gap:
    """The longest stretch of [start, end] without a sample of the stream (the interval from
    a sample to the next, and from the last sample to the end)."""
    inside = times_ns[(times_ns >= start_ns) & (times_ns <= end_ns)]
    before = times_ns[times_ns < start_ns]
    edges = np.concatenate([before[-1:] if before.size else [start_ns], inside, [end_ns]]).astype(np.int64)
    steps = np.diff(edges)
    i = int(np.argmax(steps)) if steps.size else 0
    seconds = float(steps[i]) / NS if steps.size else 0.0
    return Gap(name, seconds, max(0.0, float(edges[i] - start_ns) / NS) if steps.size else 0.0)
