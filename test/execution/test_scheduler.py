"""ChunkScheduler and InferenceWorker on simulated time (no sleeps, no timing assertions).

The scheduler is driven tick by tick through run_control_tick with a simulated worker that
takes a fixed latency; the real threaded worker is tested with events for hand-shakes.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np
import pytest

from twinvla_ros.execution import (
    ChunkScheduler,
    ExecutionMode,
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
    """InferenceWorker's submit/drain contract on simulated time: one inference at a time, each
    taking ``latency`` seconds; a submit while busy waits in one slot (a newer one replaces it).
    The chunk is computed at start time from the observation of the submit tick."""

    def __init__(self, clock, infer, get_observation, latency):
        self.clock = clock
        self.infer = infer
        self.get_observation = get_observation
        self.latency = latency
        self.started = 0
        self._running = None  # (request, chunk, finish_time)
        self._waiting = None  # (request, observation)

    def submit(self, request):
        observation = self.get_observation()
        if observation is None:
            return False
        self._waiting = (request, observation)
        if self._running is None:
            self._start_waiting(self.clock.now)
        return True

    def drain(self):
        results = []
        # 1e-9: a result due exactly at a tick time is handed over on that tick.
        while self._running is not None and self._running[2] <= self.clock.now + 1e-9:
            request, chunk, finish = self._running
            results.append(InferenceResult(request, chunk, None, None, self.latency))
            self._running = None
            if self._waiting is not None:
                self._start_waiting(finish)
        return results

    def _start_waiting(self, start_time):
        request, observation = self._waiting
        self._waiting = None
        self.started += 1
        chunk = self.infer(observation, request.guidance)
        self._running = (request, chunk, start_time + self.latency)


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

    def __init__(self, mode, latency, infer=planner_infer, **config):
        self.clock = SimClock()
        self.scheduler = ChunkScheduler(
            SchedulerConfig(mode=mode, horizon=HORIZON, action_dim=DIM, control_period=PERIOD,
                            **config)
        )
        self.worker = SimulatedWorker(self.clock, infer, self.observation, latency)
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
    assert scheduler.estimated_delay_steps == 10  # the initial guess
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


def test_one_request_in_flight_at_a_time():
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
