"""ChunkScheduler and InferenceWorker on simulated time (no sleeps, no timing assertions).

The scheduler is driven tick by tick through run_control_tick with a simulated worker that
takes a fixed latency; the real threaded worker is tested with events for hand-shakes.
"""
from __future__ import annotations

import heapq
import math
import threading
from dataclasses import dataclass

import numpy as np
import pytest

from waiting import wait_for

from twinvla_ros.execution import (
    ChunkScheduler,
    ExecutionMode,
    InferenceRequest,
    InferenceResult,
    InferenceWorker,
    SchedulerConfig,
    rtc_prefix_weights,
    run_control_tick,
)

PERIOD = 0.05  # 20 Hz
HORIZON = 20
DIM = 20
LATENCY = 0.15  # 3 ticks, well below the 20-tick horizon


@dataclass
class SimClock:
    now: float = 0.0


class SimulatedWorker:
    """InferenceWorker's submit/drain/busy contract on simulated time.

    The model computes one request at a time for ``compute`` seconds (default: the whole
    latency, i.e. strictly one inference at a time); a submit while it computes waits in one
    slot (a newer one replaces it). The result is handed over ``latency`` seconds after the
    start (``latency`` may be a callable drawing one per request), so the part beyond
    ``compute`` overlaps the next inferences, like the real worker's injected latency. The
    chunk is computed at start time from the observation of the submit tick."""

    def __init__(self, clock, infer, get_observation, latency, compute=None):
        self.clock = clock
        self.infer = infer
        self.get_observation = get_observation
        self.latency = latency if callable(latency) else (lambda: latency)
        self.compute = compute
        self.started = 0
        self.max_in_flight = 0  # most results pending at once
        self._computing_until = None
        self._pending = []  # (due, order, request, chunk, latency)
        self._waiting = None  # (request, observation)

    @property
    def busy(self):
        self._advance()
        return self._computing_until is not None or self._waiting is not None

    def submit(self, request):
        observation = self.get_observation()
        if observation is None:
            return False
        self._waiting = (request, observation)
        self._advance()
        if self._computing_until is None:
            self._start_waiting(self.clock.now)
        return True

    def drain(self):
        self._advance()
        results = []
        # 1e-9: a result due exactly at a tick time is handed over on that tick.
        while self._pending and self._pending[0][0] <= self.clock.now + 1e-9:
            _, _, request, chunk, latency = heapq.heappop(self._pending)
            results.append(InferenceResult(request, chunk, None, None, latency))
        return results

    def _advance(self):
        while self._computing_until is not None and self._computing_until <= self.clock.now + 1e-9:
            finished, self._computing_until = self._computing_until, None
            if self._waiting is not None:
                self._start_waiting(finished)

    def _start_waiting(self, start_time):
        request, observation = self._waiting
        self._waiting = None
        self.started += 1
        chunk = self.infer(observation, request.guidance)
        latency = self.latency()
        compute = latency if self.compute is None else min(self.compute, latency)
        self._computing_until = start_time + compute
        heapq.heappush(self._pending, (start_time + latency, self.started, request, chunk, latency))
        self.max_in_flight = max(self.max_in_flight, len(self._pending))


def reference_trajectory(steps):
    """A smooth 20-D path, (len(steps), DIM): the action a perfect policy plans for the arm's
    step m (the m-th action executed in the task)."""
    steps = np.asarray(steps, dtype=float)[:, None]
    return 0.3 * np.sin(2 * math.pi * steps / 40.0 + 0.3 * np.arange(DIM))


def planner_infer(observation, guidance):
    """Deterministic policy. The observation is the arm's progress (actions executed so far);
    the chunk is the path from there on. The arm holds on stalls, so its progress, not the
    clock, is what a chunk continues from."""
    return reference_trajectory(observation + np.arange(HORIZON))


class Simulation:
    """Scheduler + simulated worker driven tick by tick through run_control_tick."""

    def __init__(self, mode, latency, infer=planner_infer, compute=None, **config):
        self.clock = SimClock()
        self.scheduler = ChunkScheduler(
            SchedulerConfig(mode=mode, horizon=HORIZON, action_dim=DIM, control_period=PERIOD,
                            **config)
        )
        self.worker = SimulatedWorker(self.clock, infer, self.observation, latency, compute)
        self.tick_index = 0
        self.actions = []  # per tick: (DIM,) or None

    def observation(self):
        return sum(action is not None for action in self.actions)

    def run(self, seconds):
        for _ in range(round(seconds / PERIOD)):
            self.clock.now = self.tick_index * PERIOD
            self.actions.append(run_control_tick(self.scheduler, self.worker, self.clock.now))
            self.tick_index += 1
        return self




class TwoModeFlowPolicy:
    """A stochastic flow-matching policy with two modes, sampled the way the model samples.

    The action distribution for an observation (the arm's progress n) is a mixture of two
    Gaussians around reference_trajectory(n + j) +- 0.25 (pass an obstacle left or right), std
    SIGMA. Flow convention as TwinVLA: t = 1 is noise, x_t = t * noise + (1 - t) * a, velocity
    v = noise - a. For this mixture the exact velocity is v(x, t) = (x - E[a | x_t]) / t, so no
    network is needed, and each sample picks a mode at random, like a real multimodal policy.

    With guidance the Euler sampler applies real-time chunking's pseudo-inverse guidance (Black
    et al. 2025, arXiv 2506.07339) translated to t = 1 noise (the paper's tau = 1 - t):
        x0_hat = x - t * v                      (denoised estimate)
        g      = (d x0_hat / d x)^T [(Y - x0_hat) * W]          (a vector-Jacobian product)
        w      = min(beta, ((1 - t)^2 + t^2) / (t (1 - t)))     (beta at t = 1)
        v'     = v - w * g,    x <- x - dt * v'
    """

    OFFSET = 0.25
    SIGMA = 0.02
    FLOW_STEPS = 10

    def __init__(self, seed):
        import torch

        self.torch = torch
        self.generator = torch.Generator().manual_seed(seed)

    def _mode_means(self, progress):  # (2, H, D)
        path = self.torch.tensor(reference_trajectory(progress + np.arange(HORIZON)))
        return self.torch.stack([path + self.OFFSET, path - self.OFFSET])

    def _posterior_mean(self, x, t, means):  # E[a | x_t], (H, D)
        variance = t**2 + (1 - t) ** 2 * self.SIGMA**2
        logits = -((x - (1 - t) * means) ** 2).sum(dim=(1, 2)) / (2 * variance)
        responsibilities = self.torch.softmax(logits, dim=0)[:, None, None]
        per_mode = means + (1 - t) * self.SIGMA**2 / variance * (x - (1 - t) * means)
        return (responsibilities * per_mode).sum(dim=0)

    def __call__(self, observation, guidance):
        torch = self.torch
        means = self._mode_means(observation)
        x = torch.randn(HORIZON, DIM, generator=self.generator, dtype=torch.float64)
        dt = 1.0 / self.FLOW_STEPS
        for step in range(self.FLOW_STEPS):
            t = 1.0 - step * dt
            if guidance is None:
                v = (x - self._posterior_mean(x, t, means)) / t
            else:
                x_in = x.detach().requires_grad_(True)
                x0_hat = self._posterior_mean(x_in, t, means)
                v = ((x_in - x0_hat) / t).detach()
                target = torch.as_tensor(guidance.actions)
                mask = torch.as_tensor(guidance.weights)[:, None]
                error = (target - x0_hat.detach()) * mask
                (correction,) = torch.autograd.grad(x0_hat, x_in, grad_outputs=error)
                weight = guidance.max_weight
                if t < 1.0:
                    weight = min(weight, ((1 - t) ** 2 + t**2) / (t * (1 - t)))
                v = v - weight * correction
            x = (x - dt * v).detach()
        return x.numpy()


def chunk_of(value, horizon=HORIZON, dim=DIM):
    return np.full((horizon, dim), float(value))


def runs(actions):
    """The tick sequence as runs: [(executed?, length), ...]."""
    result = []
    for executed in (action is not None for action in actions):
        if result and result[-1][0] == executed:
            result[-1] = (executed, result[-1][1] + 1)
        else:
            result.append((executed, 1))
    return result


# --- execution modes on simulated time ---------------------------------------------------------


@pytest.mark.parametrize("mode", [ExecutionMode.ASYNC, ExecutionMode.RTC])
def test_async_and_rtc_never_stall_after_the_first_chunk(mode):
    sim = Simulation(mode, LATENCY).run(30.0)
    stats = sim.scheduler.stats
    assert stats.ticks == 600
    assert stats.startup_ticks == 3  # the first chunk takes the latency, then never again
    assert stats.stall_ticks == 0
    assert stats.chunks_accepted > 30  # it really re-planned all along


@pytest.mark.parametrize("mode", list(ExecutionMode))
def test_new_chunk_is_aligned_to_its_request_time(mode):
    # The planner's chunk continues the path from where the arm was at request time. If the
    # steps executed while inference ran are skipped correctly (and held ticks are not), the
    # arm executes the path step after step: nothing repeated, nothing skipped.
    sim = Simulation(mode, LATENCY).run(10.0)
    executed = [a for a in sim.actions if a is not None]
    assert len(executed) > 150
    np.testing.assert_allclose(executed, reference_trajectory(range(len(executed))), atol=1e-12)
    assert sim.scheduler.stats.chunk_switches > 5
    assert sim.scheduler.stats.max_boundary_jump < 0.2  # one step along the path


def test_sync_executes_whole_chunks_and_stalls_for_the_latency_every_chunk():
    sim = Simulation(ExecutionMode.SYNC, LATENCY).run(30.0)
    stats = sim.scheduler.stats
    sequence = runs(sim.actions)
    assert sequence[0] == (False, 3) == (False, stats.startup_ticks)
    # Cut the run still going on when the simulation ends.
    chunks = [length for executed, length in sequence[1:-1] if executed]
    stalls = [length for executed, length in sequence[1:-1] if not executed]
    assert len(chunks) > 20 and chunks == [HORIZON] * len(chunks)  # whole chunks, then...
    assert all(abs(stall - LATENCY / PERIOD) <= 1 for stall in stalls), stalls  # ...the wait
    assert stats.stall_ticks == sum(stalls) + (0 if sequence[-1][0] else sequence[-1][1])


def test_execution_horizon_shrinks_with_the_measured_latency():
    # 9 ticks of latency with a nominal 15-step execution horizon would run out of actions
    # (15 + 9 > 20); the scheduler must request earlier once it has measured the latency.
    sim = Simulation(ExecutionMode.ASYNC, 0.45, execution_horizon=15, initial_latency=0.0)
    sim.run(30.0)
    assert sim.scheduler.estimated_delay_steps == 9
    assert sim.scheduler.stats.stall_ticks == 0


def test_rtc_keeps_the_new_chunk_continuous_with_the_old_one():
    jumps = {}
    for mode in (ExecutionMode.ASYNC, ExecutionMode.RTC):
        sim = Simulation(mode, LATENCY, infer=TwoModeFlowPolicy(seed=7)).run(30.0)
        stats = sim.scheduler.stats
        assert stats.stall_ticks == 0 and stats.chunk_switches > 30
        jumps[mode] = stats.mean_boundary_jump
    print(f"mean boundary jump async {jumps[ExecutionMode.ASYNC]:.3f} "
          f"rtc {jumps[ExecutionMode.RTC]:.3f}")
    # Without guidance about half the switches change mode (a jump of ~2.2); with it none do.
    assert jumps[ExecutionMode.RTC] < 0.3 * jumps[ExecutionMode.ASYNC]


def test_plan_change_compares_the_new_chunk_with_the_old_one_on_the_same_tick():
    scheduler = ChunkScheduler(SchedulerConfig(mode="async", execution_horizon=5, initial_latency=0.0))
    now = 0.0
    scheduler.deliver(scheduler.poll_request(now), chunk_of(0.0) + np.arange(HORIZON)[:, None], now)
    for _ in range(5):
        scheduler.tick(now)
        now += PERIOD
    request = scheduler.poll_request(now)
    scheduler.deliver(request, chunk_of(10.0), now)
    scheduler.tick(now)
    stats = scheduler.stats
    # The old chunk would have executed its step 5 (value 5) on this tick; the new one gives 10.
    assert stats.plan_changes == 1
    assert stats.mean_plan_change == pytest.approx(5.0 * math.sqrt(DIM))
    assert stats.last_boundary_jump == pytest.approx(6.0 * math.sqrt(DIM))   # from the executed 4


# --- latency-aware scheduling ---------------------------------------------------------------------

WARM_UP = 5.0  # seconds before steady state: the first chunks, the latency window filling
STEADY = 30.0


def steady_state(mode, latency, compute=PERIOD, **config):
    """A simulation past its warm-up, and its stall ticks over STEADY seconds after it. The model
    computes for one tick; the rest of the latency overlaps the next inferences (the worker's
    injected latency, a remote server's transport)."""
    sim = Simulation(mode, latency, compute=compute, **config).run(WARM_UP)
    before = sim.scheduler.stats.stall_ticks
    sim.run(STEADY)
    return sim, sim.scheduler.stats.stall_ticks - before


@pytest.mark.parametrize("mode", [ExecutionMode.ASYNC, ExecutionMode.RTC])
@pytest.mark.parametrize("latency", [0.05, 0.3, 0.6, 0.9])
def test_latency_up_to_what_a_chunk_covers_never_stalls(mode, latency):
    sim, stalls = steady_state(mode, latency)
    scheduler = sim.scheduler
    assert stalls == 0 and scheduler.stats.stall_ticks == 0
    assert scheduler.stats.startup_ticks == round(latency / PERIOD)
    assert scheduler.estimated_delay_steps == round(latency / PERIOD)
    assert not scheduler.over_capacity and scheduler.capacity_steps == HORIZON - 1
    # Beyond half a chunk one inference at a time cannot keep up: the requests overlap.
    if latency > HORIZON * PERIOD / 2:
        assert sim.worker.max_in_flight >= 2
    else:
        assert sim.worker.max_in_flight == 1
    executed = [a for a in sim.actions if a is not None]
    np.testing.assert_allclose(executed, reference_trajectory(range(len(executed))), atol=1e-12)


@pytest.mark.parametrize("mode", [ExecutionMode.ASYNC, ExecutionMode.RTC])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_jittering_latency_never_stalls(mode, seed):
    rng = np.random.default_rng(seed)
    sim, stalls = steady_state(mode, lambda: rng.uniform(0.2, 0.8))
    assert stalls == 0
    stats = sim.scheduler.stats
    # Pipelined requests with different latencies overtake each other: the late one is unused.
    assert stats.superseded_chunks > 0
    assert 12 <= sim.scheduler.estimated_delay_steps <= 16  # p95 of 4..16 ticks
    executed = [a for a in sim.actions if a is not None]
    np.testing.assert_allclose(executed, reference_trajectory(range(len(executed))), atol=1e-12)


def test_one_inference_at_a_time_covers_only_half_a_chunk():
    # The next chunk can only be requested once the previous one arrived, d ticks into it, and
    # needs d more: d <= H / 2. Here the whole latency is the model's compute (no overlap).
    for latency, stalls_expected in ((0.5, False), (0.6, True)):
        sim, stalls = steady_state(ExecutionMode.RTC, latency, compute=None)
        assert (stalls > 0) == stalls_expected, (latency, stalls)
        assert sim.worker.max_in_flight == 1
    serial = ChunkScheduler(SchedulerConfig(max_in_flight=1))
    assert serial.capacity_steps == HORIZON // 2
    sim, stalls = steady_state(ExecutionMode.RTC, 0.6, max_in_flight=1)  # a limit, though it could overlap
    assert stalls > 0 and sim.scheduler.over_capacity and sim.worker.max_in_flight == 1


@pytest.mark.parametrize("mode", [ExecutionMode.ASYNC, ExecutionMode.RTC])
def test_latency_beyond_the_chunk_stalls_for_the_excess_only(mode):
    latency = 1.2  # 24 ticks; a chunk covers 19
    sim, stalls = steady_state(mode, latency)
    scheduler = sim.scheduler
    assert scheduler.over_capacity and scheduler.estimated_delay_steps == 24
    assert stalls > 0 and scheduler.stats.stall_ticks >= stalls
    # The arms wait at most the latency's excess over the chunk (24 - 20 + 1 ticks) at a time,
    # and then execute as much as a chunk can give.
    steady = runs(sim.actions[round(WARM_UP / PERIOD):])[1:-1]
    assert max(length for executed, length in steady if not executed) <= 24 - HORIZON + 1
    assert sum(length for executed, length in steady if executed) > 0.7 * sum(l for _, l in steady)
    assert scheduler.last_action is not None  # what the runtime holds on those ticks


def test_the_next_inference_starts_when_the_actions_left_cover_the_latency():
    config = SchedulerConfig(mode="async", execution_horizon=10, latency_margin=2, initial_latency=0.0)
    scheduler = ChunkScheduler(config)
    now = 0.0

    def tick():
        nonlocal now
        scheduler.tick(now)
        now += PERIOD

    first = scheduler.poll_request(now)
    for _ in range(12):
        tick()
    assert scheduler.deliver(first, chunk_of(0), now)  # 12 ticks: d = 12
    assert scheduler.estimated_delay_steps == 12 and scheduler.trigger_steps_left == 14
    assert scheduler.steps_per_inference == 6           # before the execution horizon's 10
    requests = []
    for step in range(HORIZON):
        request = scheduler.poll_request(now)
        if request is not None:
            requests.append((step, request))
        tick()
    # A request whenever the newest plan (the chunk, then the newest request) has 14 actions
    # left: 6 steps apart; they overlap, each taking 12 ticks (pipelined).
    assert [step for step, _ in requests] == [6, 12, 18]
    assert scheduler.in_flight == 3
    assert all(r.delay_steps == 12 for _, r in requests)


def test_execution_horizon_is_the_most_steps_before_replanning():
    scheduler = ChunkScheduler(SchedulerConfig(mode="async", execution_horizon=4, latency_margin=2))
    first = scheduler.poll_request(0.0)
    scheduler.tick(0.0)
    scheduler.deliver(first, chunk_of(-1), PERIOD)  # d = 1: the latency alone would wait 17 steps
    steps, executed = [], []
    for step in range(12):
        now = PERIOD * (step + 1)
        request = scheduler.poll_request(now)
        if request is not None:
            steps.append(step)
            scheduler.deliver(request, chunk_of(step), now)
        executed.append(scheduler.tick(now)[0])
    assert steps == [4, 8]
    assert executed == [-1.0] * 4 + [4.0] * 4 + [8.0] * 4


def test_replanning_for_reactivity_waits_for_the_request_in_flight():
    # Execution horizon 2, latency 5 ticks (which 20 steps cover one at a time): re-planning
    # every 2 steps would need overlapping requests; it waits for each chunk instead.
    sim = Simulation(ExecutionMode.RTC, 5 * PERIOD, compute=PERIOD, execution_horizon=2).run(20.0)
    assert sim.worker.max_in_flight == 1 and sim.scheduler.stats.stall_ticks == 0
    assert sim.scheduler.steps_per_inference == 5
    assert sim.worker.started == pytest.approx(20.0 / (5 * PERIOD), abs=2)


def test_delay_estimate_is_a_high_percentile_of_the_recent_requests():
    config = SchedulerConfig(mode="async", latency_window=20, latency_percentile=95, execution_horizon=1)
    scheduler = ChunkScheduler(config)
    first = scheduler.poll_request(0.0)
    scheduler.tick(0.0)
    scheduler.deliver(first, chunk_of(0), PERIOD)  # 1 tick
    # Then one request per tick, answered 3 ticks later, but two of them 9 ticks later.
    delays = {k: 9 if k in (5, 6) else 3 for k in range(1, 21)}
    due: dict[int, list] = {}
    for k in range(1, 40):
        for request, made in due.pop(k, []):
            scheduler.deliver(request, chunk_of(made), k * PERIOD)
        slow_in_flight = [made for made in (5, 6) if made + delays[made] > k and made < k]
        if slow_in_flight:
            # Not measured yet, but at least as slow as it is old: the fast ones answered since
            # do not lower the estimate.
            assert scheduler.estimated_delay_steps >= k - min(slow_in_flight)
        request = scheduler.poll_request(k * PERIOD) if k in delays else None
        if request is not None:
            due.setdefault(k + delays[k], []).append((request, k))
        scheduler.tick(k * PERIOD)
    assert not due and scheduler.in_flight == 0
    # p95 of the last 20 (nearest rank: the 19th smallest) of 18 x 3 and 2 x 9 ticks.
    assert scheduler.estimated_delay_steps == 9
    assert scheduler.latency_estimate == pytest.approx(9 * PERIOD)
    assert scheduler.trigger_steps_left == 9 + config.latency_margin


def test_an_unanswered_request_raises_the_estimate_with_its_age_and_is_hedged():
    scheduler = ChunkScheduler(SchedulerConfig(mode="async", execution_horizon=HORIZON, latency_margin=2))
    now = 0.0
    first = scheduler.poll_request(now)
    scheduler.tick(now)
    now += PERIOD
    scheduler.deliver(first, chunk_of(0), now)     # d = 1
    requests, estimates = [], []
    for step in range(40):
        request = scheduler.poll_request(now)
        if request is not None:
            requests.append(step)                  # never answered: the model hangs or slowed
        scheduler.tick(now)
        estimates.append(scheduler.estimated_delay_steps)
        now += PERIOD
    # 3 actions left (1 + 2 margin) at step 17; then the estimate grows with that request's
    # age, and once the 17 actions left at the stall no longer cover it, it is asked again.
    assert requests[0] == 17 and estimates[16] == 1
    assert estimates[17:32] == list(range(1, 16))
    assert requests == [17, 32] and scheduler.in_flight == 2


def test_a_chunk_overtaken_by_a_newer_one_is_not_executed():
    # A margin so large that the latency trigger fires every other step: overlapping requests.
    config = SchedulerConfig(mode="async", execution_horizon=2, min_execution_horizon=2, latency_margin=HORIZON)
    scheduler = ChunkScheduler(config)
    first = scheduler.poll_request(0.0)
    scheduler.tick(0.0)
    scheduler.deliver(first, chunk_of(0), PERIOD)
    older = newer = None
    for k in range(1, 6):
        request = scheduler.poll_request(k * PERIOD)
        if request is not None:
            older, newer = (request, None) if older is None else (older, request)
        scheduler.tick(k * PERIOD)
    assert older is not None and newer is not None and older.id < newer.id
    assert scheduler.deliver(newer, chunk_of(2), 6 * PERIOD)
    assert not scheduler.deliver(older, chunk_of(1), 6 * PERIOD)
    assert scheduler.stats.superseded_chunks == 1 and scheduler.stats.rejected_chunks == 0
    assert scheduler.tick(6 * PERIOD)[0] == 2.0


def test_rtc_guidance_freezes_the_estimated_delay_capped_at_the_chunk():
    made = []

    def factory(**fields):
        made.append(fields)
        return fields

    for latency, delay in ((0.6, 12), (1.2, HORIZON - 1)):
        made.clear()
        sim = Simulation(ExecutionMode.RTC, latency, compute=PERIOD)
        sim.scheduler = ChunkScheduler(sim.scheduler.config, guidance_factory=factory)
        requests = []
        poll = sim.scheduler.poll_request

        def recording_poll(now, ready=True):
            request = poll(now, ready)
            if request is not None:
                requests.append((request, sim.scheduler.estimated_delay_steps, sim.scheduler._index))
            return request

        sim.scheduler.poll_request = recording_poll
        sim.run(10.0)
        guided = [(r, d, i) for r, d, i in requests if r.guidance is not None]
        assert len(guided) > 10
        for request, estimate, index in guided[5:]:
            assert request.delay_steps == min(estimate, HORIZON - 1) == delay
            np.testing.assert_array_equal(request.guidance["weights"],
                                          rtc_prefix_weights(HORIZON, delay, index))


# --- requests, guidance and results --------------------------------------------------------------


def test_rtc_prefix_weights_follow_the_paper():
    w = rtc_prefix_weights(horizon=20, delay=3, executed=10)
    assert w.shape == (20,)
    np.testing.assert_array_equal(w[:3], 1.0)  # frozen: executed while inferring
    c = (20 - 10 - 3) / (20 - 10 - 3 + 1)
    assert w[3] == pytest.approx(c * math.expm1(c) / math.expm1(1.0))
    assert np.all(np.diff(w[3:10]) < 0) and 0 < w[9] < w[3] < 1
    np.testing.assert_array_equal(w[10:], 0.0)  # beyond the old chunk
    # A delay longer than the overlap freezes all of it.
    np.testing.assert_array_equal(rtc_prefix_weights(20, 25, 15), [1.0] * 5 + [0.0] * 15)


def test_rtc_request_carries_the_rest_of_the_current_chunk_as_guidance():
    made = []

    def factory(**fields):
        made.append(fields)
        return fields

    config = SchedulerConfig(mode="rtc", execution_horizon=10, max_guidance_weight=7.0)
    scheduler = ChunkScheduler(config, guidance_factory=factory)
    first = scheduler.poll_request(0.0)
    assert first.guidance is None  # nothing to continue yet
    for now in (0.0, 0.05, 0.10):
        assert scheduler.tick(now) is None
    chunk = np.arange(HORIZON * DIM, dtype=float).reshape(HORIZON, DIM)
    assert scheduler.deliver(first, chunk, 0.15)  # 3 ticks after its request
    for k in range(10):
        assert scheduler.poll_request(0.15 + k * PERIOD) is None
        scheduler.tick(0.15 + k * PERIOD)
    request = scheduler.poll_request(0.65)
    assert request.delay_steps == 3 and request.guidance is made[0]
    np.testing.assert_array_equal(made[0]["actions"][:10], chunk[10:])
    np.testing.assert_array_equal(made[0]["actions"][10:], np.repeat(chunk[-1:], 10, axis=0))
    np.testing.assert_array_equal(made[0]["weights"], rtc_prefix_weights(20, 3, 10))
    assert made[0]["max_weight"] == 7.0


def test_delay_is_counted_in_ticks_so_timer_jitter_does_not_inflate_it():
    scheduler = ChunkScheduler(SchedulerConfig(mode="async", initial_latency=0.5))
    # The initial guess: 10 ticks of latency, used on the tick after it finished.
    assert scheduler.estimated_delay_steps == 11
    request = scheduler.poll_request(0.0)
    for now in (0.0, 0.052, 0.101):  # a late timer
        scheduler.tick(now)
    scheduler.deliver(request, chunk_of(0), 0.154)
    assert scheduler.stats.latencies[-1] == pytest.approx(0.154)
    assert scheduler.estimated_delay_steps == 3


def test_async_requests_carry_no_guidance():
    scheduler = ChunkScheduler(SchedulerConfig(mode="async", execution_horizon=5))
    first = scheduler.poll_request(0.0)
    scheduler.deliver(first, chunk_of(1), 0.2)
    for k in range(5):
        scheduler.tick(0.2 + k * PERIOD)
    assert scheduler.poll_request(0.45).guidance is None


def test_reset_drops_current_chunk_and_in_flight_result():
    scheduler = ChunkScheduler(SchedulerConfig(mode="async"))
    scheduler.deliver(scheduler.poll_request(0.0), chunk_of(1), 0.2)
    assert scheduler.tick(0.2)[0] == 1.0
    for k in range(1, 10):
        scheduler.tick(0.2 + k * PERIOD)
    old = scheduler.poll_request(0.7)
    assert old is not None and old.generation == 0

    scheduler.reset()  # new instruction
    assert scheduler.tick(0.75) is None  # the old chunk is not finished
    new = scheduler.poll_request(0.75)
    assert new is not None and new.generation == 1 and new.guidance is None
    assert not scheduler.deliver(old, chunk_of(2), 0.8)
    assert scheduler.tick(0.8) is None
    assert scheduler.deliver(new, chunk_of(3), 0.9)
    assert scheduler.tick(0.9)[0] == 3.0
    stats = scheduler.stats
    assert stats.dropped_results == 1 and stats.startup_ticks == 2 and stats.stall_ticks == 0
    assert stats.chunk_switches == 0  # a new task is not a chunk boundary


@pytest.mark.parametrize(
    "bad, reason",
    [
        (np.where(np.eye(HORIZON, DIM) > 0, np.nan, 0.0), "20 non-finite"),
        (np.full((HORIZON, DIM), np.inf), "400 non-finite"),
        (np.zeros((HORIZON - 1, DIM)), "shape (19, 20)"),
        (np.zeros((HORIZON, DIM, 1)), "shape (20, 20, 1)"),
        ([["a"] * DIM] * HORIZON, "not numeric"),
    ],
)
def test_bad_chunks_are_rejected_and_never_executed(bad, reason):
    scheduler = ChunkScheduler(SchedulerConfig(mode="sync"))
    request = scheduler.poll_request(0.0)
    assert not scheduler.deliver(request, bad, 0.2)
    assert scheduler.stats.rejected_chunks == 1
    assert reason in scheduler.stats.last_rejection
    assert scheduler.tick(0.2) is None
    retry = scheduler.poll_request(0.25)  # asks again
    assert retry is not None and retry.id != request.id
    assert scheduler.deliver(retry, chunk_of(4), 0.4)
    assert scheduler.tick(0.4)[0] == 4.0


def test_failed_inference_is_counted_and_retried():
    scheduler = ChunkScheduler()
    request = scheduler.poll_request(0.0)
    scheduler.fail(request, "RuntimeError: CUDA out of memory")
    assert scheduler.stats.failed_inferences == 1
    assert "out of memory" in scheduler.stats.last_failure
    assert scheduler.poll_request(0.05) is not None


def test_boundary_jump_and_chunk_age_are_measured():
    scheduler = ChunkScheduler(SchedulerConfig(mode="sync"))
    now = 0.0
    for value in (0.0, 1.0, 3.0):
        scheduler.deliver(scheduler.poll_request(now), chunk_of(value), now + 0.1)
        now += 0.1
        for _ in range(HORIZON):
            scheduler.tick(now)
            now += PERIOD
    stats = scheduler.stats
    assert stats.chunk_switches == 2
    assert stats.last_boundary_jump == pytest.approx(2.0 * math.sqrt(DIM))
    assert stats.mean_boundary_jump == pytest.approx(1.5 * math.sqrt(DIM))
    assert stats.max_boundary_jump == pytest.approx(2.0 * math.sqrt(DIM))
    # The last tick ran 19 periods after the chunk's request (+0.1 s inference).
    assert stats.chunk_age == pytest.approx(0.1 + 19 * PERIOD)
    assert list(stats.latencies) == pytest.approx([0.1] * 3)


def test_no_second_request_before_a_step_was_executed():
    scheduler = ChunkScheduler(SchedulerConfig(mode="async"))
    assert scheduler.poll_request(0.0) is not None
    assert scheduler.poll_request(0.05) is None
    assert scheduler.poll_request(0.10) is None


def test_config_is_validated():
    assert SchedulerConfig(mode="sync").mode is ExecutionMode.SYNC
    with pytest.raises(ValueError):
        SchedulerConfig(mode="ensemble")
    with pytest.raises(ValueError):
        SchedulerConfig(execution_horizon=25)
    with pytest.raises(ValueError):
        SchedulerConfig(min_execution_horizon=0)
    with pytest.raises(ValueError):
        SchedulerConfig(control_period=0.0)
    for bad in ({"latency_margin": -1}, {"max_in_flight": -1}, {"latency_percentile": 0.0}):
        with pytest.raises(ValueError):
            SchedulerConfig(**bad)


# --- the threaded worker -------------------------------------------------------------------------


@pytest.fixture
def make_worker():
    workers = []

    def make(infer, get_observation=lambda: "obs", **kwargs):
        worker = InferenceWorker(infer, get_observation, **kwargs)
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        assert worker.stop(timeout=5.0)


def test_worker_runs_infer_in_background_and_hands_results_over(make_worker):
    seen = []
    main_thread = threading.current_thread()

    def infer(observation, guidance):
        seen.append((observation, guidance, threading.current_thread() is main_thread))
        return chunk_of(5)

    worker = make_worker(infer)
    scheduler = ChunkScheduler(SchedulerConfig(mode="sync"))
    assert run_control_tick(scheduler, worker, 0.0) is None
    assert worker.wait_idle(timeout=5.0)
    action = run_control_tick(scheduler, worker, 0.05)
    assert action is not None and action[0] == 5.0
    assert seen == [("obs", None, False)]
    assert len(worker.latencies) == 1 and worker.latencies[0] >= 0.0


def test_worker_survives_an_exception_in_infer(make_worker):
    calls = []

    def infer(observation, guidance):
        calls.append(observation)
        if len(calls) == 1:
            raise RuntimeError("model exploded")
        return chunk_of(6)

    worker = make_worker(infer)
    scheduler = ChunkScheduler(SchedulerConfig(mode="sync"))
    run_control_tick(scheduler, worker, 0.0)
    assert worker.wait_idle(timeout=5.0)
    (result,) = worker.drain()
    assert result.chunk is None and result.error == "RuntimeError: model exploded"
    assert "Traceback" in result.traceback
    scheduler.fail(result.request, result.error)
    assert scheduler.stats.failed_inferences == 1
    run_control_tick(scheduler, worker, 0.05)  # retries with a new request
    assert worker.wait_idle(timeout=5.0)
    assert run_control_tick(scheduler, worker, 0.10)[0] == 6.0
    assert len(calls) == 2


def test_worker_does_not_start_without_a_fresh_observation(make_worker):
    calls = []
    observations = [None, None, "fresh"]
    worker = make_worker(lambda obs, g: calls.append(obs) or chunk_of(7),
                         get_observation=lambda: observations.pop(0))
    scheduler = ChunkScheduler(SchedulerConfig(mode="async"))
    assert run_control_tick(scheduler, worker, 0.0) is None
    assert run_control_tick(scheduler, worker, 0.05) is None
    assert worker.wait_idle(timeout=5.0) and calls == []
    run_control_tick(scheduler, worker, 0.10)  # observation is back: inference starts
    assert worker.wait_idle(timeout=5.0) and calls == ["fresh"]
    assert run_control_tick(scheduler, worker, 0.15)[0] == 7.0


def test_reset_drops_the_result_the_worker_is_still_computing(make_worker):
    release = threading.Event()
    started = threading.Event()

    def infer(instruction, guidance):
        if instruction == "old task":
            started.set()
            assert release.wait(timeout=5.0)
            return chunk_of(1)
        return chunk_of(2)

    instruction = ["old task"]
    worker = make_worker(infer, get_observation=lambda: instruction[0])
    scheduler = ChunkScheduler(SchedulerConfig(mode="rtc"))
    run_control_tick(scheduler, worker, 0.0)
    assert started.wait(timeout=5.0)

    instruction[0] = "new task"
    scheduler.reset()
    assert run_control_tick(scheduler, worker, 0.05) is None  # new request waits in the slot
    release.set()
    assert worker.wait_idle(timeout=5.0)
    action = run_control_tick(scheduler, worker, 0.10)
    assert action is not None and action[0] == 2.0
    assert scheduler.stats.dropped_results == 1 and scheduler.stats.chunks_accepted == 1


def test_a_newer_submit_replaces_the_waiting_request(make_worker):
    release = threading.Event()
    started = threading.Event()
    ran = []

    def infer(observation, guidance):
        ran.append(observation)
        started.set()
        assert release.wait(timeout=5.0)
        return chunk_of(0)

    names = iter(["a", "b", "c"])
    worker = make_worker(infer, get_observation=lambda: next(names))
    scheduler = ChunkScheduler()
    for _ in range(3):
        assert worker.submit(scheduler.poll_request(0.0))
        assert started.wait(timeout=5.0)  # "a" runs; "b" then "c" wait in the slot
        scheduler.reset()  # so that the next poll yields a request
    release.set()
    assert worker.wait_idle(timeout=5.0)
    assert ran == ["a", "c"]
    assert [r.request.generation for r in worker.drain()] == [0, 2]


def test_worker_stop_joins_and_refuses_new_work(make_worker):
    worker = make_worker(lambda obs, g: chunk_of(0))
    assert worker.stop(timeout=5.0)
    with pytest.raises(RuntimeError):
        worker.submit(ChunkScheduler().poll_request(0.0))


def test_injected_latency_is_added_to_every_inference(make_worker):
    worker = make_worker(lambda obs, g: chunk_of(0), injected_latency=0.02)
    worker.submit(ChunkScheduler().poll_request(0.0))
    assert worker.wait_idle(timeout=5.0)
    (result,) = worker.drain()
    assert result.error is None and result.latency == worker.latencies[0]
    assert result.latency >= 0.02 - 1e-3  # a lower bound only: infer itself takes no time


def test_stop_does_not_wait_for_the_injected_latency(make_worker):
    started = threading.Event()
    worker = make_worker(lambda obs, g: started.set() or chunk_of(0), injected_latency=600.0)
    worker.submit(ChunkScheduler().poll_request(0.0))
    assert started.wait(timeout=5.0)
    assert worker.stop(timeout=5.0)


def test_injected_latency_overlaps_the_next_inference(make_worker):
    clock = [0.0]
    worker = make_worker(lambda obs, g: chunk_of(obs), get_observation=lambda: clock[0],
                         injected_latency=1.0, clock=lambda: clock[0])
    first, second = (InferenceRequest(n, 0, 0.0, 1, None) for n in (1, 2))
    assert worker.submit(first)
    wait_for(lambda: not worker.busy, 5.0, "the first inference", poll=0.001)
    assert worker.drain() == []                    # computed, but its latency is still running
    clock[0] = 0.5
    assert not worker.busy and worker.submit(second)  # the model is free meanwhile
    wait_for(lambda: not worker.busy, 5.0, "the second inference", poll=0.001)
    clock[0] = 1.0
    assert [r.request.id for r in worker.drain()] == [1]
    assert not worker.wait_idle(timeout=0.01)      # the second is not due yet
    clock[0] = 1.5
    assert worker.wait_idle(timeout=5.0)
    (result,) = worker.drain()
    assert result.request.id == 2 and result.chunk[0, 0] == 0.5 and result.latency == 1.0
    assert list(worker.latencies) == [1.0, 1.0]


def test_no_request_queues_behind_a_busy_worker_unless_none_is_awaited():
    scheduler = ChunkScheduler(SchedulerConfig(mode="async", execution_horizon=1, latency_margin=HORIZON))
    first = scheduler.poll_request(0.0, ready=False)   # nothing awaited: it may wait in the slot
    assert first is not None
    scheduler.tick(0.0)
    scheduler.deliver(first, chunk_of(0), PERIOD)
    scheduler.tick(PERIOD)
    second = scheduler.poll_request(2 * PERIOD)
    assert second is not None
    scheduler.tick(2 * PERIOD)
    assert scheduler.poll_request(3 * PERIOD, ready=False) is None    # the worker computes `second`
    assert scheduler.poll_request(3 * PERIOD, ready=True) is not None  # free: pipelined
