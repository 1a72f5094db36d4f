"""An episode bag read into the streams a dataset row is made of.

One pass over the bag decodes everything small (EEF poses and targets, gripper targets, joint
states and commands, the instruction) and only the stamps of the camera frames (read from the
CDR header, so an 80 MB episode is scanned without decoding images); `decode_used_frames` is the
second pass that decodes just the frames the timeline uses.

Stamps: the message's header stamp (capture or measurement time), or the recorder's receive
time for messages without a header (std_msgs/Float64 gripper targets) and for a stream whose
publisher left its stamps at zero (said in `stamp_sources`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from twinvla_ros.data.bags.files import read_sidecar
from twinvla_ros.data.bags.images import IMAGE_TYPES, decode_image, header_stamp_ns
from twinvla_ros.data.bags.recovery import find_mcap
from twinvla_ros.robot.bimanual import ARMS
from twinvla_ros.robot.cameras import CAMERAS
from twinvla_ros.robot.rotations import quat_xyzw_to_matrix

COMPRESSED = "/compressed"


def camera_topics(camera: str) -> tuple[str, str]:
    raw = f"/cameras/{camera}/color/image_raw"
    return raw, raw + COMPRESSED


@dataclass
class PoseStream:
    times: np.ndarray               # (n,) int64 ns
    positions: np.ndarray           # (n, 3)
    rotations: np.ndarray           # (n, 3, 3)
    frame_id: str


@dataclass
class ScalarStream:
    times: np.ndarray               # (n,) int64 ns
    values: np.ndarray              # (n,)


@dataclass
class JointStream:
    """JointState messages: each joint's own samples (a message may name only some joints)."""

    samples: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)

    def add(self, time_ns: int, names, positions) -> None:
        if len(names) != len(positions):
            raise ValueError(f"a JointState with {len(names)} names and {len(positions)} positions")
        for name, position in zip(names, positions):
            times, values = self.samples.setdefault(name, ([], []))
            times.append(time_ns)
            values.append(float(position))

    def track(self, joint: str) -> ScalarStream | None:
        if joint not in self.samples:
            return None
        times, values = self.samples[joint]
        return ScalarStream(np.asarray(times, dtype=np.int64), np.asarray(values, dtype=np.float64))

    def tracks(self, joints) -> tuple[np.ndarray, np.ndarray] | None:
        """Several joints sampled together: (times (n,), positions (n, k)) over the messages
        that carry all of them, or None when a joint is missing."""
        by_time: dict[int, dict[str, float]] = {}
        for joint in joints:
            if joint not in self.samples:
                return None
            for t, v in zip(*self.samples[joint]):
                by_time.setdefault(t, {})[joint] = v
        times = sorted(t for t, values in by_time.items() if len(values) == len(joints))
        if not times:
            return None
        return np.asarray(times, np.int64), np.array([[by_time[t][j] for j in joints] for t in times])


@dataclass
class BagStreams:
    path: Path
    task: str                                   # from the episode's sidecar (episode.json)
    success: bool | None
    flags: list[str]
    extra: dict
    config: dict                                # the recorder's robot/camera configuration
    poses: dict[str, PoseStream]                # {side: eef_pose}
    targets: dict[str, PoseStream]              # {side: eef_target}
    gripper_targets: dict[str, ScalarStream]    # {side: gripper_target}
    joint_commands: dict[str, JointStream]      # {side: joint_command}
    joint_states: JointStream
    image_topics: dict[str, tuple[str, str]]    # {camera: (topic, msgtype)}
    image_times: dict[str, np.ndarray]          # {camera: (n,) int64 ns, in bag order}
    instructions: list[str]
    stamp_sources: dict[str, str]               # {topic: "header" | "receive time"}


def _pose_stream(entries: list, frame_id: str) -> PoseStream:
    times = np.array([t for t, _, _ in entries], dtype=np.int64)
    positions = np.array([p for _, p, _ in entries], dtype=np.float64).reshape(-1, 3)
    quats = np.array([q for _, _, q in entries], dtype=np.float64).reshape(-1, 4)
    if not (np.isfinite(positions).all() and np.isfinite(quats).all()):
        raise ValueError("a pose holds NaN or inf")
    return PoseStream(times, positions, quat_xyzw_to_matrix(quats), frame_id)


def read_bag_streams(bag: str | Path) -> BagStreams:
    """The streams of one episode bag (a rosbag2 folder); errors from a corrupt or truncated
    file propagate (the converter reports and skips the episode)."""
    from rosbags.highlevel import AnyReader

    bag = Path(bag)
    find_mcap(bag)
    info = read_sidecar(bag)                  # written by the recorder when the episode starts
    pose_entries: dict[str, dict[str, list]] = {"eef_pose": {}, "eef_target": {}}
    pose_frames: dict[str, str] = {}
    gripper: dict[str, list] = {}
    joint_commands: dict[str, JointStream] = {}
    joint_states = JointStream()
    image_topics: dict[str, tuple[str, str]] = {}
    image_times: dict[str, list[int]] = {}
    instructions: list[str] = []
    stamp_sources: dict[str, str] = {}

    def stamp(topic: str, header_ns: int, log_ns: int) -> int:
        # A stream is stamped one way throughout: by headers unless a publisher left one at zero.
        if header_ns == 0 or stamp_sources.get(topic) == "receive time":
            stamp_sources[topic] = "receive time"
            return log_ns
        stamp_sources.setdefault(topic, "header")
        return header_ns

    with AnyReader([bag]) as reader:
        chosen = {}
        for camera in CAMERAS:
            raw, compressed = camera_topics(camera)
            present = {c.topic: c for c in reader.connections if c.topic in (raw, compressed)
                       and c.msgtype in IMAGE_TYPES and c.msgcount}
            # Lossless raw frames when both were recorded; otherwise whichever is there.
            connection = present.get(raw) or present.get(compressed)
            if connection is not None:
                chosen[connection.topic] = camera
                image_topics[camera] = (connection.topic, connection.msgtype)
                image_times[camera] = []
        arm_topics = {f"/{side}_arm/{kind}": (side, kind) for side in ARMS
                      for kind in ("eef_pose", "eef_target", "gripper_target", "joint_command")}
        wanted = [c for c in reader.connections
                  if c.topic in chosen or c.topic in arm_topics or c.topic in ("/joint_states", "/instruction")]
        for connection, log_ns, raw in reader.messages(connections=wanted):
            topic = connection.topic
            if topic in chosen:
                image_times[chosen[topic]].append(stamp(topic, header_stamp_ns(raw), log_ns))
                continue
            msg = reader.deserialize(raw, connection.msgtype)
            if topic == "/instruction":
                instructions.append(msg.data)
            elif topic == "/joint_states":
                joint_states.add(stamp(topic, _header_ns(msg), log_ns), msg.name, msg.position)
            else:
                side, kind = arm_topics[topic]
                if kind == "gripper_target":
                    stamp_sources[topic] = "receive time"
                    gripper.setdefault(side, []).append((log_ns, float(msg.data)))
                elif kind == "joint_command":
                    joint_commands.setdefault(side, JointStream()).add(
                        stamp(topic, _header_ns(msg), log_ns), msg.name, msg.position)
                else:
                    p, q = msg.pose.position, msg.pose.orientation
                    pose_frames.setdefault(topic, msg.header.frame_id)
                    if msg.header.frame_id != pose_frames[topic]:
                        raise ValueError(f"{topic} changes frame from '{pose_frames[topic]}' "
                                         f"to '{msg.header.frame_id}'")
                    pose_entries[kind].setdefault(side, []).append(
                        (stamp(topic, _header_ns(msg), log_ns), (p.x, p.y, p.z), (q.x, q.y, q.z, q.w)))

    def poses(kind: str) -> dict[str, PoseStream]:
        return {side: _pose_stream(entries, pose_frames[f"/{side}_arm/{kind}"])
                for side, entries in pose_entries[kind].items()}

    return BagStreams(
        path=bag, task=str(info.get("task") or ""), success=info.get("success"),
        flags=list(info.get("flags") or []), extra=dict(info.get("extra") or {}),
        config=dict(info.get("config") or {}),
        poses=poses("eef_pose"), targets=poses("eef_target"),
        gripper_targets={side: ScalarStream(np.array([t for t, _ in e], np.int64), np.array([v for _, v in e]))
                         for side, e in gripper.items()},
        joint_commands=joint_commands, joint_states=joint_states,
        image_topics=image_topics,
        image_times={camera: np.asarray(times, dtype=np.int64) for camera, times in image_times.items()},
        instructions=instructions, stamp_sources=stamp_sources)


def _header_ns(msg) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def decode_used_frames(bag: Path, image_topics: dict[str, tuple[str, str]],
                       wanted: dict[str, np.ndarray]) -> Iterator[tuple[str, int, np.ndarray]]:
    """Second pass: (camera, message index, RGB frame) for the wanted message indices of each
    camera (sorted), in bag order; the other frames are skipped undecoded."""
    from rosbags.highlevel import AnyReader

    by_topic = {topic: camera for camera, (topic, _) in image_topics.items()}
    wanted_sets = {camera: set(int(i) for i in indices) for camera, indices in wanted.items()}
    counters = dict.fromkeys(image_topics, 0)
    with AnyReader([bag]) as reader:
        connections = [c for c in reader.connections if c.topic in by_topic]
        for connection, _, raw in reader.messages(connections=connections):
            camera = by_topic[connection.topic]
            index = counters[camera]
            counters[camera] += 1
            if index in wanted_sets[camera]:
                yield camera, index, decode_image(reader.deserialize(raw, connection.msgtype), connection.msgtype)
