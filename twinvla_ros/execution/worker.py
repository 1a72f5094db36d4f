"""Background inference for the control loop: the loop never waits for the model.

The user supplies two callables:
    infer(observation, guidance_or_None) -> np.ndarray (H, D)   runs on the worker thread
    get_observation() -> observation | None                    runs on the control thread at
        submit time, so the observation is the one of the request tick. Keep it a cheap snapshot
        (references to the latest messages) and do heavy conversion inside infer. None means "no
        fresh observation": nothing starts and the scheduler asks again on the next tick.

``guidance`` is whatever the scheduler's guidance factory built (None outside RTC).
"""
from __future__ import annotations

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
    (after a reset only the newest task matters). Results are collected until the control loop
    calls drain().
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
        self._results: list[InferenceResult] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="twinvla-inference", daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
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
        """Results finished since the last call, oldest first. Never blocks on inference."""
        with self._condition:
            results, self._results = self._results, []
        return results

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing runs or waits (tests, shutdown). True if idle."""
        with self._condition:
            return self._condition.wait_for(
                lambda: not self._running and self._waiting is None, timeout
            )

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
            if self.injected_latency > 0:
                self._stopping.wait(self.injected_latency)  # stop() does not wait for it
            latency = self._clock() - start
            with self._condition:
                self._results.append(InferenceResult(request, chunk, error, trace, latency))
                self.latencies.append(latency)
                self._running = False
                self._condition.notify_all()


def run_control_tick(
    scheduler: ChunkScheduler, worker: InferenceWorker, now: float
) -> np.ndarray | None:
    """One control-loop iteration in the order the scheduler expects. Returns the action (D,)
    to publish, or None: publish nothing new, the arms hold."""
    for result in worker.drain():
        if result.error is None:
            scheduler.deliver(result.request, result.chunk, now)
        else:
            scheduler.fail(result.request, result.error)
    request = scheduler.poll_request(now)
    if request is not None and not worker.submit(request):
        scheduler.cancel(request)
    return scheduler.tick(now)
