"""Offline closed loop in the MuJoCo sim, without ROS: an agent's EEF targets through the arm
driver's own control core, physics stepped in sim time.

`run_rollout(world, agent, duration)` does per servo tick what arm_driver_node does with a sim
bus, minus the messages: it reads `world.joint_state()` into one BusReading per arm, passes the
agent's targets to one ArmController per arm (built as the node builds them: eef_reference,
base_to_reference from the kinematics, the node's default SafetyLimits with each arm's workspace
box from config/anubis.yaml), writes `controller.update()` to `world.set_joint_targets` and steps
physics to the next tick. The agent is asked at `command_rate` (the teleop node's 50 Hz), so the
controller interpolates between targets as it does on the robot. Time is simulated time, so a
rollout is exact and repeatable however loaded the machine is.

An agent is any `agent(t, measured_poses) -> ExpertTargets` (t: seconds since the rollout
started; measured_poses: side -> the measured 4x4 EEF pose in eef_reference): a scripted expert
(`expert_agent`) or a policy (`policy_agent`: sync execution in sim time). The result carries the task's success check on the final
object poses, the measured EEF trajectories and every safety counter of both controllers, so a
test can assert that an expert never makes the driver clamp, reject, hold or miss a target.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from twinvla_ros.control.controller import ArmController
from twinvla_ros.control.safety import SafetyLimits
from twinvla_ros.hardware.motors import BusReading
from twinvla_ros.robot.bimanual import ARMS, GRIPPER, ArmPose, arm_slice, pack, unpack
from twinvla_ros.robot.cameras import CAMERAS
from twinvla_ros.robot.description import load_description
from twinvla_ros.robot.kinematics import ArmKinematics
from twinvla_ros.sim import SimWorld
from twinvla_ros.sim.expert import ExpertTargets, ScriptedExpert, make_expert
from twinvla_ros.sim.tasks import task_success

REFERENCE_FRAME = "eef_reference"     # the arm driver's
# Controller counters that mean the driver had to step in: an expert must leave them at zero.
INTERVENTIONS = ("rejected", "unreachable_ticks", "workspace_clamped", "joint_target_clamped", "gripper_clamped",
                 "stale_holds", "gripper_stale_holds", "blocked", "blocked_holds", "bus_faults", "internal_errors")
SETTLE_TIME = 0.5                     # s simulated after an expert's last target, before the check

Agent = Callable[[float, dict[str, np.ndarray]], ExpertTargets]


@dataclass
class RolloutResult:
    task: str
    success: bool
    reason: str                                   # task_success's reason
    object_poses: dict[str, np.ndarray]           # at the end, base_link [x y z qw qx qy qz]
    times: np.ndarray                             # (n,) s since the start, one per servo tick
    eef_poses: dict[str, np.ndarray]              # side -> (n, 4, 4) measured EEF, eef_reference
    grippers: dict[str, np.ndarray]               # side -> (n,) measured finger travel, m
    counters: dict[str, dict[str, int]]           # side -> ArmController.counters at the end
    statuses: dict[str, str]                      # side -> the controller's last status line

    @property
    def interventions(self) -> dict[str, dict[str, int]]:
        """side -> the nonzero INTERVENTIONS counters (empty when the driver never stepped in)."""
        return {side: {k: c[k] for k in INTERVENTIONS if c[k]} for side, c in self.counters.items()}


def make_controllers(servo_rate: float, limits: SafetyLimits | None = None) -> dict[str, ArmController]:
    """One ArmController per arm, as arm_driver_node builds them. limits None: the node's
    defaults (each arm's workspace box from the description); given: used for both arms."""
    description = load_description()
    controllers = {}
    for side in ARMS:
        arm = description.arms[side]
        kinematics = ArmKinematics(description, side)
        arm_limits = limits
        if arm_limits is None:
            arm_limits = replace(SafetyLimits(accepted_frames=(REFERENCE_FRAME, description.base_frame)),
                                 workspace_min=arm.workspace_min, workspace_max=arm.workspace_max)
        controllers[side] = ArmController(arm, kinematics, arm_limits, servo_rate=servo_rate,
                                          reference_frame=REFERENCE_FRAME,
                                          base_to_reference=np.linalg.inv(kinematics.reference_in_base()))
    return controllers


def run_rollout(world: SimWorld, agent: Agent, duration: float, *, servo_rate: float = 100.0,
                command_rate: float = 50.0, limits: SafetyLimits | None = None,
                on_tick: Callable[[float, SimWorld], None] | None = None) -> RolloutResult:
    """Run `agent` in `world` for `duration` simulated seconds (from the world's present state).
    on_tick(t, world) runs before every servo tick (perturbations, recording)."""
    for name, value in (("duration", duration), ("servo_rate", servo_rate), ("command_rate", command_rate)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be positive and finite, got {value!r}")
    if command_rate > servo_rate:
        raise ValueError(f"command_rate {command_rate} exceeds servo_rate {servo_rate}")
    substeps = int(round(1.0 / (servo_rate * world.config.timestep)))
    if substeps < 1 or abs(substeps * world.config.timestep * servo_rate - 1.0) > 1e-6:
        raise ValueError(f"servo period 1/{servo_rate} s is not a whole number of physics steps "
                         f"({world.config.timestep} s)")
    controllers = make_controllers(servo_rate, limits)
    names = world.joint_names
    index = {side: [names.index(n) for n in (*c.arm.joint_names, c.arm.gripper_joint)]
             for side, c in controllers.items()}
    ticks = int(round(duration * servo_rate))
    command_every = max(1, int(round(servo_rate / command_rate)))
    times = np.arange(ticks) / servo_rate
    eef = {side: np.empty((ticks, 4, 4)) for side in controllers}
    grippers = {side: np.empty(ticks) for side in controllers}
    start = world.time
    for k in range(ticks):
        t = float(times[k])
        if on_tick is not None:
            on_tick(t, world)
        now = start + t                     # the controllers' clock: the sim's
        positions, velocities, efforts = world.joint_state()
        readings = {side: BusReading(positions[i], velocities[i], efforts[i], now) for side, i in index.items()}
        measured = {side: c.kinematics.fk(readings[side].positions[:6]) for side, c in controllers.items()}
        if k % command_every == 0:
            targets = agent(t, {side: pose.copy() for side, pose in measured.items()})
            for side, c in controllers.items():
                c.command_eef(targets.poses[side], REFERENCE_FRAME, now)
                c.command_gripper(targets.grippers[side], now)
        joint_targets = {}
        for side, c in controllers.items():
            out = c.update(now, readings[side])
            eef[side][k] = measured[side]
            grippers[side][k] = readings[side].positions[6]
            if out is not None:
                joint_targets.update(zip((names[i] for i in index[side]), out.tolist()))
        world.set_joint_targets(joint_targets)
        world.step(substeps)
    objects = world.object_poses()
    success, reason = task_success(world.config.task, objects)
    return RolloutResult(task=world.config.task, success=success, reason=reason, object_poses=objects,
                         times=times, eef_poses=eef, grippers=grippers,
                         counters={side: dict(c.counters) for side, c in controllers.items()},
                         statuses={side: c.status().message for side, c in controllers.items()})


def measured_eef_poses(world: SimWorld) -> dict[str, np.ndarray]:
    """side -> the EEF pose (4x4, eef_reference) of the arm's present joints, as the driver
    measures it (forward kinematics of the joint readings)."""
    description = load_description()
    positions = world.joint_state()[0]
    out = {}
    for side in ARMS:
        kinematics = ArmKinematics(description, side)
        q = positions[[world.joint_names.index(n) for n in description.arms[side].joint_names]]
        out[side] = kinematics.fk(q)
    return out


def expert_agent(expert: ScriptedExpert) -> Agent:
    """A scripted expert as an agent: its targets by time, whatever the arms measure."""
    return lambda t, measured: expert.targets(t)


def policy_agent(policy, world: SimWorld, instruction: str, *, control_rate: float = 20.0, seed: int = 0,
                 execution_horizon: int | None = None) -> Agent:
    """A policy (TwinVLAPolicy, or anything with `predict(observation, seed=)` returning (H, 20)
    actions in robot units) as an agent, with no latency: it looks (the world's three cameras, the
    measured EEF poses, the gripper openings, as the node builds its proprio) at t = 0 and after
    every `execution_horizon` actions (None: the whole chunk, the node's sync mode), and action k
    of a chunk is the target from k / control_rate on. The model's compute takes no simulated
    time, so a rollout is exact and repeatable; chunk i is sampled with noise seed `seed + i`."""
    if execution_horizon is not None and execution_horizon < 1:
        raise ValueError(f"execution_horizon must be at least 1, got {execution_horizon}")
    from twinvla_ros.model import Observation

    description = load_description()
    strokes = {side: description.arms[side].gripper_stroke for side in ARMS}
    gripper_index = {side: world.joint_names.index(description.arms[side].gripper_joint) for side in ARMS}
    chunk, chunk_start, chunks = None, 0.0, 0

    def agent(t: float, measured: dict[str, np.ndarray]) -> ExpertTargets:
        nonlocal chunk, chunk_start, chunks
        step = math.floor((t - chunk_start) * control_rate + 1e-9)
        if chunk is None or step >= min(len(chunk), execution_horizon or len(chunk)):
            positions = world.joint_state()[0]
            proprio = pack(*(ArmPose.from_matrix(measured[side], positions[gripper_index[side]] / strokes[side])
                             for side in ARMS))
            images = world.render_all()
            chunk = policy.predict(Observation(instruction, *(images[camera] for camera in CAMERAS), proprio),
                                   seed=seed + chunks)
            chunk_start, chunks, step = t, chunks + 1, 0
        action = chunk[step]
        arms = dict(zip(ARMS, unpack(action)))
        return ExpertTargets({side: arms[side].matrix() for side in ARMS},
                             {side: float(np.clip(action[arm_slice(side)][GRIPPER], 0.0, 1.0)) for side in ARMS})

    return agent


def run_expert(world: SimWorld, seed: int, **rollout_kwargs) -> tuple[ScriptedExpert, RolloutResult]:
    """One demo, as the teleop node's sim_expert backend records it: reset the world with `seed`,
    plan the expert from the object poses and the measured start poses, run it to its end plus
    SETTLE_TIME."""
    objects = world.reset(seed)
    expert = make_expert(world.config.task, objects, measured_eef_poses(world), seed)
    return expert, run_rollout(world, expert_agent(expert), expert.duration + SETTLE_TIME, **rollout_kwargs)
