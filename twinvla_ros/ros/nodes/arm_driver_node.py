"""arm_driver_node: the Anubis EEF interface of both arms, with safety, over an arm bus.

Subscribes (per arm, under `left_arm/` and `right_arm/`): `eef_target` (PoseStamped),
`gripper_target` (Float64, 0 closed .. 1 open), `joint_command` (JointState, for leader arms);
and `/estop` (Bool, latched). Publishes `/joint_states`, `<arm>/eef_pose`, `/diagnostics`.
Services: `~/enable` (SetBool: torque), `~/go_home`, `~/clear_estop` (Trigger).
All logic lives in twinvla_ros.control; this node converts messages and runs the servo timer.
"""
from __future__ import annotations

import time
from collections import deque

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64
from std_srvs.srv import SetBool, Trigger

from twinvla_ros.robot.bimanual import ARMS
from twinvla_ros.hardware.motors import ArmBus, BusError, SimArmBus
from twinvla_ros.control.controller import ArmController
from twinvla_ros.reporting import Level
from twinvla_ros.control.safety import SafetyLimits
from twinvla_ros.robot.description import load_description
from twinvla_ros.robot.kinematics import ArmKinematics
from twinvla_ros.ros.common import (run_node, COMMAND_QOS, LATCHED_QOS, Diagnostics, RateMeter, declare,
                                      matrix_to_pose, pose_to_matrix)

BACKENDS = ("sim", "dynamixel")


class ArmDriverNode(Node):
    def __init__(self, **node_kwargs):
        super().__init__("arm_driver_node", **node_kwargs)
        self.backend = declare(self, "backend", "sim", f"motor backend: one of {BACKENDS}")
        servo_rate = declare(self, "servo_rate", 100.0, "servo loop rate in Hz (IK + safety per tick)")
        state_rate = declare(self, "state_rate", 50.0, "rate of /joint_states and eef_pose in Hz")
        self.reference_frame = declare(self, "reference_frame", "eef_reference",
                                       "frame of eef_pose and of eef_target (base_link also accepted)")
        joint_states_topic = declare(self, "joint_states_topic", "/joint_states", "joint state output")
        estop_topic = declare(self, "estop_topic", "/estop", "e-stop input (std_msgs/Bool, latched)")
        enable_on_start = declare(self, "enable_on_start", True, "torque on (holding in place) at start")
        defaults = SafetyLimits()
        limits = SafetyLimits(
            joint_velocity_scale=declare(self, "joint_velocity_scale", defaults.joint_velocity_scale,
                                         "fraction of the URDF joint velocity limits the driver may use"),
            max_eef_speed=declare(self, "max_eef_speed", defaults.max_eef_speed, "EEF setpoint speed cap, m/s"),
            max_eef_angular_speed=declare(self, "max_eef_angular_speed", defaults.max_eef_angular_speed,
                                          "EEF setpoint angular speed cap, rad/s"),
            max_gripper_speed=declare(self, "max_gripper_speed", defaults.max_gripper_speed,
                                      "gripper speed cap, fraction of the stroke per second"),
            workspace_min=tuple(declare(self, "workspace_min", list(defaults.workspace_min),
                                        "EEF workspace box lower corner (x, y, z) in the reference frame, m")),
            workspace_max=tuple(declare(self, "workspace_max", list(defaults.workspace_max),
                                        "EEF workspace box upper corner (x, y, z) in the reference frame, m")),
            stale_timeout=declare(self, "stale_timeout", defaults.stale_timeout,
                                  "seconds without a command before the arm holds"),
            bus_timeout=declare(self, "bus_timeout", defaults.bus_timeout,
                                "seconds without a joint reading before the arm holds and reports an error"),
            ik_position_tolerance=declare(self, "ik_position_tolerance", defaults.ik_position_tolerance,
                                          "IK residual (m) above which a target counts as unreachable"),
            ik_rotation_tolerance=declare(self, "ik_rotation_tolerance", defaults.ik_rotation_tolerance,
                                          "IK residual (rad) above which a target counts as unreachable"),
            accepted_frames=(self.reference_frame, "base_link"),
        )

        description = load_description()
        self.description = description
        self.controllers: dict[str, ArmController] = {}
        self.buses: dict[str, ArmBus] = {}
        self._make_buses(description)
        for side in ARMS:
            kinematics = ArmKinematics(description, side)
            base_to_reference = np.linalg.inv(kinematics.reference_in_base())
            self.controllers[side] = ArmController(
                description.arms[side], kinematics, limits, servo_rate=servo_rate,
                reference_frame=self.reference_frame, base_to_reference=base_to_reference)
            self._subscribe_arm(side)

        self._joint_state_pub = self.create_publisher(JointState, joint_states_topic, COMMAND_QOS)
        self._pose_pubs = {side: self.create_publisher(PoseStamped, f"{side}_arm/eef_pose", COMMAND_QOS)
                           for side in ARMS}
        self._estop_pressed = False
        self.create_subscription(Bool, estop_topic, self._on_estop, LATCHED_QOS)
        self.create_service(SetBool, "~/enable", self._on_enable)
        self.create_service(Trigger, "~/go_home", self._on_go_home)
        self.create_service(Trigger, "~/clear_estop", self._on_clear_estop)
        self.diagnostics = Diagnostics(self)
        self.loop_rate = RateMeter()
        # EEF command received -> joint target written, per command (for the bench and diagnostics).
        self.command_latencies: deque[float] = deque(maxlen=1000)
        self._pending_command: dict[str, float] = {}

        self._state_every = max(1, int(round(servo_rate / state_rate)))
        self._tick_count = 0
        self._last_diagnostics = 0.0
        for side in ARMS:
            self.controllers[side].set_enabled(enable_on_start)
        self._servo_timer = self.create_timer(1.0 / servo_rate, self._servo_tick)
        self.get_logger().info(f"arm driver up: backend={self.backend}, servo {servo_rate:.0f} Hz, "
                               f"poses in '{self.reference_frame}'")

    # ---- setup ---------------------------------------------------------------------------------

    def _make_buses(self, description) -> None:
        if self.backend == "sim":
            names_topic = declare(self, "sim_joint_states_topic", "/sim/joint_states", "sim joint states input")
            command_topic = declare(self, "sim_joint_commands_topic", "/sim/joint_commands", "sim joint targets output")
            torque_topic = declare(self, "sim_torque_topic", "/sim/torque", "sim torque on/off per joint output")
            command_pub = self.create_publisher(JointState, command_topic, COMMAND_QOS)
            torque_pub = self.create_publisher(JointState, torque_topic, COMMAND_QOS)

            pending: dict[str, float] = {}

            def send_targets(names, positions):
                pending.update(zip(names, positions.tolist()))

            def flush_targets():
                # Both arms' targets of one tick travel in one message: half the traffic.
                if pending:
                    msg = JointState(name=list(pending), position=list(pending.values()))
                    msg.header.stamp = self.get_clock().now().to_msg()
                    command_pub.publish(msg)
                    pending.clear()

            self._flush_bus = flush_targets

            def send_torque(names, enabled):
                # JointState as a per-joint on/off list: effort 1 = torque on, 0 = off.
                torque_pub.publish(JointState(name=list(names), effort=[1.0 if enabled else 0.0] * len(names)))

            for side in ARMS:
                arm = description.arms[side]
                self.buses[side] = SimArmBus([*arm.joint_names, arm.gripper_joint], send_targets,
                                             send_torque, time.monotonic)

            def on_sim_state(msg: JointState):
                for bus in self.buses.values():
                    bus.on_joint_state(msg.name, msg.position, msg.velocity, msg.effort)

            self.create_subscription(JointState, names_topic, on_sim_state, COMMAND_QOS)
        elif self.backend == "dynamixel":
            raise RuntimeError("backend 'dynamixel' is not available in this build yet (hardware issue); "
                               "refusing to start rather than fall back to the simulator")
        else:
            raise ValueError(f"unknown backend '{self.backend}': choose one of {BACKENDS}")

    def _subscribe_arm(self, side: str) -> None:
        controller = self.controllers[side]
        arm = self.description.arms[side]

        def on_eef_target(msg: PoseStamped):
            now = time.monotonic()
            if controller.command_eef(pose_to_matrix(msg.pose), msg.header.frame_id, now) is None:
                self._pending_command.setdefault(side, now)

        def on_gripper_target(msg: Float64):
            controller.command_gripper(msg.data, time.monotonic())

        def on_joint_command(msg: JointState):
            index = {name: i for i, name in enumerate(msg.name)}
            if len(msg.position) != len(msg.name):
                controller.reject("joint command", f"{len(msg.name)} names but {len(msg.position)} positions")
                return
            missing = [name for name in arm.joint_names if name not in index]
            if missing:
                controller.reject("joint command", f"joints {missing} missing")
                return
            q = np.array([msg.position[index[name]] for name in arm.joint_names])
            gripper = None
            if arm.gripper_joint in index:
                gripper = msg.position[index[arm.gripper_joint]] / arm.gripper_stroke
            controller.command_joints(q, time.monotonic(), gripper)

        self.create_subscription(PoseStamped, f"{side}_arm/eef_target", on_eef_target, COMMAND_QOS)
        self.create_subscription(Float64, f"{side}_arm/gripper_target", on_gripper_target, COMMAND_QOS)
        self.create_subscription(JointState, f"{side}_arm/joint_command", on_joint_command, COMMAND_QOS)

    # ---- callbacks -----------------------------------------------------------------------------

    def _on_estop(self, msg: Bool) -> None:
        self._estop_pressed = bool(msg.data)
        if msg.data:
            for controller in self.controllers.values():
                controller.engage_estop()

    def _on_enable(self, request: SetBool.Request, response: SetBool.Response):
        for side, controller in self.controllers.items():
            self.buses[side].set_torque(request.data)
            controller.set_enabled(request.data)
        response.success = True
        response.message = "torque on" if request.data else "torque off"
        return response

    def _on_go_home(self, request: Trigger.Request, response: Trigger.Response):
        reasons = [r for r in (c.go_home(time.monotonic()) for c in self.controllers.values()) if r]
        response.success = not reasons
        response.message = "; ".join(reasons) if reasons else "moving to the home pose"
        return response

    def _on_clear_estop(self, request: Trigger.Request, response: Trigger.Response):
        if self._estop_pressed:
            response.success = False
            response.message = "e-stop is still pressed (/estop is true): release it first"
            return response
        for controller in self.controllers.values():
            controller.clear_estop()
        response.success = True
        response.message = "e-stop cleared; arms hold until the next command"
        return response

    # ---- servo loop ----------------------------------------------------------------------------

    def _servo_tick(self) -> None:
        now = time.monotonic()
        self.loop_rate.tick(now)
        report_now = False
        for side, controller in self.controllers.items():
            bus = self.buses[side]
            try:
                reading = bus.read()
            except BusError:
                reading = None
            targets = controller.update(now, reading)
            if targets is not None:
                bus.write_targets(targets)
                received = self._pending_command.pop(side, None)
                if received is not None:
                    self.command_latencies.append(time.monotonic() - received)
            events = controller.drain_events()
            for level, event in events:
                self._log(level, event)
            report_now = report_now or bool(events)
        self._flush_bus()
        self._tick_count += 1
        if self._tick_count % self._state_every == 0:
            self._publish_state()
        # Twice a second, and at once when something happened (e-stop, rejection, stale ...).
        if report_now or now - self._last_diagnostics >= 0.5:
            self._publish_diagnostics()
            self._last_diagnostics = now

    def _log(self, level: Level, message: str) -> None:
        # One call site per severity: rclpy refuses a call site that changes severity.
        if level == Level.ERROR:
            self.get_logger().error(message)
        elif level == Level.WARN:
            self.get_logger().warning(message)
        else:
            self.get_logger().info(message)

    def _publish_state(self) -> None:
        stamp = self.get_clock().now().to_msg()
        names, positions, velocities, efforts = [], [], [], []
        for side, controller in self.controllers.items():
            reading = controller.measured
            # A stale reading is not re-published with a fresh stamp: consumers must see the
            # silence (the policy holds on it), not a frozen robot that looks alive.
            if reading is None or time.monotonic() - reading.stamp > controller.limits.bus_timeout:
                return
            names += self.buses[side].joint_names
            positions += reading.positions.tolist()
            velocities += reading.velocities.tolist()
            efforts += reading.efforts.tolist()
            pose = PoseStamped()
            pose.header.stamp = stamp
            pose.header.frame_id = self.reference_frame
            pose.pose = matrix_to_pose(controller.measured_pose())
            self._pose_pubs[side].publish(pose)
        msg = JointState(name=names, position=positions, velocity=velocities, effort=efforts)
        msg.header.stamp = stamp
        self._joint_state_pub.publish(msg)

    def _publish_diagnostics(self) -> None:
        statuses = []
        for side, controller in self.controllers.items():
            status = controller.status()
            statuses.append((f"{side} arm", status.level, status.message, status.values))
        loop = self.loop_rate.summary()
        latencies = np.array(self.command_latencies)
        if latencies.size:
            loop["eef_cmd_to_joint_target_p50_ms"] = f"{np.percentile(latencies, 50) * 1e3:.2f}"
        statuses.append(("servo loop", Level.OK, f"{self.backend} backend", loop))
        self.diagnostics.publish(statuses)


    def close(self) -> None:
        """Safe shutdown: the last command the motors get is to hold where they are. Torque
        stays on (an arm with torque off falls); disable it with ~/enable first if wanted."""
        self._servo_timer.cancel()
        if self.context.ok():          # the sim bus is a topic: gone once ROS is shut down
            for side, controller in self.controllers.items():
                reading = controller.measured
                if reading is not None and controller.enabled:
                    self.buses[side].write_targets(reading.positions)
            self._flush_bus()
            self.get_logger().info("arm driver stopped: arms hold their last measured position")
        for bus in self.buses.values():
            bus.close()


def main(args=None):
    run_node(ArmDriverNode, args)
