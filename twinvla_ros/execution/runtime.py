"""The policy node's core without ROS: task state, input gating, inference and the control tick.

PolicyRuntime is to the policy node what ArmController is to the arm driver: the node converts
messages and calls it; everything that decides what the arms do lives here, on explicit times
(no clock of its own), so it runs in a test tick by tick.

    idle --instruction--> running <--start-- paused
      ^                     |  \\--pause-------^
      \\-------stop---------/
    (stop from any state; start needs an instruction and restarts the task with a fresh chunk)

Instructions: a different valid text replaces the task at once and runs it (from any state). The
text of the task in hand again (a publisher repeating it, `ros2 topic pub` without --once) is
counted in `repeated_instructions` and changes nothing: running, the task continues (no reset,
no chunk dropped); paused, it stays paused (a pause is an operator's decision, and a repeating
publisher would otherwise undo it within a second: ~/start resumes). After stop the task is
forgotten, but a stop must stop: if the task's text was arriving repeatedly when it was
stopped (two arrivals less than STOPPED_REPEAT_SILENCE seconds apart, the last one as recent:
a publisher repeating it), its further arrivals are ignored and counted in `ignored_after_stop`
for as long as they keep coming that often. Sent once (`--once`), or again after that much
silence, or any other text, it starts a task as usual.

Stalls: when no chunk covers a tick (the model slower than a chunk can cover, a failed
inference), `tick` returns the last action again (`last_tick_held` is True, counted in
`held_actions` and in the scheduler's stall ticks), so the arm driver keeps a fresh target and
the arm stays put. Input holds (a stale stream) and the start of a task return None.

Threads: input callbacks (``stream_arrived``, ``inputs_matched``, ``set_instruction``, the
services) come from the node's executor, ``tick`` from the node's control thread, and the model
runs on the InferenceWorker's thread. ``tick`` and every state change hold one lock; the worker
only reads the snapshot it was handed at submit time.

The model is injected: ``policy`` is anything with ``encode(observation)``,
``sample(context, seed=, guidance=)``, ``validate(observation)``, ``horizon`` and ``action_dim``
(twinvla_ros.model.TwinVLAPolicy, or a fake in tests); ``observation_factory(instruction, ego,
wrist_left, wrist_right, proprio)`` builds what the policy takes (twinvla_ros.model.Observation);
``decode(payload)`` turns the node's matched input set (opaque here) into ``(images by camera
name, {side: 4x4 EEF pose in eef_reference}, {side: gripper joint position in m})`` on the
worker thread, so image conversion never runs on the control thread.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from twinvla_ros.execution.instruction import MAX_INSTRUCTION_LENGTH, validate_instruction
from twinvla_ros.execution.observation import GateStatus, ObservationGate, StreamLimit
from twinvla_ros.execution.scheduler import ChunkScheduler, ExecutionMode, Guidance, SchedulerConfig
from twinvla_ros.execution.worker import InferenceWorker, run_control_tick
from twinvla_ros.reporting import EventLog, Level, RateMeter, Status
from twinvla_ros.robot.bimanual import ARMS, ArmPose, pack
from twinvla_ros.robot.cameras import CAMERAS

# Stream names of the gate (and of the hold reasons): the cameras, then the robot state.
STATE_STREAMS = ("left_eef", "right_eef", "joint_states")
STREAMS = (*CAMERAS, *STATE_STREAMS)
MATCHED = "time-matched inputs"          # the newest time-matched set of all STREAMS
# A control tick that raised keeps the status at ERROR this long (seconds of tick time).
TICK_FAILURE_REPORT_SECONDS = 10.0
# After stop, the stopped task's text is ignored while it keeps arriving at shorter intervals
# than this (a repeating publisher, e.g. `ros2 topic pub` at its default 1 Hz, still running).
STOPPED_REPEAT_SILENCE = 2.5


def _within(earlier: float | None, later: float | None, seconds: float) -> bool:
    """Both times known and less than `seconds` apart."""
    return earlier is not None and later is not None and later - earlier < seconds


class State(str, Enum):
    IDLE = "idle"          # no task: waiting for an instruction
    RUNNING = "running"
    PAUSED = "paused"      # task kept, arms holding


@dataclass(frozen=True)
class RuntimeSettings:
    """What the node's parameters configure. The ones `reconfigure` takes may change while
    running; the rest are fixed at construction."""

    mode: ExecutionMode | str = ExecutionMode.RTC
    control_period: float = 0.05          # seconds per control tick
    execution_horizon: int = 10           # async/rtc: most steps before re-planning; clipped to the horizon
    latency_margin_ticks: int = 2         # async/rtc: slack on top of the latency estimate
    max_inferences_in_flight: int = 0     # async/rtc: pipelined requests at once; 0: no limit
    max_guidance_weight: float = 5.0      # rtc beta
    injected_latency: float = 0.0         # seconds added to every inference
    max_image_age: float = 0.5            # seconds; also the limit of the matched set
    max_state_age: float = 0.3            # seconds
    seed: int = -1                        # >= 0: chunk n is sampled with seed + n; < 0: random
    max_instruction_length: int = MAX_INSTRUCTION_LENGTH

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", ExecutionMode(self.mode))
        if not self.control_period > 0:
            raise ValueError(f"control period must be > 0, got {self.control_period}")
        if self.execution_horizon < 1:
            raise ValueError(f"execution horizon must be >= 1, got {self.execution_horizon}")
        if not self.max_guidance_weight > 0:
            raise ValueError(f"rtc max guidance weight must be > 0, got {self.max_guidance_weight}")
        if self.latency_margin_ticks < 0:
            raise ValueError(f"latency margin must be >= 0 ticks, got {self.latency_margin_ticks}")
        if self.max_inferences_in_flight < 0:
            raise ValueError(f"inferences in flight must be >= 0 (0: no limit), got {self.max_inferences_in_flight}")
        if not self.injected_latency >= 0:
            raise ValueError(f"injected latency must be >= 0, got {self.injected_latency}")
        if not (self.max_image_age > 0 and self.max_state_age > 0):
            raise ValueError(f"input ages must be > 0, got image {self.max_image_age}, state {self.max_state_age}")
        if self.max_instruction_length < 1:
            raise ValueError(f"max instruction length must be >= 1, got {self.max_instruction_length}")


LIVE_SETTINGS = ("mode", "execution_horizon", "max_guidance_weight", "injected_latency",
                 "max_image_age", "max_state_age", "latency_margin_ticks", "max_inferences_in_flight")

Decoded = tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray], Mapping[str, float]]


class PolicyRuntime:
    def __init__(self, policy: Any, *, observation_factory: Callable[..., Any],
                 decode: Callable[[Any], Decoded], gripper_strokes: Mapping[str, float],
                 settings: RuntimeSettings = RuntimeSettings(), guidance_factory: Callable[..., Any] = Guidance,
                 worker_factory: Callable[..., Any] = InferenceWorker, tick_window: int = 1200):
        """``gripper_strokes``: {side: finger travel at fully open, m}; the gripper opening of
        the proprio is joint position / stroke. ``worker_factory(infer, get_observation,
        injected_latency=)`` builds the inference worker (InferenceWorker; tests may pass a
        synchronous one)."""
        missing = [side for side in ARMS if side not in gripper_strokes]
        if missing:
            raise ValueError(f"gripper strokes missing for {missing}")
        if not all(gripper_strokes[side] > 0 for side in ARMS):
            raise ValueError(f"gripper strokes must be > 0, got {dict(gripper_strokes)}")
        self.policy = policy
        self._observation_factory = observation_factory
        self._decode = decode
        self._strokes = {side: float(gripper_strokes[side]) for side in ARMS}
        self.settings = settings
        self.scheduler = ChunkScheduler(self._scheduler_config(settings), guidance_factory=guidance_factory)
        self.worker = worker_factory(self._infer, self._snapshot, injected_latency=settings.injected_latency)
        self.tick_meter = RateMeter(window=tick_window)
        self._tick_time = 0.0                   # `now` of the latest tick: the clock of the event log
        self.events = EventLog(interval=2.0, clock=lambda: self._tick_time)

        # Each stream's age is checked on arrival (so a silent camera is named as such), and
        # the last time-matched set of all of them must be fresh too. The skew within an
        # observation is bounded by the matcher; across streams' latest arrivals it is not a
        # fault (a camera frame arrives a render later than the state of the same instant).
        self._stamp_lock = threading.Lock()
        self._stamps: dict[str, float] = {}     # latest stamp per gate stream, to rebuild the gate
        self._gate = self._make_gate(settings)

        self._lock = threading.Lock()           # state, instruction, scheduler, counters
        self._state = State.IDLE
        self._instruction = ""
        self._latest: Any = None                # payload of the newest matched set
        self._latest_stamps: tuple[float, ...] = ()
        self._hold_reason = ""
        self.rejected_instructions = 0
        self.repeated_instructions = 0          # the task in hand sent again: nothing changed
        self.ignored_after_stop = 0             # the stopped task's text from a publisher still running
        self._stopped_text = ""                 # a stopped task whose text was still arriving repeatedly
        self._stopped_seen: float | None = None  # ... and when it last arrived
        self._seen: tuple[float | None, float | None] = (None, None)   # last two arrivals of the task's text
        self.published_actions = 0              # new actions
        self.held_actions = 0                   # stall ticks that returned the last action again
        self.last_tick_held = False             # the latest tick returned the last action again
        self._over_capacity = False             # latency beyond what a chunk covers (reported once)
        self.holds = 0                          # times a stale or missing input held the arms
        self._inference_problem = ""            # the latest inference outcome, if it was a failure
        self.tick_failures = 0
        self.last_tick_failure = ""
        self._last_tick_failure_time: float | None = None

        self._model_lock = threading.Lock()     # seed counter and the pending CFG scale
        self._chunk_index = 0                   # inferences started so far
        self._pending_cfg_scale: float | None = None

    # ---- state (read from any thread) ----------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def instruction(self) -> str:
        return self._instruction

    @property
    def hold_reason(self) -> str:
        return self._hold_reason

    def check_inputs(self, ros_now: float) -> GateStatus:
        """Whether the inputs would pass the gate at `ros_now` (what tick checks while running)."""
        return self._gate.check(ros_now)

    # ---- inputs (subscription threads) ----------------------------------------------------------

    def stream_arrived(self, stream: str, stamp: float) -> None:
        """One message of `stream` (one of STREAMS) with header stamp `stamp` (ROS seconds)."""
        self._update_stamps({stream: stamp})

    def inputs_matched(self, payload: Any, stamps: Sequence[float]) -> None:
        """A time-matched set of all STREAMS: `payload` is what `decode` will get, `stamps`
        its messages' stamps."""
        stamps = tuple(float(s) for s in stamps)
        self._latest, self._latest_stamps = payload, stamps     # one reference each: atomic
        self._update_stamps({MATCHED: max(stamps)})

    def set_instruction(self, text: Any, now: float | None = None) -> tuple[bool, str]:
        """A new task: it replaces the current one at once (its chunk and any inference in
        flight are dropped) and runs. The task in hand again changes nothing, nor does the
        stopped task's text from a publisher still repeating it (see the module doc; `now`,
        seconds on any monotonic clock, tells a repeat from a deliberate re-send); an invalid
        instruction changes nothing either."""
        try:
            text = validate_instruction(text, self.settings.max_instruction_length)
        except ValueError as error:
            with self._lock:
                self.rejected_instructions += 1
            return False, f"rejected instruction: {error}"
        with self._lock:
            if self._state == State.IDLE and self._stopped_text and text == self._stopped_text:
                if _within(self._stopped_seen, now, STOPPED_REPEAT_SILENCE):
                    self._stopped_seen = now
                    self.ignored_after_stop += 1
                    return False, (f"ignored '{text}': it was stopped and is still being repeated (stop the "
                                   f"publisher; sent again after {STOPPED_REPEAT_SILENCE:g} s of silence, it runs)")
            self._stopped_text, self._stopped_seen = "", None
            if self._instruction and text == self._instruction:
                self._seen = (self._seen[1], now)
                self.repeated_instructions += 1
                if self._state == State.PAUSED:
                    return True, f"'{text}' is paused: ~/start resumes it"
                return True, f"continuing '{text}'"
            self._instruction = text
            self._seen = (None, now)
            self._state = State.RUNNING
            self.scheduler.reset()
        return True, f"new task: '{text}'"

    # ---- services: (success, message) -----------------------------------------------------------

    def start(self) -> tuple[bool, str]:
        with self._lock:
            if not self._instruction:
                return False, "no instruction yet: publish one on /instruction"
            self._state = State.RUNNING
            self.scheduler.reset()
            return True, f"running '{self._instruction}'"

    def stop(self, now: float | None = None) -> tuple[bool, str]:
        with self._lock:
            previous, last = self._seen
            if (self._instruction and _within(previous, last, STOPPED_REPEAT_SILENCE)
                    and _within(last, now, STOPPED_REPEAT_SILENCE)):
                self._stopped_text, self._stopped_seen = self._instruction, last
            self._state = State.IDLE
            self._instruction = ""
            self.scheduler.reset()
        return True, "stopped: arms hold; send an instruction to start again"

    def pause(self) -> tuple[bool, str]:
        with self._lock:
            if self._state != State.RUNNING:
                return False, f"not running (state: {self._state.value})"
            self._state = State.PAUSED
            self.scheduler.reset()
        return True, "paused: arms hold; ~/start resumes the task"

    # ---- live settings ------------------------------------------------------------------------

    def reconfigure(self, **changes: Any) -> None:
        """Change live settings (LIVE_SETTINGS); ValueError with the reason, changing nothing,
        if one is unknown or invalid. A new execution mode drops the chunk in hand."""
        unknown = sorted(set(changes) - set(LIVE_SETTINGS))
        if unknown:
            raise ValueError(f"not live settings: {unknown}")
        with self._lock:
            settings = replace(self.settings, **changes)    # validates
            config = self._scheduler_config(settings)       # validates against the policy
            mode_changed = config.mode != self.scheduler.config.mode
            # The scheduler reads its config on every call: swapping it keeps its statistics
            # and request ids (a result in flight can never be mistaken for a new one).
            self.scheduler.config = config
            if mode_changed:
                self.scheduler.reset()
            self.worker.injected_latency = settings.injected_latency
            if (settings.max_image_age, settings.max_state_age) != (self.settings.max_image_age,
                                                                   self.settings.max_state_age):
                with self._stamp_lock:
                    gate = self._make_gate(settings)
                    gate.update(self._stamps)
                    self._gate = gate
            self.settings = settings

    def set_cfg_scale(self, scale: float) -> None:
        """Classifier-free guidance scale from the next inference on: it is applied on the
        worker thread before that inference's encode, never between an encode and its sample.
        Whether the policy supports it is the caller's check."""
        with self._model_lock:
            self._pending_cfg_scale = float(scale)

    # ---- control tick (control thread) ---------------------------------------------------------

    def tick(self, now: float, ros_now: float) -> np.ndarray | None:
        """One control-loop iteration at `now` (monotonic seconds; the scheduler's clock) and
        `ros_now` (ROS seconds; the clock of the input stamps). Returns the action (20,) to
        publish: a new one, or on a stall tick the last one again (then `last_tick_held` is
        True); or None: publish nothing (not running, inputs stale, no action yet for this
        task). Raises what the tick itself raised, after recording it for status()."""
        self._tick_time = now
        self.last_tick_held = False
        self.tick_meter.tick(now)
        try:
            return self._tick(now, ros_now)
        except Exception as error:
            with self._lock:
                self.tick_failures += 1
                self.last_tick_failure = f"{type(error).__name__}: {error}"
                self._last_tick_failure_time = now
            raise

    def _tick(self, now: float, ros_now: float) -> np.ndarray | None:
        with self._lock:
            if self._state != State.RUNNING:
                return None
            gate = self._gate.check(ros_now)
            if not gate.ok:
                if not self._hold_reason:
                    # The chunk in hand was planned from a world that may have moved on; the
                    # next one starts from fresh inputs once they return.
                    self.scheduler.reset()
                    self.holds += 1
                    self.events.add("hold", f"holding: {gate.reason}", Level.WARN)
                self._hold_reason = gate.reason
                return None
            if self._hold_reason:
                self.events.add("resume", "inputs fresh again: resuming", Level.OK)
                self._hold_reason = ""
            stats = self.scheduler.stats
            failed, rejected, accepted = stats.failed_inferences, stats.rejected_chunks, stats.chunks_accepted
            stalls = stats.stall_ticks
            action = run_control_tick(self.scheduler, self.worker, now)
            if stats.failed_inferences > failed:
                self._inference_problem = f"inference failing: {stats.last_failure}"
                self.events.add("inference", f"inference failed: {stats.last_failure}", Level.WARN)
            elif stats.rejected_chunks > rejected:
                self._inference_problem = f"chunk rejected: {stats.last_rejection}"
                self.events.add("chunk", f"chunk rejected: {stats.last_rejection}", Level.WARN)
            elif stats.chunks_accepted > accepted:
                self._inference_problem = ""
            self._check_capacity()
            if action is not None:
                self.published_actions += 1
                return action
            if stats.stall_ticks > stalls:
                held = self.scheduler.last_action
                if held is not None:
                    self.held_actions += 1
                    self.last_tick_held = True
                    return held
            return None

    def _check_capacity(self) -> None:
        """One event when the latency estimate starts to exceed what a chunk covers, one when it
        fits again (an episode, however many chunks it lasts)."""
        over = self.scheduler.over_capacity
        if over and not self._over_capacity:
            self.events.add("latency", self._capacity_message() + ": the arms hold the last action "
                            "whenever a chunk runs out before the next arrives", Level.WARN)
        elif self._over_capacity and not over:
            self.events.add("latency fits", f"model latency {self.scheduler.latency_estimate:.2f} s fits the "
                            f"chunk's {self._capacity_seconds():.2f} s again", Level.OK)
        self._over_capacity = over

    def _capacity_seconds(self) -> float:
        return self.scheduler.capacity_steps * self.scheduler.config.control_period

    def _capacity_message(self) -> str:
        scheduler = self.scheduler
        return (f"model latency {scheduler.latency_estimate:.2f} s ({scheduler.estimated_delay_steps} ticks) "
                f"exceeds the chunk's {self._capacity_seconds():.2f} s ({scheduler.capacity_steps} ticks)")

    # ---- inference (snapshot: control thread; infer: worker thread) ----------------------------

    def _snapshot(self):
        """Runs on the control thread (inside tick) when an inference starts: references only."""
        latest = self._latest
        if latest is None or not self._instruction:
            return None
        return self._instruction, latest

    def _infer(self, snapshot, guidance) -> np.ndarray:
        """Runs on the worker thread: payload -> observation -> (H, 20) chunk in robot units."""
        instruction, payload = snapshot
        with self._model_lock:
            if self._pending_cfg_scale is not None:
                self.policy.cfg_scale, self._pending_cfg_scale = self._pending_cfg_scale, None
            index = self._chunk_index
            self._chunk_index += 1
        images, poses, grippers = self._decode(payload)
        missing = [camera for camera in CAMERAS if camera not in images]
        if missing:
            raise ValueError(f"decoded inputs lack the images of {missing}")
        observation = self._observation_factory(instruction, *(images[camera] for camera in CAMERAS),
                                                self.proprio(poses, grippers))
        self.policy.validate(observation)
        return self.policy.sample(self.policy.encode(observation), seed=self.seed_for(index), guidance=guidance)

    def seed_for(self, index: int) -> int | None:
        """Noise seed of the `index`-th inference (0-based): seed + index, or None (random)."""
        return self.settings.seed + index if self.settings.seed >= 0 else None

    def proprio(self, poses: Mapping[str, np.ndarray], gripper_positions: Mapping[str, float]) -> np.ndarray:
        """(20,) proprio: each arm's EEF pose (4x4, eef_reference) and gripper opening (joint
        position / stroke: 0 closed, 1 open), packed left then right."""
        arms = []
        for side in ARMS:
            if side not in poses or side not in gripper_positions:
                raise ValueError(f"decoded inputs lack the {side} arm's pose or gripper")
            opening = float(gripper_positions[side]) / self._strokes[side]
            arms.append(ArmPose.from_matrix(poses[side], opening))
        return pack(*arms)

    # ---- reporting -----------------------------------------------------------------------------

    def status(self) -> Status:
        """The policy's /diagnostics entry."""
        with self._lock:
            stats = self.scheduler.stats
            state, instruction, hold_reason = self._state, self._instruction, self._hold_reason
            values = {"state": state.value, "instruction": instruction,
                      "mode": self.scheduler.config.mode.value,
                      "published_actions": str(self.published_actions),
                      "stall_ticks": str(stats.stall_ticks), "chunks": str(stats.chunks_accepted),
                      "rejected_chunks": str(stats.rejected_chunks),
                      "failed_inferences": str(stats.failed_inferences),
                      "rejected_instructions": str(self.rejected_instructions),
                      "repeated_instructions": str(self.repeated_instructions),
                      "ignored_after_stop": str(self.ignored_after_stop),
                      "held_actions": str(self.held_actions),
                      "dropped_chunks": str(stats.dropped_results),
                      "superseded_chunks": str(stats.superseded_chunks),
                      "input_holds": str(self.holds),
                      "control_tick_failures": str(self.tick_failures)}
            values.update(self._schedule_values())
            over_capacity = self._over_capacity and state == State.RUNNING
            capacity_message = self._capacity_message()
            chunk_age, boundary, plan = stats.chunk_age, stats.mean_boundary_jump, stats.mean_plan_change
            last_failure, problem = stats.last_failure, self._inference_problem
            tick_failure, failure_time = self.last_tick_failure, self._last_tick_failure_time
        cfg_scale = getattr(self.policy, "cfg_scale", None)
        if cfg_scale is not None:
            values["cfg_scale"] = f"{float(cfg_scale):.3g}"
        latencies = np.array(list(self.worker.latencies))
        if latencies.size:
            values["inference_p50_ms"] = f"{np.percentile(latencies, 50) * 1e3:.1f}"
            values["inference_p99_ms"] = f"{np.percentile(latencies, 99) * 1e3:.1f}"
        if chunk_age is not None:
            values["chunk_age_s"] = f"{chunk_age:.3f}"
        if boundary is not None:
            values["mean_boundary_jump"] = f"{boundary:.4f}"
        if plan is not None:
            values["mean_plan_change"] = f"{plan:.4f}"
        stamps = self._latest_stamps
        if stamps:
            values["input_skew_ms"] = f"{(max(stamps) - min(stamps)) * 1e3:.1f}"
        values.update({f"tick_{k}": v for k, v in self.tick_meter.summary().items()})
        if last_failure:
            values["last_failure"] = last_failure
        if tick_failure:
            values["last_control_tick_failure"] = tick_failure
        running = state == State.RUNNING
        if hold_reason:
            values["hold_reason"] = hold_reason
        if failure_time is not None and self._tick_time - failure_time < TICK_FAILURE_REPORT_SECONDS:
            return Status(Level.ERROR, f"control tick failing: {tick_failure}", values)
        if running and hold_reason:
            return Status(Level.WARN, f"holding: {hold_reason}", values)
        if running and problem:
            return Status(Level.WARN, problem, values)
        if over_capacity:
            return Status(Level.WARN, capacity_message, values)
        return Status(Level.OK, state.value, values)

    def close(self, timeout: float = 10.0) -> bool:
        """Stop the worker (an inference running finishes first). True if it ended in time."""
        return self.worker.stop(timeout)

    # ---- helpers -------------------------------------------------------------------------------

    def _schedule_values(self) -> dict[str, str]:
        """The scheduler's latency model and trigger point (under the lock)."""
        scheduler = self.scheduler
        return {"latency_estimate_s": f"{scheduler.latency_estimate:.3f}",
                "estimated_delay_ticks": str(scheduler.estimated_delay_steps),
                "latency_margin_ticks": str(scheduler.config.latency_margin),
                "trigger_steps_left": str(scheduler.trigger_steps_left),
                "steps_per_inference": str(scheduler.steps_per_inference),
                "latency_capacity_s": f"{self._capacity_seconds():.3f}",
                "inferences_in_flight": str(scheduler.in_flight)}

    def _scheduler_config(self, settings: RuntimeSettings) -> SchedulerConfig:
        horizon = int(self.policy.horizon)
        return SchedulerConfig(mode=settings.mode, horizon=horizon, action_dim=int(self.policy.action_dim),
                               control_period=settings.control_period,
                               execution_horizon=min(settings.execution_horizon, horizon),
                               latency_margin=settings.latency_margin_ticks,
                               max_in_flight=settings.max_inferences_in_flight,
                               max_guidance_weight=settings.max_guidance_weight)

    @staticmethod
    def _make_gate(settings: RuntimeSettings) -> ObservationGate:
        limits = [StreamLimit(name, settings.max_image_age if name in CAMERAS else settings.max_state_age)
                  for name in STREAMS]
        return ObservationGate([*limits, StreamLimit(MATCHED, settings.max_image_age)], max_skew=float("inf"))

    def _update_stamps(self, stamps: dict[str, float]) -> None:
        with self._stamp_lock:
            self._gate.update(stamps)      # KeyError for an unknown stream, before it is kept
            self._stamps.update(stamps)
