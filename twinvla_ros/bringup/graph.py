"""The node graphs of twinvla_ros, described once for `ros2 launch` and the in-process runner.

A graph is a list of NodeSpec: which node, its parameters and remappings. The launch files in
launch/ turn specs into launch_ros Node actions; twinvla_ros.bringup.runner instantiates the same specs
in one process (where ROS launch is not installed, and in the integration tests). Parameters
come from config/<graph>.yaml (ROS parameter-file format), then the user's `config:=` file,
then the launch arguments, in that order of precedence.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import yaml

from twinvla_ros.paths import config_path, urdf_path


@dataclass(frozen=True)
class NodeSpec:
    name: str                  # ROS node name
    executable: str            # console entry point (launch_ros `executable`)
    factory: str               # "module:Class" the in-process runner instantiates
    parameters: dict[str, Any] = field(default_factory=dict)
    remappings: tuple[tuple[str, str], ...] = ()
    # "module:function" with process-wide settings the node needs (thread counts ...), called
    # once before the node is made: by the node's own main() in its process, and by the
    # in-process runner (where the last node's settings win).
    process_setup: str = ""


SIM_NODE = NodeSpec("sim_node", "sim_node", "twinvla_ros.ros.nodes.sim_node:SimNode")
CAMERA_NODE = NodeSpec("camera_node", "camera_node", "twinvla_ros.ros.nodes.camera_node:CameraNode",
                       parameters={"backend": "realsense"})
ARM_DRIVER = NodeSpec("arm_driver_node", "arm_driver_node", "twinvla_ros.ros.nodes.arm_driver_node:ArmDriverNode")
POLICY = NodeSpec("policy_node", "policy_node", "twinvla_ros.ros.nodes.policy_node:PolicyNode",
                  process_setup="twinvla_ros.ros.nodes.policy_node:configure_process")
TELEOP = NodeSpec("teleop_node", "teleop_node", "twinvla_ros.ros.nodes.teleop_node:TeleopNode")
RECORDER = NodeSpec("recorder_node", "recorder_node", "twinvla_ros.ros.nodes.recorder_node:RecorderNode")


def load_parameter_file(path: str | Path) -> dict[str, dict[str, Any]]:
    """ROS 2 parameter file -> {node_name: {param: value}} (wildcard '/**' applies to all)."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of node names to ros__parameters")
    out: dict[str, dict[str, Any]] = {}
    for node, body in data.items():
        if not isinstance(body, dict) or "ros__parameters" not in body:
            raise ValueError(f"{path}: entry '{node}' has no ros__parameters")
        out[node.strip("/")] = dict(body["ros__parameters"] or {})
    return out


def _build(specs: list[NodeSpec], config_names: list[str], config: str | Path | None,
           overrides: dict[str, dict[str, Any]], checkpoint: str = "") -> list[NodeSpec]:
    """Parameters of each spec: package config files, then the user's file, then overrides
    (the `**` wildcard first, the node's own entry after)."""
    layers = [load_parameter_file(config_path(name)) for name in config_names]
    if config:
        layers.append(load_parameter_file(config))
    if checkpoint:
        overrides = {**overrides, "policy_node": {"checkpoint": str(checkpoint), **overrides.get("policy_node", {})}}
    layers.append(overrides)
    result = []
    for spec in specs:
        params = dict(spec.parameters)
        for layer in layers:
            params.update(layer.get("**", {}))
            params.update(layer.get(spec.name, {}))
        result.append(replace(spec, parameters=params))
    return result


SIM_ARM_DRIVER = replace(ARM_DRIVER, parameters={"backend": "sim"})
ROBOT_ARM_DRIVER = replace(ARM_DRIVER, parameters={"backend": "dynamixel"})

# The robot part of a graph: (nodes, their package parameter files), simulated or real.
SIM_ROBOT = ([SIM_NODE, SIM_ARM_DRIVER], ["sim_robot.yaml"])
REAL_ROBOT = ([CAMERA_NODE, ROBOT_ARM_DRIVER], ["real_robot.yaml"])


def sim_robot(config: str | Path | None = None, **overrides) -> list[NodeSpec]:
    """The simulated robot alone: MuJoCo sim + arm driver (teleop, tests, evaluation)."""
    return _build(*SIM_ROBOT, config, overrides)


def real_robot(config: str | Path | None = None, **overrides) -> list[NodeSpec]:
    """The real robot alone: RealSense camera node + arm driver on the Dynamixel buses."""
    return _build(*REAL_ROBOT, config, overrides)


def policy_only(checkpoint: str = "", config: str | Path | None = None, **overrides) -> list[NodeSpec]:
    """The policy node alone, for a robot (or sim) that is already running elsewhere."""
    return _build([POLICY], ["anubis_policy.yaml"], config, overrides, checkpoint)


def anubis_policy(sim: bool = True, checkpoint: str = "", config: str | Path | None = None,
                  **overrides) -> list[NodeSpec]:
    """The main job: robot (sim or real) + TwinVLA policy node."""
    robot_nodes, robot_configs = SIM_ROBOT if sim else REAL_ROBOT
    return _build([*robot_nodes, POLICY], [*robot_configs, "anubis_policy.yaml"], config, overrides, checkpoint)


def teleop_record(sim: bool = False, task: str = "", output_dir: str = "", config: str | Path | None = None,
                  **overrides) -> list[NodeSpec]:
    """Demonstrations: the robot, the teleop node (leader arms, or the sim's scripted expert) and
    the recorder (one MCAP bag per episode). `task`: with the sim, the sim task (the scene, the
    expert and the episodes' task text follow it); on the robot, the episodes' task text.
    `output_dir`: where the episodes go."""
    robot_nodes, robot_configs = SIM_ROBOT if sim else REAL_ROBOT
    teleop = replace(TELEOP, parameters={"backend": "sim_expert" if sim else "leader"})
    named: dict[str, dict[str, Any]] = {"recorder_node": {"robot": "anubis_sim" if sim else "anubis"}}
    if task:
        named.setdefault("sim_node" if sim else "recorder_node", {})["task"] = task
    if output_dir:
        named["recorder_node"]["output_dir"] = str(output_dir)
    for node, params in overrides.items():   # the caller's overrides win over the arguments
        named[node] = {**named.get(node, {}), **params}
    specs = _build([*robot_nodes, teleop, RECORDER], [*robot_configs, "teleop_record.yaml"], config, named)
    if not sim:
        return specs
    # One task for the scene, the expert and the recorder: the sim node's; the episodes' task
    # text is that task's instruction unless the caller gave one.
    from twinvla_ros.sim.scene import task_spec

    sim_task = next(s for s in specs if s.name == SIM_NODE.name).parameters.get("task", "handover_box")
    synced = {TELEOP.name: {"task": sim_task}}
    if not named["recorder_node"].get("task"):
        synced[RECORDER.name] = {"task": task_spec(sim_task).instruction}
    return [replace(s, parameters={**s.parameters, **synced[s.name]}) if s.name in synced else s for s in specs]


def robot_state_publisher(specs: list[NodeSpec]) -> NodeSpec | None:
    """robot_state_publisher for a graph with an arm driver, so RViz and Foxglove get the
    robot model and TF; the arm driver then leaves /robot_description to it. Only `ros2 launch`
    starts it (it is a C++ node of a ROS installation, not of this package)."""
    if not any(spec.name == ARM_DRIVER.name for spec in specs):
        return None
    return NodeSpec("robot_state_publisher", "robot_state_publisher", "",
                    parameters={"robot_description": urdf_path().read_text()})


GRAPHS: dict[str, Callable[..., list[NodeSpec]]] = {
    "anubis_policy": anubis_policy,
    "sim_robot": sim_robot,
    "real_robot": real_robot,
    "policy": policy_only,
    "teleop_record": teleop_record,
}
