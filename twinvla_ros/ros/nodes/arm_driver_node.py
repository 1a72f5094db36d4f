"""arm_driver_node: the Anubis EEF interface of both arms, with safety, over an arm bus.

Subscribes (per arm, under `left_arm/` and `right_arm/`): `eef_target` (PoseStamped in
`eef_reference` or `base_link`), `gripper_target` (Float64, 0 closed .. 1 open), `joint_command`
(JointState, for leader arms); and `/estop` (Bool, latched). Publishes `/joint_states`,
`<arm>/eef_pose` (in `eef_reference`), `/robot_description` (the URDF, latched) and
`/diagnostics`. Services: `~/enable` (SetBool: torque), `~/go_home`, `~/clear_estop` (Trigger).

A managed (lifecycle) node, as ros2_control runs hardware: configure opens the bus and reads
the joints (torque untouched: nothing moves), activate turns torque on holding the measured
pose and accepts commands, deactivate holds (torque on, commands refused), error and shutdown
put the motors in the configured safe state (`torque_on_shutdown` of the hardware config for
Dynamixel: hold or off). With `autostart` (default) it brings itself to active at start.

All logic lives in twinvla_ros.control; this node converts and checks messages (a pose that is
not finite, absurdly large or has a non-unit quaternion is rejected before any arithmetic on
it), and runs the servo timer. Speed caps, workspace boxes, timeouts and tracking margins are
live parameters (`ros2 param set` takes effect on the next servo tick); the rest is read-only.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import replace

import numpy as np
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64, String
from std_srvs.srv import SetBool, Trigger

from twinvla_ros.control.controller import ArmController
from twinvla_ros.control.safety import SafetyLimits
from twinvla_ros.hardware.motors import ArmBus, BusError
from twinvla_ros.hardware.motors.sim import SimArmBus
from twinvla_ros.reporting import Level, RateMeter, Status
from twinvla_ros.robot.bimanual import ARMS
from twinvla_ros.robot.description import load_description
from twinvla_ros.robot.kinematics import ArmKinematics
from twinvla_ros.ros.messages import matrix_to_pose, pose_to_matrix, stamp_to_seconds
from twinvla_ros.ros.node import TwinvlaLifecycleNode, run_node
from twinvla_ros.ros.qos import COMMAND_QOS, LATCHED_QOS

BACKENDS = ("sim", "dynamixel")
REFERENCE_FRAME = "eef_reference"     # of eef_pose, and what base_link targets are converted to

# Limits that `ros2 param set` changes while the arms run: (parameter, SafetyLimits field, description, low, high).
LIVE_LIMITS = (
    ("joint_velocity_scale", "joint_velocity_scale", "fraction of the URDF joint velocity limits the driver may use", 0.01, 1.0),
    ("max_eef_speed", "max_eef_speed", "EEF setpoint speed cap, m/s", 0.01, 2.0),
    ("max_eef_angular_speed", "max_eef_angular_speed", "EEF setpoint angular speed cap, rad/s", 0.05, 6.0),
    ("max_gripper_speed", "max_gripper_speed", "gripper speed cap, fraction of the stroke per second", 0.05, 10.0),
    ("stale_timeout", "stale_timeout", "seconds without a command before the arm holds", 0.05, 5.0),
    ("max_tracking_error", "max_tracking_error", "rad the joint command may lead the measured position "
     "(also bounded by max_tracking_lag x the joint's cap); beyond it the arm counts as blocked", 0.005, 0.5),
    ("max_tracking_lag", "max_tracking_lag", "s of motion at the cap the joint command may lead the measured "
     "position: ~1.1 x the servo's lag behind a ramp at the cap", 0.005, 0.5),
    ("max_eef_tracking_error", "max_eef_tracking_error", "m the EEF setpoint may lead the measured EEF "
     "while the joints are held back", 0.002, 0.3),
    ("max_eef_tracking_rotation", "max_eef_tracking_rotation", "rad the EEF setpoint may lead the measured "
     "EEF orientation while the joints are held back", 0.01, 1.0),
    ("max_gripper_tracking_error", "max_gripper_tracking_error", "m of finger travel the gripper command may "
     "lead the fingers: also the squeeze on a held object", 0.0002, 0.02),
    ("blocked_hold_time", "blocked_hold_time", "seconds an arm may stay blocked before it holds its measured pose",
     0.0, 10.0),
    ("max_target_future", "max_target_future", "seconds a target's stamp may lie in the future", 0.0, 1.0),
)


class ArmDriverNode(TwinvlaLifecycleNode):
    def __init__(self, **node_kwargs):
        super().__init__("arm_driver_node", **node_kwargs)
        declare = self.parameters.declare
        self.backend = declare("backend", "sim", "motor backend", choices=BACKENDS)
        servo_rate = declare("servo_rate", 100.0, "servo loop rate in Hz (IK + safety per tick)", low=20.0, high=1000.0)
        state_rate = declare("state_rate", 50.0, "rate of /joint_states and eef_pose in Hz", low=1.0, high=1000.0)
        joint_states_topic = declare("joint_states_topic", "/joint_states", "joint state output")
        estop_topic = declare("estop_topic", "/estop", "e-stop input (std_msgs/Bool, latched)")
        self._hardware_config = declare("hardware_config", "",
                                        "dynamixel: file with the `hardware:` section (empty: config/anubis.yaml)")
        self._arm_roles = {side: declare(f"{side}_arm_role", f"follower_{side}",
                                         f"dynamixel: entry of hardware.arms driving the {side} arm")
                           for side in ARMS}
        self._servo_rate = servo_rate
        publish_description = declare("publish_robot_description", True,
                                      "publish the URDF on /robot_description (off when robot_state_publisher does)")

        description = load_description()
        self.description = description
        defaults = SafetyLimits()
        limits = SafetyLimits(
            **{field: declare(name, getattr(defaults, field), text, low=low, high=high, live=True)
               for name, field, text, low, high in LIVE_LIMITS},
            bus_timeout=declare("bus_timeout", defaults.bus_timeout,
                                "seconds without a joint reading before the arm holds and reports an error",
                                low=0.01, high=5.0),
            ik_position_tolerance=declare("ik_position_tolerance", defaults.ik_position_tolerance,
                                          "IK residual (m) above which a target counts as unreachable",
                                          low=1e-4, high=0.05),
            ik_rotation_tolerance=declare("ik_rotation_tolerance", defaults.ik_rotation_tolerance,
                                          "IK residual (rad) above which a target counts as unreachable",
                                          low=1e-3, high=0.5),
            check_stamps=declare("check_stamps", defaults.check_stamps,
                                 "reject targets stamped older than stale_timeout or from the future "
                                 "(zero stamps always count as now); off for tools with unsynchronized clocks",
                                 live=True),
            accepted_frames=(REFERENCE_FRAME, description.base_frame),
        )
        self.limits = {}
        for side in ARMS:
            arm = description.arms[side]
            box_min = declare(f"{side}_workspace_min", list(arm.workspace_min),
                              f"{side} EEF workspace box lower corner (x, y, z) in {REFERENCE_FRAME}, m "
                              f"(default z: table top + margin, config/anubis.yaml)", low=-2.0, high=2.0,
                              length=3, live=True)
            box_max = declare(f"{side}_workspace_max", list(arm.workspace_max),
                              f"{side} EEF workspace box upper corner (x, y, z) in {REFERENCE_FRAME}, m",
                              low=-2.0, high=2.0, length=3, live=True)
            self.limits[side] = replace(limits, workspace_min=tuple(box_min), workspace_max=tuple(box_max))
        self.parameters.set_apply(self._apply_parameters)

        self.controllers: dict[str, ArmController] = {}
        self.buses: dict[str, ArmBus] = {}
        self._bus_entities: list = []            # (destroy, entity) of the sim bus, made by configure
        self._flush_bus = lambda: None
        if self.backend == "sim":
            self._sim_topics = {
                "states": declare("sim_joint_states_topic", "/sim/joint_states", "sim joint states input"),
                "commands": declare("sim_joint_commands_topic", "/sim/joint_commands", "sim joint targets output"),
                "torque": declare("sim_torque_topic", "/sim/torque", "sim torque on/off per joint output")}
        for side in ARMS:
            kinematics = ArmKinematics(description, side)
            self.controllers[side] = ArmController(
                description.arms[side], kinematics, self.limits[side], servo_rate=servo_rate,
                reference_frame=REFERENCE_FRAME, base_to_reference=np.linalg.inv(kinematics.reference_in_base()))
            self._subscribe_arm(side)

        self._joint_state_pub = self.create_publisher(JointState, joint_states_topic, COMMAND_QOS)
        self._pose_pubs = {side: self.create_publisher(PoseStamped, f"{side}_arm/eef_pose", COMMAND_QOS)
                           for side in ARMS}
        if publish_description:
            self._description_pub = self.create_publisher(String, "/robot_description", LATCHED_QOS)
            self._description_pub.publish(String(data=description.urdf.read_text()))
        self.estop_pressed = False
        self.subscribe(Bool, estop_topic, self._on_estop, LATCHED_QOS)
        self.service(SetBool, "~/enable", self._on_enable)
        self.service(Trigger, "~/go_home", self._on_go_home)
        self.service(Trigger, "~/clear_estop", self._on_clear_estop)
        self.loop_rate = RateMeter()
        # EEF command received -> joint target written, per command (for the bench and diagnostics).
        self.command_latencies: deque[float] = deque(maxlen=1000)
        self._pending_command: dict[str, float] = {}

        self._state_every = max(1, int(round(servo_rate / state_rate)))
        self._tick_count = 0
        self._last_diagnostics = 0.0
        self._servo_timer = None
        for controller in self.controllers.values():
            controller.set_enabled(False)        # until activate: nothing is written to the motors
            controller.drain_events()
        self.get_logger().info(f"arm driver created: backend={self.backend}, servo {servo_rate:.0f} Hz, "
                               f"poses in '{REFERENCE_FRAME}'; unconfigured")

    # ---- lifecycle -----------------------------------------------------------------------------

    def configure_devices(self) -> None:
        if self.backend == "dynamixel":
            self._open_dynamixel_buses()
        else:
            self._make_sim_buses()
        self._servo_timer = self.timer(1.0 / self._servo_rate, self._servo_tick, "servo tick")

    def activate_devices(self) -> None:
        for side, controller in self.controllers.items():
            self.buses[side].set_torque(True)     # the bus sets goal = present first: nothing jumps
            controller.set_enabled(True)          # the next tick holds exactly the measured pose
        self._flush_bus()

    def deactivate_devices(self) -> None:
        for controller in self.controllers.values():
            controller.hold("arm driver deactivated: commands refused until it is active again")

    def cleanup_devices(self) -> None:
        self._stop_servo()
        for controller in self.controllers.values():
            controller.set_enabled(False)
        self._close_buses()

    def safe_state(self, reason: str) -> None:
        """Hold where the arms are (a last goal = the measured position), then close the buses,
        which apply their own shutdown torque policy (Dynamixel: `torque_on_shutdown`). Torque
        stays on for the sim: an arm with torque off falls."""
        self._stop_servo()
        if self.context.ok() or self.backend != "sim":   # the sim bus is a topic: gone once ROS is shut down
            for side, controller in self.controllers.items():
                reading = controller.measured
                if reading is not None and controller.enabled and side in self.buses:
                    self.buses[side].write_targets(reading.positions)
            try:
                self._flush_bus()
            except Exception:          # noqa: BLE001 -- SIGINT shut ROS down since the check above
                if self.context.ok():
                    raise
        self.cleanup_devices()
        self.get_logger().info(f"arm driver {reason}: arms hold their last measured position")

    def _stop_servo(self) -> None:
        if self._servo_timer is not None:
            self._servo_timer.cancel()
            self.destroy_timer(self._servo_timer)
            self._servo_timer = None

    def _close_buses(self) -> None:
        for bus in self.buses.values():
            bus.close()
        self.buses.clear()
        if self.context.ok():
            # Through the node, so its executor stops waiting on them before they go.
            for destroy, entity in self._bus_entities:
                destroy(entity)
        self._bus_entities.clear()
        self._flush_bus = lambda: None

    @property
    def active(self) -> bool:
        return self.lifecycle_state == "active"

    # ---- setup ---------------------------------------------------------------------------------

    def _open_dynamixel_buses(self) -> None:
        """Both follower arms, or neither: a bus that opened is closed again when the other fails,
        and the error names every port and motor that is missing."""
        from twinvla_ros.hardware.motors.dynamixel import open_arm_pair

        opened = open_arm_pair(self._arm_roles, self.description, self._hardware_config or None)
        self.buses.update(opened)
        for side, bus in opened.items():
            for warning in bus.warnings:
                self.get_logger().warning(f"{side} arm bus: {warning}")
            bus.read()           # the measured pose, before anything can move

    def _make_sim_buses(self) -> None:
        topics = self._sim_topics
        command_pub = self.create_publisher(JointState, topics["commands"], COMMAND_QOS)
        torque_pub = self.create_publisher(JointState, topics["torque"], COMMAND_QOS)
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
            arm = self.description.arms[side]
            self.buses[side] = SimArmBus([*arm.joint_names, arm.gripper_joint], send_targets,
                                         send_torque, time.monotonic)

        def on_sim_state(msg: JointState):
            for bus in list(self.buses.values()):      # a copy: cleanup may empty it meanwhile
                bus.on_joint_state(msg.name, msg.position, msg.velocity, msg.effort)

        subscription = self.subscribe(JointState, topics["states"], on_sim_state, COMMAND_QOS)
        self._bus_entities += [(self.destroy_publisher, command_pub), (self.destroy_publisher, torque_pub),
                               (self.destroy_subscription, subscription)]

    def _apply_parameters(self, changes: dict) -> str | None:
        new_limits = {}
        for side in ARMS:
            fields = {field: changes[name] for name, field, *_ in LIVE_LIMITS if name in changes}
            if "check_stamps" in changes:
                fields["check_stamps"] = changes["check_stamps"]
            for corner in ("min", "max"):
                name = f"{side}_workspace_{corner}"
                if name in changes:
                    fields[f"workspace_{corner}"] = tuple(changes[name])
            try:
                new_limits[side] = replace(self.limits[side], **fields)
            except ValueError as error:          # SafetyLimits refuses e.g. an empty box
                return str(error)
        for side, limits in new_limits.items():
            self.controllers[side].update_limits(limits)
            self.limits[side] = limits
        self.get_logger().info(f"limits changed: {changes}")
        return None

    def _stamp_age(self, msg) -> float | None:
        """Seconds since the message's stamp; None for a zero stamp (tools that send none)."""
        stamp = msg.header.stamp
        if stamp.sec == 0 and stamp.nanosec == 0:
            return None
        return self.ros_now() - stamp_to_seconds(stamp)

    def _subscribe_arm(self, side: str) -> None:
        controller = self.controllers[side]
        arm = self.description.arms[side]

        def on_eef_target(msg: PoseStamped):
            if self._refuse_inactive(controller, "EEF target"):
                return
            now = time.monotonic()
            try:
                pose = pose_to_matrix(msg.pose)
            except ValueError as error:
                controller.reject("EEF target", str(error))
                return
            if controller.command_eef(pose, msg.header.frame_id, now, stamp_age=self._stamp_age(msg)) is None:
                self._pending_command.setdefault(side, now)

        def on_gripper_target(msg: Float64):
            if self._refuse_inactive(controller, "gripper target"):
                return
            controller.command_gripper(msg.data, time.monotonic())

        def on_joint_command(msg: JointState):
            if self._refuse_inactive(controller, "joint command"):
                return
            if len(msg.position) != len(msg.name):
                controller.reject("joint command", f"{len(msg.name)} names but {len(msg.position)} positions")
                return
            index = {name: i for i, name in enumerate(msg.name)}
            missing = [name for name in arm.joint_names if name not in index]
            if missing:
                controller.reject("joint command", f"joints {missing} missing")
                return
            q = np.array([msg.position[index[name]] for name in arm.joint_names])
            gripper = None
            if arm.gripper_joint in index:
                gripper = msg.position[index[arm.gripper_joint]] / arm.gripper_stroke
            controller.command_joints(q, time.monotonic(), gripper, stamp_age=self._stamp_age(msg))

        self.subscribe(PoseStamped, f"{side}_arm/eef_target", on_eef_target, COMMAND_QOS)
        self.subscribe(Float64, f"{side}_arm/gripper_target", on_gripper_target, COMMAND_QOS)
        self.subscribe(JointState, f"{side}_arm/joint_command", on_joint_command, COMMAND_QOS)

    def _refuse_inactive(self, controller: ArmController, what: str) -> bool:
        if self.active:
            return False
        controller.reject(what, f"the arm driver is {self.lifecycle_state}, not active: "
                                f"`ros2 lifecycle set /{self.get_name()} activate`")
        return True

    # ---- callbacks -----------------------------------------------------------------------------

    def _on_estop(self, msg: Bool) -> None:
        self.estop_pressed = bool(msg.data)
        if msg.data:
            for controller in self.controllers.values():
                controller.engage_estop()

    def _on_enable(self, request: SetBool.Request, response: SetBool.Response):
        if not self.buses:
            response.success = False
            response.message = f"the arm driver is {self.lifecycle_state}: no bus to enable (configure it first)"
            return response
        for side, controller in self.controllers.items():
            self.buses[side].set_torque(request.data)
            controller.set_enabled(request.data)
        response.success = True
        response.message = "torque on" if request.data else "torque off"
        return response

    def _on_go_home(self, request: Trigger.Request, response: Trigger.Response):
        if not self.active:
            response.success = False
            response.message = f"the arm driver is {self.lifecycle_state}, not active"
            return response
        reasons = [r for r in (c.go_home(time.monotonic()) for c in self.controllers.values()) if r]
        response.success = not reasons
        response.message = "; ".join(reasons) if reasons else "moving to the home pose"
        return response

    def _on_clear_estop(self, request: Trigger.Request, response: Trigger.Response):
        if self.estop_pressed:
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
                reading = None           # the controller holds and reports; the bus's health says why
            targets = controller.update(now, reading)
            if targets is not None:
                try:
                    bus.write_targets(targets)
                except BusError as error:
                    self.report_failure(f"{side} arm bus write", error)
                    continue
                received = self._pending_command.pop(side, None)
                if received is not None:
                    self.command_latencies.append(time.monotonic() - received)
            events = controller.drain_events()
            for level, event in events:
                self.log(level, event)
            report_now = report_now or bool(events)
        self._flush_bus()
        self._tick_count += 1
        if self._tick_count % self._state_every == 0:
            self._publish_state()
        # Twice a second, and at once when something was logged (e-stop, rejection, stale ...).
        if report_now or now - self._last_diagnostics >= 0.5:
            self._publish_diagnostics()
            self._last_diagnostics = now

    def _publish_state(self) -> None:
        """Both arms' joints and poses from one instant, or nothing: a stale reading is not
        re-published with a fresh stamp (consumers must see the silence, and the policy holds
        on it), and a half state would pair a fresh arm with a frozen one."""
        now = time.monotonic()
        readings = {side: c.measured for side, c in self.controllers.items()}
        if any(r is None or now - r.stamp > self.limits[side].bus_timeout for side, r in readings.items()):
            return
        stamp = self.get_clock().now().to_msg()
        names, positions, velocities, efforts = [], [], [], []
        for side, controller in self.controllers.items():
            reading = readings[side]
            names += self.buses[side].joint_names
            positions += reading.positions.tolist()
            velocities += reading.velocities.tolist()
            efforts += reading.efforts.tolist()
            pose = PoseStamped()
            pose.header.stamp = stamp
            pose.header.frame_id = REFERENCE_FRAME
            pose.pose = matrix_to_pose(controller.kinematics.fk(reading.positions[:6]))
            self._pose_pubs[side].publish(pose)
        msg = JointState(name=names, position=positions, velocity=velocities, effort=efforts)
        msg.header.stamp = stamp
        self._joint_state_pub.publish(msg)

    def _publish_diagnostics(self) -> None:
        statuses = [(f"{side} arm", controller.status()) for side, controller in self.controllers.items()]
        loop = self.loop_rate.summary()
        latencies = np.array(self.command_latencies)
        if latencies.size:
            loop["eef_cmd_to_joint_target_p50_ms"] = f"{np.percentile(latencies, 50) * 1e3:.2f}"
        loop["estop_pressed"] = str(self.estop_pressed)
        statuses.append(("servo loop", Status(Level.OK, f"{self.backend} backend", loop)))
        for side, bus in self.buses.items():
            health = getattr(bus, "health", None)
            if health is not None:
                statuses.append((f"{side} arm bus", health()))
        statuses.append(("lifecycle", self.lifecycle_status()))
        self.publish_diagnostics(statuses)


def main(args=None):
    run_node(ArmDriverNode, args)
