"""A node that calls other nodes' services and parameters from a plain thread: the base of the
episode controls (episode_client) and the closed-loop evaluation (evaluation_client).

It is spun by some executor (a runner's thread, or its own); a call blocks the calling thread
only, never that executor, and a refusal or a silent service raises `error` with the reason. It
also keeps the latest /diagnostics status of every node (`diagnostic_status`), which is how the
other nodes say how they are doing.
"""
from __future__ import annotations

import json
import threading
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import ListParameters, SetParameters
from rclpy.node import Node
from std_srvs.srv import Trigger

from twinvla_ros.ros.qos import COMMAND_QOS


class ServiceCallError(RuntimeError):
    """A service refused (the reason is the service's own) or did not answer."""


def _parameter(name: str, value: Any) -> ParameterMsg:
    if isinstance(value, bool):
        v = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value)
    elif isinstance(value, int):
        v = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value)
    elif isinstance(value, float):
        v = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
    elif isinstance(value, list):
        v = ParameterValue(type=ParameterType.PARAMETER_STRING_ARRAY, string_array_value=[str(x) for x in value])
    else:
        v = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=str(value))
    return ParameterMsg(name=name, value=v)


class ServiceClient(Node):
    error: type[ServiceCallError] = ServiceCallError
    missing_hint = "is the graph running?"
    sim = "sim_node"                 # the sim node whose task_status() is asked

    def __init__(self, name: str, *, timeout: float = 15.0, **node_kwargs):
        super().__init__(name, **node_kwargs)
        self.timeout = timeout
        self._statuses_lock = threading.Lock()
        self._statuses: dict[str, tuple[str, dict[str, str]]] = {}
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, COMMAND_QOS)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        with self._statuses_lock:
            for status in msg.status:
                self._statuses[status.name] = (status.message, {kv.key: kv.value for kv in status.values})

    def diagnostic_status(self, name: str) -> tuple[str, dict[str, str]]:
        """(message, values) of the last /diagnostics status called `name` ("recorder_node:
        recorder"); ("", {}) before one arrived."""
        with self._statuses_lock:
            message, values = self._statuses.get(name, ("", {}))
        return message, dict(values)

    def _call(self, srv_type, name: str, request, timeout: float | None = None):
        timeout = self.timeout if timeout is None else timeout
        client = self.create_client(srv_type, name)
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise self.error(f"{name} is not available ({self.missing_hint})")
            future = client.call_async(request)
            deadline = time.monotonic() + timeout
            while not future.done():
                if time.monotonic() > deadline:
                    raise self.error(f"{name} did not answer within {timeout:.0f} s")
                time.sleep(0.01)
            return future.result()
        finally:
            self.destroy_client(client)

    def _trigger(self, name: str, timeout: float | None = None) -> str:
        response = self._call(Trigger, name, Trigger.Request(), timeout)
        if not response.success:
            raise self.error(response.message)
        return response.message

    def set_parameters(self, node: str, **values) -> None:
        request = SetParameters.Request(parameters=[_parameter(k, v) for k, v in values.items()])
        response = self._call(SetParameters, f"/{node}/set_parameters", request)
        refused = [f"{name}: {r.reason}" for name, r in zip(values, response.results) if not r.successful]
        if refused:
            raise self.error(f"/{node} refused " + "; ".join(refused))

    def task_status(self) -> dict:
        """The sim's success check now: {"task", "success", "reason", "objects"}."""
        return json.loads(self._trigger(f"/{self.sim}/task_status"))

    def parameter_names(self, node: str) -> list[str]:
        """The parameters `node` declares (`ros2 param list`)."""
        response = self._call(ListParameters, f"/{node}/list_parameters", ListParameters.Request())
        return list(response.result.names)
