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

When to infer (ASYNC/RTC). Delays are counted in ticks from the request tick to the tick the
chunk is delivered on (a result finishing between two ticks is used on the next one, so this
includes the up to one tick of hand-over). The delay estimate d is a high percentile
(``latency_percentile``, nearest rank) of the last ``latency_window`` measured delays, and at
least the age of the oldest request in flight (the slow ones of recent requests are the ones
not measured yet; a hung inference raises it tick by tick). A chunk requested now is used from
d ticks later on, so the plan it replaces must still have d actions then: the next inference
starts when the newest plan (the chunk executing, or the newest one in flight) has
``d + latency_margin`` actions left (``trigger_steps_left``), or, with nothing in flight, when
``execution_horizon`` steps of it were executed (reactivity), whichever comes first, at most
once per executed step (``min_execution_horizon``).

One inference at a time cannot cover more than H / 2 ticks of delay: the next chunk can only be
requested once the previous one arrived, d ticks into it, and then needs d more. Larger delays
are covered by several inferences in flight (pipelining: up to ``max_in_flight``, 0 for no
limit; each still waits for the worker to be free, so the model's own compute stays serial and
only latency beyond it, e.g. transport or ``injected_latency``, overlaps). With that the chunk
covers a delay of up to H - 1 ticks (``capacity_steps``); beyond it (``over_capacity``) every
chunk arrives too late for some ticks: they are stall ticks.

RTC with overlapping requests: a request is guided toward the chunk executing when it is made,
which is ceil(d / s) chunks back (the ones in between are still in flight), and overlaps the new
chunk's window by only H - d - s steps or less; the steps it will execute are beyond it. So the
chunks form that many interleaved chains, each guided by its own predecessor: a multimodal
policy that changes mode in one chain alternates between the plans at every switch from then
on (seen in simulation with a two-mode flow policy at d = 12, s = 6). One request at a time
(d <= H / 2) has a single chain.
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
    delay_steps: int  # estimated inference delay d in control ticks (<= H - 1): RTC's frozen prefix
    guidance: Any | None  # RTC only (and only while a chunk is executing), else None


@dataclass(frozen=True)
class SchedulerConfig:
    mode: ExecutionMode = ExecutionMode.RTC
    horizon: int = 20  # H: actions per chunk
    action_dim: int = 20  # D
    control_period: float = 0.05  # seconds per tick (20 Hz)
    # ASYNC/RTC: at most this many steps of a plan are executed before the next inference starts
    # (how quickly the policy reacts). It starts earlier when the latency needs it, never so late
    # that the plan's remaining actions do not cover the delay estimate plus the margin.
    execution_horizon: int = 10
    # At least this many executed steps between two requests (bounds the request rate).
    min_execution_horizon: int = 1
    # Ticks of slack on top of the delay estimate (jitter beyond the percentile).
    latency_margin: int = 2
    # Delay estimate d: this percentile (nearest rank) of the last latency_window measured delays,
    # each counted in ticks from a request to the tick its chunk was delivered on (so it
    # includes waiting for that tick and is immune to timer jitter); initial_latency (seconds,
    # plus the hand-over tick) before any was measured.
    latency_percentile: float = 95.0
    latency_window: int = 40
    initial_latency: float = 0.2
    # Requests in flight at once (pipelined inference); 0: no limit but the worker's.
    max_in_flight: int = 0
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
        if not 0 < self.latency_percentile <= 100:
            raise ValueError("latency_percentile must be in (0, 100]")
        if self.latency_margin < 0 or self.max_in_flight < 0:
            raise ValueError("latency_margin and max_in_flight must be >= 0")
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
    superseded_chunks: int = 0  # arrived after a newer chunk (pipelined, out of order): unused
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


def nearest_rank(values, percentile: float):
    """The nearest-rank percentile (a value of the sample: no interpolation), None if empty."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[max(1, math.ceil(percentile / 100.0 * len(ordered))) - 1]


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
        self._chunk_request: int | None = None  # id of _chunk's request
        self._chunk_start = 0  # actions executed in this task at _chunk's request
        self._chunk_time = 0.0  # request time of _chunk
        self._index = 0  # next action of _chunk to execute
        self._in_flight: dict[int, _InFlight] = {}  # by request id, oldest first
        self._executed = 0  # actions executed in this task (since the last reset)
        self._last_action: np.ndarray | None = None  # (D,)
        self._boundary_pending = False  # a new chunk replaced one: measure the jump next tick
        self._replaced_next: np.ndarray | None = None  # (D,) the replaced chunk's next action

    # ---- what the scheduler knows and plans --------------------------------------------------

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def in_flight(self) -> int:
        """Requests awaiting a result."""
        return len(self._in_flight)

    @property
    def last_action(self) -> np.ndarray | None:
        """(D,) the action executed last in this task (None after reset): what a stall holds."""
        return None if self._last_action is None else self._last_action.copy()

    @property
    def measured_delays(self) -> int:
        return len(self._delays)

    @property
    def estimated_delay_steps(self) -> int:
        """d: ticks executed from the current plan before a chunk requested now can be used."""
        waited = self._oldest_in_flight_ticks()
        if self._delays:
            return max(int(nearest_rank(self._delays, self.config.latency_percentile)), waited)
        # A result is used on the tick after it finished: + 1. The epsilon keeps 0.15 s / 0.05 s
        # from rounding down to 2 through float error.
        initial = math.floor(self.config.initial_latency / self.config.control_period + 1e-6) + 1
        return max(initial, waited)

    @property
    def latency_estimate(self) -> float:
        """Seconds from request to delivery: the same percentile of the same requests, and at
        least as long as the oldest request in flight has waited (in ticks)."""
        estimate = nearest_rank(self.stats.latencies, self.config.latency_percentile)
        estimate = self.config.initial_latency if estimate is None else float(estimate)
        return max(estimate, self._oldest_in_flight_ticks() * self.config.control_period)

    @property
    def guidance_delay_steps(self) -> int:
        """RTC's frozen prefix: the delay the next chunk will see, at most H - 1."""
        return min(self.estimated_delay_steps, self.config.horizon - 1)

    @property
    def trigger_steps_left(self) -> int:
        """The next inference starts when the newest plan has this many actions left (or
        earlier, after execution_horizon steps): the delay estimate plus the margin."""
        return self.estimated_delay_steps + self.config.latency_margin

    @property
    def steps_per_inference(self) -> int:
        """Steps executed from the newest plan before the next inference starts (steady state):
        execution_horizon, but not before the previous request arrived (d), and never later
        than the latency allows."""
        cfg = self.config
        if cfg.mode is ExecutionMode.SYNC:
            return cfg.horizon
        latest = cfg.horizon - self.trigger_steps_left
        reactive = max(cfg.execution_horizon, self.estimated_delay_steps)
        return max(cfg.min_execution_horizon, min(reactive, latest))

    @property
    def capacity_steps(self) -> int:
        """The largest delay (ticks) the chunk covers without a stall: requests spaced s steps
        apart need d <= H - s, s >= min_execution_horizon, and with at most k in flight
        s >= d / k (one at a time: d <= H / 2)."""
        cfg = self.config
        for delay in range(cfg.horizon, 0, -1):
            spacing = cfg.min_execution_horizon
            if cfg.max_in_flight:
                spacing = max(spacing, math.ceil(delay / cfg.max_in_flight))
            if delay <= cfg.horizon - spacing:
                return delay
        return 0

    @property
    def over_capacity(self) -> bool:
        """The measured delay is more than a chunk can cover: every chunk arrives late."""
        cfg = self.config
        if cfg.mode is ExecutionMode.SYNC or not self._delays:
            return False
        return self.estimated_delay_steps > self.capacity_steps

    # ---- the control loop's calls --------------------------------------------------------------

    def reset(self) -> None:
        """New task (new instruction, or restart after a pause): drop the current chunk and
        whatever is in flight at once; the old chunk is not finished."""
        self._generation += 1
        self._chunk = None
        self._chunk_request = None
        self._chunk_start = 0
        self._index = 0
        self._in_flight = {}
        self._executed = 0
        self._last_action = None
        self._boundary_pending = False
        self._replaced_next = None
        self.stats.chunk_age = None

    def poll_request(self, now: float, ready: bool = True) -> InferenceRequest | None:
        """A request if inference should start now, else None. ``ready``: the worker can start
        one at once; while it cannot, nothing more is requested (it would only queue) unless
        nothing is in flight. The caller must answer each request with deliver(), fail() or
        cancel()."""
        if self._in_flight and not ready:
            return None
        if not self._wants_chunk():
            return None
        delay = self.guidance_delay_steps
        guidance = None
        if self.config.mode is ExecutionMode.RTC and self._remaining() > 0:
            guidance = self._rtc_guidance(delay)
        self._request_ids += 1
        request = InferenceRequest(self._request_ids, self._generation, now, delay, guidance)
        self._in_flight[request.id] = _InFlight(request, self._executed, self.stats.ticks)
        return request

    def deliver(self, request: InferenceRequest, chunk: np.ndarray, now: float) -> bool:
        """Hand over an inferred chunk (H, D). Returns True if it was accepted; it is then
        executed from the next tick on."""
        if not self._awaits(request):
            self.stats.dropped_results += 1
            return False
        in_flight = self._in_flight.pop(request.id)
        self.stats.latencies.append(now - request.time)
        self._delays.append(self.stats.ticks - in_flight.ticks_at_request)
        actions, problem = self._validated(chunk)
        if problem:
            self.stats.rejected_chunks += 1
            self.stats.last_rejection = problem
            return False
        if self._chunk_request is not None and request.id < self._chunk_request:
            # Pipelined requests may finish out of order: a newer plan already executes.
            self.stats.superseded_chunks += 1
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
        self._chunk_request = request.id
        self._chunk_start = in_flight.executed_at_request
        self._chunk_time = request.time
        self._boundary_pending = self._last_action is not None
        self.stats.chunks_accepted += 1
        return True

    def fail(self, request: InferenceRequest, reason: str) -> None:
        """Inference raised: forget the request (a new one is polled next tick)."""
        if not self._awaits(request):
            self.stats.dropped_results += 1
            return
        del self._in_flight[request.id]
        self.stats.failed_inferences += 1
        self.stats.last_failure = reason

    def cancel(self, request: InferenceRequest) -> None:
        """Inference did not start (e.g. no fresh observation): ask again on the next tick."""
        if self._awaits(request):
            del self._in_flight[request.id]

    def tick(self, now: float) -> np.ndarray | None:
        """The action (D,) for this control tick, or None: no new action. A stall (counted in
        stats.stall_ticks) is a None while the task already had an action; the caller may hold
        ``last_action``."""
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

    # ---- helpers -------------------------------------------------------------------------------

    def _awaits(self, request: InferenceRequest) -> bool:
        return request.id in self._in_flight

    def _oldest_in_flight_ticks(self) -> int:
        """A request still in flight `age` ticks after it was made takes at least that long: the
        slow ones of the recent requests are the ones not measured yet."""
        return max((self.stats.ticks - f.ticks_at_request for f in self._in_flight.values()), default=0)

    def _remaining(self) -> int:
        return 0 if self._chunk is None else self.config.horizon - self._index

    def _newest_start(self) -> int | None:
        """Executed count at the request of the newest plan (in flight or executing)."""
        if self._in_flight:
            return next(reversed(self._in_flight.values())).executed_at_request
        return None if self._chunk is None else self._chunk_start

    def _wants_chunk(self) -> bool:
        cfg = self.config
        newest = self._newest_start()
        if newest is None:
            return True  # nothing executing, nothing coming
        if cfg.mode is ExecutionMode.SYNC:
            return not self._in_flight and self._remaining() <= 0
        if cfg.max_in_flight and len(self._in_flight) >= cfg.max_in_flight:
            return False
        since = self._executed - newest  # steps executed since the newest plan's request
        if since < cfg.min_execution_horizon:
            return False
        left = cfg.horizon - since  # actions the newest plan has from this tick on
        if left <= self.trigger_steps_left:
            return True  # the latest start that still covers the latency: overlapping if need be
        # Re-planning for reactivity waits for the request in flight: overlapping requests only
        # where the latency needs them (RTC guides each request toward the plan executing, and
        # the one in flight would otherwise execute past where it was guided).
        return since >= cfg.execution_horizon and not self._in_flight

    def _rtc_guidance(self, delay: int) -> Any:
        # Y[j] = current chunk's action at (next index + j) where it exists. Past the overlap
        # the weight is 0; the last action is repeated there only to keep Y in a sane range for
        # the model's normalisation. With several requests in flight the ones before this will
        # execute part of the first d steps; they were guided toward this same plan, so the
        # executing chunk is still the best known estimate of what the arms will do.
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
