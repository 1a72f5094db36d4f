"""sim_node: the MuJoCo sim of Anubis in real time, with the camera topics of the real robot.

Publishes `/cameras/{ego,wrist_left,wrist_right}/color/image_raw` + `camera_info` (rgb8,
sensor-data QoS, realsense-ros names) and the simulated motors' `/sim/joint_states`; takes the
arm driver's joint targets on `/sim/joint_commands` and torque on/off on `/sim/torque` (the
"sim bus"). Service `~/reset` (Trigger) puts the robot home and places the objects from the
`seed` parameter (same seed, same poses; set it with `ros2 param set`), returning the poses.
Service `~/task_status` (Trigger) reports the task's success check on the live object poses
(twinvla_ros.sim.tasks), as JSON {"task", "success", "reason", "objects": {name: [x y z qw qx qy
qz]}} in the response message (base_link frame); the Trigger's own `success` says only that
the check ran.

Physics and rendering run in two threads of their own: physics paces itself to the wall clock
(2 ms steps, caught up in batches), rendering runs at `camera_rate` from snapshots, so a slow
render never slows physics.
"""
from __future__ import annotations

import json
import threading
import time
import traceback
from collections import deque

import numpy as np
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_srvs.srv import Trigger

from twinvla_ros.hardware.cameras import CameraConfig
from twinvla_ros.hardware.cameras.sim import SimCamera
from twinvla_ros.reporting import Level, RateMeter, Status
from twinvla_ros.ros.messages import camera_info, rgb_to_image, seconds_to_stamp
from twinvla_ros.ros.node import TwinvlaNode, run_node
from twinvla_ros.ros.qos import COMMAND_QOS, SENSOR_QOS
from twinvla_ros.sim import CAMERAS, TASKS, SimConfig, SimWorld, task_success


class SimNode(TwinvlaNode):
    def __init__(self, **node_kwargs):
        super().__init__("sim_node", hardware_id="mujoco", **node_kwargs)
        declare = self.parameters.declare
        config = SimConfig(
            task=declare("task", "handover_box", "scene", choices=tuple(TASKS)),
            timestep=declare("timestep", 0.002, "physics step in seconds", low=0.0005, high=0.01),
            image_height=declare("image_height", 240, "camera image height in pixels", low=16, high=2160),
            image_width=declare("image_width", 320, "camera image width in pixels", low=16, high=3840),
            seed=declare("seed", 0, "object placement seed used at start and by ~/reset", low=0,
                         high=2**31 - 1, live=True),
        )
        camera_rate = declare("camera_rate", 15.0, "rate of the three camera streams in Hz", low=0.5, high=90.0)
        self._muted = set(declare("muted_cameras", [""], "cameras whose stream is stopped (fault injection: "
                                  "ego, wrist_left, wrist_right; [''] for none)", live=True)) - {""}
        joint_state_rate = declare("joint_state_rate", 100.0, "rate of /sim/joint_states in Hz (also how "
                                   "often physics catches up)", low=10.0, high=1000.0)
        camera_namespace = declare("camera_namespace", "/cameras", "prefix of the camera topics")
        joint_states_topic = declare("joint_states_topic", "/sim/joint_states", "simulated motor states")
        commands_topic = declare("joint_commands_topic", "/sim/joint_commands", "joint targets input")
        torque_topic = declare("torque_topic", "/sim/torque", "torque on/off input (effort 1/0 per joint)")
        self.parameters.set_apply(self._apply_parameters)

        self.world = SimWorld(config)
        self.cameras = {name: SimCamera(self.world, CameraConfig(name, config.image_width, config.image_height,
                                                                 camera_rate), clock=self.ros_now)
                        for name in CAMERAS}
        self._image_pubs = {}
        self._info_pubs = {}
        for camera in CAMERAS:
            base = f"{camera_namespace}/{camera}/color"
            self._image_pubs[camera] = self.create_publisher(Image, f"{base}/image_raw", SENSOR_QOS)
            self._info_pubs[camera] = self.create_publisher(CameraInfo, f"{base}/camera_info", SENSOR_QOS)
        self._state_pub = self.create_publisher(JointState, joint_states_topic, COMMAND_QOS)
        self.subscribe(JointState, commands_topic, self._on_commands, COMMAND_QOS)
        self.subscribe(JointState, torque_topic, self._on_torque, COMMAND_QOS)
        self.service(Trigger, "~/reset", self._on_reset)
        self.service(Trigger, "~/task_status", self._on_task_status)
        self.camera_meter = RateMeter(window=100)
        self.render_seconds: deque[float] = deque(maxlen=100)
        self._rejected_commands = 0
        self.commands_received = 0
        self._realtime_factor = 1.0     # simulated / wall seconds over the last ~2 s
        self._dead_thread = ""

        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._guarded, args=(self._physics_loop, 1.0 / joint_state_rate),
                             name="sim-physics", daemon=True),
            threading.Thread(target=self._guarded, args=(self._camera_loop, 1.0 / camera_rate),
                             name="sim-cameras", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        self.timer(1.0, self._publish_diagnostics, "diagnostics")
        self.get_logger().info(f"sim up: task={config.task}, cameras {config.image_width}x{config.image_height} "
                               f"at {camera_rate:.0f} Hz, physics dt {config.timestep * 1e3:.1f} ms")

    def _apply_parameters(self, changes: dict) -> str | None:
        if "muted_cameras" in changes:
            muted = set(changes["muted_cameras"]) - {""}
            unknown = muted - set(CAMERAS)
            if unknown:
                return f"unknown cameras {sorted(unknown)}; cameras: {', '.join(CAMERAS)}"
            self._muted = muted
        return None      # a new seed is read by the next ~/reset

    # ---- threads -------------------------------------------------------------------------------

    def _guarded(self, loop, period: float) -> None:
        """A dead physics or camera thread must be loud: the robot would freeze silently."""
        try:
            loop(period)
        except Exception:
            if not self.context.ok():      # ROS shut down under us (Ctrl-C): a normal end
                return
            self.get_logger().fatal(f"{threading.current_thread().name} stopped:\n{traceback.format_exc()}")
            self._dead_thread = threading.current_thread().name
            raise

    def _physics_loop(self, state_period: float) -> None:
        dt = self.world.config.timestep
        last = time.monotonic()
        next_state = last
        debt = 0.0                      # wall time not yet simulated, s
        window_start, window_sim = last, self.world.time
        while not self._stop.is_set():
            now = time.monotonic()
            # Pace on elapsed wall time only (never on the sim clock, which a reset or a
            # recovered instability may move). After a stall (machine overloaded) at most
            # 50 ms are caught up: the sim slows down rather than jumping ahead.
            debt = min(debt + now - last, 0.05)
            last = now
            steps = int(debt / dt)
            if steps > 0:
                self.world.step(steps)
                debt -= steps * dt
            if now >= next_state:
                self._publish_joint_state()
                next_state += state_period
                if next_state < now:
                    next_state = now + state_period
            if now - window_start >= 2.0:
                self._realtime_factor = (self.world.time - window_sim) / (now - window_start)
                window_start, window_sim = now, self.world.time
            # Wake at the joint-state rate, not every physics step: the steps are batched, and
            # fewer wake-ups leave the interpreter to the other nodes of an in-process graph.
            self._stop.wait(max(0.0, next_state - time.monotonic()))

    def _camera_loop(self, period: float) -> None:
        next_frame = time.monotonic()
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                frames = {name: camera.read() for name, camera in self.cameras.items()}
            except RuntimeError:          # world closed during shutdown
                return
            self.render_seconds.append(time.monotonic() - started)
            for name, frame in frames.items():
                if name in self._muted:
                    continue
                stamp = seconds_to_stamp(frame.stamp)
                intrinsics = self.cameras[name].intrinsics
                self._image_pubs[name].publish(rgb_to_image(frame.image, stamp, intrinsics.frame_id))
                self._info_pubs[name].publish(camera_info(intrinsics, stamp))
            self.camera_meter.tick()
            next_frame += period
            now = time.monotonic()
            if next_frame < now - period:   # more than a frame behind: restart, do not burst
                next_frame = now
            self._stop.wait(max(0.0, next_frame - now))

    def _publish_joint_state(self) -> None:
        positions, velocities, efforts = self.world.joint_state()
        msg = JointState(name=list(self.world.joint_names), position=positions.tolist(),
                         velocity=velocities.tolist(), effort=efforts.tolist())
        msg.header.stamp = self.get_clock().now().to_msg()
        self._state_pub.publish(msg)

    # ---- callbacks -----------------------------------------------------------------------------

    def _on_commands(self, msg: JointState) -> None:
        self.commands_received += 1
        try:
            if len(msg.name) != len(msg.position):
                raise ValueError(f"{len(msg.name)} names but {len(msg.position)} positions")
            self.world.set_joint_targets(dict(zip(msg.name, msg.position)))
        except ValueError as error:
            self._rejected_commands += 1
            self.get_logger().warning(f"rejected joint command: {error}", throttle_duration_sec=1.0)

    def _on_torque(self, msg: JointState) -> None:
        # The sim switches all actuators together; the driver enables both arms at once.
        if msg.effort:
            self.world.set_torque(all(e > 0.5 for e in msg.effort))

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response):
        seed = int(self.get_parameter("seed").value)
        poses = self.world.reset(seed)
        response.success = True
        response.message = json.dumps({"seed": seed, "objects": {k: np.round(v, 6).tolist() for k, v in poses.items()}})
        self.get_logger().info(f"reset with seed {seed}")
        return response

    def _on_task_status(self, request: Trigger.Request, response: Trigger.Response):
        poses = self.world.object_poses()
        success, reason = task_success(self.world.config.task, poses)
        response.success = True
        response.message = json.dumps({"task": self.world.config.task, "success": success, "reason": reason,
                                       "objects": {k: np.round(v, 6).tolist() for k, v in poses.items()}})
        return response

    def _publish_diagnostics(self) -> None:
        values = {"realtime_factor": f"{self._realtime_factor:.3f}", "sim_time": f"{self.world.time:.2f}",
                  "commands_received": str(self.commands_received),
                  "rejected_commands": str(self._rejected_commands),
                  "torque": str(self.world.torque_enabled)}
        values.update({f"camera_{k}": v for k, v in self.camera_meter.summary().items()})
        if self.render_seconds:
            values["render_3cams_ms"] = f"{np.median(list(self.render_seconds)) * 1e3:.1f}"
        if self._dead_thread:
            status = Status(Level.ERROR, f"{self._dead_thread} thread died: the sim is frozen", values)
        elif self._realtime_factor > 0.9:
            status = Status(Level.OK, "running", values)
        else:
            status = Status(Level.WARN, f"slower than real time ({self._realtime_factor:.2f}x)", values)
        self.publish_diagnostics([("simulation", status)])

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5.0)
        self.world.close()


def main(args=None):
    run_node(SimNode, args)
