"""teleop_node: drives both follower arms from a teleoperator's leader arms, or from the sim's
scripted expert, through the arm driver's inputs.

backend `leader`: configure opens both leader arms (LeaderArm: read-only Dynamixel buses,
torque off; roles `left_leader_role` / `right_leader_role` of the hardware config), activate
begins a safe start, deactivate stops publishing. A timer at `rate` reads both leaders and the
followers' measured joints (`follower_joint_states_topic`) and feeds one ArmTeleop per arm
(twinvla_ros.control.teleop: the safe start, the mappings, stale and bad readings). Publishes per
arm `<side>_arm/joint_command` (mapping `joint`; the gripper joint in metres of finger travel) or
`<side>_arm/eef_target` + `<side>_arm/gripper_target` (mapping `eef`; the safe start still sends
joint commands). When a leader goes stale nothing is published: the arm driver's stale timeout
holds the arm.

backend `sim_expert`: no devices. `~/start_demo` (Trigger) sends the arms home
(`/<arm_driver_node>/go_home`) and waits until they are there, sets the sim's `seed` parameter and
resets it (`/<sim_node>/reset`: the objects' poses), takes both arms' next `eef_pose` as start
poses and plans the task's demo (twinvla_ros.sim.expert.make_expert); it answers, holds the start
pose for `demo_lead_in` (a recorder started on the answer sees the demo from its first motion),
then publishes the demo's targets at `rate` by wall time until its duration plus `demo_hold`. Demo k after the `seed`
parameter was last set uses seed + k. The reply is JSON {"seed", "task", "duration"};
`~/demo_status` (Trigger) answers JSON {"running", "done", "seed", "elapsed", "duration"}.
start_demo is a coroutine: it awaits the other nodes' services and the arms' motion while this
node's single-threaded executor goes on spinning (its timer, its subscriptions, the replies).

/diagnostics: per arm the teleop state and why, the leaders' read rates and bus health, the
demo's progress.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.task import Future
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64
from std_srvs.srv import Trigger

from twinvla_ros.control.teleop import ArmSample, ArmTeleop, TeleopCommand, TeleopConfig, MAPPINGS
from twinvla_ros.hardware.motors import BusError
from twinvla_ros.reporting import Level, RateMeter, Status
from twinvla_ros.robot.bimanual import ARMS
from twinvla_ros.robot.description import load_description
from twinvla_ros.robot.kinematics import ArmKinematics
from twinvla_ros.ros.messages import matrix_to_pose, pose_to_matrix
from twinvla_ros.ros.node import TwinvlaLifecycleNode, run_node
from twinvla_ros.ros.qos import COMMAND_QOS
from twinvla_ros.sim.scene import TASKS

BACKENDS = ("leader", "sim_expert")
MIN_LEADER_RATE = 50.0          # Hz: slower mirroring is visibly jerky on the followers
HOME_TOLERANCE = 0.02           # rad: an arm counts as home when every joint is this close
HOME_TIMEOUT = 30.0             # s for go_home (from anywhere in the workspace at the driver's caps)
SERVICE_TIMEOUT = 10.0          # s for another node's service to answer
DIAGNOSTICS_PERIOD = 0.5        # s


@dataclass
class Demo:
    """One scripted-expert demo: planned (expert set) and running from `started`."""
    seed: int
    phase: str                   # what it is doing now, for demo_status and /diagnostics
    expert: object = None
    started: float | None = None
    done: bool = False

    def elapsed(self, now: float) -> float:
        return 0.0 if self.started is None else now - self.started


class TeleopNode(TwinvlaLifecycleNode):
    def __init__(self, **node_kwargs):
        super().__init__("teleop_node", **node_kwargs)
        declare = self.parameters.declare
        self.backend = declare("backend", "leader", "what drives the followers: the leader arms, or the sim's "
                               "scripted expert", choices=BACKENDS)
        mapping = declare("mapping", "joint", "leader backend: joint (leader joints -> joint_command, ALOHA) or "
                          "eef (leader FK -> eef_target)", choices=MAPPINGS)
        self.rate = declare("rate", 100.0, f"leader read / command rate in Hz (>= {MIN_LEADER_RATE:.0f} for "
                            "leaders); the expert's target rate", low=1.0, high=1000.0)
        self._hardware_config = declare("hardware_config", "", "leader backend: file with the `hardware:` "
                                        "section (empty: config/anubis.yaml)")
        self._leader_roles = {side: declare(f"{side}_leader_role", f"leader_{side}",
                                            f"leader backend: entry of hardware.arms read for the {side} arm")
                              for side in ARMS}
        defaults = TeleopConfig()
        self.config = TeleopConfig(
            mapping=mapping,
            safe_start_speed=declare("safe_start_speed", defaults.safe_start_speed,
                                     "rad/s of the fastest joint while the follower moves to the leader's pose "
                                     "before mirroring", low=0.01, high=2.0),
            safe_start_gripper_speed=declare("safe_start_gripper_speed", defaults.safe_start_gripper_speed,
                                             "gripper speed (fraction of the stroke per second) of the safe start",
                                             low=0.01, high=5.0),
            engage_tolerance=declare("engage_tolerance", defaults.engage_tolerance,
                                     "rad: mirroring begins when every follower joint is this close to the leader",
                                     low=0.001, high=0.5),
            leader_gripper_closed=declare("leader_gripper_closed", defaults.leader_gripper_closed,
                                          "leader's gripper reading (m of finger travel) with the gripper closed",
                                          low=-0.1, high=0.1),
            leader_gripper_open=declare("leader_gripper_open", defaults.leader_gripper_open,
                                        "leader's gripper reading (m of finger travel) fully open", low=-0.1, high=0.1),
            gripper_deadband=declare("gripper_deadband", defaults.gripper_deadband,
                                     "leader gripper changes below this fraction of its range are ignored",
                                     low=0.0, high=0.49),
            stale_timeout=declare("leader_stale_timeout", defaults.stale_timeout,
                                  "s without a fresh leader reading before the follower holds", low=0.01, high=2.0),
            follower_stale_timeout=declare("follower_stale_timeout", defaults.follower_stale_timeout,
                                           "s without follower joint states before a safe start pauses",
                                           low=0.05, high=5.0),
        )
        joint_states_topic = declare("follower_joint_states_topic", "/joint_states", "followers' measured joints")
        self._task = declare("task", "handover_box", "sim_expert: the sim task (the sim node's `task`)",
                             choices=tuple(TASKS))
        self._seed = declare("seed", 0, "sim_expert: seed of the next demo (demo k after a set uses seed + k)",
                             low=0, high=2**31 - 1, live=True)
        self._sim_node = declare("sim_node", "sim_node", "sim_expert: the sim node's name (its services)")
        self._arm_driver = declare("arm_driver_node", "arm_driver_node",
                                   "sim_expert: the arm driver's name (its go_home service)")
        self._demo_hold = declare("demo_hold", 1.0, "sim_expert: s the final targets are held after a demo",
                                  low=0.0, high=10.0)
        self._demo_lead_in = declare("demo_lead_in", 1.0, "sim_expert: s the start pose is held after "
                                     "~/start_demo answers, before the expert moves (time to start recording)",
                                     low=0.0, high=10.0)
        self.parameters.set_apply(self._apply_parameters)
        if self.backend == "leader" and self.rate < MIN_LEADER_RATE:
            raise ValueError(f"teleop_node: rate {self.rate} Hz is too slow for leader arms "
                             f"(>= {MIN_LEADER_RATE:.0f} Hz)")

        self.description = load_description()
        self.teleops = {side: ArmTeleop(self.description.arms[side], self.config,
                                        ArmKinematics(self.description, side) if mapping == "eef" else None)
                        for side in ARMS}
        self.leaders: dict = {}
        self.leader_samples: dict[str, ArmSample | None] = {side: None for side in ARMS}
        self.follower_samples: dict[str, ArmSample | None] = {side: None for side in ARMS}
        self.read_rates = {side: RateMeter(window=200) for side in ARMS}
        self._eef_poses: dict[str, tuple[float, np.ndarray] | None] = {side: None for side in ARMS}
        self._demos_since_seed = 0
        self.demo: Demo | None = None
        self._waits: list[tuple[Callable[[], bool], float, Future]] = []
        self._timer = None
        self._last_diagnostics = 0.0

        self._joint_pubs = {side: self.create_publisher(JointState, f"{side}_arm/joint_command", COMMAND_QOS)
                            for side in ARMS}
        self._target_pubs = {side: self.create_publisher(PoseStamped, f"{side}_arm/eef_target", COMMAND_QOS)
                             for side in ARMS}
        self._gripper_pubs = {side: self.create_publisher(Float64, f"{side}_arm/gripper_target", COMMAND_QOS)
                              for side in ARMS}
        self.subscribe(JointState, joint_states_topic, self._on_joint_states, COMMAND_QOS)
        for side in ARMS:
            self.subscribe(PoseStamped, f"/{side}_arm/eef_pose",
                           lambda msg, side=side: self._on_eef_pose(side, msg), COMMAND_QOS)
        if self.backend == "sim_expert":
            self._peer_clients = {
                "go_home": self.create_client(Trigger, f"/{self._arm_driver}/go_home"),
                "set_seed": self.create_client(SetParameters, f"/{self._sim_node}/set_parameters"),
                "reset": self.create_client(Trigger, f"/{self._sim_node}/reset"),
            }
            # Not through `self.service`: the callback is a coroutine, which rclpy's executor
            # runs as a task; it reports its own failures the same way. Its own callback group:
            # a suspended task holds its group, and the timer, the subscriptions and the clients'
            # replies (the default group) must go on meanwhile.
            self.create_service(Trigger, "~/start_demo", self._on_start_demo,
                                callback_group=MutuallyExclusiveCallbackGroup())
            self.service(Trigger, "~/demo_status", self._on_demo_status)
        self.get_logger().info(f"teleop created: backend={self.backend}, mapping={mapping}, {self.rate:.0f} Hz; "
                               "unconfigured")

    # ---- lifecycle -----------------------------------------------------------------------------

    def configure_devices(self) -> None:
        if self.backend == "leader":
            self._open_leaders()
        self._timer = self.timer(1.0 / self.rate, self._tick, "teleop tick")

    def activate_devices(self) -> None:
        for teleop in self.teleops.values():
            teleop.reset("activated: waiting for the leader and follower readings")

    def deactivate_devices(self) -> None:
        for teleop in self.teleops.values():
            teleop.reset("deactivated: nothing is sent")
        if self.demo is not None and not self.demo.done:
            self.demo.done, self.demo.phase = True, "stopped: the teleop node was deactivated"

    def cleanup_devices(self) -> None:
        self._stop_timer()
        for leader in self.leaders.values():
            leader.close()
        self.leaders.clear()

    def safe_state(self, reason: str) -> None:
        """Leaders have no torque: nothing to make safe but to stop commanding and close them."""
        self.deactivate_devices()
        self.cleanup_devices()
        self.get_logger().info(f"teleop {reason}: nothing is commanded any more")

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self.destroy_timer(self._timer)
            self._timer = None

    @property
    def active(self) -> bool:
        return self.lifecycle_state == "active"

    def _open_leaders(self) -> None:
        """Both leader arms, or neither (as the arm driver opens its followers)."""
        from twinvla_ros.hardware.motors.dynamixel import LeaderArm, open_arm_pair

        opened = open_arm_pair(self._leader_roles, self.description, self._hardware_config or None,
                               bus_class=LeaderArm, what="leader")
        self.leaders.update(opened)
        for side, leader in opened.items():
            for warning in leader.warnings:
                self.get_logger().warning(f"{side} leader bus: {warning}")
            self.leader_samples[side] = ArmSample.from_bus_reading(leader.read())

    def _apply_parameters(self, changes: dict) -> str | None:
        if "seed" in changes:
            self._seed = int(changes["seed"])
            self._demos_since_seed = 0
        return None

    # ---- inputs --------------------------------------------------------------------------------

    def _on_joint_states(self, msg: JointState) -> None:
        if len(msg.position) != len(msg.name):
            return
        position = dict(zip(msg.name, msg.position))
        now = time.monotonic()
        for side in ARMS:
            arm = self.description.arms[side]
            if all(name in position for name in arm.joint_names) and arm.gripper_joint in position:
                self.follower_samples[side] = ArmSample(
                    np.array([position[name] for name in arm.joint_names]),
                    position[arm.gripper_joint] / arm.gripper_stroke, now)

    def _on_eef_pose(self, side: str, msg: PoseStamped) -> None:
        self._eef_poses[side] = (time.monotonic(), pose_to_matrix(msg.pose))

    # ---- the loop ------------------------------------------------------------------------------

    def _tick(self) -> None:
        now = time.monotonic()
        if self.backend == "leader":
            self._leader_tick(now)
        else:
            self._demo_tick(now)
        for wait in list(self._waits):
            condition, deadline, future = wait
            met = condition()
            if met or now > deadline:
                self._waits.remove(wait)
                future.set_result(bool(met))
        if now - self._last_diagnostics >= DIAGNOSTICS_PERIOD:
            self._last_diagnostics = now
            self._publish_diagnostics()

    def _leader_tick(self, now: float) -> None:
        for side, leader in self.leaders.items():
            try:
                self.leader_samples[side] = ArmSample.from_bus_reading(leader.read())
                self.read_rates[side].tick(now)
            except BusError:
                pass      # the last good reading goes stale; the bus's health says why
        if not self.active:
            return
        for side, teleop in self.teleops.items():
            command = teleop.update(now, self.leader_samples[side], self.follower_samples[side])
            if command is not None:
                self._publish(side, command)

    def _publish(self, side: str, command: TeleopCommand) -> None:
        arm = self.description.arms[side]
        stamp = self.get_clock().now().to_msg()
        if command.joints is not None:
            msg = JointState(name=[*arm.joint_names, arm.gripper_joint],
                             position=[*command.joints.tolist(), command.gripper * arm.gripper_stroke])
            msg.header.stamp = stamp
            self._joint_pubs[side].publish(msg)
            return
        self._publish_target(side, command.pose, command.gripper, stamp)

    def _publish_target(self, side: str, pose: np.ndarray, gripper: float, stamp) -> None:
        target = PoseStamped(pose=matrix_to_pose(pose))
        target.header.stamp = stamp
        target.header.frame_id = self.description.reference_frame
        self._target_pubs[side].publish(target)
        self._gripper_pubs[side].publish(Float64(data=float(gripper)))

    # ---- the sim's scripted expert ---------------------------------------------------------------

    def _demo_tick(self, now: float) -> None:
        demo = self.demo
        if demo is None or demo.started is None or demo.done or not self.active:
            return
        elapsed = demo.elapsed(now)
        targets = demo.expert.targets(min(max(elapsed, 0.0), demo.expert.duration))
        stamp = self.get_clock().now().to_msg()
        for side in ARMS:
            self._publish_target(side, targets.poses[side], targets.grippers[side], stamp)
        if elapsed >= demo.expert.duration + self._demo_hold:
            demo.done, demo.phase = True, "done"
            self.get_logger().info(f"demo seed {demo.seed} done after {elapsed:.1f} s")

    def _until(self, condition: Callable[[], bool], timeout: float) -> Future:
        """A future the tick sets True once condition() holds, False after `timeout` s."""
        future = Future()
        self._waits.append((condition, time.monotonic() + timeout, future))
        return future

    async def _call(self, name: str, request, what: str):
        client = self._peer_clients[name]
        # A peer started with this node (`record --processes`) may not be discovered yet.
        if not client.service_is_ready() and not await self._until(client.service_is_ready, SERVICE_TIMEOUT):
            raise RuntimeError(f"{what}: service {client.srv_name} is not available after {SERVICE_TIMEOUT:.0f} s")
        future = client.call_async(request)
        if not await self._until(future.done, SERVICE_TIMEOUT):
            client.remove_pending_request(future)
            raise RuntimeError(f"{what}: {client.srv_name} did not answer within {SERVICE_TIMEOUT:.0f} s")
        return future.result()

    def _arms_home(self) -> bool:
        for side in ARMS:
            sample = self.follower_samples[side]
            if sample is None or time.monotonic() - sample.stamp > 0.5:
                return False
            if np.abs(sample.joints - self.description.arms[side].home).max() > HOME_TOLERANCE:
                return False
        return True

    async def _on_start_demo(self, request: Trigger.Request, response: Trigger.Response):
        try:
            response.message = json.dumps(await self._start_demo())
            response.success = True
        except Exception as error:      # noqa: BLE001 -- a failed start is reported, not raised
            if self.demo is not None and self.demo.started is None:
                self.demo.done, self.demo.phase = True, f"failed: {error}"
            if not isinstance(error, (RuntimeError, ValueError)):
                self.report_failure("service ~/start_demo", error)
            response.success = False
            response.message = f"failed: {type(error).__name__}: {error}"
        return response

    async def _start_demo(self) -> dict:
        if not self.active:
            raise RuntimeError(f"the teleop node is {self.lifecycle_state}, not active")
        if self.demo is not None and not self.demo.done:
            raise RuntimeError(f"a demo is under way (seed {self.demo.seed}: {self.demo.phase})")
        seed = self._seed + self._demos_since_seed
        self._demos_since_seed += 1
        self.demo = demo = Demo(seed=seed, phase="going home")

        # The arms home first: the sim's reset puts the robot home, and an arm driver still
        # holding the last demo's pose would pull the arms back there.
        reply = await self._call("go_home", Trigger.Request(), "going home")
        if not reply.success:
            raise RuntimeError(f"go_home refused: {reply.message}")
        if not await self._until(self._arms_home, HOME_TIMEOUT):
            raise RuntimeError(f"the arms did not get home within {HOME_TIMEOUT:.0f} s")

        demo.phase = "resetting the sim"
        seed_request = SetParameters.Request(parameters=[ParameterMsg(
            name="seed", value=ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=seed))])
        result = (await self._call("set_seed", seed_request, "setting the sim's seed")).results[0]
        if not result.successful:
            raise RuntimeError(f"the sim refused seed {seed}: {result.reason}")
        reset_at = time.monotonic()
        reply = await self._call("reset", Trigger.Request(), "resetting the sim")
        if not reply.success:
            raise RuntimeError(f"the sim's reset failed: {reply.message}")
        objects = {name: np.array(pose) for name, pose in json.loads(reply.message)["objects"].items()}

        demo.phase = "planning"
        # The arms' poses measured after the reset: where the demo starts.
        def measured_since_reset() -> bool:
            return all(p is not None and p[0] > reset_at for p in self._eef_poses.values())
        if not await self._until(measured_since_reset, SERVICE_TIMEOUT):
            raise RuntimeError("no eef_pose of both arms after the reset: is the arm driver running?")
        from twinvla_ros.sim.expert import make_expert      # loaded with the first demo only

        demo.expert = make_expert(self._task, objects, {side: self._eef_poses[side][1] for side in ARMS}, seed)
        demo.started, demo.phase = time.monotonic() + self._demo_lead_in, "running"
        self.get_logger().info(f"demo {self._task} seed {seed}: {demo.expert.duration:.1f} s")
        return {"seed": seed, "task": self._task, "duration": demo.expert.duration}

    def _on_demo_status(self, request: Trigger.Request, response: Trigger.Response):
        demo = self.demo
        duration = None if demo is None or demo.expert is None else demo.expert.duration
        response.success = True
        response.message = json.dumps({
            "running": demo is not None and not demo.done, "done": demo is not None and demo.done,
            "seed": None if demo is None else demo.seed,
            "elapsed": 0.0 if demo is None else round(demo.elapsed(time.monotonic()), 3),
            "duration": duration, "phase": "none" if demo is None else demo.phase})
        return response

    # ---- /diagnostics --------------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        statuses = []
        if self.backend == "leader":
            for side, teleop in self.teleops.items():
                status = teleop.status()
                status.values.update({f"leader_{k}": v for k, v in self.read_rates[side].summary().items()})
                statuses.append((f"{side} arm", status))
            statuses += [(f"{side} leader bus", leader.health()) for side, leader in list(self.leaders.items())]
        else:
            statuses.append(("demo", self._demo_status()))
        statuses.append(("lifecycle", self.lifecycle_status()))
        self.publish_diagnostics(statuses)

    def _demo_status(self) -> Status:
        demo = self.demo
        if demo is None:
            return Status(Level.OK, "no demo yet", {"task": self._task, "next_seed": str(self._seed)})
        values = {"task": self._task, "seed": str(demo.seed), "phase": demo.phase,
                  "elapsed": f"{demo.elapsed(time.monotonic()):.1f}",
                  "duration": "" if demo.expert is None else f"{demo.expert.duration:.1f}"}
        level = Level.WARN if demo.phase.startswith(("failed", "stopped")) else Level.OK
        return Status(level, demo.phase, values)


def main(args=None):
    run_node(TeleopNode, args)
