"""What an episode bag records, and the checks on everything a user or the network hands in.

A `TopicSpec` names one topic, its ROS 2 message type, the lowest rate an episode may show for it
and the QoS it was offered with. The message definitions written into the bag (MCAP schemas,
encoding `ros2msg`, dependencies appended the way rosbag2 writes them) come from rosbags' type
store for ROS 2 Kilted, so no ROS installation is needed to record or read a bag.

Every check raises `RecordingError` with a sentence a person can act on; nothing here writes.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache

import yaml

MAX_TASK_CHARS = 1000
MAX_NOTE_CHARS = 4000
MAX_TOPIC_CHARS = 255   # rmw's limit on a fully qualified topic name

# A fully qualified ROS 2 topic name: "/" separated tokens of letters, digits and underscores,
# no token starting with a digit, no empty token (rmw_validate_full_topic_name).
_TOPIC_NAME = re.compile(r"(/[A-Za-z_][A-Za-z0-9_]*)+")
# ROS 2 message type in its full form: package/msg/Name.
_MSGTYPE = re.compile(r"[A-Za-z][A-Za-z0-9_]*/msg/[A-Z][A-Za-z0-9]*")


class RecordingError(RuntimeError):
    """A recording cannot go ahead (or a bag cannot be read); the message says why. Raised
    before anything is written or lost."""


class ConfigMismatch(RecordingError):
    """The robot/camera configuration differs from the one the dataset was recorded with."""

    def __init__(self, root: str, differences: list[str]):
        self.differences = list(differences)
        super().__init__(f"the configuration differs from the one {root} was recorded with "
                         f"(recording.json): " + "; ".join(self.differences))


@lru_cache(maxsize=1)
def typestore():
    """The ROS 2 Kilted message types (rosbags), for definitions, hashes and test messages."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


def validate_topic_name(name: object) -> str:
    if not isinstance(name, str):
        raise RecordingError(f"a topic name must be a string, got {type(name).__name__}")
    if len(name) > MAX_TOPIC_CHARS or not _TOPIC_NAME.fullmatch(name):
        raise RecordingError(f"{name[:80]!r} is not a fully qualified ROS 2 topic name "
                             "(like /cameras/ego/color/image_raw: '/' then letters, digits, '_'; "
                             "no token starting with a digit)")
    return name


def validate_msgtype(msgtype: object) -> str:
    if not isinstance(msgtype, str) or not _MSGTYPE.fullmatch(msgtype):
        raise RecordingError(f"{str(msgtype)[:80]!r} is not a ROS 2 message type of the form "
                             "package/msg/Name (like sensor_msgs/msg/Image)")
    if msgtype not in typestore().types:
        raise RecordingError(f"unknown message type {msgtype} (not among the ROS 2 Kilted types "
                             "the recorder can describe in the bag)")
    return msgtype


def validate_text(text: object, what: str, max_chars: int, *, required: bool) -> str:
    """Task and note text: a string without NUL, at most max_chars; stripped."""
    if not isinstance(text, str):
        raise RecordingError(f"the {what} must be text, got {type(text).__name__}")
    if "\x00" in text:
        raise RecordingError(f"the {what} contains a NUL character")
    text = text.strip()
    if required and not text:
        raise RecordingError(f"the {what} is empty")
    if len(text) > max_chars:
        raise RecordingError(f"the {what} is {len(text)} characters long, the limit is {max_chars}")
    return text


def parse_qos(qos: object) -> list[dict]:
    """offered_qos_profiles YAML (a list of profiles, as rosbag2 writes it) -> that list."""
    if not isinstance(qos, str):
        raise RecordingError(f"qos must be offered_qos_profiles YAML text, got {type(qos).__name__}")
    if not qos.strip():
        return []
    try:
        profiles = yaml.safe_load(qos)
    except yaml.YAMLError as error:
        raise RecordingError(f"qos is not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(profiles, list) or not all(isinstance(p, dict) for p in profiles):
        raise RecordingError("qos must be a YAML list of QoS profiles (offered_qos_profiles)")
    return profiles


@dataclass(frozen=True)
class TopicSpec:
    name: str                 # "/joint_states"
    msgtype: str              # "sensor_msgs/msg/JointState" (ROS 2 form)
    min_rate: float = 0.0     # Hz; an episode whose rate for this topic falls below is flagged (0: never)
    qos: str = ""             # offered_qos_profiles YAML for metadata.yaml / the MCAP channel ("" = default)

    def __post_init__(self):
        validate_topic_name(self.name)
        validate_msgtype(self.msgtype)
        if (isinstance(self.min_rate, bool) or not isinstance(self.min_rate, (int, float))
                or not math.isfinite(self.min_rate) or self.min_rate < 0):
            raise RecordingError(f"min_rate of {self.name} must be a number >= 0 Hz, got {self.min_rate!r}")
        parse_qos(self.qos)


@dataclass(frozen=True)
class MessageDescription:
    definition: str   # the .msg text with its dependencies appended (rosbag2's MCAP schema data)
    rihs01: str       # type description hash, "RIHS01_..."


@lru_cache(maxsize=None)
def describe(msgtype: str) -> MessageDescription:
    store = typestore()
    definition, _ = store.generate_msgdef(msgtype, ros_version=2)
    return MessageDescription(definition, store.hash_rihs01(msgtype))
