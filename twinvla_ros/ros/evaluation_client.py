"""The ROS side of the closed-loop evaluation (twinvla_ros.evaluation.closed_loop): one node that
stops and instructs the policy node, homes the arms through the arm driver, resets and asks the
sim node, and keeps the ego camera's frames of an episode."""
from __future__ import annotations

import json
import threading
import time

import numpy as np
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String

from twinvla_ros.robot.description import load_description
from twinvla_ros.ros.messages import image_to_rgb
# Home as the teleop node's demos start from it.
from twinvla_ros.ros.nodes.teleop_node import HOME_TIMEOUT, HOME_TOLERANCE
from twinvla_ros.ros.qos import COMMAND_QOS, SENSOR_QOS
from twinvla_ros.ros.service_client import ServiceCallError, ServiceClient

EGO_TOPIC = "/cameras/ego/color/image_raw"


class EvaluationError(ServiceCallError):
    """A node of the evaluated graph refused or did not answer, or the arms did not get home."""


class EvaluationClient(ServiceClient):
    error = EvaluationError
    missing_hint = "is the anubis_policy sim graph running?"

    def __init__(self, *, policy: str = "policy_node", arm_driver: str = "arm_driver_node", sim: str = "sim_node",
                 timeout: float = 30.0, **node_kwargs):
        super().__init__("evaluation_client", timeout=timeout, **node_kwargs)
        self.policy, self.arm_driver, self.sim = policy, arm_driver, sim
        description = load_description()
        self._home = {name: value for arm in description.arms.values()
                      for name, value in zip(arm.joint_names, arm.home)}
        self._lock = threading.Lock()
        self._joints: tuple[float, dict[str, float]] | None = None
        self._frames: list[tuple[float, np.ndarray]] | None = None
        self._keep_all = False
        self._instruction = self.create_publisher(String, "/instruction", COMMAND_QOS)
        self.create_subscription(JointState, "/joint_states", self._on_joints, COMMAND_QOS)
        self.create_subscription(Image, EGO_TOPIC, self._on_image, SENSOR_QOS)

    def _on_joints(self, msg: JointState) -> None:
        with self._lock:
            self._joints = (time.monotonic(), dict(zip(msg.name, msg.position)))

    def _on_image(self, msg: Image) -> None:
        with self._lock:
            if self._frames is None:
                return
            frame = (time.monotonic(), image_to_rgb(msg))
            if self._keep_all or len(self._frames) < 2:
                self._frames.append(frame)
            else:
                self._frames[-1] = frame          # the first and the latest only

    # ---- what closed_loop.run_episode calls -------------------------------------------------

    def stop_policy(self) -> None:
        self._trigger(f"/{self.policy}/stop")

    def go_home(self) -> None:
        """The arm driver's go_home, until every joint is home. An arm a failed rollout left
        stuck (pressed into the table or the box: the driver holds a blocked arm) is freed by a
        sim reset, which puts the robot home, and the driver's setpoint follows."""
        self._trigger(f"/{self.arm_driver}/go_home")
        if self._wait_home(HOME_TIMEOUT / 2):
            return
        self.get_logger().warning(f"the arms are not home after {HOME_TIMEOUT / 2:.0f} s (stuck?): resetting the sim")
        self._trigger(f"/{self.sim}/reset")
        self._trigger(f"/{self.arm_driver}/go_home")
        if not self._wait_home(HOME_TIMEOUT / 2):
            raise self.error(f"the arms did not get within {HOME_TOLERANCE} rad of home in {HOME_TIMEOUT:.0f} s, "
                             f"a sim reset included ({self._farthest_from_home()})")

    def _wait_home(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self._arms_home():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def _arms_home(self) -> bool:
        with self._lock:
            joints = self._joints
        if joints is None or time.monotonic() - joints[0] > 0.5:
            return False
        return all(abs(joints[1].get(name, np.inf) - home) <= HOME_TOLERANCE for name, home in self._home.items())

    def _farthest_from_home(self) -> str:
        with self._lock:
            joints = self._joints
        if joints is None:
            return "no /joint_states"
        name, error = max(((n, abs(joints[1].get(n, np.inf) - home)) for n, home in self._home.items()),
                          key=lambda item: item[1])
        return f"{name} {error:.3f} rad away, joint states {time.monotonic() - joints[0]:.1f} s old"

    def reset_sim(self, seed: int) -> dict:
        self.set_parameters(self.sim, seed=int(seed))
        return json.loads(self._trigger(f"/{self.sim}/reset"))

    def say(self, instruction: str) -> None:
        self._instruction.publish(String(data=instruction))

    def policy_diagnostics(self) -> dict[str, str]:
        """The policy node's latest /diagnostics values (its counters run over the whole evaluation)."""
        return self.diagnostic_status(f"{self.policy}: policy")[1]

    def start_frames(self, keep_all: bool) -> None:
        with self._lock:
            self._frames, self._keep_all = [], keep_all

    def stop_frames(self) -> list[tuple[float, np.ndarray]]:
        with self._lock:
            frames, self._frames = self._frames or [], None
        return frames

    def wait_until_ready(self, timeout: float) -> None:
        """The policy listening on /instruction and the arm driver's joint states arriving."""
        deadline = time.monotonic() + timeout
        while self._instruction.get_subscription_count() == 0 or self._joints is None:
            if time.monotonic() > deadline:
                raise self.error(f"the graph was not up within {timeout:.0f} s (no policy on /instruction "
                                 "or no /joint_states)")
            time.sleep(0.1)
