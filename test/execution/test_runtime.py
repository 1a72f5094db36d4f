"""PolicyRuntime (the policy node's core) on a simulated clock, with the real scheduler and gate.

The model is a small fake at the policy interface (encode/sample/validate/horizon/action_dim)
whose chunks say which inference made them: row i of the n-th chunk holds n * 1000 + i in its
first value. Most tests use a synchronous worker (the chunk requested on one tick is handed over
on the next); the threaded InferenceWorker is driven with waits on conditions, never sleeps.
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np
import pytest

from twinvla_ros.execution import ExecutionMode, InferenceResult, InferenceWorker, PolicyRuntime, RuntimeSettings, State
from twinvla_ros.execution.runtime import CAMERAS, MATCHED, STREAMS
from twinvla_ros.reporting import Level

PERIOD = 0.05
HORIZON = 8
DIM = 20
STROKE = 0.04
ROS_OFFSET = 1000.0          # ROS time runs on its own clock, offset from the monotonic one
TASK = "hand over the box"


@dataclass
class FakeObservation:
    instruction: str
    image_ego: np.ndarray
    image_wrist_left: np.ndarray
    image_wrist_right: np.ndarray
    proprio: np.ndarray


class FakePolicy:
    """Deterministic chunks at the model interface; records what each inference saw."""

    horizon = HORIZON
    action_dim = DIM

    def __init__(self):
        self.cfg_scale = 1.5
        self.encoded = []        # (observation, cfg_scale at encode)
        self.sampled = []        # (seed, guidance, cfg_scale at sample)
        self.fail_sample = None  # an exception to raise from sample
        self.encode_gate = None  # threading.Event encode waits on (None: no wait)
        self.encode_started = threading.Event()

    def validate(self, observation):
        proprio = np.asarray(observation.proprio)
        if proprio.shape != (DIM,) or not np.isfinite(proprio).all():
            raise ValueError(f"proprio must be 20 finite numbers, got {proprio}")

    def encode(self, observation):
        self.encode_started.set()
        if self.encode_gate is not None:
            assert self.encode_gate.wait(10.0), "test never released encode"
        self.encoded.append((observation, self.cfg_scale))
        return observation

    def sample(self, context, *, seed=None, guidance=None):
        if self.fail_sample is not None:
            raise self.fail_sample
        n = len(self.sampled)
        self.sampled.append((seed, guidance, self.cfg_scale))
        chunk = np.zeros((HORIZON, DIM))
        chunk[:, 0] = n * 1000 + np.arange(HORIZON)
        return chunk


class SyncWorker:
    """InferenceWorker's contract, run synchronously: submit infers at once, the result is
    handed over at the next drain (the next tick)."""

    def __init__(self, infer, get_observation, injected_latency=0.0):
        self.infer = infer
        self.get_observation = get_observation
        self.injected_latency = injected_latency
        self.latencies = deque(maxlen=100)
        self.results = []
        self.fail_drain = None   # an exception for the next drain to raise

    def submit(self, request):
        observation = self.get_observation()
        if observation is None:
            return False
        chunk = error = None
        try:
            chunk = self.infer(observation, request.guidance)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        self.results.append(InferenceResult(request, chunk, error, None, 0.01))
        self.latencies.append(0.01)
        return True

    def drain(self):
        if self.fail_drain is not None:
            error, self.fail_drain = self.fail_drain, None
            raise error
        results, self.results = self.results, []
        return results

    def stop(self, timeout=None):
        return True


def pose(translation, rotation=np.eye(3)):
    out = np.eye(4)
    out[:3, :3] = rotation
    out[:3, 3] = translation
    return out


LEFT_POSE = pose((0.1, 0.2, 0.3), np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))  # 90 deg about z
RIGHT_POSE = pose((0.3, -0.2, 0.1))


def payload(grippers=(0.02, 0.0)):
    images = {camera: np.full((4, 6, 3), index, dtype=np.uint8) for index, camera in enumerate(CAMERAS)}
    return images, {"left": LEFT_POSE, "right": RIGHT_POSE}, dict(zip(("left", "right"), grippers))


class Rig:
    """A runtime on simulated time, fed fresh inputs (every stream, and a matched set) per tick."""

    def __init__(self, decode=lambda p: p, worker_factory=SyncWorker, **settings):
        settings.setdefault("mode", "async")
        self.policy = FakePolicy()
        self.runtime = PolicyRuntime(self.policy, observation_factory=FakeObservation, decode=decode,
                                     gripper_strokes={"left": STROKE, "right": STROKE},
                                     settings=RuntimeSettings(control_period=PERIOD, **settings),
                                     worker_factory=worker_factory)
        self.now = 0.0
        self.silent: set[str] = set()   # streams not fed
        self.payload = payload()

    @property
    def ros_now(self):
        return self.now + ROS_OFFSET

    def feed(self):
        for stream in STREAMS:
            if stream not in self.silent:
                self.runtime.stream_arrived(stream, self.ros_now)
        if not self.silent:       # the matcher emits a set only when every stream has data
            self.runtime.inputs_matched(self.payload, [self.ros_now] * len(STREAMS))

    def tick(self, feed=True):
        self.now += PERIOD
        if feed:
            self.feed()
        return self.runtime.tick(self.now, self.ros_now)

    def run(self, ticks, feed=True):
        return [self.tick(feed) for _ in range(ticks)]


def ids(actions):
    """The (chunk number, step) of each action, None for a tick without one."""
    return [None if a is None else divmod(int(a[0]), 1000) for a in actions]


@pytest.fixture
def rig():
    rig = Rig()
    yield rig
    rig.runtime.close()


# --- state machine and service answers ----------------------------------------------------------


def test_start_is_refused_until_there_is_an_instruction(rig):
    runtime = rig.runtime
    assert runtime.state == State.IDLE
    assert runtime.start() == (False, "no instruction yet: publish one on /instruction")
    assert runtime.pause() == (False, "not running (state: idle)")
    assert rig.run(5) == [None] * 5
    assert rig.policy.sampled == []
    assert runtime.set_instruction(f"  {TASK} \n") == (True, f"new task: '{TASK}'")
    assert runtime.state == State.RUNNING and runtime.instruction == TASK
    actions = rig.run(4)
    assert ids(actions) == [None, (0, 0), (0, 1), (0, 2)]
    assert rig.policy.encoded[0][0].instruction == TASK


def test_pause_keeps_the_task_and_start_resumes_it_with_a_new_chunk(rig):
    runtime = rig.runtime
    runtime.set_instruction(TASK)
    rig.run(4)
    generation = runtime.scheduler.generation
    assert runtime.pause() == (True, "paused: arms hold; ~/start resumes the task")
    assert runtime.state == State.PAUSED and runtime.instruction == TASK
    assert runtime.scheduler.generation == generation + 1       # the chunk in hand is dropped
    assert rig.run(5) == [None] * 5
    assert runtime.pause() == (False, "not running (state: paused)")
    assert runtime.status().values["state"] == "paused"
    assert runtime.start() == (True, f"running '{TASK}'")
    after = ids(rig.run(3))
    assert after[0] is None and after[1][1] == 0                 # a fresh chunk from step 0
    assert rig.policy.encoded[-1][0].instruction == TASK


def test_stop_forgets_the_task(rig):
    runtime = rig.runtime
    runtime.set_instruction(TASK)
    rig.run(4)
    generation = runtime.scheduler.generation
    assert runtime.stop() == (True, "stopped: arms hold; send an instruction to start again")
    assert runtime.state == State.IDLE and runtime.instruction == ""
    assert runtime.scheduler.generation == generation + 1
    sampled = len(rig.policy.sampled)
    assert rig.run(5) == [None] * 5
    assert len(rig.policy.sampled) == sampled                    # no inference while stopped
    assert runtime.start()[0] is False
    status = runtime.status()
    assert status.level == Level.OK and status.message == "idle" and status.values["instruction"] == ""


# --- gate: hold, count once, resume ----------------------------------------------------------------


def test_a_stale_stream_holds_once_names_the_stream_and_resumes_when_fresh(rig):
    runtime = rig.runtime
    runtime.set_instruction(TASK)
    assert ids(rig.run(3))[-1] == (0, 1)
    generation = runtime.scheduler.generation
    rig.silent = {"wrist_left"}
    # Fresh enough for 0.5 s (max_image_age): the chunk keeps executing meanwhile.
    actions = rig.run(30)
    executing = [a for a in actions if a is not None]
    assert executing and actions[-1] is None
    reason = runtime.hold_reason
    assert "wrist_left is" in reason and "max 0.50 s" in reason
    assert "ego" not in reason and "left_eef" not in reason      # only the silent streams
    assert MATCHED in reason                                     # no matched set either
    assert runtime.holds == 1                                    # one hold, however many ticks
    assert runtime.scheduler.generation == generation + 1        # its chunk was dropped once
    status = runtime.status()
    assert status.level == Level.WARN and status.message == f"holding: {reason}"
    assert status.values["input_holds"] == "1" and status.values["hold_reason"] == reason
    sampled = len(rig.policy.sampled)
    assert rig.run(10) == [None] * 10 and len(rig.policy.sampled) == sampled
    rig.silent = set()
    back = ids(rig.run(3))
    assert back == [None, (sampled, 0), (sampled, 1)]            # a new chunk, from its step 0
    assert runtime.hold_reason == "" and runtime.holds == 1
    assert runtime.status().level == Level.OK
    logged = [message for _, message in runtime.events.drain()]
    assert len(logged) == 2 and logged[0].startswith("holding: wrist_left is 0.55 s old")
    assert logged[1] == "inputs fresh again: resuming"
    rig.silent = {"joint_states"}
    rig.run(30)
    assert runtime.holds == 2 and "joint_states is" in runtime.hold_reason and "max 0.30 s" in runtime.hold_reason


def test_no_data_at_all_holds_with_every_stream_named(rig):
    assert not rig.runtime.check_inputs(rig.ros_now).ok
    rig.runtime.set_instruction(TASK)
    assert rig.run(3, feed=False) == [None] * 3
    for stream in (*STREAMS, MATCHED):
        assert f"{stream}: no data received" in rig.runtime.hold_reason
    assert rig.policy.sampled == []
    rig.feed()
    assert rig.runtime.check_inputs(rig.ros_now).ok


def test_input_limits_change_live_without_a_hold(rig):
    runtime = rig.runtime
    runtime.set_instruction(TASK)
    rig.run(3)
    runtime.reconfigure(max_image_age=2.0)
    rig.silent = {"ego"}
    actions = rig.run(20)                  # 1 s: beyond the old 0.5 s limit, within the new 2 s
    assert runtime.holds == 0 and all(a is not None for a in actions[-5:])
    runtime.reconfigure(max_image_age=0.5)  # ego is 1 s old now
    assert rig.tick() is None
    assert runtime.holds == 1 and "ego is" in runtime.hold_reason


# --- instructions -------------------------------------------------------------------------------


def test_a_new_instruction_drops_the_old_chunk_and_replans(rig):
    runtime = rig.runtime
    runtime.set_instruction(TASK)
    assert ids(rig.run(3)) == [None, (0, 0), (0, 1)]
    generation = runtime.scheduler.generation
    assert runtime.set_instruction("lift the box") == (True, "new task: 'lift the box'")
    assert runtime.scheduler.generation == generation + 1
    after = ids(rig.run(3))
    # Not (0, 2): the old chunk is not finished; the next action is step 0 of a chunk planned
    # for the new instruction.
    assert after[0] is None and after[1] == (1, 0) and after[2] == (1, 1)
    assert rig.policy.encoded[1][0].instruction == "lift the box"
    assert runtime.status().values["instruction"] == "lift the box"


def test_a_new_instruction_while_paused_runs_it(rig):
    rig.runtime.set_instruction(TASK)
    rig.run(3)
    rig.runtime.pause()
    assert rig.runtime.set_instruction("lift the box")[0]
    assert rig.runtime.state == State.RUNNING
    assert ids(rig.run(2))[-1] == (1, 0)


@pytest.mark.parametrize("text, reason", [("", "empty"), ("   \t", "empty"), ("pick\x07 the cup", "non-printable"),
                                          ("x" * 513, "513 characters"), (42, "must be a string")])
def test_invalid_instructions_are_rejected_and_change_nothing(rig, text, reason):
    runtime = rig.runtime
    accepted, message = runtime.set_instruction(text)
    assert not accepted and message.startswith("rejected instruction: ") and reason in message
    assert runtime.state == State.IDLE and runtime.rejected_instructions == 1
    runtime.set_instruction(TASK)
    rig.run(3)
    generation = runtime.scheduler.generation
    accepted, _ = runtime.set_instruction(text)
    assert not accepted
    assert runtime.state == State.RUNNING and runtime.instruction == TASK
    assert runtime.scheduler.generation == generation            # the chunk in hand is kept
    assert ids(rig.run(1)) == [(0, 2)]
    assert runtime.status().values["rejected_instructions"] == "2"


def test_the_instruction_length_limit_is_a_setting():
    rig = Rig(max_instruction_length=10)
    assert not rig.runtime.set_instruction("pick up the cup")[0]
    assert rig.runtime.set_instruction("pick up")[0]


# --- seeds and proprio --------------------------------------------------------------------------


def test_chunk_n_is_sampled_with_seed_plus_n():
    rig = Rig(seed=7, mode="sync")
    rig.runtime.set_instruction(TASK)
    rig.run(4 * (HORIZON + 1))
    seeds = [seed for seed, _, _ in rig.policy.sampled]
    assert len(seeds) >= 4 and seeds == list(range(7, 7 + len(seeds)))
    # A new task does not restart the sequence: every chunk of the run has its own noise.
    rig.runtime.set_instruction("lift the box")
    rig.run(2)
    assert rig.policy.sampled[-1][0] == 7 + len(seeds)


def test_a_negative_seed_samples_random_noise(rig):
    rig.runtime.set_instruction(TASK)
    rig.run(3 * HORIZON)
    assert len(rig.policy.sampled) >= 3 and {seed for seed, _, _ in rig.policy.sampled} == {None}


def test_proprio_is_both_eef_poses_and_gripper_openings(rig):
    rig.payload = payload(grippers=(0.02, 0.04))
    rig.runtime.set_instruction(TASK)
    rig.run(2)
    expected = np.array([0.1, 0.2, 0.3, 0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.5,      # 0.02 m of 0.04 m
                         0.3, -0.2, 0.1, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0])
    observation = rig.policy.encoded[0][0]
    np.testing.assert_allclose(observation.proprio, expected, atol=1e-12)
    np.testing.assert_array_equal(observation.image_wrist_left, rig.payload[0]["wrist_left"])
    np.testing.assert_array_equal(observation.image_wrist_right, rig.payload[0]["wrist_right"])
    np.testing.assert_allclose(rig.runtime.proprio({"left": RIGHT_POSE, "right": LEFT_POSE},
                                                   {"left": 0.0, "right": 0.01}),
                               np.concatenate([expected[10:19], [0.0], expected[:9], [0.25]]), atol=1e-12)


def test_the_strokes_are_per_arm():
    runtime = PolicyRuntime(FakePolicy(), observation_factory=FakeObservation, decode=lambda p: p,
                            gripper_strokes={"left": 0.04, "right": 0.08}, worker_factory=SyncWorker)
    proprio = runtime.proprio({"left": LEFT_POSE, "right": RIGHT_POSE}, {"left": 0.04, "right": 0.04})
    assert (proprio[9], proprio[19]) == (1.0, 0.5)
    with pytest.raises(ValueError, match="right"):
        runtime.proprio({"left": LEFT_POSE}, {"left": 0.0})
    with pytest.raises(ValueError, match="strokes"):
        PolicyRuntime(FakePolicy(), observation_factory=FakeObservation, decode=lambda p: p,
                      gripper_strokes={"left": 0.04}, worker_factory=SyncWorker)


# --- failures -----------------------------------------------------------------------------------


def failing_decode(_):
    raise ValueError("pose contains NaN or inf")


@pytest.mark.parametrize("where", ["decode", "sample", "validate"])
def test_a_failing_inference_is_counted_and_reported_and_the_loop_goes_on(where):
    decoding = {"ok": True}
    rig = Rig(decode=lambda p: p if decoding["ok"] else failing_decode(p))
    runtime = rig.runtime
    runtime.set_instruction(TASK)
    rig.run(3)
    if where == "decode":
        decoding["ok"] = False
        expected = "ValueError: pose contains NaN or inf"
    elif where == "sample":
        rig.policy.fail_sample = RuntimeError("CUDA out of memory")
        expected = "RuntimeError: CUDA out of memory"
    else:
        rig.payload = payload(grippers=(float("nan"), 0.0))
        expected = "ValueError: proprio must be 20 finite numbers"
    actions = rig.run(3 * HORIZON)
    # The chunk ran out and no new one came: a stall, holding the last action it had.
    assert runtime.last_tick_held and runtime.held_actions > 0
    assert ids(actions[-1:]) == [(0, HORIZON - 1)]
    stats = runtime.scheduler.stats
    assert stats.failed_inferences >= 2 and stats.last_failure.startswith(expected)
    status = runtime.status()
    assert status.level == Level.WARN and status.message.startswith(f"inference failing: {expected}")
    assert status.values["failed_inferences"] == str(stats.failed_inferences)
    assert any(message.startswith(f"inference failed: {expected}") for _, message in runtime.events.drain())
    decoding["ok"], rig.policy.fail_sample, rig.payload = True, None, payload()
    assert ids(rig.run(2))[-1][1] == 0              # the next inference works: actions again
    assert runtime.status().level == Level.OK


def test_a_raising_control_tick_is_reported_as_error_and_the_next_tick_runs(rig):
    runtime = rig.runtime
    runtime.set_instruction(TASK)
    rig.run(3)
    runtime.worker.fail_drain = RuntimeError("worker broke")
    with pytest.raises(RuntimeError, match="worker broke"):
        rig.tick()
    status = runtime.status()
    assert status.level == Level.ERROR and status.message == "control tick failing: RuntimeError: worker broke"
    assert status.values["control_tick_failures"] == "1"
    assert rig.tick() is not None                   # the loop goes on
    rig.run(round(10.0 / PERIOD))                   # 10 s of good ticks later: no longer an error
    assert runtime.status().level == Level.OK and runtime.tick_failures == 1


def test_a_rejected_chunk_is_reported():
    rig = Rig()
    rig.policy.sample = lambda context, seed=None, guidance=None: np.full((HORIZON, DIM), np.nan)
    rig.runtime.set_instruction(TASK)
    rig.run(3)
    status = rig.runtime.status()
    assert status.level == Level.WARN and "chunk has 160 non-finite values" in status.message
    assert status.values["rejected_chunks"] != "0"


# --- live settings ------------------------------------------------------------------------------


def test_a_new_execution_mode_drops_the_chunk_and_keeps_the_statistics(rig):
    runtime = rig.runtime
    runtime.set_instruction(TASK)
    rig.run(4)
    chunks, generation = runtime.scheduler.stats.chunks_accepted, runtime.scheduler.generation
    runtime.reconfigure(mode="rtc")
    assert runtime.scheduler.config.mode == ExecutionMode.RTC and runtime.scheduler.generation == generation + 1
    assert runtime.status().values["mode"] == "rtc"
    assert ids(rig.run(2))[-1] == (1, 0)
    assert runtime.scheduler.stats.chunks_accepted == chunks + 1
    runtime.reconfigure(execution_horizon=3, max_guidance_weight=2.0, injected_latency=0.1)
    assert runtime.scheduler.generation == generation + 1        # same mode: the chunk is kept
    assert runtime.scheduler.config.execution_horizon == 3 and runtime.worker.injected_latency == 0.1
    rig.run(4)
    guidance = rig.policy.sampled[-1][1]
    assert guidance is not None and guidance.max_weight == 2.0   # an RTC request continues the chunk


@pytest.mark.parametrize("changes, reason", [({"execution_horizon": 0}, "execution horizon"),
                                             ({"mode": "fast"}, "fast"), ({"max_state_age": 0.0}, "ages"),
                                             ({"seed": 3}, "not live")])
def test_an_invalid_live_change_changes_nothing(rig, changes, reason):
    before = (rig.runtime.settings, rig.runtime.scheduler.config, rig.runtime.scheduler.generation)
    with pytest.raises(ValueError, match=reason):
        rig.runtime.reconfigure(injected_latency=0.2, **changes)
    assert (rig.runtime.settings, rig.runtime.scheduler.config, rig.runtime.scheduler.generation) == before
    assert rig.runtime.worker.injected_latency == 0.0


def test_execution_horizon_is_clipped_to_the_policy_horizon():
    rig = Rig(execution_horizon=50)
    assert rig.runtime.scheduler.config.execution_horizon == HORIZON


# --- with the threaded worker -------------------------------------------------------------------


def run_until(rig, condition, what, ticks=400):
    """Tick (waiting for the worker to finish between ticks) until condition() holds."""
    for _ in range(ticks):
        action = rig.tick()
        assert rig.runtime.worker.wait_idle(10.0), "inference did not finish"
        if condition(action):
            return action
    raise AssertionError(f"{what} did not happen in {ticks} ticks")


def test_the_threaded_worker_runs_the_chunks():
    rig = Rig(worker_factory=InferenceWorker, seed=0)
    try:
        rig.runtime.set_instruction(TASK)
        first = run_until(rig, lambda a: a is not None, "a first action")
        assert ids([first]) == [(0, 0)]
        run_until(rig, lambda a: a is not None and int(a[0]) // 1000 == 2, "a third chunk")
        assert [seed for seed, _, _ in rig.policy.sampled][:3] == [0, 1, 2]
        assert "inference_p50_ms" in rig.runtime.status().values
    finally:
        assert rig.runtime.close()


def test_cfg_scale_changes_at_the_next_inference_never_between_encode_and_sample():
    rig = Rig(worker_factory=InferenceWorker)
    policy = rig.policy
    policy.encode_gate = threading.Event()
    try:
        rig.runtime.set_instruction(TASK)
        rig.tick()                                  # submits the first inference
        assert policy.encode_started.wait(10.0), "encode did not start"
        rig.runtime.set_cfg_scale(3.0)              # while the first inference is encoding
        policy.encode_gate.set()
        assert rig.runtime.worker.wait_idle(10.0)
        assert policy.encoded[0][1] == 1.5 and policy.sampled[0][2] == 1.5
        run_until(rig, lambda a: len(policy.sampled) >= 2, "a second inference")
        assert policy.encoded[1][1] == 3.0 and policy.sampled[1][2] == 3.0
        assert rig.runtime.status().values["cfg_scale"] == "3"
    finally:
        policy.encode_gate.set()
        assert rig.runtime.close()


def test_status_reports_the_node_values(rig):
    rig.runtime.set_instruction(TASK)
    rig.run(HORIZON + 4)
    values = rig.runtime.status().values
    for key in ("state", "instruction", "mode", "published_actions", "stall_ticks", "chunks", "rejected_chunks",
                "failed_inferences", "rejected_instructions", "input_holds", "estimated_delay_ticks",
                "inference_p50_ms", "inference_p99_ms", "chunk_age_s", "mean_boundary_jump",
                "input_skew_ms", "tick_rate_hz", "tick_period_p50_ms", "latency_estimate_s",
                "latency_margin_ticks", "trigger_steps_left", "steps_per_inference", "latency_capacity_s",
                "inferences_in_flight", "repeated_instructions", "held_actions", "dropped_chunks",
                "superseded_chunks"):
        assert key in values, key
    assert values["published_actions"] == str(HORIZON + 3) and values["mode"] == "async"
    assert values["tick_rate_hz"] == "20.0" and values["input_skew_ms"] == "0.0"
    # The synchronous worker's chunk is used on the tick after its request: 1 tick, + 2 margin.
    assert (values["estimated_delay_ticks"], values["trigger_steps_left"]) == ("1", "3")
    assert values["latency_capacity_s"] == f"{(HORIZON - 1) * PERIOD:.3f}"


# --- repeated instructions ----------------------------------------------------------------------


def test_the_same_instruction_again_continues_the_task():
    def actions(repeat_every):
        rig = Rig(seed=0)
        rig.runtime.set_instruction(TASK)
        out = []
        for k in range(6 * HORIZON):
            if repeat_every and k % repeat_every == repeat_every - 1:
                assert rig.runtime.set_instruction(f" {TASK}\n") == (True, f"continuing '{TASK}'")
            out.append(rig.tick())
        return rig, ids(out)

    plain_rig, plain = actions(0)
    rig, repeated = actions(3)                     # several times per chunk
    assert repeated == plain                       # the same actions, tick for tick
    runtime, stats = rig.runtime, rig.runtime.scheduler.stats
    assert runtime.scheduler.generation == plain_rig.runtime.scheduler.generation == 1
    assert runtime.repeated_instructions == 6 * HORIZON // 3 and runtime.rejected_instructions == 0
    assert stats.dropped_results == 0 and stats.startup_ticks == 1 and stats.stall_ticks == 0
    assert len(rig.policy.sampled) == len(plain_rig.policy.sampled)   # no inference restarted
    values = runtime.status().values
    assert values["repeated_instructions"] == str(6 * HORIZON // 3) and values["dropped_chunks"] == "0"
    # A different text still replaces the task at once.
    assert runtime.set_instruction("lift the box") == (True, "new task: 'lift the box'")
    assert runtime.scheduler.generation == 2 and runtime.repeated_instructions == 6 * HORIZON // 3


def test_the_same_instruction_while_paused_stays_paused(rig):
    runtime = rig.runtime
    runtime.set_instruction(TASK)
    rig.run(4)
    runtime.pause()
    generation = runtime.scheduler.generation
    assert runtime.set_instruction(TASK) == (True, f"'{TASK}' is paused: ~/start resumes it")
    assert runtime.state == State.PAUSED and runtime.scheduler.generation == generation
    assert rig.run(3) == [None] * 3 and runtime.repeated_instructions == 1
    assert runtime.start()[0] and runtime.state == State.RUNNING
    assert ids(rig.run(2))[-1][1] == 0


def test_the_same_instruction_after_stop_starts_it_again(rig):
    runtime = rig.runtime
    runtime.set_instruction(TASK, now=0.0)
    rig.run(4)
    runtime.stop(now=1.0)
    assert runtime.set_instruction(TASK, now=10.0) == (True, f"new task: '{TASK}'")
    assert runtime.state == State.RUNNING and runtime.repeated_instructions == 0
    assert ids(rig.run(2))[-1][1] == 0


def test_a_publisher_still_repeating_the_stopped_task_does_not_restart_it(rig):
    runtime = rig.runtime
    for second in range(4):                        # `ros2 topic pub` at 1 Hz
        runtime.set_instruction(TASK, now=float(second))
    rig.run(4)
    runtime.stop(now=3.5)
    for second in range(4, 9):                     # ... still running after the stop
        accepted, message = runtime.set_instruction(TASK, now=float(second))
        assert not accepted and "stopped" in message and runtime.state == State.IDLE
    assert rig.run(3) == [None] * 3
    assert runtime.ignored_after_stop == 5 and runtime.rejected_instructions == 0
    assert runtime.status().values["ignored_after_stop"] == "5"
    # The publisher stopped; the same text sent again later is a new request and runs.
    assert runtime.set_instruction(TASK, now=8.0 + 3.0) == (True, f"new task: '{TASK}'")
    assert runtime.state == State.RUNNING


def test_a_task_sent_once_runs_again_when_sent_again_right_after_stop(rig):
    runtime = rig.runtime
    runtime.set_instruction(TASK, now=0.0)         # `ros2 topic pub --once`
    runtime.stop(now=0.5)
    assert runtime.set_instruction(TASK, now=1.0) == (True, f"new task: '{TASK}'")
    assert runtime.ignored_after_stop == 0


def test_another_instruction_after_stop_runs_at_once(rig):
    runtime = rig.runtime
    runtime.set_instruction(TASK, now=0.0)
    runtime.set_instruction(TASK, now=1.0)
    runtime.stop(now=1.1)
    assert runtime.set_instruction("lift the box", now=1.2) == (True, "new task: 'lift the box'")
    runtime.set_instruction("lift the box", now=1.4)
    runtime.stop(now=1.5)
    assert not runtime.set_instruction("lift the box", now=1.6)[0]       # the newly stopped one
    assert runtime.set_instruction(TASK, now=1.7) == (True, f"new task: '{TASK}'")


# --- latency and stalls -------------------------------------------------------------------------


class DelayedWorker(SyncWorker):
    """SyncWorker whose results are handed over `delay` ticks (drains) after the submit, any
    number in flight at once (the latency overlaps, like the real worker's injected latency)."""

    delay = 3

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.drains = 0
        self.due = []

    def submit(self, request):
        if not super().submit(request):
            return False
        self.due.append((self.drains + self.delay, self.results.pop()))
        return True

    def drain(self):
        self.drains += 1
        ready = [result for due, result in self.due if due <= self.drains]
        self.due = [(due, result) for due, result in self.due if due > self.drains]
        return ready


def test_latency_beyond_the_chunk_holds_the_last_action_and_says_so_once():
    rig = Rig(worker_factory=DelayedWorker, mode="rtc")
    runtime = rig.runtime
    runtime.worker.delay = 3                       # HORIZON 8: fits (at most 7 ticks)
    runtime.set_instruction(TASK)
    rig.run(40)
    assert runtime.scheduler.stats.stall_ticks == 0 and runtime.held_actions == 0
    assert runtime.status().level == Level.OK
    runtime.events.drain()
    runtime.worker.delay = 10                      # 10 ticks: more than the 8-step chunk covers
    held, fresh, last = 0, 0, None
    for _ in range(200):
        action = rig.tick()
        assert action is not None                  # never nothing: a new action or the last again
        if runtime.last_tick_held:
            held += 1
            np.testing.assert_array_equal(action, last)
        else:
            fresh += 1
        last = action
    stats = runtime.scheduler.stats
    assert held > 20 and fresh > 20
    assert held == stats.stall_ticks == runtime.held_actions
    assert runtime.published_actions == 40 - stats.startup_ticks + fresh  # new actions only
    events = [(level, message) for level, message in runtime.events.drain()]
    exceeding = [message for _, message in events if "exceeds" in message]
    # Said as soon as a request in flight has waited longer than a chunk covers (8 ticks), once.
    assert exceeding == [f"model latency {8 * PERIOD:.2f} s (8 ticks) exceeds the chunk's {7 * PERIOD:.2f} s "
                         "(7 ticks): the arms hold the last action whenever a chunk runs out before the next arrives"]
    assert [level for level, message in events if "exceeds" in message] == [Level.WARN]
    status = runtime.status()
    assert status.level == Level.WARN and status.message.startswith("model latency 0.50 s (10 ticks) exceeds")
    assert status.values["stall_ticks"] == str(held) and status.values["held_actions"] == str(held)
    runtime.worker.delay = 2                       # fast again: the episode ends, said once
    rig.run(400)
    assert [m for _, m in runtime.events.drain()] == [f"model latency {2 * PERIOD:.2f} s fits the chunk's "
                                                      f"{7 * PERIOD:.2f} s again"]
    assert runtime.status().level == Level.OK and not runtime.last_tick_held


def test_the_start_of_a_task_and_an_input_hold_publish_nothing():
    rig = Rig(worker_factory=DelayedWorker)
    rig.runtime.set_instruction(TASK)
    assert rig.run(3) == [None] * 3                # no action for this task yet: nothing to hold
    assert rig.tick() is not None
    rig.silent = {"left_eef"}
    actions = rig.run(10)
    assert actions[-1] is None and not rig.runtime.last_tick_held


def test_the_latency_settings_are_live(rig):
    runtime = rig.runtime
    values = runtime.status().values
    assert (values["latency_margin_ticks"], values["inferences_in_flight"]) == ("2", "0")
    runtime.reconfigure(latency_margin_ticks=4, max_inferences_in_flight=1)
    config = runtime.scheduler.config
    assert (config.latency_margin, config.max_in_flight) == (4, 1)
    assert runtime.scheduler.trigger_steps_left == runtime.scheduler.estimated_delay_steps + 4
    with pytest.raises(ValueError, match="margin"):
        runtime.reconfigure(latency_margin_ticks=-1)
    with pytest.raises(ValueError, match="in flight"):
        runtime.reconfigure(max_inferences_in_flight=-1)
