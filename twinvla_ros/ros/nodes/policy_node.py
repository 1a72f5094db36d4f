"""policy_node: TwinVLA at 20 Hz that never pauses for the model.

Inputs: the three camera streams, both arms' `eef_pose`, `/joint_states` (gripper openings), and
`/instruction` (std_msgs/String). Outputs every control tick: `<arm>/eef_target` (PoseStamped) and
`<arm>/gripper_target` (Float64). Services `~/start`, `~/stop` (hold, forget the task) and
`~/pause` (hold, keep the task).

The control loop runs on its own thread at `control_rate`; inference runs on a background
worker (twinvla_ros.execution). Execution modes: `sync` (the reference: execute the chunk, then
infer while the arms wait), `async` (infer the next chunk while executing), `rtc` (async plus
real-time chunking: the new chunk is guided to continue the one being executed).
A missing or stale input stream holds the arms (nothing new is published) until data returns.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from enum import Enum

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64, String
from std_srvs.srv import Trigger

from twinvla_ros.robot.bimanual import ARMS, ArmPose, arm_slice, pack, unpack
from twinvla_ros.reporting import Level
from twinvla_ros.robot.description import load_description
from twinvla_ros.ros.common import (run_node, COMMAND_QOS, SENSOR_QOS, Diagnostics, RateMeter, declare,
                                      image_to_rgb, matrix_to_pose, pose_to_matrix, stamp_to_seconds)
from twinvla_ros.ros.synchronizer import StreamSynchronizer
from twinvla_ros.execution.instruction import MAX_INSTRUCTION_LENGTH, validate_instruction
from twinvla_ros.execution.scheduler import ChunkScheduler, ExecutionMode, SchedulerConfig
from twinvla_ros.execution.observation import ObservationGate, StreamLimit
from twinvla_ros.execution.worker import InferenceWorker, run_control_tick

CAMERAS = ("ego", "wrist_left", "wrist_right")
# Stream order of the synchronizer: images first, then the robot state.
STREAMS = (*CAMERAS, "left_eef", "right_eef", "joint_states")
MATCHED = "time-matched inputs"


class State(str, Enum):
    IDLE = "idle"          # no task: waiting for an instruction
    RUNNING = "running"
    PAUSED = "paused"      # task kept, arms holding


def sim_workspace_statistics() -> dict:
    """dataset_statistics entry for the embedded demo model: xyz quantiles of the sim table
    workspace (eef_reference frame, each arm on its own side), so that a random tiny model's
    actions land above the table. Rotation and gripper are not normalized."""
    from twinvla_ros.model import default_statistics
    return default_statistics(xyz_q01=(0.15, 0.05, -0.02, 0.15, -0.40, -0.02),
                              xyz_q99=(0.42, 0.40, 0.30, 0.42, -0.05, 0.30))


class PolicyNode(Node):
    def __init__(self, **node_kwargs):
        super().__init__("policy_node", **node_kwargs)
        checkpoint = declare(self, "checkpoint", "", "TwinVLA checkpoint directory; empty: the embedded tiny demo model")
        unnorm_key = declare(self, "unnorm_key", "", "dataset_statistics.json key for (un)normalization; empty: the only one")
        tokenizer = declare(self, "tokenizer", "", "tokenizer directory if the checkpoint has none (nvidia/Eagle2-1B's)")
        device = declare(self, "device", "auto", "torch device: cpu, cuda, cuda:1 ... or auto")
        dtype = declare(self, "dtype", "auto", "float32, bfloat16 or auto (bf16 on CUDA, fp32 on CPU)")
        cfg_scale = declare(self, "cfg_scale", -1.0, "classifier-free guidance scale; < 0: the checkpoint's default (1.5)")
        flow_steps = declare(self, "flow_steps", 0, "Euler flow-matching steps; 0: the checkpoint's default (10)")
        compile_head = declare(self, "compile", False, "torch.compile the action head (slow first call)")
        cpu_threads = declare(self, "cpu_threads", 0, "torch CPU threads; 0: half the cores (at least 1)")
        self.seed = declare(self, "seed", -1, "noise seed of the first chunk (then +1 per chunk); < 0: random")
        control_rate = declare(self, "control_rate", 20.0, "control loop rate in Hz (the policy's training rate)")
        mode = declare(self, "execution_mode", "rtc", "chunk execution: sync, async or rtc")
        execution_horizon = declare(self, "execution_horizon", 10, "async/rtc: steps executed before the next inference starts")
        max_guidance = declare(self, "rtc_max_guidance_weight", 5.0, "rtc: guidance weight clip (beta)")
        injected_latency = declare(self, "injected_latency", 0.0, "seconds added to every inference (latency experiments)")
        max_image_age = declare(self, "max_image_age", 0.5, "seconds an image may be old before the policy holds")
        max_state_age = declare(self, "max_state_age", 0.3, "seconds the EEF state may be old before the policy holds")
        max_skew = declare(self, "max_skew", 0.05, "seconds the stamps of one observation's inputs may be "
                           "apart (approximate-time matching window)")
        synchronizer = declare(self, "synchronizer", "auto", "auto (message_filters if importable), message_filters or twinvla_ros")
        self.max_instruction_length = declare(self, "max_instruction_length", MAX_INSTRUCTION_LENGTH, "longest accepted instruction")
        self.reference_frame = declare(self, "reference_frame", "eef_reference", "frame of the EEF targets")
        camera_namespace = declare(self, "camera_namespace", "/cameras", "prefix of the camera topics")
        instruction_topic = declare(self, "instruction_topic", "/instruction", "language instruction input")
        joint_states_topic = declare(self, "joint_states_topic", "/joint_states", "joint states (gripper openings)")

        self.description = load_description()
        self.policy = self._load_policy(checkpoint, unnorm_key, tokenizer, device, dtype, cfg_scale,
                                        flow_steps, compile_head, cpu_threads)
        from twinvla_ros.model import Guidance, Observation
        self._observation_type = Observation
        self.scheduler = ChunkScheduler(
            SchedulerConfig(mode=ExecutionMode(mode), horizon=self.policy.horizon,
                            action_dim=self.policy.action_dim, control_period=1.0 / control_rate,
                            execution_horizon=min(execution_horizon, self.policy.horizon),
                            max_guidance_weight=max_guidance),
            guidance_factory=Guidance)
        self.worker = InferenceWorker(self._infer, self._snapshot, injected_latency=injected_latency)
        # Each stream's age is checked on arrival (so a silent camera is named as such), and
        # the last time-matched set of all of them must be fresh too. The skew within an
        # observation is bounded by the matcher; across streams' latest arrivals it is not a
        # fault (a camera frame arrives a render later than the state of the same instant).
        self.gate = ObservationGate(
            [StreamLimit(name, max_image_age if name in CAMERAS else max_state_age) for name in STREAMS]
            + [StreamLimit(MATCHED, max_image_age)], max_skew=float("inf"))

        self._lock = threading.Lock()
        self.state = State.IDLE
        self.instruction = ""
        self._latest: tuple | None = None     # the last matched set of STREAMS messages
        self._hold_reason = ""
        self._chunk_index = 0
        self.rejected_instructions = 0
        self.published_actions = 0
        self.holds = 0                        # times a stale or missing input held the arms
        self.sync = StreamSynchronizer(len(STREAMS), queue_size=10, slop=max_skew,
                                       callback=self._on_matched, implementation=synchronizer)
        for index, camera in enumerate(CAMERAS):
            self._subscribe(Image, f"{camera_namespace}/{camera}/color/image_raw", index, SENSOR_QOS)
        for index, side in enumerate(ARMS, start=len(CAMERAS)):
            self._subscribe(PoseStamped, f"{side}_arm/eef_pose", index, COMMAND_QOS)
        self._subscribe(JointState, joint_states_topic, len(STREAMS) - 1, COMMAND_QOS)
        self.create_subscription(String, instruction_topic, self._on_instruction, COMMAND_QOS)
        self._target_pubs = {side: self.create_publisher(PoseStamped, f"{side}_arm/eef_target", COMMAND_QOS)
                             for side in ARMS}
        self._gripper_pubs = {side: self.create_publisher(Float64, f"{side}_arm/gripper_target", COMMAND_QOS)
                              for side in ARMS}
        self.create_service(Trigger, "~/start", self._on_start)
        self.create_service(Trigger, "~/stop", self._on_stop)
        self.create_service(Trigger, "~/pause", self._on_pause)
        self.diagnostics = Diagnostics(self)
        self.tick_meter = RateMeter(window=1200)
        self.create_timer(1.0, self._publish_diagnostics)

        # The control thread must get the interpreter back quickly while the worker runs
        # Python-heavy inference: a 1 ms switch interval (default 5 ms) bounds that wait.
        sys.setswitchinterval(0.001)
        self._period = 1.0 / control_rate
        self._stop_event = threading.Event()
        self._control_thread = threading.Thread(target=self._control_loop, name="policy-control", daemon=True)
        self._control_thread.start()
        self.get_logger().info(
            f"policy ready: {checkpoint or 'embedded tiny demo model'}, {mode} execution at {control_rate:.0f} Hz "
            f"(synchronizer: {self.sync.implementation}); send an instruction on {instruction_topic}")

    # ---- setup ---------------------------------------------------------------------------------

    def _load_policy(self, checkpoint, unnorm_key, tokenizer, device, dtype, cfg_scale, flow_steps,
                     compile_head, cpu_threads):
        import torch

        from twinvla_ros.model import TwinVLAPolicy
        # Leave cores to the control loop, the sim and the drivers: torch's spinning OpenMP
        # workers on an oversubscribed CPU made the tiny model 30x slower here.
        torch.set_num_threads(cpu_threads or max(1, (os.cpu_count() or 2) // 2))
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if dtype == "auto":
            dtype = "bfloat16" if device.startswith("cuda") else "float32"
        torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
        if not checkpoint:
            return TwinVLAPolicy.tiny(seed=0, statistics=sim_workspace_statistics())
        started = time.monotonic()
        self.get_logger().info(f"loading {checkpoint} on {device} ({dtype}) ...")
        policy = TwinVLAPolicy.from_pretrained(
            checkpoint, unnorm_key=unnorm_key or None, device=device, dtype=torch_dtype,
            tokenizer_path=tokenizer or None, cfg_scale=None if cfg_scale < 0 else cfg_scale,
            num_flow_steps=flow_steps or None, compile=compile_head)
        self.get_logger().info(f"loaded {checkpoint} in {time.monotonic() - started:.1f} s")
        return policy

    def _subscribe(self, msg_type, topic: str, index: int, qos) -> None:
        name = STREAMS[index]

        def on_message(msg):
            self.gate.update({name: stamp_to_seconds(msg.header.stamp)})
            self.sync.feed(index, msg)

        self.create_subscription(msg_type, topic, on_message, qos)

    # ---- inputs --------------------------------------------------------------------------------

    def _on_matched(self, *msgs) -> None:
        self._latest = msgs
        self.gate.update({MATCHED: max(stamp_to_seconds(msg.header.stamp) for msg in msgs)})

    def _on_instruction(self, msg: String) -> None:
        try:
            text = validate_instruction(msg.data, self.max_instruction_length)
        except ValueError as error:
            self.rejected_instructions += 1
            self.get_logger().warning(f"rejected instruction: {error}")
            return
        with self._lock:
            self.instruction = text
            self.state = State.RUNNING
            # The old task ends now: its chunk and any inference in flight are dropped.
            self.scheduler.reset()
        self.get_logger().info(f"new task: '{text}'")

    def _on_start(self, request, response):
        with self._lock:
            if not self.instruction:
                response.success, response.message = False, "no instruction yet: publish one on /instruction"
                return response
            self.state = State.RUNNING
            self.scheduler.reset()
        response.success, response.message = True, f"running '{self.instruction}'"
        return response

    def _on_stop(self, request, response):
        with self._lock:
            self.state = State.IDLE
            self.instruction = ""
            self.scheduler.reset()
        response.success, response.message = True, "stopped: arms hold; send an instruction to start again"
        return response

    def _on_pause(self, request, response):
        with self._lock:
            if self.state != State.RUNNING:
                response.success, response.message = False, f"not running (state: {self.state.value})"
                return response
            self.state = State.PAUSED
            self.scheduler.reset()
        response.success, response.message = True, "paused: arms hold; ~/start resumes the task"
        return response

    # ---- control loop (own thread) -------------------------------------------------------------

    def _control_loop(self) -> None:
        next_tick = time.monotonic()
        while not self._stop_event.is_set():
            now = time.monotonic()
            self.tick_meter.tick(now)
            try:
                self._control_tick(now)
            except Exception as error:   # never let one bad tick end the loop
                if not self.context.ok():  # ROS shut down under us (Ctrl-C): a normal end
                    return
                self.get_logger().error(f"control tick failed: {error!r}", throttle_duration_sec=1.0)
            next_tick += self._period
            if next_tick < time.monotonic() - self._period:
                next_tick = time.monotonic()     # fell more than a tick behind: do not burst
            self._stop_event.wait(max(0.0, next_tick - time.monotonic()))

    def _control_tick(self, now: float) -> None:
        with self._lock:
            if self.state != State.RUNNING:
                return
            gate = self.gate.check(self._ros_now())
            if not gate.ok:
                if not self._hold_reason:
                    # The chunk in hand was planned from a world that may have moved on; the
                    # next one starts from fresh inputs once they return.
                    self.scheduler.reset()
                    self.holds += 1
                    self.get_logger().warning(f"holding: {gate.reason}")
                self._hold_reason = gate.reason
                return
            if self._hold_reason:
                self.get_logger().info("inputs fresh again: resuming")
                self._hold_reason = ""
            action = run_control_tick(self.scheduler, self.worker, now)
        if action is not None:
            self._publish_action(action)

    def _ros_now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _snapshot(self):
        """Runs on the control thread when an inference starts: cheap references only."""
        latest = self._latest
        if latest is None or not self.instruction:
            return None
        return self.instruction, latest

    def _infer(self, snapshot, guidance) -> np.ndarray:
        """Runs on the worker thread: messages -> Observation -> (H, 20) chunk in robot units."""
        instruction, msgs = snapshot
        images = [image_to_rgb(msg) for msg in msgs[: len(CAMERAS)]]
        proprio = self._proprio(msgs[3], msgs[4], msgs[5])
        observation = self._observation_type(instruction, images[0], images[1], images[2], proprio)
        self.policy.validate(observation)
        seed = None
        if self.seed >= 0:
            seed = self.seed + self._chunk_index
        self._chunk_index += 1
        return self.policy.sample(self.policy.encode(observation), seed=seed, guidance=guidance)

    def _proprio(self, left: PoseStamped, right: PoseStamped, joints: JointState) -> np.ndarray:
        position = dict(zip(joints.name, joints.position))
        arms = []
        for side, msg in zip(ARMS, (left, right)):
            arm = self.description.arms[side]
            opening = position.get(arm.gripper_joint, 0.0) / arm.gripper_stroke
            arms.append(ArmPose.from_matrix(pose_to_matrix(msg.pose), opening))
        return pack(*arms)

    def _publish_action(self, action: np.ndarray) -> None:
        stamp = self.get_clock().now().to_msg()
        for side, arm in zip(ARMS, unpack(action)):
            target = PoseStamped()
            target.header.stamp = stamp
            target.header.frame_id = self.reference_frame
            target.pose = matrix_to_pose(arm.matrix())
            self._target_pubs[side].publish(target)
            self._gripper_pubs[side].publish(Float64(data=float(np.clip(action[arm_slice(side)][-1], 0.0, 1.0))))
        self.published_actions += 1

    # ---- reporting -----------------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        stats = self.scheduler.stats
        latencies = np.array(self.worker.latencies)
        values = {"state": self.state.value, "instruction": self.instruction,
                  "mode": self.scheduler.config.mode.value,
                  "published_actions": str(self.published_actions),
                  "stall_ticks": str(stats.stall_ticks), "chunks": str(stats.chunks_accepted),
                  "rejected_chunks": str(stats.rejected_chunks), "failed_inferences": str(stats.failed_inferences),
                  "rejected_instructions": str(self.rejected_instructions), "input_holds": str(self.holds),
                  "estimated_delay_ticks": str(self.scheduler.estimated_delay_steps)}
        if latencies.size:
            values["inference_p50_ms"] = f"{np.percentile(latencies, 50) * 1e3:.1f}"
            values["inference_p99_ms"] = f"{np.percentile(latencies, 99) * 1e3:.1f}"
        if stats.chunk_age is not None:
            values["chunk_age_s"] = f"{stats.chunk_age:.3f}"
        if stats.mean_boundary_jump is not None:
            values["mean_boundary_jump"] = f"{stats.mean_boundary_jump:.4f}"
        if stats.mean_plan_change is not None:
            values["mean_plan_change"] = f"{stats.mean_plan_change:.4f}"
        if self._latest is not None:
            stamps = [stamp_to_seconds(msg.header.stamp) for msg in self._latest]
            values["input_skew_ms"] = f"{(max(stamps) - min(stamps)) * 1e3:.1f}"
        values.update({f"tick_{k}": v for k, v in self.tick_meter.summary().items()})
        if stats.last_failure:
            values["last_failure"] = stats.last_failure
        if self.state == State.RUNNING and self._hold_reason:
            level, message = Level.WARN, f"holding: {self._hold_reason}"
        elif self.state == State.RUNNING and stats.failed_inferences and stats.last_failure:
            level, message = Level.WARN, f"inference failing: {stats.last_failure}"
        else:
            level, message = Level.OK, self.state.value
        self.diagnostics.publish([("policy", level, message, values)])

    def close(self) -> None:
        self._stop_event.set()
        self._control_thread.join(timeout=5.0)
        self.worker.stop()


def main(args=None):
    run_node(PolicyNode, args)
