"""policy_node: TwinVLA at 20 Hz that never pauses for the model.

Inputs: the three camera streams, both arms' `eef_pose`, `/joint_states` (gripper openings), and
`/instruction` (std_msgs/String). Outputs every control tick: `<arm>/eef_target` (PoseStamped, in
`eef_reference`, the frame of the model's actions) and `<arm>/gripper_target` (Float64, 0 closed
.. 1 open). Services `~/start`, `~/stop` (hold, forget the task) and `~/pause` (hold, keep the
task). `/diagnostics` once a second: "policy_node: policy" (state, task, counters, latencies)
and "policy_node: callbacks".

All decisions live in twinvla_ros.execution.PolicyRuntime; this node loads the model, converts
messages and runs the control loop on its own thread at `control_rate`, while inference runs on
a background worker. Execution modes: `sync` (the reference: execute the chunk, then infer while
the arms wait), `async` (infer the next chunk while executing), `rtc` (async plus real-time
chunking: the new chunk is guided to continue the one being executed). In async/rtc the next
inference starts when the newest plan's remaining actions just cover the measured latency (p95 of
recent requests, plus `latency_margin_ticks`), or after `execution_horizon` steps, whichever is
first; several inferences may be in flight, so a chunk covers up to (horizon - 1) ticks of
latency beyond the model's own compute. A missing or stale input stream holds the arms (nothing
new is published) until data returns; a stall (no chunk covers the tick: the model slower than a
chunk, a failed inference) re-publishes the last action, so the arm driver's target stays fresh
and the arm stays put. The text of the task in hand re-sent on /instruction continues it (paused:
stays paused); a different text replaces it.

Live parameters (`ros2 param set`): cfg_scale, execution_mode, execution_horizon,
rtc_max_guidance_weight, injected_latency, max_image_age, max_state_age, latency_margin_ticks,
max_inferences_in_flight. The rest is read at start.

Process-wide settings are made by `configure_process()` before the node is built (main() and
the in-process runner call it): a 1 ms interpreter switch interval, so the control thread gets
the interpreter back quickly while the worker runs Python-heavy inference, and torch's CPU
thread count from the environment variable `TWINVLA_CPU_THREADS` (unset or 0: half the cores,
at least 1), leaving cores to the control loop, the sim and the drivers.
"""
from __future__ import annotations

import os
import sys
import threading
import time

import numpy as np
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64, String
from std_srvs.srv import Trigger

from twinvla_ros.execution.instruction import MAX_INSTRUCTION_LENGTH
from twinvla_ros.execution.runtime import CAMERAS, STREAMS, PolicyRuntime, RuntimeSettings
from twinvla_ros.execution.scheduler import ExecutionMode
from twinvla_ros.paths import DEFAULT_POLICY, DEFAULT_POLICY_CHUNK_OFFSET, resolve_checkpoint, resolve_chunk_offset
from twinvla_ros.reporting import Level
from twinvla_ros.robot.bimanual import ARMS, GRIPPER, arm_slice, unpack
from twinvla_ros.robot.description import load_description
from twinvla_ros.ros.messages import image_to_rgb, matrix_to_pose, pose_to_matrix, stamp_to_seconds
from twinvla_ros.ros.node import TwinvlaNode, run_node
from twinvla_ros.ros.qos import COMMAND_QOS, SENSOR_QOS
from twinvla_ros.ros.synchronizer import StreamSynchronizer

__all__ = ["PolicyNode", "configure_process", "main", "sim_workspace_statistics"]

CPU_THREADS_ENV = "TWINVLA_CPU_THREADS"

# Live parameter -> RuntimeSettings field.
LIVE_SETTINGS = {"execution_mode": "mode", "execution_horizon": "execution_horizon",
                 "rtc_max_guidance_weight": "max_guidance_weight", "injected_latency": "injected_latency",
                 "max_image_age": "max_image_age", "max_state_age": "max_state_age",
                 "latency_margin_ticks": "latency_margin_ticks",
                 "max_inferences_in_flight": "max_inferences_in_flight"}


def cpu_threads_from_environment() -> int:
    """torch CPU threads: TWINVLA_CPU_THREADS, or half the cores (at least 1) if unset or 0."""
    text = os.environ.get(CPU_THREADS_ENV, "").strip() or "0"
    try:
        threads = int(text)
    except ValueError:
        raise ValueError(f"{CPU_THREADS_ENV} must be a whole number of threads, got {text!r}") from None
    if threads < 0:
        raise ValueError(f"{CPU_THREADS_ENV} must be >= 0 (0: half the cores), got {threads}")
    return threads or max(1, (os.cpu_count() or 2) // 2)


def configure_process() -> None:
    """Process-wide settings of the policy node; call once before the node is built."""
    # The control thread must get the interpreter back quickly while the worker runs
    # Python-heavy inference: a 1 ms switch interval (default 5 ms) bounds that wait.
    sys.setswitchinterval(0.001)
    import torch

    # Torch's spinning OpenMP workers on an oversubscribed CPU made the tiny model 30x slower.
    torch.set_num_threads(cpu_threads_from_environment())


def sim_workspace_statistics() -> dict:
    """dataset_statistics entry for the embedded demo model: xyz quantiles of the sim table
    workspace (eef_reference frame, each arm on its own side), so that a random tiny model's
    actions land above the table and inside the arm driver's workspace boxes (floor 2 cm above
    the table top). Rotation and gripper are not normalized."""
    from twinvla_ros.model import default_statistics
    return default_statistics(xyz_q01=(0.15, 0.05, 0.0, 0.15, -0.40, 0.0),
                              xyz_q99=(0.42, 0.40, 0.30, 0.42, -0.05, 0.30))


class PolicyNode(TwinvlaNode):
    def __init__(self, **node_kwargs):
        super().__init__("policy_node", **node_kwargs)
        declare = self.parameters.declare
        checkpoint = declare("checkpoint", "default", "TwinVLA checkpoint directory; 'default': the shipped "
                             f"policy ({DEFAULT_POLICY}, trained in the sim); 'tiny': the embedded tiny model "
                             "with random weights")
        unnorm_key = declare("unnorm_key", "", "dataset_statistics.json key for (un)normalization; empty: the only one")
        tokenizer = declare("tokenizer", "", "tokenizer directory if the checkpoint has none (nvidia/Eagle2-1B's)")
        device = declare("device", "auto", "torch device: cpu, cuda, cuda:1 ... or auto")
        dtype = declare("dtype", "auto", "model dtype (auto: bfloat16 on CUDA, float32 on CPU)",
                        choices=("auto", "float32", "bfloat16"))
        cfg_scale = declare("cfg_scale", -1.0, "classifier-free guidance scale (<= 1: none; < 0: the checkpoint's "
                            "default, 1.5 with CFG); a change applies from the next inference on; only for "
                            "checkpoints trained with CFG", low=-1.0, high=10.0, live=True)
        chunk_offset = declare("chunk_offset", -1, "drop the first N steps of every chunk the model predicts (the "
                               "left-conditioned half of a small policy may be unreliable; bench/RESULTS.md); -1: "
                               f"the checkpoint's own ({DEFAULT_POLICY_CHUNK_OFFSET} for the shipped policy, 0 otherwise)",
                               low=-1, high=19)
        flow_steps = declare("flow_steps", 0, "Euler flow-matching steps; 0: the checkpoint's default (10)",
                             low=0, high=1000)
        compile_head = declare("compile", False, "torch.compile the action head (slow first call)")
        seed = declare("seed", -1, "noise seed of the first chunk (then +1 per chunk); < 0: random",
                       low=-1, high=2**31 - 1)
        control_rate = declare("control_rate", 20.0, "control loop rate in Hz (the policy's training rate)",
                               low=1.0, high=200.0)
        mode = declare("execution_mode", "rtc", "chunk execution; a change drops the chunk in hand",
                       choices=tuple(m.value for m in ExecutionMode), live=True)
        execution_horizon = declare("execution_horizon", 10, "async/rtc: most steps executed from a plan before "
                                    "the next inference starts (at most the model's horizon); it starts earlier "
                                    "when the latency needs it", low=1, high=1000, live=True)
        latency_margin = declare("latency_margin_ticks", 2, "async/rtc: control ticks of slack on top of the "
                                 "latency estimate when deciding when to infer", low=0, high=100, live=True)
        max_in_flight = declare("max_inferences_in_flight", 0, "async/rtc: inferences in flight at once "
                                "(pipelined; 1: one at a time, covers at most half a chunk of latency); 0: no "
                                "limit but the model's compute", low=0, high=1000, live=True)
        max_guidance = declare("rtc_max_guidance_weight", 5.0, "rtc: guidance weight clip (beta)",
                               low=0.1, high=100.0, live=True)
        injected_latency = declare("injected_latency", 0.0, "seconds added to every inference (latency experiments)",
                                   low=0.0, high=10.0, live=True)
        max_image_age = declare("max_image_age", 0.5, "seconds an image (and the time-matched input set) may be "
                                "old before the policy holds", low=0.01, high=10.0, live=True)
        max_state_age = declare("max_state_age", 0.3, "seconds the EEF and joint state may be old before the "
                                "policy holds", low=0.01, high=10.0, live=True)
        max_skew = declare("max_skew", 0.05, "seconds the stamps of one observation's inputs may be apart "
                           "(approximate-time matching window)", low=0.001, high=1.0)
        synchronizer = declare("synchronizer", "auto", "input matcher (auto: message_filters if importable)",
                               choices=("auto", "message_filters", "twinvla_ros"))
        max_instruction_length = declare("max_instruction_length", MAX_INSTRUCTION_LENGTH, "longest accepted "
                                         "instruction, characters", low=1, high=100_000)
        camera_namespace = declare("camera_namespace", "/cameras", "prefix of the camera topics")
        instruction_topic = declare("instruction_topic", "/instruction", "language instruction input")
        joint_states_topic = declare("joint_states_topic", "/joint_states", "joint states (gripper openings)")
        self.parameters.set_apply(self._apply_parameters)

        description = load_description()
        self.frame = description.reference_frame          # of the model's actions and the EEF poses
        self._gripper_joints = {side: description.arms[side].gripper_joint for side in ARMS}
        policy = self._load_policy(checkpoint, unnorm_key, tokenizer, device, dtype, flow_steps, compile_head,
                                   chunk_offset)
        # The checkpoint's default scale (what the policy chose without one), for cfg_scale < 0.
        self._default_cfg_scale = float(policy.cfg_scale)
        self._cfg_available = bool(getattr(policy.config, "enable_cfg", False))
        if cfg_scale > 1.0 and not self._cfg_available:
            raise ValueError(f"cfg_scale {cfg_scale} needs a checkpoint trained with classifier-free guidance; "
                             f"{checkpoint} was not (enable_cfg false): use cfg_scale -1")
        policy.cfg_scale = self._cfg_scale_value(cfg_scale)

        from twinvla_ros.model import Guidance, Observation
        self.runtime = PolicyRuntime(
            policy, observation_factory=Observation, decode=self._decode, guidance_factory=Guidance,
            gripper_strokes={side: description.arms[side].gripper_stroke for side in ARMS},
            settings=RuntimeSettings(mode=mode, control_period=1.0 / control_rate,
                                     execution_horizon=execution_horizon, max_guidance_weight=max_guidance,
                                     latency_margin_ticks=latency_margin, max_inferences_in_flight=max_in_flight,
                                     injected_latency=injected_latency, max_image_age=max_image_age,
                                     max_state_age=max_state_age, seed=seed,
                                     max_instruction_length=max_instruction_length))

        self.sync = StreamSynchronizer(len(STREAMS), queue_size=10, slop=max_skew,
                                       callback=self._on_matched, implementation=synchronizer)
        for index, camera in enumerate(CAMERAS):
            self._subscribe(Image, f"{camera_namespace}/{camera}/color/image_raw", index, SENSOR_QOS)
        for index, side in enumerate(ARMS, start=len(CAMERAS)):
            self._subscribe(PoseStamped, f"{side}_arm/eef_pose", index, COMMAND_QOS)
        self._subscribe(JointState, joint_states_topic, len(STREAMS) - 1, COMMAND_QOS)
        self.subscribe(String, instruction_topic, self._on_instruction, COMMAND_QOS)
        self._target_pubs = {side: self.create_publisher(PoseStamped, f"{side}_arm/eef_target", COMMAND_QOS)
                             for side in ARMS}
        self._gripper_pubs = {side: self.create_publisher(Float64, f"{side}_arm/gripper_target", COMMAND_QOS)
                              for side in ARMS}
        self.service(Trigger, "~/start", self._on_start)
        self.service(Trigger, "~/stop", self._on_stop)
        self.service(Trigger, "~/pause", self._on_pause)
        self.timer(1.0, self._publish_diagnostics, "diagnostics")

        self._period = 1.0 / control_rate
        self._stop_event = threading.Event()
        self._control_thread = threading.Thread(target=self._control_loop, name="policy-control", daemon=True)
        self._control_thread.start()
        self.get_logger().info(
            f"policy ready: {checkpoint or 'tiny'} checkpoint, {mode} execution at {control_rate:.0f} Hz "
            f"(synchronizer: {self.sync.implementation}); send an instruction on {instruction_topic}")

    # ---- setup ---------------------------------------------------------------------------------

    def _load_policy(self, checkpoint, unnorm_key, tokenizer, device, dtype, flow_steps, compile_head, chunk_offset):
        import torch

        from twinvla_ros.model import TwinVLAPolicy
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if dtype == "auto":
            dtype = "bfloat16" if device.startswith("cuda") else "float32"
        torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
        chunk_offset = resolve_chunk_offset(checkpoint, chunk_offset)
        checkpoint = resolve_checkpoint(checkpoint)
        if not checkpoint:
            policy = TwinVLAPolicy.tiny(seed=0, statistics=sim_workspace_statistics(), chunk_offset=chunk_offset)
            if flow_steps:
                policy.num_flow_steps = int(flow_steps)
            return policy
        started = time.monotonic()
        self.get_logger().info(f"loading {checkpoint} on {device} ({dtype}) ...")
        policy = TwinVLAPolicy.from_pretrained(
            checkpoint, unnorm_key=unnorm_key or None, device=device, dtype=torch_dtype,
            tokenizer_path=tokenizer or None, num_flow_steps=flow_steps or None, compile=compile_head,
            chunk_offset=chunk_offset)
        self.get_logger().info(f"loaded {checkpoint} in {time.monotonic() - started:.1f} s")
        return policy

    def _cfg_scale_value(self, parameter: float) -> float:
        return self._default_cfg_scale if parameter < 0 else float(parameter)

    def _apply_parameters(self, changes: dict) -> str | None:
        if "cfg_scale" in changes and not self._cfg_available:
            return ("cfg_scale: this checkpoint was trained without classifier-free guidance (enable_cfg "
                    "false), so there is no unconditional branch to scale")
        try:
            self.runtime.reconfigure(**{LIVE_SETTINGS[name]: value for name, value in changes.items()
                                        if name in LIVE_SETTINGS})
        except ValueError as error:
            return str(error)
        if "cfg_scale" in changes:
            self.runtime.set_cfg_scale(self._cfg_scale_value(changes["cfg_scale"]))
        self.get_logger().info("set " + ", ".join(f"{name}={value!r}" for name, value in changes.items()))
        return None

    def _subscribe(self, msg_type, topic: str, index: int, qos) -> None:
        name = STREAMS[index]

        def on_message(msg):
            self.runtime.stream_arrived(name, stamp_to_seconds(msg.header.stamp))
            self.sync.feed(index, msg)

        self.subscribe(msg_type, topic, on_message, qos, what=f"{topic} ({name}) callback")

    # ---- inputs --------------------------------------------------------------------------------

    def _on_matched(self, *msgs) -> None:
        self.runtime.inputs_matched(msgs, [stamp_to_seconds(msg.header.stamp) for msg in msgs])

    def _decode(self, msgs) -> tuple[dict, dict, dict]:
        """Runs on the worker thread: a matched set of STREAMS messages -> (images by camera,
        {side: 4x4 EEF pose}, {side: gripper joint position, m}); ValueError on a bad input."""
        images = {camera: image_to_rgb(msg) for camera, msg in zip(CAMERAS, msgs[: len(CAMERAS)])}
        poses = {}
        for side, msg in zip(ARMS, msgs[len(CAMERAS): len(CAMERAS) + len(ARMS)]):
            if msg.header.frame_id != self.frame:
                raise ValueError(f"{side} eef_pose is in frame '{msg.header.frame_id}', "
                                 f"the policy needs '{self.frame}'")
            poses[side] = pose_to_matrix(msg.pose)
        joints = msgs[-1]
        if len(joints.name) != len(joints.position):
            raise ValueError(f"joint_states has {len(joints.name)} names but {len(joints.position)} positions")
        position = dict(zip(joints.name, joints.position))
        grippers = {}
        for side, joint in self._gripper_joints.items():
            if joint not in position:
                raise ValueError(f"joint_states has no '{joint}' (the {side} gripper)")
            grippers[side] = float(position[joint])
        return images, poses, grippers

    def _on_instruction(self, msg: String) -> None:
        repeats = self.runtime.repeated_instructions
        accepted, message = self.runtime.set_instruction(msg.data, time.monotonic())
        if self.runtime.repeated_instructions > repeats:
            self.get_logger().debug(message)     # a repeating publisher: counted on /diagnostics
        else:
            self.log(Level.OK if accepted else Level.WARN, message)

    def _answer(self, response, result: tuple[bool, str]):
        response.success, response.message = result
        return response

    def _on_start(self, request, response):
        return self._answer(response, self.runtime.start())

    def _on_stop(self, request, response):
        return self._answer(response, self.runtime.stop(time.monotonic()))

    def _on_pause(self, request, response):
        return self._answer(response, self.runtime.pause())

    # ---- control loop (own thread) -------------------------------------------------------------

    def _control_loop(self) -> None:
        next_tick = time.monotonic()
        while not self._stop_event.is_set():
            try:
                action = self.runtime.tick(time.monotonic(), self.ros_now())
                if action is not None:        # a new action, or on a stall the last one again
                    self._publish_action(action)
            except Exception as error:   # noqa: BLE001 -- one bad tick never ends the loop
                if not self.context.ok():  # ROS shut down under us (Ctrl-C): a normal end
                    return
                self.report_failure("control tick", error)
            for level, message in self.runtime.events.drain():
                self.log(level, message)
            next_tick += self._period
            if next_tick < time.monotonic() - self._period:
                next_tick = time.monotonic()     # fell more than a tick behind: do not burst
            self._stop_event.wait(max(0.0, next_tick - time.monotonic()))

    def _publish_action(self, action: np.ndarray) -> None:
        stamp = self.get_clock().now().to_msg()
        for side, arm in zip(ARMS, unpack(action)):
            target = PoseStamped()
            target.header.stamp = stamp
            target.header.frame_id = self.frame
            target.pose = matrix_to_pose(arm.matrix())
            self._target_pubs[side].publish(target)
            opening = float(np.clip(action[arm_slice(side)][GRIPPER], 0.0, 1.0))
            self._gripper_pubs[side].publish(Float64(data=opening))

    # ---- reporting -----------------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        self.publish_diagnostics([("policy", self.runtime.status())])

    def close(self) -> None:
        self._stop_event.set()
        self._control_thread.join(timeout=5.0)
        self.runtime.close()


def main(args=None):
    run_node(PolicyNode, args, setup_process=configure_process)
