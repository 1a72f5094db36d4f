"""Turn graph NodeSpecs into launch_ros actions (imported only by the files in launch/).

Where robot_state_publisher is installed, the graph's robot model and TF come from it: it is
added with the URDF, and the arm driver stops publishing /robot_description itself.
"""
from __future__ import annotations

from dataclasses import replace

from launch_ros.actions import Node

from twinvla_ros.bringup.graph import ARM_DRIVER, NodeSpec, robot_state_publisher
from twinvla_ros.bringup.preflight import require_hardware


def _installed(package: str) -> bool:
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:
        return False
    try:
        get_package_share_directory(package)
    except PackageNotFoundError:
        return False
    return True


def launch_nodes(specs: list[NodeSpec]) -> list[Node]:
    require_hardware(specs)        # a real-robot graph with a device missing starts nothing
    publisher = robot_state_publisher(specs)
    actions = []
    if publisher is not None and _installed(publisher.executable):
        specs = [replace(s, parameters={**s.parameters, "publish_robot_description": False})
                 if s.name == ARM_DRIVER.name else s for s in specs]
        actions.append(Node(package="robot_state_publisher", executable="robot_state_publisher",
                            name=publisher.name, output="screen", parameters=[publisher.parameters]))
    actions += [Node(package="twinvla_ros", executable=spec.executable, name=spec.name, output="screen",
                     parameters=[spec.parameters], remappings=list(spec.remappings)) for spec in specs]
    return actions
