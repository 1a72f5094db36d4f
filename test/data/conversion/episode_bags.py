"""Episode bags with known contents for the conversion tests, written by the project's own
recorder core (real MCAP, real CDR from rosbags' serializer).

Every stream follows a closed-form path, so the converted rows can be compared with the truth
at each tick: EEF positions move linearly, orientations turn at a constant rate about a fixed
axis (slerp between samples is then exact), gripper openings step, and camera frame i is a
flat grey of brightness `frame_level(i)` so a decoded video frame says which recorded frame
it shows.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from bag_messages import COMPRESSED, IMAGE, JOINTS, POSE, STRING, T, cdr, header
from twinvla_ros.data.bags import EpisodeRecorder, RecordingDirectory, TopicSpec
from twinvla_ros.robot.description import load_description

DESCRIPTION = load_description()
FLOAT = "std_msgs/msg/Float64"
NS = 1_000_000_000
T0 = 1_796_000_000 * NS                  # stamps like a real clock's (ns since 1970)
CAMERAS = ("ego", "wrist_left", "wrist_right")
TOOL_DOWN = np.array([[0, 1, 0], [1, 0, 0], [0, 0, -1]], dtype=float)


def frame_level(i: int) -> int:
    return 20 + (i * 9) % 200


def eef_position(side: str, t: float) -> np.ndarray:
    y = 0.2 if side == "left" else -0.2
    return np.array([0.30 + 0.02 * t, y - 0.01 * t, 0.25 + 0.015 * t])


def eef_rotation(side: str, t: float) -> np.ndarray:
    rate = 0.4 if side == "left" else -0.3
    return Rotation.from_rotvec([0.0, 0.0, rate * t]).as_matrix() @ TOOL_DOWN


def gripper_opening(side: str, t: float) -> float:
    """Measured opening 0..1: closes half way at 1 s."""
    return 1.0 if t < 1.0 else 0.5


def gripper_command(side: str, t: float) -> float:
    return 1.0 if t < 0.9 else 0.4


def arm_joints(side: str, t: float) -> np.ndarray:
    return DESCRIPTION.arms[side].home + 0.1 * t * np.array([1.0, -0.5, 0.5, 0.3, -0.4, 0.2])


TARGET_LEAD_S = 0.1                      # the commanded pose is where the arm will be 0.1 s later


@dataclass
class EpisodeSpec:
    duration_s: float = 2.0
    camera_hz: float = 15.0
    state_hz: float = 50.0
    target_hz: float = 50.0
    camera_size: tuple[int, int] = (48, 64)          # (height, width) as recorded
    compressed: bool = False
    task: str = "lift the box"
    success: bool | None = True
    with_poses: bool = True                          # eef_pose; otherwise state from FK of /joint_states
    joint_command: bool = False                      # commands as joint_command instead of eef targets
    camera_silence: tuple[float, float] | None = None   # (from_s, to_s): no frames of the ego camera
    jitter_ns: int = 3_000_000                       # camera stamps off the nominal period
    skip_topics: tuple[str, ...] = ()
    extra: dict = field(default_factory=lambda: {"seed": "0"})


def _pose_msg(stamp_ns: int, position, rotation, frame: str):
    q = Rotation.from_matrix(rotation).as_quat()     # x, y, z, w
    return T[POSE](header=header(stamp_ns, frame), pose=T["geometry_msgs/msg/Pose"](
        position=T["geometry_msgs/msg/Point"](x=float(position[0]), y=float(position[1]), z=float(position[2])),
        orientation=T["geometry_msgs/msg/Quaternion"](x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3]))))


def _frame(level: int, size: tuple[int, int]) -> np.ndarray:
    return np.full((*size, 3), level, np.uint8)


def _camera_msg(stamp_ns: int, camera: str, level: int, spec: EpisodeSpec):
    frame = _frame(level, spec.camera_size)
    if spec.compressed:
        ok, jpeg = cv2.imencode(".jpg", frame[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        return T[COMPRESSED](header=header(stamp_ns, f"{camera}_color_optical_frame"),
                             format="rgb8; jpeg compressed bgr8", data=jpeg.ravel()), COMPRESSED
    height, width = spec.camera_size
    return T[IMAGE](header=header(stamp_ns, f"{camera}_color_optical_frame"), height=height, width=width,
                    encoding="rgb8", is_bigendian=0, step=width * 3, data=frame.ravel()), IMAGE


def camera_stamps(spec: EpisodeSpec, camera: str) -> np.ndarray:
    """Capture stamps (ns since T0) of one camera: nominal period, deterministic jitter, the
    silence left out."""
    period = NS / spec.camera_hz
    count = int(spec.duration_s * spec.camera_hz) + 1
    offset = CAMERAS.index(camera) * 7_000_000            # the cameras are not in step
    rng = np.random.default_rng(CAMERAS.index(camera))
    stamps = (np.arange(count) * period + offset + rng.integers(0, spec.jitter_ns + 1, count)).astype(np.int64)
    if spec.camera_silence and camera == "ego":
        a, b = (int(s * NS) for s in spec.camera_silence)
        stamps = stamps[(stamps < a) | (stamps >= b)]
    return stamps


def write_episode(root: Path, spec: EpisodeSpec = EpisodeSpec()) -> Path:
    """One episode bag under `root` (a recording folder); returns the bag folder."""
    suffix = "/compressed" if spec.compressed else ""
    topics = [TopicSpec(f"/cameras/{c}/color/image_raw{suffix}", COMPRESSED if spec.compressed else IMAGE)
              for c in CAMERAS]
    topics += [TopicSpec("/joint_states", JOINTS), TopicSpec("/instruction", STRING)]
    for side in ("left", "right"):
        topics += [TopicSpec(f"/{side}_arm/eef_pose", POSE), TopicSpec(f"/{side}_arm/eef_target", POSE),
                   TopicSpec(f"/{side}_arm/gripper_target", FLOAT), TopicSpec(f"/{side}_arm/joint_command", JOINTS)]
    topics = [t for t in topics if t.name not in spec.skip_topics]
    wanted = {t.name for t in topics}
    events: list[tuple[int, str, bytes]] = []      # (stamp ns since T0, topic, cdr)

    def add(stamp: int, topic: str, message, msgtype: str) -> None:
        if topic in wanted:
            events.append((int(stamp), topic, cdr(message, msgtype)))

    for camera in CAMERAS:
        for i, stamp in enumerate(camera_stamps(spec, camera)):
            msg, msgtype = _camera_msg(T0 + stamp, camera, frame_level(i), spec)
            add(stamp, f"/cameras/{camera}/color/image_raw{suffix}", msg, msgtype)
    for stamp in np.arange(0, spec.duration_s * NS + 1, NS / spec.state_hz).astype(np.int64):
        t = stamp / NS
        names, positions = [], []
        for side in ("left", "right"):
            arm = DESCRIPTION.arms[side]
            names += [*arm.joint_names, arm.gripper_joint]
            positions += [*arm_joints(side, t), gripper_opening(side, t) * arm.gripper_stroke]
            if spec.with_poses:
                add(stamp, f"/{side}_arm/eef_pose",
                    _pose_msg(T0 + stamp, eef_position(side, t), eef_rotation(side, t), DESCRIPTION.reference_frame),
                    POSE)
        add(stamp, "/joint_states", T[JOINTS](header=header(T0 + stamp), name=names, position=np.array(positions),
                                              velocity=np.zeros(len(names)), effort=np.zeros(len(names))), JOINTS)
    for stamp in np.arange(0, spec.duration_s * NS + 1, NS / spec.target_hz).astype(np.int64):
        t = stamp / NS
        for side in ("left", "right"):
            arm = DESCRIPTION.arms[side]
            if spec.joint_command:
                q = arm_joints(side, t + TARGET_LEAD_S)
                add(stamp, f"/{side}_arm/joint_command", T[JOINTS](
                    header=header(T0 + stamp), name=[*arm.joint_names, arm.gripper_joint],
                    position=np.array([*q, gripper_command(side, t) * arm.gripper_stroke]),
                    velocity=np.zeros(0), effort=np.zeros(0)), JOINTS)
                continue
            add(stamp, f"/{side}_arm/eef_target", _pose_msg(T0 + stamp, eef_position(side, t + TARGET_LEAD_S),
                                                            eef_rotation(side, t + TARGET_LEAD_S),
                                                            DESCRIPTION.reference_frame), POSE)
            add(stamp, f"/{side}_arm/gripper_target", T[FLOAT](data=gripper_command(side, t)), FLOAT)
    add(0, "/instruction", T[STRING](data=spec.task), STRING)
    events.sort(key=lambda event: event[0])
    receive_delay = 2_000_000                        # the recorder hears each message 2 ms later
    now = [T0 - NS]
    recorder = EpisodeRecorder(RecordingDirectory(root, min_free_bytes=0), topics, clock_ns=lambda: now[0])
    recorder.start(spec.task, config={"robot": "anubis"}, extra=spec.extra)
    for stamp, topic, data in events:
        now[0] = T0 + stamp + receive_delay
        assert recorder.offer(topic, data, now[0])
    now[0] += NS
    path = recorder.stop(success=spec.success).path
    recorder.close()
    return path
