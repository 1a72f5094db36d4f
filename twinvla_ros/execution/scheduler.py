"""Chunk scheduler: which action the arms execute on each control tick, and when to infer.

Pure and deterministic: no threads, no clock of its own, no ROS, no torch. The control loop
drives it with explicit times (seconds on any monotonic clock). One control iteration is
(see ``worker.run_control_tick``)::

    deliver finished results -> poll_request (start inference if it returns one) -> tick

Modes:
    SYNC   reference behaviour (TwinVLA, openpi): execute the whole chunk, then infer while the
           arms hold. Every tick without an action is a stall.
    ASYNC  infer the next chunk while executing the current one; switch as soon as it arrives,
           skipping the steps already executed since the request (the new chunk's step 0 is the
           action the arms executed at request time).
    RTC    ASYNC plus real-time chunking guidance (Black et al. 2025, arXiv 2506.07339): the
           request carries the not yet executed rest of the current chunk, which the sampler
           inpaints into the new chunk, so both agree where they overlap.

Chunk indexing: a chunk has shape (H, D) = (horizon, action_dim); index i of a chunk is the
action for the i-th tick after its request (i = 0 at the request tick).
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable

import numpy as np


class ExecutionMode(str, Enum):
    SYNC = "sync"
    ASYNC = "async"
    RTC = "rtc"


@dataclass(frozen=True)
class Guidance:
    """What an RTC request asks the sampler to inpaint.

    Same three fields as ``twinvla_ros.model.Guidance``; pass that class as the scheduler's
    ``guidance_factory`` to get model objects directly (the scheduler calls the factory with
    keyword arguments ``actions``, ``weights``, ``max_weight``).
    """

    actions: np.ndarray  # (H, D) robot units: target Y for each step of the new chunk
    weights: np.ndarray  # (H,) in [0, 1]: soft mask W
    max_weight: float = 5.0  # guidance weight clip beta


@dataclass(frozen=True)
class InferenceRequest:
    id: int
    generation: int  # bumped by reset(): results of an older generation are dropped
    time: float  # control-loop time of the request; the new chunk's step 0 is aligned to it
    delay_steps: int  # estimated inference delay d in control ticks
    guidance: Any | None  # RTC only (and only while a chunk is executing), else None


@dataclass(frozen=True)
class SchedulerConfig:
    mode: ExecutionMode = ExecutionMode.RTC
    horizon: int = 20  # H: actions per chunk
    action_dim: int = 20  # D
    control_period: float = 0.05  # seconds per tick (20 Hz)
    # ASYNC/RTC: steps executed from a chunk before the next inference starts. Shortened
    # automatically to H - d so the next chunk arrives before this one runs out, but never below
    # min_execution_horizon (which bounds how often the policy is asked to infer).
    execution_horizon: int = 10
    min_execution_horizon: int = 1
    # Delay estimate d: the max of the last latency_window measured delays, each counted in ticks
    # from a request to the tick its chunk was delivered on (so it includes waiting for that
    # tick and is immune to timer jitter); initial_latency (seconds) before any was measured.
    initial_latency: float = 0.2
    latency_window: int = 10
    max_guidance_weight: float = 5.0  # beta

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", ExecutionMode(self.mode))
        if self.horizon < 1 or self.action_dim < 1:
            raise ValueError("horizon and action_dim must be >= 1")
        if not self.control_period > 0:
            raise ValueError("control_period must be > 0")
        if not 1 <= self.min_execution_horizon <= self.execution_horizon <= self.horizon:
            raise ValueError("need 1 <= min_execution_horizon <= execution_horizon <= horizon")
        if self.initial_latency < 0 or self.latency_window < 1:
            raise ValueError("initial_latency must be >= 0 and latency_window >= 1")
        if not self.max_guidance_weight > 0:
            raise ValueError("max_guidance_weight must be > 0")


@dataclass
class SchedulerStats:
    """Counters since construction (reset() starts a new task, not new statistics)."""

    ticks: int = 0
    stall_ticks: int = 0  # no action although this task already had one: the arms wait
    startup_ticks: int = 0  # no action yet for this task (after start or a new instruction)
    chunks_accepted: int = 0
    chunk_switches: int = 0  # boundaries between two chunks actually crossed in execution
    rejected_chunks: int = 0
    last_rejection: str = ""
    failed_inferences: int = 0
    last_failure: str = ""
    dropped_results: int = 0  # results of a request that is no longer awaited (reset, cancel)
    last_boundary_jump: float | None = None  # L2 between last old action and first new one
    boundary_jump_sum: float = 0.0
    max_boundary_jump: float = 0.0
    # At switches that replace a chunk before its end: L2 between the new chunk's first executed
    # action and the action the old chunk had for that same tick.
    plan_changes: int = 0
    plan_change_sum: float = 0.0
    latencies: deque = field(default_factory=deque)  # seconds, request to delivery, recent ones
    chunk_age: float | None = None  # seconds since the request of the chunk being executed

    @property
    def mean_boundary_jump(self) -> float | None:
        return self.boundary_jump_sum / self.chunk_switches if self.chunk_switches else None

    @property
    def mean_plan_change(self) -> float | None:
        return self.plan_change_sum / self.plan_changes if self.plan_changes else None


def rtc_prefix_weights(horizon: int, delay: int, executed: int) -> np.ndarray:
    """Soft mask W (H,) of real-time chunking (Black et al. 2025, arXiv 2506.07339, soft masking):

        W_i = 1                             for i < d
        W_i = c_i (e^{c_i} - 1) / (e - 1)   for d <= i < H - s, c_i = (H - s - i) / (H - s - d + 1)
        W_i = 0                             for i >= H - s

    i indexes the new chunk, d (``delay``) is the inference delay in ticks, s (``executed``) the
    number of actions of the current chunk executed at request time, so the H - s actions left
    overlap the new chunk's first H - s steps. The first d are executed from the current chunk
    while inference runs (frozen, weight 1); the rest of the overlap is a plan the new chunk may
    depart from progressively (exponential decay).
    """
    overlap = horizon - executed
    d = min(max(delay, 0), overlap)
    i = np.arange(horizon)
    c = (overlap - i) / (overlap - d + 1)
    weights = c * np.expm1(c) / np.expm1(1.0)
    weights[i < d] = 1.0
    weights[i >= overlap] = 0.0
    return weights


@dataclass(frozen=True)
class _InFlight:
    request: InferenceRequest
    executed_at_request: int  # actions executed in this task when the request was made
    ticks_at_request: int


class ChunkScheduler:
    """Decides per tick which action to execute and when the policy must infer.

    Not thread-safe: call it from the control loop only (the worker hands results over).
    """

    def __init__(
        self,
        config: SchedulerConfig | None = None,
        guidance_factory: Callable[..., Any] = Guidance,
    ) -> None:
        self.config = config or SchedulerConfig()
        self._guidance_factory = guidance_factory
        self.stats = SchedulerStats(latencies=deque(maxlen=self.config.latency_window))
        self._delays: deque[int] = deque(maxlen=self.config.latency_window)  # in ticks
        self._request_ids = 0
        self._generation = 0
        self._chunk: np.ndarray | None = None  # (H, D), the chunk being executed
        self._chunk_time = 0.0  # request time of _chunk
        self._index = 0  # next action of _chunk to execute
        self._in_flight: _InFlight | None = None
        self._executed = 0  # actions executed in this task (since the last reset)
        self._last_action: np.ndarray | None = None  # (D,)
        self._boundary_pending = False  # a new chunk replaced one: measure the jump next tick
        self._replaced_next: np.ndarray | None = None  # (D,) the replaced chunk's next action

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def estimated_delay_steps(self) -> int:
        """d: ticks executed from the current chunk before a chunk requested now can be used."""
        if self._delays:
            return max(self._delays)
        # The epsilon keeps 0.15 s / 0.05 s from rounding up to 4 through float error.
        return math.ceil(self.config.initial_latency / self.config.control_period - 1e-6)

    def reset(self) -> None:
        """New task (new instruction, or restart after a pause): drop the current chunk and
        whatever is in flight at once; the old chunk is not finished."""
        self._generation += 1
        self._chunk = None
        self._index = 0
        self._in_flight = None
        self._executed = 0
        self._last_action = None
        self._boundary_pending = False
        self._replaced_next = None
        self.stats.chunk_age = None

    def poll_request(self, now: float) -> InferenceRequest | None:
        """A request if inference should start now, else None. At most one is in flight; the
        caller must answer it with deliver(), fail() or cancel()."""
        if self._in_flight is not None or not self._wants_chunk():
            return None
        delay = self.estimated_delay_steps
        guidance = None
        if self.config.mode is ExecutionMode.RTC and self._remaining() > 0:
            guidance = self._rtc_guidance(delay)
        self._request_ids += 1
        request = InferenceRequest(self._request_ids, self._generation, now, delay, guidance)
        self._in_flight = _InFlight(request, self._executed, self.stats.ticks)
        return request

    def deliver(self, request: InferenceRequest, chunk: np.ndarray, now: float) -> bool:
        """Hand over an inferred chunk (H, D). Returns True if it was accepted; it is then
        executed from the next tick on."""
        if not self._awaits(request):
            self.stats.dropped_results += 1
            return False
        in_flight, self._in_flight = self._in_flight, None
        self.stats.latencies.append(now - request.time)
        self._delays.append(self.stats.ticks - in_flight.ticks_at_request)
        actions, problem = self._validated(chunk)
        if problem:
            self.stats.rejected_chunks += 1
            self.stats.last_rejection = problem
            return False
        # Skip what was executed while inference ran: those steps of the new chunk are past.
        # Ticks on which the arms held (old chunk exhausted) do not count, the plan did not
        # advance; in SYNC this makes every chunk start at step 0.
        # What the old chunk would have done on the switch tick, to measure how much the plan
        # changed there (a smooth policy's step-to-step change is small; a noisy one's is not,
        # so the plain jump alone cannot tell a continuation from a new plan).
        self._replaced_next = None
        if self._remaining() > 0:
            self._replaced_next = self._chunk[self._index].copy()
        self._index = self._executed - in_flight.executed_at_request
        self._chunk = actions
        self._chunk_time = request.time
        self._boundary_pending = self._last_action is not None
        self.stats.chunks_accepted += 1
        return True

    def fail(self, request: InferenceRequest, reason: str) -> None:
        """Inference raised: forget the request (a new one is polled next tick)."""
        if not self._awaits(request):
            self.stats.dropped_results += 1
            return
        self._in_flight = None
        self.stats.failed_inferences += 1
        self.stats.last_failure = reason

    def cancel(self, request: InferenceRequest) -> None:
        """Inference did not start (e.g. no fresh observation): ask again on the next tick."""
        if self._awaits(request):
            self._in_flight = None

    def tick(self, now: float) -> np.ndarray | None:
        """The action (D,) for this control tick, or None: stall, the arms hold."""
        self.stats.ticks += 1
        if self._chunk is not None:
            self.stats.chunk_age = now - self._chunk_time
        if self._remaining() <= 0:
            if self._executed:
                self.stats.stall_ticks += 1
            else:
                self.stats.startup_ticks += 1
            return None
        action = self._chunk[self._index].copy()
        self._index += 1
        self._executed += 1
        if self._boundary_pending:
            jump = float(np.linalg.norm(action - self._last_action))
            self.stats.chunk_switches += 1
            self.stats.last_boundary_jump = jump
            self.stats.boundary_jump_sum += jump
            self.stats.max_boundary_jump = max(self.stats.max_boundary_jump, jump)
            if self._replaced_next is not None:
                self.stats.plan_changes += 1
                self.stats.plan_change_sum += float(np.linalg.norm(action - self._replaced_next))
            self._boundary_pending = False
        self._last_action = action
        return action

    def _awaits(self, request: InferenceRequest) -> bool:
        return self._in_flight is not None and self._in_flight.request.id == request.id

    def _remaining(self) -> int:
        return 0 if self._chunk is None else self.config.horizon - self._index

    def _wants_chunk(self) -> bool:
        if self._chunk is None:
            return True
        if self.config.mode is ExecutionMode.SYNC:
            return self._remaining() <= 0
        cfg = self.config
        # s + d <= H keeps the next chunk arriving before this one is used up.
        horizon_left_after_delay = cfg.horizon - self.estimated_delay_steps
        steps = max(cfg.min_execution_horizon, min(cfg.execution_horizon, horizon_left_after_delay))
        return self._index >= steps

    def _rtc_guidance(self, delay: int) -> Any:
        # Y[j] = current chunk's action at (next index + j) where it exists. Past the overlap
        # the weight is 0; the last action is repeated there only to keep Y in a sane range for
        # the model's normalisation.
        rest = self._chunk[self._index :]
        pad = np.repeat(rest[-1:], self.config.horizon - len(rest), axis=0)
        return self._guidance_factory(
            actions=np.concatenate([rest, pad]),
            weights=rtc_prefix_weights(self.config.horizon, delay, self._index),
            max_weight=self.config.max_guidance_weight,
        )

    def _validated(self, chunk: Any) -> tuple[np.ndarray | None, str]:
        expected = (self.config.horizon, self.config.action_dim)
        try:
            actions = np.array(chunk, dtype=np.float64)  # a private copy
        except (TypeError, ValueError) as exc:
            return None, f"chunk is not numeric: {exc}"
        if actions.shape != expected:
            return None, f"chunk has shape {actions.shape}, expected {expected}"
        bad = int(np.size(actions) - np.count_nonzero(np.isfinite(actions)))
        if bad:
            return None, f"chunk has {bad} non-finite values"
        return actions, ""
