"""recorder_node: one rosbag2 (MCAP) per demonstration episode, written from the CDR bytes as
they arrive.

Every topic of the `topics` parameter is subscribed with `raw=True` (rclpy hands over the
serialized message; nothing is deserialized or re-serialized on the way to disk) as soon as a
publisher of it appears, with the QoS its publishers offer (best effort if any publisher is best
effort, transient local if all are: what `ros2 bag record` does). A camera's `image_raw` is
recorded as `image_raw/compressed` where the camera node offers that (`prefer_compressed`). The
callbacks only queue bytes; a writer thread of twinvla_ros.data.bags writes them, so a slow disk
costs dropped (counted, reported) messages rather than a stalled executor.

Episode control (std_srvs): `~/start_episode`, `~/stop_episode`, `~/discard_episode` (Trigger:
the running episode, or the last one: re-record it under the same number), `~/mark_success`
(SetBool, the last episode). Responses carry JSON. An episode's task text is the `task`
parameter (live), published on /instruction when the episode starts, and stored with the
operator note, start/end times, success flag, tags and the robot/camera configuration in the
bag's metadata.yaml (custom_data) and in episode.json next to it.

A start is refused, with the reason and before anything is written, when: the output directory
cannot be written or has less free room than `min_free_gb`; a topic that must keep a rate
(`min_rates`) has been silent for `ready_timeout`; or the robot/camera configuration (URDF,
joint names, camera sizes and frames) differs from the episodes already in `output_dir` (a
resumed recording continues their numbering). At the end of an episode the per-topic counts,
rates, worst 1 s windows and drops are logged and returned; an episode whose rates fell below
`min_rates` is flagged.
"""
from __future__ import annotations

import fnmatch
import hashlib
import importlib
import json
import threading
import time
from pathlib import Path

import yaml
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CameraInfo, JointState
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger

from twinvla_ros.data.bags import EpisodeRecorder, RecordingDirectory, RecordingError, TopicSpec
from twinvla_ros.execution.instruction import validate_instruction
from twinvla_ros.reporting import Level, Status
from twinvla_ros.ros.node import TwinvlaNode, run_node
from twinvla_ros.ros.qos import COMMAND_QOS, LATCHED_QOS

DEFAULT_TOPICS = [
    "/cameras/ego/color/image_raw", "/cameras/wrist_left/color/image_raw", "/cameras/wrist_right/color/image_raw",
    "/cameras/ego/color/camera_info", "/cameras/wrist_left/color/camera_info",
    "/cameras/wrist_right/color/camera_info",
    "/joint_states", "/left_arm/eef_pose", "/right_arm/eef_pose",
    "/left_arm/eef_target", "/right_arm/eef_target", "/left_arm/gripper_target", "/right_arm/gripper_target",
    "/left_arm/joint_command", "/right_arm/joint_command",
    "/instruction", "/diagnostics", "/robot_description", "/estop",
]
DEFAULT_MIN_RATES = ["/cameras/*/color/image_raw*=10", "/joint_states=40", "/*_arm/eef_pose=40"]
COMPRESSED_SUFFIX = "/compressed"
# Reader history per recorded topic: messages wait here while the executor is busy, and a keep-last
# history overwrites the oldest one once full. 100 holds 2 s of a 50 Hz stream and 3 s of 30 Hz
# images (depth 10 lost ticks of a 50 Hz stream when a loaded machine held the executor 0.2 s).
RECORDING_DEPTH = 100


def message_class(msgtype: str):
    """"sensor_msgs/msg/Image" -> the rclpy message class."""
    package, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.{kind}"), name)


def parse_min_rates(entries: list[str]) -> list[tuple[str, float]]:
    """["/joint_states=40", "/cameras/*=10"] -> [(pattern, Hz)]; ValueError names the bad entry."""
    rates = []
    for entry in entries:
        if not entry:
            continue
        pattern, sep, value = entry.rpartition("=")
        try:
            hz = float(value)
        except ValueError:
            hz = -1.0
        if not sep or not pattern or not hz >= 0:
            raise ValueError(f"min_rates entry {entry!r}: expected TOPIC_PATTERN=HZ with HZ >= 0")
        rates.append((pattern, hz))
    return rates


def parse_tags(entries: list[str]) -> dict[str, str]:
    tags = {}
    for entry in entries:
        if not entry:
            continue
        key, sep, value = entry.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"episode_tags entry {entry!r}: expected KEY=VALUE")
        tags[key.strip()] = value
    return tags


def _duration(duration) -> dict:
    nanoseconds = int(duration.nanoseconds)
    return {"sec": nanoseconds // 10**9, "nsec": nanoseconds % 10**9}


def offered_qos_yaml(profiles: list[QoSProfile]) -> str:
    """The publishers' QoS in rosbag2's metadata form (every field rosbag2 writes), so
    `ros2 bag play` offers the same."""
    return yaml.safe_dump([{
        "history": int(p.history), "depth": int(p.depth), "reliability": int(p.reliability),
        "durability": int(p.durability), "deadline": _duration(p.deadline), "lifespan": _duration(p.lifespan),
        "liveliness": int(p.liveliness), "liveliness_lease_duration": _duration(p.liveliness_lease_duration),
        "avoid_ros_namespace_conventions": bool(p.avoid_ros_namespace_conventions),
    } for p in profiles], sort_keys=False)


class RecorderNode(TwinvlaNode):
    def __init__(self, **node_kwargs):
        super().__init__("recorder_node", hardware_id="recorder", **node_kwargs)
        declare = self.parameters.declare
        self._output_dir = Path(declare("output_dir", "demos", "directory of the episodes "
                                        "(episode_000000, ...); an existing one is resumed")).expanduser()
        self._wanted = [t for t in declare("topics", DEFAULT_TOPICS, "topics to record") if t]
        self._prefer_compressed = declare("prefer_compressed", True, "record a camera's image_raw/compressed "
                                          "instead of image_raw where it is published")
        self._min_rates = parse_min_rates(declare(
            "min_rates", DEFAULT_MIN_RATES, "TOPIC_PATTERN=HZ: an episode in which a matching topic's rate "
            "falls below HZ (over any 1 s window) is flagged, and no episode starts while it is silent"))
        self._task = declare("task", "", "the task text of the next episodes (their language instruction)",
                             live=True)
        self._note = declare("operator_note", "", "a note stored with the next episodes", live=True)
        self._tags = parse_tags(declare("episode_tags", [""], "KEY=VALUE pairs stored with the next "
                                        "episodes (the sim seed, a scene variant ...)", live=True))
        self._robot_name = declare("robot", "anubis", "robot name stored in the dataset's configuration: "
                                   "episodes of another robot are refused")
        self._publish_task = declare("publish_task", True, "publish the task on /instruction at episode start")
        self._ready_timeout = declare("ready_timeout", 2.0, "seconds a topic with a minimum rate may have "
                                      "been silent when an episode starts", low=0.1, high=60.0)
        min_free_gb = declare("min_free_gb", 2.0, "refuse to start an episode with less free disk (GiB)",
                              low=0.0, high=1e6)
        max_queue_mb = declare("max_queue_mb", 256, "bytes waiting for the disk before messages are dropped "
                               "(MiB)", low=8, high=65536)
        self.parameters.set_apply(self._apply_parameters)

        self.directory = RecordingDirectory(self._output_dir, min_free_bytes=int(min_free_gb * 2**30))
        self.recorder = EpisodeRecorder(self.directory, max_queue_bytes=int(max_queue_mb) * 2**20,
                                        clock_ns=lambda: self.get_clock().now().nanoseconds)
        self._lock = threading.Lock()
        self._recording_subscriptions: dict[str, object] = {}      # recorded topic -> subscription
        self._types: dict[str, str] = {}                 # recorded topic -> msgtype
        self._last_bytes: dict[str, bytes] = {}          # recorded topic -> newest message
        self._last_seen: dict[str, float] = {}           # recorded topic -> monotonic arrival time
        self._latched: set[str] = set()                  # transient-local topics (replayed per episode)
        self._episode_started = 0.0
        self.last_summary = None
        self._instruction_pub = self.create_publisher(String, "/instruction", COMMAND_QOS)

        self.service(Trigger, "~/start_episode", self._on_start)
        self.service(Trigger, "~/stop_episode", self._on_stop)
        self.service(Trigger, "~/discard_episode", self._on_discard)
        self.service(SetBool, "~/mark_success", self._on_mark_success)
        self.timer(0.5, self._discover, "topic discovery")
        self.timer(1.0, self._publish_diagnostics, "diagnostics")
        self._discover()
        self.get_logger().info(f"recording to {self._output_dir} (next episode {self.directory.next_index()}); "
                               f"start with `ros2 service call /{self.get_name()}/start_episode std_srvs/srv/Trigger`")

    # ---- parameters ----------------------------------------------------------------------------

    def _apply_parameters(self, changes: dict) -> str | None:
        if "task" in changes and changes["task"]:
            try:
                validate_instruction(changes["task"])
            except ValueError as error:
                return f"task: {error}"
        if "episode_tags" in changes:
            try:
                tags = parse_tags(changes["episode_tags"])
            except ValueError as error:
                return str(error)
            self._tags = tags
        self._task = changes.get("task", self._task)
        self._note = changes.get("operator_note", self._note)
        if "operator_note" in changes and self.recorder.recording:
            self.recorder.set_note(self._note)
        return None

    # ---- subscriptions -------------------------------------------------------------------------

    def _recorded_name(self, topic: str, advertised: dict[str, list[str]]) -> str:
        compressed = topic + COMPRESSED_SUFFIX
        if self._prefer_compressed and topic.endswith("/image_raw") and compressed in advertised:
            return compressed
        return topic

    def _discover(self) -> None:
        """Subscribe to every wanted topic that has a publisher now (publishers come and go)."""
        advertised = dict(self.get_topic_names_and_types())
        for wanted in self._wanted:
            topic = self._recorded_name(wanted, advertised)
            if topic in self._recording_subscriptions or topic not in advertised:
                continue
            msgtype = advertised[topic][0]
            publishers = self.get_publishers_info_by_topic(topic)
            if not publishers:
                continue
            profiles = [p.qos_profile for p in publishers]
            best_effort = any(p.reliability == ReliabilityPolicy.BEST_EFFORT for p in profiles)
            latched = all(p.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in profiles)
            if latched:
                qos = LATCHED_QOS
            else:
                qos = QoSProfile(depth=RECORDING_DEPTH, durability=DurabilityPolicy.VOLATILE, reliability=(
                    ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE))
            self.recorder.add_topic(TopicSpec(topic, msgtype, min_rate=self._min_rate(topic),
                                              qos=offered_qos_yaml(profiles)))
            with self._lock:
                self._types[topic] = msgtype
                if latched:
                    self._latched.add(topic)
            self._recording_subscriptions[topic] = self.create_subscription(
                message_class(msgtype), topic, self.guarded(f"{topic} recording", self._receiver(topic)), qos,
                raw=True)
            self.get_logger().info(f"recording {topic} [{msgtype}]" + (" (latched)" if latched else ""))

    def _min_rate(self, topic: str) -> float:
        for pattern, hz in self._min_rates:
            if fnmatch.fnmatchcase(topic, pattern):
                return hz
        return 0.0

    def _receiver(self, topic: str):
        def receive(data: bytes) -> None:
            stamp = self.get_clock().now().nanoseconds
            self._last_bytes[topic] = data
            self._last_seen[topic] = time.monotonic()
            self.recorder.offer(topic, data, stamp)
        return receive

    # ---- the robot's configuration (compared across the episodes of a directory) ---------------

    def robot_configuration(self) -> dict:
        config: dict = {"robot": self._robot_name, "cameras": {}, "joint_names": []}
        with self._lock:
            types = dict(self._types)
        for topic, msgtype in sorted(types.items()):
            data = self._last_bytes.get(topic)
            if data is None:
                continue
            if msgtype == "sensor_msgs/msg/CameraInfo":
                info = deserialize_message(data, CameraInfo)
                config["cameras"][topic] = {"width": int(info.width), "height": int(info.height),
                                            "frame_id": info.header.frame_id}
            elif msgtype == "sensor_msgs/msg/JointState" and topic == "/joint_states":
                config["joint_names"] = list(deserialize_message(data, JointState).name)
            elif topic == "/robot_description":
                text = deserialize_message(data, String).data
                config["urdf_sha256"] = hashlib.sha256(text.encode()).hexdigest()
        return config

    def _silent_topics(self) -> list[str]:
        now = time.monotonic()
        advertised = dict(self.get_topic_names_and_types())
        silent = []
        for wanted in self._wanted:
            topic = self._recorded_name(wanted, advertised)
            if self._min_rate(topic) <= 0:
                continue
            seen = self._last_seen.get(topic)
            if seen is None:
                silent.append(f"{topic} (nothing received)")
            elif now - seen > self._ready_timeout:
                silent.append(f"{topic} (silent for {now - seen:.1f} s)")
        return silent

    # ---- episode control -----------------------------------------------------------------------

    def start_episode(self) -> int:
        """Start an episode; RecordingError with the reason when it cannot."""
        if not self._task.strip():
            raise RecordingError("no task text: set it first (`ros2 param set /recorder_node task '...'`)")
        silent = self._silent_topics()
        if silent:
            raise RecordingError("streams missing, not starting: " + "; ".join(silent))
        index = self.recorder.start(self._task, config=self.robot_configuration(), operator_note=self._note,
                                    extra=dict(self._tags))
        self._episode_started = time.monotonic()
        stamp = self.get_clock().now().nanoseconds
        for topic in sorted(self._latched):      # latched state (URDF, e-stop) opens every episode
            data = self._last_bytes.get(topic)
            if data is not None:
                self.recorder.offer(topic, data, stamp)
        if self._publish_task:
            self._instruction_pub.publish(String(data=self._task))
        self.get_logger().info(f"episode {index} started: {self._task!r}")
        return index

    def stop_episode(self, success: bool | None = None):
        summary = self.recorder.stop(success)
        self.last_summary = summary
        level = Level.WARN if summary.flagged else Level.OK
        self.log(level, f"episode {summary.index} stopped after {summary.duration_s:.1f} s:\n{summary.format()}")
        return summary

    def _on_start(self, request: Trigger.Request, response: Trigger.Response):
        try:
            index = self.start_episode()
        except (RecordingError, ValueError) as error:
            response.success = False
            response.message = str(error)
            self.get_logger().error(f"episode not started: {error}")
            return response
        response.success = True
        response.message = json.dumps({"index": index, "task": self._task,
                                       "path": str(self.directory.episode_dir(index))})
        return response

    def _on_stop(self, request: Trigger.Request, response: Trigger.Response):
        if not self.recorder.recording:
            response.success = False
            response.message = "no episode is being recorded"
            return response
        summary = self.stop_episode()
        response.success = True
        response.message = json.dumps(summary_dict(summary))
        return response

    def _on_discard(self, request: Trigger.Request, response: Trigger.Response):
        try:
            path = self.recorder.discard()
        except RecordingError as error:
            response.success = False
            response.message = str(error)
            return response
        self.get_logger().warning(f"discarded {path}")
        response.success = True
        response.message = json.dumps({"discarded": str(path), "next_index": self.directory.next_index()})
        return response

    def _on_mark_success(self, request: SetBool.Request, response: SetBool.Response):
        try:
            self.recorder.mark_success(bool(request.data))
        except RecordingError as error:
            response.success = False
            response.message = str(error)
            return response
        response.success = True
        response.message = "marked " + ("success" if request.data else "failure")
        return response

    # ---- /diagnostics --------------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        values = {"output_dir": str(self._output_dir), "recording": str(self.recorder.recording),
                  "next_index": str(self.directory.next_index()), "topics": str(len(self._recording_subscriptions))}
        level, message = Level.OK, "idle"
        if self.recorder.recording:
            values["episode"] = str(self.recorder.current_index)
            values["elapsed_s"] = f"{time.monotonic() - self._episode_started:.1f}"
            slow = []
            for topic, hz in sorted(self.recorder.live_rates().items()):
                values[f"rate {topic}"] = f"{hz:.1f}"
                minimum = self._min_rate(topic)
                if minimum > 0 and hz < minimum:
                    slow.append(f"{topic} {hz:.1f} Hz < {minimum:g}")
            message = f"recording episode {self.recorder.current_index}"
            if slow:
                level, message = Level.WARN, f"{message}; slow: {', '.join(slow)}"
        elif self.last_summary is not None:
            values["last_episode"] = str(self.last_summary.index)
            values["last_flagged"] = "; ".join(self.last_summary.flagged)
            if self.last_summary.flagged:
                level, message = Level.WARN, f"last episode {self.last_summary.index} flagged"
        self.publish_diagnostics([("recorder", Status(level, message, values))])

    def close(self) -> None:
        if self.recorder.recording:
            self.stop_episode()
        self.recorder.close()


def summary_dict(summary) -> dict:
    return {"index": summary.index, "path": str(summary.path), "task": summary.task,
            "duration_s": round(summary.duration_s, 3), "dropped": summary.dropped, "flagged": summary.flagged,
            "success": summary.success, "write_mb_per_s": round(summary.write_mb_per_s, 3),
            "topics": {topic: {"count": s.count, "rate_hz": round(s.rate_hz, 2),
                               "worst_window_rate_hz": round(s.worst_window_rate_hz, 2), "dropped": s.dropped}
                       for topic, s in summary.topics.items()}}


def main(args=None):
    run_node(RecorderNode, args)
