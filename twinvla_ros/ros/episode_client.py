"""The episode controls of a running teleop_record graph, as one client: the recorder's and
the teleop node's services, their parameters, and the recorder's live /diagnostics.

Used by the keyboard UI and the unattended sim recording (twinvla_ros.cli.record); it is a node
that some executor spins (the runner's thread, or the UI's own), and its calls block the
calling thread only, never that executor.
"""
from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from typing import Iterator

import rclpy
from rclpy.executors import SingleThreadedExecutor
from std_srvs.srv import SetBool

from twinvla_ros.ros.service_client import ServiceCallError, ServiceClient


class EpisodeControlError(ServiceCallError):
    """A recorder, teleop or sim service refused or did not answer."""


class EpisodeClient(ServiceClient):
    error = EpisodeControlError
    missing_hint = "is the teleop_record graph running?"

    def __init__(self, *, recorder: str = "recorder_node", teleop: str = "teleop_node", sim: str = "sim_node",
                 timeout: float = 15.0, **node_kwargs):
        super().__init__("episode_client", timeout=timeout, **node_kwargs)
        self.recorder, self.teleop, self.sim = recorder, teleop, sim

    def recorder_status(self) -> tuple[str, dict[str, str]]:
        """(message, values) of the recorder's last /diagnostics status."""
        return self.diagnostic_status(f"{self.recorder}: recorder")

    def live_rates(self) -> dict[str, float]:
        _, values = self.recorder_status()
        return {key[len("rate "):]: float(value) for key, value in values.items() if key.startswith("rate ")}

    # ---- episodes ------------------------------------------------------------------------------

    def start_episode(self) -> dict:
        return json.loads(self._trigger(f"/{self.recorder}/start_episode"))

    def stop_episode(self) -> dict:
        return json.loads(self._trigger(f"/{self.recorder}/stop_episode"))

    def discard_episode(self) -> dict:
        return json.loads(self._trigger(f"/{self.recorder}/discard_episode"))

    def mark_success(self, success: bool) -> None:
        response = self._call(SetBool, f"/{self.recorder}/mark_success", SetBool.Request(data=bool(success)))
        if not response.success:
            raise self.error(response.message)

    # ---- the sim's scripted expert ---------------------------------------------------------------

    def start_demo(self) -> dict:
        return json.loads(self._trigger(f"/{self.teleop}/start_demo"))

    def demo_status(self) -> dict:
        return json.loads(self._trigger(f"/{self.teleop}/demo_status"))


@contextmanager
def standalone_client(args: list[str] | None = None, **kwargs) -> Iterator[EpisodeClient]:
    """An EpisodeClient in a process of its own (rclpy initialised here, spun by a thread),
    for the keys attached to a graph that `ros2 launch` started."""
    rclpy.init(args=args)
    client = EpisodeClient(**kwargs)
    executor = SingleThreadedExecutor()
    executor.add_node(client)
    spinner = threading.Thread(target=executor.spin, name="episode-client", daemon=True)
    spinner.start()
    try:
        yield client
    finally:
        executor.shutdown(timeout_sec=1.0)
        client.destroy_node()
        rclpy.try_shutdown()
