"""Camera frames as recorded: sensor_msgs Image (rgb8/bgr8) or the camera node's JPEG
CompressedImage, decoded to uint8 RGB; and a frame's capture stamp read from its CDR bytes."""
from __future__ import annotations

import struct

import numpy as np

from .topics import RecordingError

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")


def decode_image(msg, msgtype: str) -> np.ndarray:
    """A deserialized image message -> (H, W, 3) uint8 RGB; RecordingError when it cannot be."""
    if msgtype == "sensor_msgs/msg/CompressedImage":
        import cv2

        bgr = cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise RecordingError(f"a {msg.format!r} frame does not decode")
        return bgr[:, :, ::-1]
    if msg.encoding not in ("rgb8", "bgr8"):
        raise RecordingError(f"cannot decode {msg.encoding} images (rgb8, bgr8 or JPEG)")
    if msg.step < msg.width * 3 or len(msg.data) < msg.height * msg.step:
        raise RecordingError(f"a {msg.width}x{msg.height} {msg.encoding} frame holds {len(msg.data)} bytes "
                             f"with step {msg.step}")
    rows = np.frombuffer(bytes(msg.data), np.uint8)[: msg.height * msg.step].reshape(msg.height, msg.step)
    image = rows[:, : msg.width * 3].reshape(msg.height, msg.width, 3)
    return image[:, :, ::-1] if msg.encoding == "bgr8" else image


def header_stamp_ns(cdr: bytes) -> int:
    """The header stamp of a serialized message that starts with std_msgs/Header (Image,
    CompressedImage, PoseStamped, JointState ...), without deserializing the rest: after the
    4-byte encapsulation come int32 sec and uint32 nanosec."""
    if len(cdr) < 12:
        raise RecordingError(f"a {len(cdr)}-byte message is too short to hold a header")
    order = "<" if cdr[1] & 1 else ">"          # CDR_LE = 0x0001, CDR_BE = 0x0000
    sec, nanosec = struct.unpack_from(order + "iI", cdr, 4)
    return sec * 1_000_000_000 + nanosec
