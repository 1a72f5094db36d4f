"""RealSense cameras without hardware: librealsense's own software device, registered in a context
under a serial number, so that RealSenseCamera finds, opens, streams and aligns it through the
same librealsense calls (query_devices, rs.pipeline, the syncer, rs.align) as a USB camera.

For tests, benchmarks and rehearsals. It imitates a D405 (colour and depth from one "Stereo
Module", no RGB sensor) or a D435 ("RGB Camera" + "Stereo Module"); frames pushed into it carry
the timestamp, time domain and frame number a real camera would.

librealsense 2.59 keeps only a weak reference to a software device added to a context; what
keeps it listed is the device-added event, which holds the device. This class keeps that event
while the device is "plugged in" and drops it to "unplug" it, which also stops its frames.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pyrealsense2 as rs

from twinvla_ros.hardware.cameras.realsense.devices import CONTEXT_LOCK


@dataclass(frozen=True)
class Model:
    name: str
    product_id: str
    colour_sensor: str
    depth_sensor: str
    depth_units: float          # metres per z16 unit, the firmware default


MODELS = {
    "D405": Model("Intel RealSense D405", "0B5B", "Stereo Module", "Stereo Module", 1e-4),
    "D435": Model("Intel RealSense D435", "0B07", "RGB Camera", "Stereo Module", 1e-3),
}
DOMAINS = {"global": rs.timestamp_domain.global_time, "system": rs.timestamp_domain.system_time,
           "hardware": rs.timestamp_domain.hardware_clock}


def _video_stream(stream: rs.stream, uid: int, fmt: rs.format, bytes_per_pixel: int,
                  width: int, height: int, fps: int, intrinsics: rs.intrinsics) -> rs.video_stream:
    description = rs.video_stream()
    description.type, description.index, description.uid = stream, 0, uid
    description.width, description.height, description.fps = width, height, fps
    description.bpp, description.fmt, description.intrinsics = bytes_per_pixel, fmt, intrinsics
    return description


class SoftwareRealSense:
    """One software camera in `context`: a colour profile (width x height px, rgb8, fps) and a z16
    depth profile of the same size, pinhole intrinsics (fx, fy, cx, cy in px; default a 90 deg
    horizontal field of view centred). Plugged in on construction and for as long as this object
    is held (or until unplug())."""

    def __init__(self, context: rs.context, serial: str, model: str = "D405", width: int = 640,
                 height: int = 480, fps: int = 30, intrinsics: tuple[float, float, float, float] | None = None,
                 firmware: str = "5.16.0.1"):
        if model not in MODELS:
            raise ValueError(f"unknown model {model!r}; models: {', '.join(MODELS)}")
        self.context = context
        self.serial = serial
        self.model = MODELS[model]
        self.width, self.height, self.fps = width, height, fps
        self.intrinsics = intrinsics or (width / 2.0, width / 2.0, (width - 1) / 2.0, (height - 1) / 2.0)
        self.firmware = firmware
        self._lock = threading.Lock()
        self._frame_number = 0
        self._plugged: dict | None = None
        self.plug()

    @property
    def plugged(self) -> bool:
        return self._plugged is not None

    def plug(self) -> None:
        """Connect a new device with this serial (as a replugged camera is a new USB device)."""
        fx, fy, cx, cy = self.intrinsics
        model = rs.intrinsics()
        model.width, model.height, model.fx, model.fy, model.ppx, model.ppy = self.width, self.height, fx, fy, cx, cy
        model.model, model.coeffs = rs.distortion.brown_conrady, [0.0] * 5
        device = rs.software_device()
        colour_sensor = device.add_sensor(self.model.colour_sensor)
        depth_sensor = (colour_sensor if self.model.depth_sensor == self.model.colour_sensor
                        else device.add_sensor(self.model.depth_sensor))
        colour = colour_sensor.add_video_stream(_video_stream(
            rs.stream.color, 1, rs.format.rgb8, 3, self.width, self.height, self.fps, model), True)
        depth = depth_sensor.add_video_stream(_video_stream(
            rs.stream.depth, 2, rs.format.z16, 2, self.width, self.height, self.fps, model))
        depth_sensor.add_read_only_option(rs.option.depth_units, self.model.depth_units)
        for sensor in {id(colour_sensor): colour_sensor, id(depth_sensor): depth_sensor}.values():
            sensor.add_option(rs.option.global_time_enabled, rs.option_range(0, 1, 1, 1), True)
        identity = rs.extrinsics()
        identity.rotation, identity.translation = [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0], [0.0, 0.0, 0.0]
        depth.register_extrinsics_to(colour, identity)
        for key, value in ((rs.camera_info.serial_number, self.serial), (rs.camera_info.name, self.model.name),
                           (rs.camera_info.firmware_version, self.firmware),
                           (rs.camera_info.product_line, "D400"), (rs.camera_info.product_id, self.model.product_id),
                           (rs.camera_info.usb_type_descriptor, "3.2")):
            device.register_info(key, value)
        device.create_matcher(rs.matchers.dlr_c)       # depth and colour of one exposure, one frameset
        added: list = []
        with CONTEXT_LOCK:
            self.context.set_devices_changed_callback(added.append)
            try:
                device.add_to(self.context)
            finally:
                self.context.set_devices_changed_callback(lambda event: None)
        with self._lock:
            self._plugged = {"device": device, "added": added,
                             "colour": (colour_sensor, colour.as_video_stream_profile()),
                             "depth": (depth_sensor, depth.as_video_stream_profile())}

    def unplug(self) -> None:
        """The device leaves the context (query_devices no longer lists it) and sends nothing more."""
        with self._lock, CONTEXT_LOCK:
            self._plugged = None

    def push(self, image: np.ndarray, depth: np.ndarray | None = None, timestamp_ms: float | None = None,
             domain: str = "global", frame_number: int | None = None) -> bool:
        """Deliver one exposure: `image` uint8 (H, W, 3) RGB and optionally `depth` uint16 (H, W) in
        device units, stamped `timestamp_ms` (default now on the host clock, ms) in `domain`
        (global, system, hardware). False when unplugged (nothing is delivered)."""
        with self._lock:
            plugged = self._plugged
            if frame_number is None:
                self._frame_number += 1
                frame_number = self._frame_number
        if plugged is None:
            return False
        stamp = time.time() * 1e3 if timestamp_ms is None else timestamp_ms
        streams = [("colour", np.ascontiguousarray(image, dtype=np.uint8), 3)]
        if depth is not None:
            streams.append(("depth", np.ascontiguousarray(depth, dtype=np.uint16), 2))
        for stream, pixels, bytes_per_pixel in streams:
            sensor, profile = plugged[stream]
            frame = rs.software_video_frame()
            frame.pixels, frame.bpp, frame.stride = pixels, bytes_per_pixel, pixels.shape[1] * bytes_per_pixel
            frame.timestamp, frame.domain, frame.frame_number = stamp, DOMAINS[domain], frame_number
            frame.profile = profile
            if stream == "depth":
                frame.depth_units = self.model.depth_units
            sensor.on_video_frame(frame)
        return True


class FrameStream:
    """Pushes frames into software cameras at `fps` from a thread of its own, as live cameras
    deliver them: `make_image(camera_index, frame_index)` -> RGB image, and `make_depth` likewise
    for depth (device units) when given. Use as a context manager."""

    def __init__(self, cameras: Sequence[SoftwareRealSense], fps: float,
                 make_image: Callable[[int, int], np.ndarray],
                 make_depth: Callable[[int, int], np.ndarray] | None = None):
        self.cameras = list(cameras)
        self.period = 1.0 / fps
        self.make_image = make_image
        self.make_depth = make_depth
        self.frames_pushed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="software-realsense-frames", daemon=True)

    def _run(self) -> None:
        next_time = time.monotonic()
        index = 0
        while not self._stop.is_set():
            for number, camera in enumerate(self.cameras):
                depth = self.make_depth(number, index) if self.make_depth is not None else None
                camera.push(self.make_image(number, index), depth)
            index += 1
            self.frames_pushed = index
            next_time += self.period
            now = time.monotonic()
            if next_time < now - self.period:         # fell behind (a loaded machine): no burst
                next_time = now
            self._stop.wait(max(0.0, next_time - now))

    def start(self) -> "FrameStream":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> "FrameStream":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
