"""The package's layering, checked on the source: every import of every module is parsed.

Two rules (README "Layout"):
1. Only the ROS layer (twinvla_ros.ros) and bringup import rclpy, launch or ROS message
   packages; everything below them is plain Python that runs and tests without ROS.
2. Nothing imports upward: a package imports only packages of a lower layer (and itself).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "twinvla_ros"

# Layer of each top-level part of twinvla_ros; a part may import parts of a strictly lower layer.
LAYERS = {
    "paths": -1,
    "robot": 0, "reporting": 0,
    "sim": 1, "model": 1, "execution": 1,
    "hardware": 2, "data": 2,
    "control": 3, "training": 3,
    "ros": 4,
    "bringup": 5, "evaluation": 5,
    "cli": 6,
}
ROS_LAYERS = {"ros", "bringup"}
ROS_MODULES = {"rclpy", "launch", "launch_ros", "message_filters", "ament_index_python", "rosidl_runtime_py",
               "cv_bridge", "rosbag2_py", "tf2_ros", "robot_state_publisher", "rcl_interfaces",
               "builtin_interfaces"}
ROS_SUFFIXES = ("_msgs", "_srvs", "_interfaces")


def is_ros_module(name: str) -> bool:
    top = name.split(".")[0]
    return top in ROS_MODULES or top.endswith(ROS_SUFFIXES)


def imported_modules(source: str, module: str, is_package: bool) -> list[str]:
    """Absolute names of everything `module` imports, lazy (in-function) imports included."""
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module
            names.append(prefix)
            # `from pkg import sub` may import a submodule: count it under the package too.
            names += [f"{prefix}.{alias.name}" for alias in node.names if alias.name != "*"]
    return names


def part_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "twinvla_ros" and len(parts) > 1 else None


def violations(module: str, source: str, is_package: bool = False) -> list[str]:
    own = part_of(module)
    found = []
    for name in imported_modules(source, module, is_package):
        if is_ros_module(name) and own not in ROS_LAYERS:
            found.append(f"{module} imports ROS module {name}")
        target = part_of(name)
        if target is None or target == own or target not in LAYERS:
            continue
        if own is None or LAYERS[target] >= LAYERS[own]:
            found.append(f"{module} (layer {LAYERS.get(own)}) imports {name} (layer {LAYERS[target]})")
    return sorted(set(found))


def package_modules():
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        relative = path.relative_to(PACKAGE_ROOT.parent).with_suffix("")
        parts = list(relative.parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        yield ".".join(parts), path, is_package


def test_every_part_of_the_package_has_a_layer():
    parts = {part_of(module) for module, _, _ in package_modules()} - {None}
    assert parts <= set(LAYERS), f"parts without a layer: {sorted(parts - set(LAYERS))}"
    assert len(parts) >= 12            # the tree was found and walked


def test_no_module_imports_ros_below_the_ros_layer_or_imports_upward():
    found = []
    for module, path, is_package in package_modules():
        found += violations(module, path.read_text(), is_package)
    assert not found, "\n".join(found)


@pytest.mark.parametrize("module, source, expected", [
    ("twinvla_ros.control.controller", "import rclpy", "imports ROS module rclpy"),
    ("twinvla_ros.model.inference", "def f():\n    from sensor_msgs.msg import Image", "ROS module sensor_msgs.msg"),
    ("twinvla_ros.robot.kinematics", "from twinvla_ros.control import safety", "imports twinvla_ros.control"),
    ("twinvla_ros.execution.runtime", "from twinvla_ros.ros.messages import pose_to_matrix", "imports twinvla_ros.ros"),
    ("twinvla_ros.sim.world", "from ..model import TwinVLA", "imports twinvla_ros.model"),
    ("twinvla_ros.bringup.graph", "from twinvla_ros.cli import main", "imports twinvla_ros.cli"),
])
def test_the_checker_finds_what_it_forbids(module, source, expected):
    assert any(expected in v for v in violations(module, source))


def test_the_checker_allows_what_the_layers_permit():
    assert violations("twinvla_ros.ros.nodes.sim_node", "import rclpy\nfrom twinvla_ros.sim import SimWorld") == []
    assert violations("twinvla_ros.model.inference", "from .processing_twinvla import READOUT\nimport rosbags") == []
    assert violations("twinvla_ros.model", "from .inference import TwinVLAPolicy", is_package=True) == []
