"""Real CDR bytes for the recorder tests, made by rosbags' serializer (ROS 2 Kilted types)."""
from __future__ import annotations

import numpy as np
from rosbags.typesys import Stores, get_typestore

STORE = get_typestore(Stores.ROS2_KILTED)
T = STORE.types
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
JOINTS = "sensor_msgs/msg/JointState"
POSE = "geometry_msgs/msg/PoseStamped"
STRING = "std_msgs/msg/String"
DIAGNOSTICS = "diagnostic_msgs/msg/DiagnosticArray"
JOINT_NAMES = [f"{side}_{joint}" for side in ("left", "right")
               for joint in [f"joint{i}" for i in range(1, 7)] + ["gripper"]]


def header(stamp_ns: int, frame: str = "base_link"):
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](
        sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id=frame)


def image(stamp_ns: int, width: int = 64, height: int = 48, seed: int = 0):
    pixels = np.random.default_rng(seed).integers(0, 256, height * width * 3, dtype=np.uint8)
    return T[IMAGE](header=header(stamp_ns, "ego_color_optical_frame"), height=height, width=width,
                    encoding="rgb8", is_bigendian=0, step=width * 3, data=pixels)


def compressed(stamp_ns: int, seed: int = 0):
    data = np.random.default_rng(seed).integers(0, 256, 500, dtype=np.uint8)
    return T[COMPRESSED](header=header(stamp_ns, "ego_color_optical_frame"), format="jpeg", data=data)


def joints(stamp_ns: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return T[JOINTS](header=header(stamp_ns), name=JOINT_NAMES, position=rng.normal(size=14),
                     velocity=rng.normal(size=14), effort=np.zeros(14))


def pose(stamp_ns: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return T[POSE](header=header(stamp_ns), pose=T["geometry_msgs/msg/Pose"](
        position=T["geometry_msgs/msg/Point"](x=float(rng.normal()), y=0.1, z=0.2),
        orientation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)))


def string(text: str):
    return T[STRING](data=text)


def diagnostics(stamp_ns: int, seed: int = 0):
    status = T["diagnostic_msgs/msg/DiagnosticStatus"](
        level=0, name="recorder", message=f"ok {seed}", hardware_id="pc",
        values=[T["diagnostic_msgs/msg/KeyValue"](key="rate_hz", value="30.0")])
    return T[DIAGNOSTICS](header=header(stamp_ns), status=[status])


def cdr(message, msgtype: str) -> bytes:
    return bytes(STORE.serialize_cdr(message, msgtype))


MAKERS = {IMAGE: image, COMPRESSED: compressed, JOINTS: joints, POSE: pose, DIAGNOSTICS: diagnostics,
          STRING: lambda stamp_ns, seed=0: string(f"instruction {seed}")}


def message(msgtype: str, stamp_ns: int, seed: int = 0):
    return MAKERS[msgtype](stamp_ns, seed=seed)
