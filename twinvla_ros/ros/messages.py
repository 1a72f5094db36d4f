"""Conversions between ROS messages and the numpy values of the core, with the checks that
make a message from the network safe to compute with.

Anything read from a message is checked before arithmetic on it: a pose whose numbers are not
finite, absurdly large, or whose quaternion is far from unit length raises ValueError with the
reason, which the node reports as a rejected input.
"""
from __future__ import annotations

import sys

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Pose
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from twinvla_ros.robot.cameras import CameraIntrinsics
from twinvla_ros.robot.rotations import matrix_to_quat_xyzw, quat_xyzw_to_matrix

# Beyond these a pose is not a mistake in the last digit but garbage: reject, do not clamp.
MAX_POSITION_M = 100.0
QUATERNION_NORM_TOLERANCE = 0.1      # |q| in [0.9, 1.1] is normalized; else rejected


def stamp_to_seconds(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def seconds_to_stamp(seconds: float) -> Time:
    nanoseconds = int(round(seconds * 1e9))
    return Time(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def pose_to_matrix(pose: Pose) -> np.ndarray:
    """geometry_msgs/Pose -> 4x4, or ValueError saying what is wrong with it.

    The quaternion's norm is computed on the components scaled by the largest one, so no
    value a float can hold overflows it (a plain norm of 1e200 components is inf).
    """
    position = np.array([pose.position.x, pose.position.y, pose.position.z], dtype=np.float64)
    q = np.array([pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w],
                 dtype=np.float64)
    if not (np.isfinite(position).all() and np.isfinite(q).all()):
        raise ValueError("pose contains NaN or inf")
    if np.abs(position).max() > MAX_POSITION_M:
        raise ValueError(f"position {position.tolist()} is more than {MAX_POSITION_M:.0f} m from the origin")
    largest = np.abs(q).max()
    if largest == 0.0:
        raise ValueError("orientation is the zero quaternion")
    norm = largest * np.linalg.norm(q / largest)
    if abs(norm - 1.0) > QUATERNION_NORM_TOLERANCE:
        raise ValueError(f"orientation quaternion has norm {norm:.3g}, not 1")
    out = np.eye(4)
    out[:3, :3] = quat_xyzw_to_matrix(q / norm)
    out[:3, 3] = position
    return out


def matrix_to_pose(matrix: np.ndarray) -> Pose:
    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in matrix[:3, 3])
    x, y, z, w = matrix_to_quat_xyzw(matrix[:3, :3])
    pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = float(x), float(y), float(z), float(w)
    return pose


def _image(pixels: np.ndarray, encoding: str, stamp: Time, frame_id: str) -> Image:
    msg = Image()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(pixels.shape[0]), int(pixels.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = int(pixels.dtype.itemsize > 1 and sys.byteorder == "big")
    msg.step = int(pixels[0].nbytes)          # bytes per row, packed
    msg.data = np.ascontiguousarray(pixels).tobytes()
    return msg


def rgb_to_image(image: np.ndarray, stamp: Time, frame_id: str) -> Image:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected uint8 HxWx3 RGB, got {image.dtype} {image.shape}")
    return _image(image, "rgb8", stamp, frame_id)


def rgb_to_compressed(image: np.ndarray, stamp: Time, frame_id: str, quality: int = 90) -> CompressedImage:
    """uint8 HxWx3 RGB -> JPEG CompressedImage as image_transport's compressed publisher makes it
    (format "rgb8; jpeg compressed bgr8": the source encoding, then what the JPEG holds), so
    image_transport subscribers and rqt decode it; `quality` 1..100."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected uint8 HxWx3 RGB, got {image.dtype} {image.shape}")
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must lie in 1..100, got {quality}")
    encoded, jpeg = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                                 [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not encoded:
        raise ValueError(f"JPEG encoding of a {image.shape[1]}x{image.shape[0]} image failed")
    msg = CompressedImage()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.format = "rgb8; jpeg compressed bgr8"
    msg.data = jpeg.tobytes()
    return msg


def depth_to_image(depth: np.ndarray, stamp: Time, frame_id: str) -> Image:
    """uint16 HxW depth in millimetres -> 16UC1 Image (REP 118; realsense-ros' aligned depth)."""
    if depth.dtype != np.uint16 or depth.ndim != 2:
        raise ValueError(f"expected uint16 HxW depth in mm, got {depth.dtype} {depth.shape}")
    return _image(depth, "16UC1", stamp, frame_id)


def image_to_rgb(msg: Image) -> np.ndarray:
    """sensor_msgs/Image (rgb8 or bgr8) -> uint8 HxWx3 RGB; anything else is a clear error."""
    if msg.encoding not in ("rgb8", "bgr8"):
        raise ValueError(f"unsupported image encoding '{msg.encoding}' (need rgb8 or bgr8)")
    if msg.step < msg.width * 3 or len(msg.data) < msg.step * msg.height:
        raise ValueError(f"image data too short: {len(msg.data)} bytes for {msg.height}x{msg.width}, step {msg.step}")
    rows = np.frombuffer(msg.data, dtype=np.uint8, count=msg.step * msg.height).reshape(msg.height, msg.step)
    image = rows[:, : msg.width * 3].reshape(msg.height, msg.width, 3)
    return image[..., ::-1].copy() if msg.encoding == "bgr8" else image


def camera_info(intrinsics: CameraIntrinsics, stamp: Time) -> CameraInfo:
    """A distortion-free pinhole CameraInfo (plumb_bob with zero coefficients)."""
    fx, fy, cx, cy = intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy
    msg = CameraInfo()
    msg.header.stamp = stamp
    msg.header.frame_id = intrinsics.frame_id
    msg.width, msg.height = int(intrinsics.width), int(intrinsics.height)
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    msg.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg
