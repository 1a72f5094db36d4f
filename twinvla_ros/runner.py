"""Run a node graph (twinvla_ros.graph) in one process with an rclpy executor.

Used where `ros2 launch` is not installed (`twinvla-ros launch ...`) and by the integration
tests. Nodes talk through real DDS exactly as when launched as separate processes. Each node
spins on its own single-threaded executor in its own thread, as it would in its own process:
a slow callback in one node never delays another node's timers, and a single-threaded
executor costs far less Python time per callback than a multi-threaded one.
"""
from __future__ import annotations

import importlib
import threading
import traceback
from typing import Any

import rclpy
from rclpy.context import Context
from rclpy.executors import ExternalShutdownException, ShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter

from twinvla_ros.graph import NodeSpec


def _instantiate(spec: NodeSpec, context: Context) -> Node:
    module_name, class_name = spec.factory.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    cli_args = ["--ros-args"]
    for source, target in spec.remappings:
        cli_args += ["-r", f"{source}:={target}"]
    overrides = [Parameter(name, value=value) for name, value in spec.parameters.items()]
    return cls(context=context, parameter_overrides=overrides, cli_args=cli_args)


class GraphRunner:
    """Start the nodes of a graph, spin each in its own thread, stop them cleanly."""

    def __init__(self, specs: list[NodeSpec]):
        self.specs = specs
        self.context = Context()
        self.nodes: dict[str, Node] = {}
        self._executors: list[SingleThreadedExecutor] = []
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    def start(self) -> "GraphRunner":
        rclpy.init(context=self.context)
        try:
            for spec in self.specs:
                self.nodes[spec.name] = _instantiate(spec, self.context)
        except BaseException:
            self.stop()
            raise
        for node in self.nodes.values():
            self.add_node(node)
        return self

    def add_node(self, node: Node) -> None:
        """Spin a node (of the graph, or a test's probe) in its own thread."""
        executor = SingleThreadedExecutor(context=self.context)
        executor.add_node(node)
        thread = threading.Thread(target=self._spin, args=(executor, node), name=f"spin-{node.get_name()}",
                                  daemon=True)
        self._executors.append(executor)
        self._threads.append(thread)
        thread.start()

    def _spin(self, executor: SingleThreadedExecutor, node: Node) -> None:
        # A failing callback must not stop the robot: log it and keep spinning
        # (`executor.spin()` would return on the first exception).
        while self.context.ok() and not self._stopping.is_set():
            try:
                executor.spin_once(timeout_sec=0.1)
            except (ShutdownException, ExternalShutdownException):
                return
            except Exception:
                if self._stopping.is_set():      # entities destroyed under a finishing callback
                    return
                node.get_logger().error(f"callback failed:\n{traceback.format_exc()}")

    def node(self, name: str) -> Any:
        return self.nodes[name]

    def stop(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=5.0)
        for executor in self._executors:
            executor.shutdown(timeout_sec=5.0)
        self._executors.clear()
        self._threads.clear()
        for node in self.nodes.values():
            close = getattr(node, "close", None)
            if close is not None:
                close()
            node.destroy_node()
        self.nodes.clear()
        if self.context.ok():
            rclpy.shutdown(context=self.context)

    def __enter__(self) -> "GraphRunner":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
