"""Turn graph NodeSpecs into launch_ros actions (imported only by the files in launch/)."""
from __future__ import annotations

from launch_ros.actions import Node

from twinvla_ros.bringup.graph import NodeSpec


def launch_nodes(specs: list[NodeSpec]) -> list[Node]:
    return [Node(package="twinvla_ros", executable=spec.executable, name=spec.name, output="screen",
                 parameters=[spec.parameters], remappings=list(spec.remappings)) for spec in specs]
