"""Run a node graph (twinvla_ros.bringup.graph) where `ros2 launch` is not installed.

GraphRunner puts every node in this process (`twinvla-ros launch ...`, the integration tests,
which look inside the nodes). Each node spins on its own single-threaded executor in its own
thread, as it would in its own process: a slow callback in one node never delays another
node's timers, and a single-threaded executor costs far less Python time per callback than a
multi-threaded one. The nodes still talk through real DDS.

ProcessGraphRunner starts one process per node instead (`--processes`, the demo): the same
specs, the layout `ros2 launch` gives, no interpreter lock shared between nodes. Its `prefix`
runs every node under a wrapper command (`["ip", "netns", "exec", "robot"]`: the split-host
rehearsal, twinvla_ros.bringup.split_hosts) and `env` changes the nodes' environment (a DDS
setup for a real network, twinvla_ros.bringup.dds.network_dds_environment).
"""
from __future__ import annotations

import gc
import importlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import yaml

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter

from twinvla_ros.bringup.graph import NodeSpec
from twinvla_ros.bringup.preflight import require_hardware
from twinvla_ros.ros.node import TwinvlaLifecycleNode, freeze_long_lived_objects, spin_until


def _resolve(reference: str) -> Callable:
    module_name, name = reference.split(":")
    return getattr(importlib.import_module(module_name), name)


def _instantiate(spec: NodeSpec, context: Context) -> Node:
    cls = _resolve(spec.factory)
    if spec.process_setup:
        _resolve(spec.process_setup)()
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
        self._froze = False
        self.nodes: dict[str, Node] = {}
        self._executors: list[SingleThreadedExecutor] = []
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    def start(self) -> "GraphRunner":
        require_hardware(self.specs)
        rclpy.init(context=self.context)
        try:
            for spec in self.specs:
                self.nodes[spec.name] = _instantiate(spec, self.context)
            # Managed nodes come up once the whole graph exists, as ros2 launch's lifecycle
            # events would bring them up; one that cannot configure stops the whole graph.
            for node in self.nodes.values():
                if isinstance(node, TwinvlaLifecycleNode) and node.autostart:
                    node.bring_up()
        except BaseException:
            self.stop()
            raise
        # As a node's own process does (run_node); a runner of no nodes (a probe's) has nothing to
        # keep off the collector, and a full collection of a test process costs a second.
        self._froze = bool(self.nodes)
        if self._froze:
            freeze_long_lived_objects()
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
        # The same loop as a node's own process (run_node): callbacks are guarded by the node,
        # so a failing one is reported on /diagnostics and spinning goes on.
        spin_until(executor, lambda: self.context.ok() and not self._stopping.is_set())

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
        if self._froze:
            gc.unfreeze()      # the stopped graph's objects may be collected again
            self._froze = False

    def __enter__(self) -> "GraphRunner":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class ProcessGraphRunner:
    """Start each node of a graph in its own Python process, as `ros2 launch` would.

    For a long-running graph on a small machine: one interpreter per node means the sim's
    rendering, the driver's servo loop and the policy's inference never wait for each other's
    interpreter lock. Parameters go through a ROS parameter file, remappings through
    --ros-args; output is forwarded to this process's stdout/stderr.

    `prefix`: a command every node process runs under, which must exec the node in its own
    place (`ip netns exec NAME`, `taskset -c 1`, `nice -n 5`), so that SIGINT reaches the
    node. `env`: variables set (a string) or removed (None) in the nodes' environment, on top
    of this process's.
    """

    def __init__(self, specs: list[NodeSpec], prefix: Sequence[str] = (),
                 env: Mapping[str, str | None] | None = None):
        self.specs = specs
        self.prefix = [str(part) for part in prefix]
        self.env = dict(env or {})
        self.processes: dict[str, subprocess.Popen] = {}
        self._workdir: tempfile.TemporaryDirectory | None = None

    def environment(self) -> dict[str, str] | None:
        """The node processes' environment (None: this process's, unchanged)."""
        if not self.env:
            return None
        merged = dict(os.environ)
        for name, value in self.env.items():
            if value is None:
                merged.pop(name, None)
            else:
                merged[name] = str(value)
        return merged

    def start(self) -> "ProcessGraphRunner":
        require_hardware(self.specs)
        self._workdir = tempfile.TemporaryDirectory(prefix="twinvla_ros_graph_")
        environment = self.environment()
        try:
            for spec in self.specs:
                params = Path(self._workdir.name) / f"{spec.name}.yaml"
                params.write_text(yaml.safe_dump({spec.name: {"ros__parameters": spec.parameters}}))
                module_name, _ = spec.factory.split(":")
                # main() of the node's module runs its process setup, as the console script does.
                cmd = [*self.prefix, sys.executable, "-c", f"from {module_name} import main; main()", "--ros-args",
                       "-r", f"__node:={spec.name}", "--params-file", str(params)]
                for source, target in spec.remappings:
                    cmd += ["-r", f"{source}:={target}"]
                self.processes[spec.name] = subprocess.Popen(cmd, env=environment)
        except BaseException:
            self.stop()
            raise
        return self

    def failed(self) -> dict[str, int]:
        """Nodes whose process has exited, with their exit codes."""
        return {name: p.returncode for name, p in self.processes.items() if p.poll() is not None}

    def stop(self, timeout: float = 10.0) -> None:
        # SIGINT first, as ros2 launch does, so every node runs its safe shutdown.
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> "ProcessGraphRunner":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
