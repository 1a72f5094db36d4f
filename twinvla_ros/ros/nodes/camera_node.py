"""camera_node: the robot's RealSense cameras on the realsense-ros topics.

Per camera (`ego`, `wrist_left`, `wrist_right`, chosen by serial in the `hardware.cameras`
section of config/anubis.yaml or the file named by `hardware_config`), under `camera_namespace`:
  <name>/color/image_raw                  sensor_msgs/Image rgb8 (publish_raw)
  <name>/color/image_raw/compressed       sensor_msgs/CompressedImage JPEG (publish_compressed)
  <name>/color/camera_info                sensor_msgs/CameraInfo from the device's intrinsics
  <name>/aligned_depth_to_color/image_raw + camera_info   16UC1 mm, for cameras with `depth: true`
all with sensor-data QoS, stamped with the exposure time on the node's clock, frame_id the
camera's URDF optical frame. /diagnostics twice a second: "camera_node: camera <name>" (state,
rate, drops, reconnects, time domain, publish cost) and "camera_node: lifecycle".

A managed node: configure opens every camera or none (one error names each missing serial and
lists the connected ones), activate streams, deactivate stops streaming, cleanup closes. Each
camera's capture thread reconnects on its own when frames stop; one publish thread per camera
turns its newest frame into messages, so a slow JPEG encode never delays another camera.
"""
from __future__ import annotations

import threading
import time

from sensor_msgs.msg import CameraInfo, CompressedImage, Image

# rclpy (through the node base) before pyrealsense2: the wheel carries its own Fast DDS, whose
# process-wide (GNU unique) symbols would otherwise bind ROS's Fast DDS and crash the process at exit.
from twinvla_ros.ros.node import TwinvlaLifecycleNode, run_node  # isort: skip
from twinvla_ros.hardware.cameras.realsense import (
    CameraError, RealSenseCamera, load_camera_configs, open_cameras)
from twinvla_ros.reporting import RateMeter, Status
from twinvla_ros.robot.cameras import CAMERAS
from twinvla_ros.ros.messages import camera_info, depth_to_image, rgb_to_compressed, rgb_to_image, seconds_to_stamp
from twinvla_ros.ros.qos import SENSOR_QOS

BACKENDS = ("realsense",)
DIAGNOSTICS_PERIOD_S = 0.5


class CameraPublisher:
    """One camera's publish thread: waits for the camera's newest frame and publishes it."""

    def __init__(self, node: "CameraNode", camera: RealSenseCamera, base: str):
        self.node = node
        self.camera = camera
        name = camera.config.name
        color, depth = f"{base}/{name}/color", f"{base}/{name}/aligned_depth_to_color"
        self.publishers = []
        self.image_pub = self._make(Image, f"{color}/image_raw") if node.publish_raw else None
        self.compressed_pub = (self._make(CompressedImage, f"{color}/image_raw/compressed")
                               if node.publish_compressed else None)
        self.info_pub = self._make(CameraInfo, f"{color}/camera_info")
        self.depth_pub = self._make(Image, f"{depth}/image_raw") if camera.config.depth else None
        self.depth_info_pub = self._make(CameraInfo, f"{depth}/camera_info") if camera.config.depth else None
        self.meter = RateMeter(window=90)
        self.published = 0
        self.read_timeouts = 0
        self.publish_ms = 0.0               # wall time of the last frame's messages, ms
        self.cpu_seconds = 0.0              # the publish thread's CPU time so far
        self._publish = node.guarded(f"camera {name} publish", self._publish_frame)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _make(self, msg_type, topic: str):
        publisher = self.node.create_publisher(msg_type, topic, SENSOR_QOS)
        self.publishers.append(publisher)
        return publisher

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"publish-{self.camera.config.name}", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """The thread ends after its current read(): at once once the camera is stopped."""
        self._stop.set()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def destroy(self) -> None:
        for publisher in self.publishers:
            self.node.destroy_publisher(publisher)
        self.publishers.clear()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self.camera.read()
            except CameraError:
                # The camera reports why on /diagnostics and reconnects on its own; a stopped
                # camera (deactivate) ends this loop through _stop.
                self.read_timeouts += 1
                self._stop.wait(0.01)
                continue
            started = time.perf_counter()
            self._publish(frame)
            self.publish_ms = (time.perf_counter() - started) * 1e3
            self.cpu_seconds = time.thread_time()

    def _publish_frame(self, frame) -> None:
        stamp = seconds_to_stamp(frame.stamp)
        intrinsics = self.camera.intrinsics
        frame_id = intrinsics.frame_id
        if self.image_pub is not None:
            self.image_pub.publish(rgb_to_image(frame.image, stamp, frame_id))
        if self.compressed_pub is not None:
            self.compressed_pub.publish(rgb_to_compressed(frame.image, stamp, frame_id, self.node.jpeg_quality))
        info = camera_info(intrinsics, stamp)
        self.info_pub.publish(info)
        if self.depth_pub is not None and frame.depth is not None:
            self.depth_pub.publish(depth_to_image(frame.depth, stamp, frame_id))
            self.depth_info_pub.publish(info)
        self.published += 1
        self.meter.tick()


class CameraNode(TwinvlaLifecycleNode):
    def __init__(self, realsense_context=None, **node_kwargs):
        """`realsense_context`: the pyrealsense2 context to find the cameras in (tests and benches
        pass one holding software devices); default a new one, which sees the USB cameras."""
        super().__init__("camera_node", hardware_id="realsense", **node_kwargs)
        declare = self.parameters.declare
        self.backend = declare("backend", "realsense", "camera backend: realsense (the sim's cameras are "
                               "published by sim_node)")
        if self.backend not in BACKENDS:
            hint = (" (sim_node publishes the simulated cameras: launch the sim_robot graph)"
                    if self.backend == "sim" else "")
            raise ValueError(f"camera_node: unknown backend {self.backend!r}{hint}; backends: {', '.join(BACKENDS)}")
        self.camera_names = declare("cameras", list(CAMERAS), "which cameras to stream (of "
                                    f"{', '.join(CAMERAS)})")
        unknown = [name for name in self.camera_names if name not in CAMERAS]
        if unknown or not self.camera_names or len(set(self.camera_names)) != len(self.camera_names):
            raise ValueError(f"camera_node: cameras must be distinct names of {', '.join(CAMERAS)}, "
                             f"got {self.camera_names}")
        self.camera_namespace = declare("camera_namespace", "/cameras", "prefix of the camera topics").rstrip("/")
        self.hardware_config = declare("hardware_config", "", "file with the `hardware.cameras` section "
                                       "(serials, profiles; empty: config/anubis.yaml)")
        self.jpeg_quality = declare("jpeg_quality", 90, "JPEG quality of .../image_raw/compressed (1..100)",
                                    low=1, high=100, live=True)
        self.publish_compressed = declare("publish_compressed", True, "publish JPEG .../image_raw/compressed")
        self.publish_raw = declare("publish_raw", True, "publish rgb8 .../image_raw")
        self.frame_timeout = declare("frame_timeout", 1.0, "seconds without a frame before a camera is "
                                     "reported stale and its stream restarted", low=0.05, high=60.0)
        self.parameters.set_apply(self._apply_parameters)
        self._realsense_context = realsense_context
        self.cameras: dict[str, RealSenseCamera] = {}
        self.publishers_by_camera: dict[str, CameraPublisher] = {}
        self._cpu_window: dict[str, tuple[float, float]] = {}     # camera -> (cpu s, wall s) at last report
        self.timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics, "diagnostics")
        self.get_logger().info(f"camera node created: cameras {', '.join(self.camera_names)}; unconfigured")

    def _apply_parameters(self, changes: dict) -> str | None:
        self.jpeg_quality = int(changes.get("jpeg_quality", self.jpeg_quality))
        return None

    # ---- lifecycle -----------------------------------------------------------------------------

    def configure_devices(self) -> None:
        self._open_devices()

    def activate_devices(self) -> None:
        self._start_streaming()

    def deactivate_devices(self) -> None:
        self._stop_streaming()

    def cleanup_devices(self) -> None:
        self._close_devices()

    def safe_state(self, reason: str) -> None:
        # A camera has no unsafe state: stop and release the devices for whoever opens them next.
        self._close_devices()

    def _open_devices(self) -> None:
        """Every configured camera or none; then the topics of each."""
        configs = load_camera_configs(self.hardware_config or None)
        absent = [name for name in self.camera_names if name not in configs]
        if absent:
            raise ValueError(f"{self.hardware_config or 'config/anubis.yaml'}: hardware.cameras has no entry for "
                             f"{', '.join(absent)}")
        self.cameras = open_cameras([configs[name] for name in self.camera_names], self._realsense_context,
                                    clock=self.ros_now, frame_timeout=self.frame_timeout)
        try:
            for name, camera in self.cameras.items():
                self.publishers_by_camera[name] = CameraPublisher(self, camera, self.camera_namespace)
        except BaseException:
            self._close_devices()
            raise
        for name, camera in self.cameras.items():
            self.get_logger().info(
                f"camera {name}: {camera.device_name} serial {camera.config.serial}, {camera.config.profile} "
                f"from its {camera.colour_sensor}{', depth aligned' if camera.config.depth else ''}")

    def _start_streaming(self) -> None:
        for name, camera in self.cameras.items():
            camera.start()
            self.publishers_by_camera[name].start()

    def _stop_streaming(self) -> None:
        for publisher in self.publishers_by_camera.values():
            publisher.request_stop()
        for name, camera in self.cameras.items():
            camera.stop()
            self.publishers_by_camera[name].join()

    def _close_devices(self) -> None:
        self._stop_streaming()
        for camera in self.cameras.values():
            camera.close()
        if self.context.ok():
            for publisher in self.publishers_by_camera.values():
                publisher.destroy()
        self.cameras.clear()
        self.publishers_by_camera.clear()
        self._cpu_window.clear()

    # ---- /diagnostics --------------------------------------------------------------------------

    def camera_status(self, name: str) -> Status:
        camera, publisher = self.cameras[name], self.publishers_by_camera[name]
        status = camera.status()
        values = dict(status.values)
        values.update({f"published_{k}": v for k, v in publisher.meter.summary().items()})
        values["published"] = str(publisher.published)
        values["publish_ms"] = f"{publisher.publish_ms:.2f}"
        values["read_timeouts"] = str(publisher.read_timeouts)
        now = time.monotonic()
        cpu_before, wall_before = self._cpu_window.get(name, (publisher.cpu_seconds, now))
        if now > wall_before:
            values["publish_cpu_percent"] = f"{100.0 * (publisher.cpu_seconds - cpu_before) / (now - wall_before):.1f}"
        self._cpu_window[name] = (publisher.cpu_seconds, now)
        return Status(status.level, status.message, values)

    def _publish_diagnostics(self) -> None:
        statuses = [(f"camera {name}", self.camera_status(name)) for name in list(self.cameras)]
        for camera in list(self.cameras.values()):
            for level, message in camera.events.drain():
                self.log(level, message)
        self.publish_diagnostics([*statuses, ("lifecycle", self.lifecycle_status())])


def main(args=None):
    run_node(CameraNode, args)
