"""camera_node over real DDS on three librealsense software cameras (a D435 ego and two D405
wrists, one of them with depth): what a subscriber gets on the realsense-ros topics is what the
cameras exposed, stamped and described as the devices say; a missing serial stops the node at
configure with every missing serial named."""
from __future__ import annotations

import threading
import time
from collections import deque

import cv2
import numpy as np
import pytest
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

import pyrealsense2 as rs  # after rclpy: see twinvla_ros/ros/nodes/camera_node.py

from ros_probe import Probe, diagnostic_status, diagnostic_values, wait_for
from twinvla_ros.bringup.runner import GraphRunner
from twinvla_ros.hardware.cameras.realsense import FrameStream, SoftwareRealSense
from twinvla_ros.ros.messages import image_to_rgb, stamp_to_seconds
from twinvla_ros.ros.node import StartupError
from twinvla_ros.ros.nodes.camera_node import CameraNode
from twinvla_ros.ros.qos import COMMAND_QOS, SENSOR_QOS

pytestmark = [pytest.mark.ros]

FPS = 15
# name: (serial, model, width, height, intrinsics fx fy cx cy, depth)
CAMERAS = {
    "ego": ("218622270001", "D435", 640, 480, (615.5, 615.25, 321.75, 238.5), False),
    "wrist_left": ("130322270002", "D405", 424, 240, (215.0, 214.5, 211.25, 120.75), True),
    "wrist_right": ("130322270003", "D405", 424, 240, (216.0, 216.5, 212.0, 119.5), False),
}
DEPTH_UNITS = 5000          # D405 units of 0.1 mm: 500 mm
FRAME_IDS = {"ego": "ego_camera_color_optical_frame", "wrist_left": "left_wrist_camera_color_optical_frame",
             "wrist_right": "right_wrist_camera_color_optical_frame"}


def smooth_image(camera: int, frame: int, width: int, height: int) -> np.ndarray:
    """Gradients that JPEG keeps well, different per camera and per frame."""
    x = np.linspace(0.0, 1.0, width)[None, :]
    y = np.linspace(0.0, 1.0, height)[:, None]
    phase = 0.3 * camera + 0.05 * (frame % 40)
    channels = [200 * x + 30 * y, 180 * y + 40 * np.sin(2 * np.pi * (x + phase)),
                120 + 80 * np.cos(np.pi * (x * y + phase))]
    return np.clip(np.stack([np.broadcast_to(c, (height, width)) for c in channels], axis=-1), 0, 255).astype(np.uint8)


class Recent:
    """The newest messages of one topic (camera streams are too big to keep them all)."""

    def __init__(self, node, msg_type, topic: str, keep: int = 40):
        self._lock = threading.Lock()
        self._messages: deque = deque(maxlen=keep)
        self.count = 0
        node.create_subscription(msg_type, topic, self._store, SENSOR_QOS)

    def _store(self, msg) -> None:
        with self._lock:
            self._messages.append((time.time(), msg))
            self.count += 1

    def messages(self) -> list:
        with self._lock:
            return [msg for _, msg in self._messages]

    def latest(self):
        with self._lock:
            return self._messages[-1][1] if self._messages else None


def write_config(path, cameras) -> str:
    section = {name: {"serial": serial, "width": w, "height": h, "fps": FPS, "depth": depth}
               for name, (serial, _, w, h, _, depth) in cameras.items()}
    path.write_text(yaml.safe_dump({"hardware": {"cameras": section}}))
    return str(path)


def make_node(runner, realsense_context, config_path, **parameters) -> CameraNode:
    overrides = [Parameter("hardware_config", value=config_path), Parameter("jpeg_quality", value=90),
                 *(Parameter(k, value=v) for k, v in parameters.items())]
    return CameraNode(realsense_context=realsense_context, context=runner.context, parameter_overrides=overrides)


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    realsense = rs.context()
    devices = [SoftwareRealSense(realsense, serial, model, w, h, FPS, intrinsics)
               for serial, model, w, h, intrinsics, _ in CAMERAS.values()]
    sizes = [(w, h) for _, _, w, h, _, _ in CAMERAS.values()]
    def make_image(camera: int, frame: int) -> np.ndarray:
        return smooth_image(camera, frame, *sizes[camera])

    def make_depth(camera: int, frame: int) -> np.ndarray:
        return np.full(sizes[camera][::-1], DEPTH_UNITS, np.uint16)

    config_path = write_config(tmp_path_factory.mktemp("camera_node") / "cameras.yaml", CAMERAS)
    with GraphRunner([]) as runner, FrameStream(devices, FPS, make_image, make_depth):
        started = time.time()
        node = make_node(runner, realsense, config_path)
        node.bring_up()
        runner.add_node(node)
        probe = Probe(runner.context)
        probe.record(DiagnosticArray, "/diagnostics", COMMAND_QOS)
        probe.streams = {}
        for name in CAMERAS:
            base = f"/cameras/{name}"
            probe.streams[name] = {
                "image": Recent(probe, Image, f"{base}/color/image_raw"),
                "info": Recent(probe, CameraInfo, f"{base}/color/camera_info"),
                "compressed": Recent(probe, CompressedImage, f"{base}/color/image_raw/compressed"),
                "depth": Recent(probe, Image, f"{base}/aligned_depth_to_color/image_raw"),
                "depth_info": Recent(probe, CameraInfo, f"{base}/aligned_depth_to_color/camera_info"),
            }
        runner.add_node(probe)
        wait_for(lambda: all(s["image"].count >= 5 and s["compressed"].count >= 5 for s in probe.streams.values()),
                 30.0, "images and JPEGs of all three cameras")
        runner.probe, runner.camera_node, runner.realsense, runner.config_path = probe, node, realsense, config_path
        runner.started = started
        yield runner
        node.close()
    node.destroy_node()


def frame_of(camera: int, image: np.ndarray) -> int:
    """Which pushed frame `image` is (the smooth images differ per frame index mod 40)."""
    height, width = image.shape[:2]
    for frame in range(40):
        if np.array_equal(image, smooth_image(camera, frame, width, height)):
            return frame
    raise AssertionError(f"camera {camera}: the image is none of the pushed frames")


def test_images_are_the_pushed_pixels_in_rgb8_on_the_optical_frame(graph):
    for index, (name, (_, _, width, height, _, _)) in enumerate(CAMERAS.items()):
        messages = graph.probe.streams[name]["image"].messages()
        assert messages
        for msg in messages:
            assert (msg.encoding, msg.width, msg.height, msg.step) == ("rgb8", width, height, width * 3)
            assert msg.header.frame_id == FRAME_IDS[name]
            frame_of(index, image_to_rgb(msg))        # exactly one of the pushed images


def test_camera_info_is_the_devices_intrinsics(graph):
    for name, (_, _, width, height, (fx, fy, cx, cy), _) in CAMERAS.items():
        info = graph.probe.streams[name]["info"].latest()
        assert (info.width, info.height, info.header.frame_id) == (width, height, FRAME_IDS[name])
        np.testing.assert_allclose(info.k, [fx, 0, cx, 0, fy, cy, 0, 0, 1])
        np.testing.assert_allclose(info.p, [fx, 0, cx, 0, 0, fy, cy, 0, 0, 0, 1, 0])
        assert info.distortion_model == "plumb_bob" and list(info.d) == [0.0] * 5


def test_stamps_are_the_exposure_times_and_shared_by_a_frames_messages(graph):
    # Every message is taken before `now`: frames keep arriving, and one received after `now`
    # would rightly carry a later exposure.
    received = {name: {kind: graph.probe.streams[name][kind].messages() for kind in ("image", "info", "compressed")}
                for name in CAMERAS}
    now = time.time()
    for name, messages in received.items():
        stamps = [stamp_to_seconds(m.header.stamp) for m in messages["image"]]
        # The software cameras expose at the push, on the host clock = the node's ROS clock.
        assert all(graph.started <= stamp <= now for stamp in stamps)
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
        info_stamps = {stamp_to_seconds(m.header.stamp) for m in messages["info"]}
        jpeg_stamps = {stamp_to_seconds(m.header.stamp) for m in messages["compressed"]}
        assert set(stamps) & info_stamps & jpeg_stamps, f"{name}: no frame with image, info and JPEG alike"


def test_the_jpeg_stream_decodes_to_the_image(graph):
    for name in CAMERAS:
        streams = graph.probe.streams[name]
        raw = {stamp_to_seconds(m.header.stamp): image_to_rgb(m) for m in streams["image"].messages()}
        pairs = [(msg, raw[stamp_to_seconds(msg.header.stamp)]) for msg in streams["compressed"].messages()
                 if stamp_to_seconds(msg.header.stamp) in raw]
        assert pairs, f"{name}: no JPEG of a frame also received raw"
        for msg, image in pairs:
            assert msg.format == "rgb8; jpeg compressed bgr8" and msg.header.frame_id == FRAME_IDS[name]
            decoded = cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
            assert decoded.shape == image.shape
            assert np.abs(decoded.astype(int) - image.astype(int)).mean() < 3.0     # quality 90


def test_depth_is_published_aligned_in_millimetres_for_the_camera_with_depth(graph):
    streams = graph.probe.streams
    wait_for(lambda: streams["wrist_left"]["depth"].count >= 3, 10.0, "aligned depth of wrist_left")
    msg = streams["wrist_left"]["depth"].latest()
    assert (msg.encoding, msg.width, msg.height, msg.step) == ("16UC1", 424, 240, 848)
    assert msg.header.frame_id == FRAME_IDS["wrist_left"]
    depth = np.frombuffer(msg.data, np.uint16).reshape(240, 424)
    # Alignment leaves the odd row or column of holes (0: no data) where pixels round together.
    assert set(np.unique(depth)) <= {0, DEPTH_UNITS // 10} and np.mean(depth == DEPTH_UNITS // 10) > 0.9
    info = streams["wrist_left"]["depth_info"].latest()
    assert info.k[0] == pytest.approx(215.0) and info.header.frame_id == FRAME_IDS["wrist_left"]
    assert streams["ego"]["depth"].count == 0 and streams["wrist_right"]["depth"].count == 0


def test_diagnostics_report_each_camera(graph):
    probe = graph.probe
    since = time.monotonic()
    wait_for(lambda: diagnostic_values(probe, "camera_node: camera wrist_right", since).get("state") == "streaming",
             10.0, "a streaming report of wrist_right")
    for name, (serial, model, *_) in CAMERAS.items():
        status = diagnostic_status(probe, f"camera_node: camera {name}")
        values = {kv.key: kv.value for kv in status.values}
        assert status.level == bytes([0]), status.message
        assert values["serial"] == serial and values["device"] == f"Intel RealSense {model}"
        assert values["time_domain"] == "global" and values["reconnects"] == "0"
        assert float(values["rate_hz"]) > 0 and int(values["published"]) > 0
    assert diagnostic_values(probe, "camera_node: lifecycle")["state"] == "active"


def test_deactivate_stops_the_streams_and_activate_resumes_them(graph):
    node, streams = graph.camera_node, graph.probe.streams
    node.trigger_deactivate()
    assert node.lifecycle_state == "inactive"
    assert all(camera.health()["state"] == "stopped" for camera in node.cameras.values())
    counts = {name: s["image"].count for name, s in streams.items()}
    node.trigger_activate()
    wait_for(lambda: all(s["image"].count > counts[name] + 3 for name, s in streams.items()), 20.0,
             "images again after activate")
    assert node.lifecycle_state == "active"


def test_missing_serials_stop_the_node_at_configure_naming_each(graph, tmp_path):
    cameras = {**CAMERAS, "wrist_left": ("999999999991", *CAMERAS["wrist_left"][1:]),
               "wrist_right": ("999999999992", *CAMERAS["wrist_right"][1:])}
    node = make_node(graph, graph.realsense, write_config(tmp_path / "cameras.yaml", cameras))
    try:
        with pytest.raises(StartupError) as raised:
            node.bring_up()
        message = str(raised.value)
        assert "wrist_left (serial '999999999991' is not connected)" in message
        assert "wrist_right (serial '999999999992' is not connected)" in message
        assert "Connected: 130322270002 (Intel RealSense D405)" in message
        assert node.lifecycle_state == "unconfigured" and not node.cameras
        assert not [p.topic_name for p in node.publishers if p.topic_name.startswith("/cameras/")]
    finally:
        node.destroy_node()


def test_backends_other_than_realsense_are_refused(graph):
    with pytest.raises(ValueError, match="sim_node publishes the simulated cameras"):
        make_node(graph, graph.realsense, graph.config_path, backend="sim")
    with pytest.raises(ValueError, match="unknown backend 'usb'"):
        make_node(graph, graph.realsense, graph.config_path, backend="usb")
