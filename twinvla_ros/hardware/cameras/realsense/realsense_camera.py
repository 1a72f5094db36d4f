"""One RealSense camera, chosen by serial number: a colour stream (rgb8, optionally with depth
aligned to it) kept fresh by a capture thread that also brings the stream back when it stops.

Lifecycle, as the camera node drives it: the constructor opens (finds the serial, checks that the
device offers the profile, reads the intrinsics; nothing streams), `start()` streams, `stop()`
stops streaming, `close()` ends. `open_cameras` opens several and fails for all of them, naming
every missing serial, before any is opened.

The stream is an `rs.pipeline` on the device's serial, the same code for a USB camera and for a
librealsense software device (software.py: tests and benchmarks). What only a real camera
exercises: librealsense's USB backend under that code (pipeline.start negotiating with the
firmware, try_wait_for_frames raising when the cable is pulled mid-stream, a replugged camera
re-enumerated by the USB backend), global timestamps that librealsense derives from the device
clock, the global_time_enabled option being writable, and the depth scale, distortion and
frame drops a firmware reports. The software device covers the rest: lookup by serial, profile
checks, the pipeline, syncing and aligning depth, frames stopping, the device vanishing from
the context and coming back.

Stamps: a frame in librealsense's global time domain carries its exposure time on the host
clock (ms since the epoch, the clock of time.time()); it is mapped to the caller's clock (the
node's ROS clock) through the offset between the two at arrival. A system_time stamp (host clock
at the driver) is mapped the same way. Frames on the device's own clock, or with a host-clock
stamp more than PLAUSIBLE_STAMP_S from their arrival, are stamped with their arrival time
instead; health()["time_domain"] says which.
"""
from __future__ import annotations

import math
import threading
import time
from typing import Callable, Iterable

import numpy as np
import pyrealsense2 as rs

from twinvla_ros.hardware.cameras.camera import Camera, Frame
from twinvla_ros.hardware.cameras.realsense.config import RealSenseCameraConfig
from twinvla_ros.hardware.cameras.realsense.devices import (
    CONTEXT_LOCK, LISTING_HINT, CameraError, ColourProfile, camera_info, connected_devices, missing_cameras_error,
    summarize_profiles, video_profiles)
from twinvla_ros.reporting import EventLog, Level, RateMeter, Status
from twinvla_ros.robot.cameras import CameraIntrinsics

POLL_S = 0.1                    # longest single wait inside librealsense: how soon stop() is seen
FIRST_FRAME_TIMEOUT_S = 5.0     # a starting USB camera (enumeration, auto exposure) may take this long
RECONNECT_BACKOFF_S = (0.25, 4.0)   # first and longest pause between attempts to restart a stream
PLAUSIBLE_STAMP_S = 1.0         # a host-clock frame stamp further than this from its arrival is wrong
# Domains whose stamps are host-clock milliseconds: global (the exposure, the device clock mapped
# by librealsense) and system_time (when the frame reached the host's driver).
HOST_CLOCK_DOMAINS = {rs.timestamp_domain.global_time: "global", rs.timestamp_domain.system_time: "system"}


def _find_colour_sensor(device: rs.device, config: RealSenseCameraConfig):
    """(sensor, video profile) of the sensor that offers the configured rgb8 colour stream: the
    RGB Camera of a D435, the Stereo Module of a D405 (which has no RGB sensor)."""
    for sensor in device.query_sensors():
        for profile in video_profiles(sensor, rs.stream.color):
            if (profile.format() == rs.format.rgb8 and profile.fps() == int(config.fps)
                    and (profile.width(), profile.height()) == (config.width, config.height)):
                return sensor, profile
    return None


def _find_depth_sensor(device: rs.device, config: RealSenseCameraConfig):
    """(sensor, video profile) of z16 depth at the colour fps; the colour size if offered, else the
    largest (alignment resamples it to the colour image either way)."""
    candidates = [(sensor, profile) for sensor in device.query_sensors()
                  for profile in video_profiles(sensor, rs.stream.depth)
                  if profile.format() == rs.format.z16 and profile.fps() == int(config.fps)]
    if not candidates:
        return None
    return max(candidates, key=lambda c: ((c[1].width(), c[1].height()) == (config.width, config.height),
                                          c[1].width() * c[1].height()))


class RealSenseCamera(Camera):
    def __init__(self, config: RealSenseCameraConfig, context: rs.context | None = None,
                 clock: Callable[[], float] = time.time, frame_timeout: float = 1.0):
        """Open the camera with serial `config.serial` in `context` (a new one by default):
        CameraError if it is not connected or lacks the profile. `clock` (s) stamps the frames;
        `frame_timeout` (s) without a new frame fails read() and restarts the stream."""
        if not frame_timeout > 0:
            raise ValueError(f"frame_timeout must be positive, got {frame_timeout}")
        self.config = config
        self._context = context if context is not None else rs.context()
        self._clock = clock
        self._frame_timeout = frame_timeout
        device = connected_devices(self._context).get(config.serial) if config.serial else None
        if device is None:
            raise missing_cameras_error([config], connected_devices(self._context))
        self.device_name = camera_info(device, rs.camera_info.name)
        self.firmware = camera_info(device, rs.camera_info.firmware_version)
        self.usb_type = camera_info(device, rs.camera_info.usb_type_descriptor)
        self._who = f"camera {config.name} ({self.device_name or 'RealSense'}, serial {config.serial})"
        found = _find_colour_sensor(device, config)
        if found is None:
            offered = [ColourProfile(p.width(), p.height(), p.fps(), p.format().name)
                       for sensor in device.query_sensors() for p in video_profiles(sensor, rs.stream.color)]
            raise CameraError(f"{self._who} offers no colour profile {config.profile}; its rgb8 profiles: "
                              f"{summarize_profiles(offered) or 'none'}. {LISTING_HINT}.")
        sensor, profile = found
        self.colour_sensor = camera_info(sensor, rs.camera_info.name)
        model = profile.get_intrinsics()
        self._intrinsics = CameraIntrinsics(config.width, config.height, model.fx, model.fy, model.ppx,
                                            model.ppy, frame_id=config.frame_id)
        self.distortion = f"{model.model.name} {[round(c, 6) for c in model.coeffs]}"
        self.depth_scale = math.nan             # metres per device depth unit
        self._depth_size: tuple[int, int] | None = None
        self._align = None
        if config.depth:
            depth = _find_depth_sensor(device, config)
            if depth is None or not depth[0].is_depth_sensor():
                raise CameraError(f"{self._who} offers no z16 depth stream at {int(config.fps)} fps "
                                  f"(set depth: false for it)")
            self.depth_scale = depth[0].as_depth_sensor().get_depth_scale()
            self._depth_size = (depth[1].width(), depth[1].height())
            self._align = rs.align(rs.stream.color)

        self.events = EventLog(prefix=f"camera {config.name}: ", interval=5.0)
        self._lock = threading.Lock()
        self._new_frame = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._pipeline: rs.pipeline | None = None   # touched by the capture thread only
        self._closed = False
        self._state = "opened"           # opened | starting | streaming | reconnecting | stopped | failed
        self._latest: Frame | None = None
        self._sequence = 0                       # frames taken since open
        self._sequence_read = 0                  # the one read() returned last
        self._last_frame_at = -math.inf          # time.monotonic() of the newest frame
        self._stream_started_at = -math.inf
        self._last_number: int | None = None
        self._rate = RateMeter(window=90)
        self._drops = 0
        self._incomplete = 0
        self._stream_failures = 0
        self._reconnects = 0
        self._failed_restarts = 0
        self._last_error = ""
        self._time_domain = "none yet"
        self._exposure_to_arrival_ms = math.nan

    # ---- the Camera interface --------------------------------------------------------------

    @property
    def intrinsics(self) -> CameraIntrinsics:
        return self._intrinsics

    def read(self, timeout: float | None = None) -> Frame:
        """The newest frame, one newer than the last read() returned: a live 30 fps camera returns
        within one frame period. CameraError when none comes within `timeout` s (default: the
        frame timeout) or the camera is not streaming."""
        timeout = self._frame_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        with self._new_frame:
            while self._sequence == self._sequence_read:
                if self._state in ("opened", "stopped", "failed"):
                    raise CameraError(f"{self._who} is not streaming ({self._state})")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    detail = f"; last error: {self._last_error}" if self._last_error else ""
                    raise CameraError(f"{self._who}: no new frame for {timeout:.2f} s ({self._state}{detail})")
                self._new_frame.wait(remaining)
            self._sequence_read = self._sequence
            return self._latest

    def close(self) -> None:
        self.stop()
        self._closed = True

    # ---- streaming -------------------------------------------------------------------------

    def start(self) -> None:
        """Stream in a capture thread of this camera's own. Returns at once; the first frame
        follows within FIRST_FRAME_TIMEOUT_S (else the stream is restarted)."""
        if self._closed:
            raise CameraError(f"{self._who} is closed")
        if self._thread is not None:
            return
        with self._lock:
            self._state = "starting"
        self._stopping.clear()
        self._thread = threading.Thread(target=self._capture_loop, name=f"realsense-{self.config.name}",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop streaming (the device stays open: start() streams again)."""
        if self._thread is None:
            return
        self._stopping.set()
        self._thread.join()
        self._thread = None
        with self._new_frame:
            self._state = "stopped"
            self._new_frame.notify_all()

    def _capture_loop(self) -> None:
        try:
            self._stream_until_stopped()
        except Exception as error:     # noqa: BLE001 -- a dead capture thread must show, not vanish
            with self._new_frame:
                self._state = "failed"
                self._last_error = f"capture thread died: {type(error).__name__}: {error}"
                self._new_frame.notify_all()
            self.events.add("died", self._last_error, Level.ERROR)

    def _stream_until_stopped(self) -> None:
        backoff = RECONNECT_BACKOFF_S[0]
        try:
            while not self._stopping.is_set():
                if self._pipeline is None:
                    try:
                        self._start_pipeline()
                    except RuntimeError as error:      # CameraError, or librealsense refusing to start
                        self._restart_failed(str(error))
                        self._stopping.wait(backoff)
                        backoff = min(2 * backoff, RECONNECT_BACKOFF_S[1])
                        continue
                try:
                    arrived, frames = self._pipeline.try_wait_for_frames(int(POLL_S * 1000))
                except RuntimeError as error:          # the device went away mid-wait (USB)
                    self._lose_stream(f"the stream failed: {error}")
                    continue
                if arrived:
                    self._take(frames)
                    backoff = RECONNECT_BACKOFF_S[0]
                    continue
                got_one = self._last_frame_at > self._stream_started_at
                silent_since = self._last_frame_at if got_one else self._stream_started_at
                limit = self._frame_timeout if got_one else max(FIRST_FRAME_TIMEOUT_S, self._frame_timeout)
                if time.monotonic() - silent_since > limit:
                    self._lose_stream(f"no frame for {limit:.1f} s")
        finally:
            self._stop_pipeline()

    def _start_pipeline(self) -> None:
        with CONTEXT_LOCK:
            # Looked up afresh on every start: a replugged camera is a new device.
            device = connected_devices(self._context).get(self.config.serial)
            if device is None:
                raise CameraError(f"serial {self.config.serial} is not connected")
            for sensor in device.query_sensors():
                # Exposure times on the host clock; the default on recent firmware, said again
                # because a stamp on the device's own clock cannot be matched to the arms'.
                if sensor.supports(rs.option.global_time_enabled) and not sensor.is_option_read_only(
                        rs.option.global_time_enabled):
                    sensor.set_option(rs.option.global_time_enabled, 1)
            config = rs.config()
            config.enable_device(self.config.serial)
            config.enable_stream(rs.stream.color, self.config.width, self.config.height, rs.format.rgb8,
                                 int(self.config.fps))
            if self._depth_size is not None:
                config.enable_stream(rs.stream.depth, *self._depth_size, rs.format.z16, int(self.config.fps))
            pipeline = rs.pipeline(self._context)
            pipeline.start(config)
        self._pipeline = pipeline
        self._last_number = None
        self._stream_started_at = time.monotonic()

    def _stop_pipeline(self) -> None:
        if self._pipeline is None:
            return
        try:
            self._pipeline.stop()
        except RuntimeError:
            pass                # an unplugged camera cannot be stopped; dropping the pipeline frees it
        self._pipeline = None

    def _lose_stream(self, reason: str) -> None:
        self._stop_pipeline()
        with self._lock:
            self._stream_failures += 1
            self._state = "reconnecting"
            self._last_error = reason
        self.events.add("lost", f"{reason}; restarting the stream", Level.ERROR)

    def _restart_failed(self, reason: str) -> None:
        with self._lock:
            self._failed_restarts += 1
            self._state = "reconnecting"
            self._last_error = reason
        self.events.add("restart", f"cannot start the stream: {reason}; retrying", Level.ERROR)

    def _take(self, frames: rs.composite_frame) -> None:
        host_now = time.time()
        offset = self._clock() - host_now          # caller's clock minus host clock, s
        if self._align is not None:
            frames = self._align.process(frames)
        colour = frames.get_color_frame()
        if not colour:
            with self._lock:
                self._incomplete += 1
            return
        image = np.array(colour.get_data(), dtype=np.uint8, copy=True)     # librealsense reuses its buffer
        depth = None
        if self._align is not None:
            depth_frame = frames.get_depth_frame()
            if depth_frame:
                depth = self._depth_to_mm(np.asanyarray(depth_frame.get_data()))
        stamp_ms = colour.get_timestamp()
        domain = colour.get_frame_timestamp_domain()
        number = colour.get_frame_number()
        device_stamp = stamp_ms * 1e-3
        if domain in HOST_CLOCK_DOMAINS and abs(host_now - device_stamp) <= PLAUSIBLE_STAMP_S:
            host_stamp, time_domain = device_stamp, HOST_CLOCK_DOMAINS[domain]
        elif domain in HOST_CLOCK_DOMAINS:
            host_stamp, time_domain = host_now, f"arrival ({domain.name} stamp {host_now - device_stamp:+.1f} s off)"
        else:
            host_stamp, time_domain = host_now, f"arrival ({domain.name} is not the host clock)"
        with self._new_frame:
            # A frame never exposes before its predecessor: the clock offset is sampled per
            # arrival, and on a loaded machine its jitter exceeds the gap of two frames that
            # arrive together (tens of microseconds).
            stamp = host_stamp + offset
            if self._latest is not None and stamp <= self._latest.stamp:
                stamp = self._latest.stamp + 1e-6
            frame = Frame(image, stamp, depth)
            if self._state == "reconnecting":
                self._reconnects += 1
                self.events.add("reconnected", f"streaming again (reconnect {self._reconnects}; the stream had "
                                               f"stopped: {self._last_error})", Level.OK)
            self._state = "streaming"
            if self._last_number is not None and number > self._last_number + 1:
                self._drops += number - self._last_number - 1
            self._last_number = number
            self._time_domain = time_domain
            self._exposure_to_arrival_ms = (host_now - host_stamp) * 1e3
            self._last_frame_at = time.monotonic()
            self._rate.tick(self._last_frame_at)
            self._latest = frame
            self._sequence += 1
            self._new_frame.notify_all()

    def _depth_to_mm(self, raw: np.ndarray) -> np.ndarray:
        """Device depth units -> millimetres (REP 118); the D405's 0.1 mm units round to 1 mm."""
        mm_per_unit = self.depth_scale * 1e3
        if abs(mm_per_unit - 1.0) < 1e-6:
            return np.array(raw, dtype=np.uint16, copy=True)
        return np.clip(np.rint(raw.astype(np.float32) * np.float32(mm_per_unit)), 0, 65535).astype(np.uint16)

    # ---- reporting -------------------------------------------------------------------------

    def health(self) -> dict[str, str]:
        """The camera's figures for /diagnostics: frames, measured rate, dropped frames (gaps in
        the device's frame numbers), reconnects, last error, where the stamps come from."""
        with self._lock:
            age_ms = (time.monotonic() - self._last_frame_at) * 1e3 if self._sequence else math.nan
            values = {
                "state": self._state, "serial": self.config.serial, "device": self.device_name,
                "firmware": self.firmware, "usb": self.usb_type, "colour_sensor": self.colour_sensor,
                "profile": self.config.profile,
                "depth": (f"aligned, {self.depth_scale * 1e3:g} mm per device unit" if self._align else "off"),
                "frames": str(self._sequence), "drops": str(self._drops), "incomplete": str(self._incomplete),
                "stream_failures": str(self._stream_failures), "reconnects": str(self._reconnects),
                "failed_restarts": str(self._failed_restarts), "last_error": self._last_error,
                "time_domain": self._time_domain, "exposure_to_arrival_ms": f"{self._exposure_to_arrival_ms:.1f}",
                "last_frame_age_ms": f"{age_ms:.0f}", "distortion": self.distortion,
            }
            values.update(self._rate.summary())
        return values

    def status(self) -> Status:
        values = self.health()
        state = values["state"]
        if state == "streaming":
            if float(values["last_frame_age_ms"]) > self._frame_timeout * 1e3:
                return Status(Level.ERROR, f"no frame for {values['last_frame_age_ms']} ms", values)
            return Status(Level.OK, f"streaming {values['rate_hz']} Hz", values)
        if state == "reconnecting":
            return Status(Level.ERROR, f"no frames, reconnecting: {values['last_error']}", values)
        if state == "starting":
            return Status(Level.WARN, "starting: waiting for the first frame", values)
        if state == "failed":
            return Status(Level.ERROR, values["last_error"], values)
        return Status(Level.WARN, f"{state}: not streaming", values)


def open_cameras(configs: Iterable[RealSenseCameraConfig], context: rs.context | None = None,
                 clock: Callable[[], float] = time.time, frame_timeout: float = 1.0) -> dict[str, RealSenseCamera]:
    """Open every camera or none: all serials are checked first and one CameraError names every
    missing one; a camera that then fails (a missing profile) closes those opened before it."""
    configs = list(configs)
    names = [config.name for config in configs]
    serials = [config.serial for config in configs if config.serial]
    if len(set(names)) != len(names) or len(set(serials)) != len(serials):
        raise ValueError(f"each camera once and each serial once, got {[(c.name, c.serial) for c in configs]}")
    context = context if context is not None else rs.context()
    connected = connected_devices(context)
    missing = [config for config in configs if config.serial not in connected]
    if missing:
        raise missing_cameras_error(missing, connected)
    cameras: dict[str, RealSenseCamera] = {}
    try:
        for config in configs:
            cameras[config.name] = RealSenseCamera(config, context, clock, frame_timeout)
    except BaseException:
        for camera in cameras.values():
            camera.close()
        raise
    return cameras
