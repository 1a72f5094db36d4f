"""Background inference for the control loop: the loop never waits for the model.

The user supplies two callables:
    infer(observation, guidance_or_None) -> np.ndarray (H, D)   runs on the worker thread
    get_observation() -> observation | None                    runs on the control thread at
        submit time, so the observation is the one of the request tick. Keep it a cheap snapshot
        (references to the latest messages) and do heavy conversion inside infer. None means "no
        fresh observation": nothing starts and the scheduler asks again on the next tick.

``guidance`` is whatever the scheduler's guidance factory built (None outside RTC).

The model runs serially on one thread (``busy`` while it computes or a request waits for it).
``injected_latency`` is added after that as a delay line: a result is handed over that long
after its inference finished, while the next inference may already run. It stands for latency
that is not the model's own compute (a remote server's transport and queueing), which is what
the scheduler can hide by pipelining requests; the model's compute it cannot.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from twinvla_ros.execution.scheduler import ChunkScheduler, InferenceRequest

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InferenceResult:
    request: InferenceRequest
    chunk: np.ndarray | None  # (H, D) as infer returned it; None if infer raised
    error: str | None  # "TypeName: message" if infer raised
    traceback: str | None
    latency: float  # seconds from the start of infer to the result, injected latency included


class InferenceWorker:
    """Runs ``infer`` on one background thread, one request at a time.

    A request submitted while another runs waits in a single slot; a newer submit replaces it
    (after a reset only the newest task matters; the scheduler submits while ``busy`` only when
    it awaits nothing else). Results are collected until the control loop calls drain(); with
    ``injected_latency`` each becomes due that long after its inference ended.
    """

    def __init__(
        self,
        infer: Callable[[Any, Any | None], np.ndarray],
        get_observation: Callable[[], Any | None],
        *,
        injected_latency: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        latency_history: int = 1000,
    ) -> None:
        self._infer = infer
        self._get_observation = get_observation
        # Extra seconds added to every inference (benchmarks: "150 ms injected latency").
        # May be changed while running.
        self.injected_latency = injected_latency
        self._clock = clock
        self.latencies: deque[float] = deque(maxlen=latency_history)  # for p50/p99 diagnostics
        self._condition = threading.Condition()
        self._waiting: tuple[InferenceRequest, Any] | None = None
        self._running = False
        self._results: list[tuple[float, int, InferenceResult]] = []  # heap: (due, order, result)
        self._order = itertools.count()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="twinvla-inference", daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        """The model is computing or a request waits for it: a submit now would queue."""
        with self._condition:
            return self._running or self._waiting is not None

    def submit(self, request: InferenceRequest) -> bool:
        """Start inference for ``request`` on a snapshot of the current observation.
        Returns False, starting nothing, if there is no fresh observation."""
        if self._stopping.is_set():
            raise RuntimeError("InferenceWorker is stopped")
        observation = self._get_observation()
        if observation is None:
            return False
        with self._condition:
            self._waiting = (request, observation)
            self._condition.notify_all()
        return True

    def drain(self) -> list[InferenceResult]:
        """Results due since the last call, in the order they became due. Never blocks."""
        now = self._clock()
        results = []
        with self._condition:
            while self._results and self._results[0][0] <= now:
                results.append(heapq.heappop(self._results)[2])
        return results

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing runs or waits and every result is due (tests, shutdown). True
        if idle."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._condition:
            while True:
                computing = self._running or self._waiting is not None
                due = max((entry[0] for entry in self._results), default=None)
                pending = 0.0 if due is None else due - self._clock()
                if not computing and pending <= 0:
                    return True
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                wait = pending if not computing else None
                if left is not None:
                    wait = left if wait is None else min(wait, left)
                self._condition.wait(wait)

    def stop(self, timeout: float | None = 10.0) -> bool:
        """Drop a waiting request, let a running inference finish, join the thread.
        True if the thread ended within ``timeout``."""
        self._stopping.set()
        with self._condition:
            self._waiting = None
            self._condition.notify_all()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _serve(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(
                    lambda: self._waiting is not None or self._stopping.is_set()
                )
                if self._stopping.is_set():
                    return
                (request, observation), self._waiting = self._waiting, None
                self._running = True
            start = self._clock()
            chunk = error = trace = None
            try:
                chunk = self._infer(observation, request.guidance)
            except Exception as exc:  # reported to the control loop, never fatal to it
                error = f"{type(exc).__name__}: {exc}"
                trace = traceback.format_exc()
                _log.warning("inference for request %d failed: %s", request.id, error)
            finished = self._clock()
            due = finished + max(0.0, float(self.injected_latency))
            result = InferenceResult(request, chunk, error, trace, due - start)
            with self._condition:
                heapq.heappush(self._results, (due, next(self._order), result))
                self.latencies.append(due - start)
                self._running = False
                self._condition.notify_all()


def run_control_tick(
    scheduler: ChunkScheduler, worker: InferenceWorker, now: float
) -> np.ndarray | None:
    """One control-loop iteration in the order the scheduler expects. Returns the action (D,)
    to publish, or None: nothing new (see ChunkScheduler.tick). A worker without ``busy`` is
    taken to be always ready."""
    for result in worker.drain():
        if result.error is None:
            scheduler.deliver(result.request, result.chunk, now)
        else:
            scheduler.fail(result.request, result.error)
    request = scheduler.poll_request(now, ready=not getattr(worker, "busy", False))
    if request is not None and not worker.submit(request):
        scheduler.cancel(request)
    return scheduler.tick(now)
