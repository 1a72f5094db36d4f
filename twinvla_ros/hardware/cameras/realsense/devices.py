"""Which RealSense devices are connected, what they offer, and the error that says which
configured camera is missing.

Every librealsense call that enumerates devices or resolves a stream goes through
CONTEXT_LOCK: a context's list of software devices (test and benchmark cameras) is not guarded
inside librealsense, so adding one while another thread enumerates would race.
"""
from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable

import pyrealsense2 as rs

from twinvla_ros.hardware.cameras.realsense.config import RealSenseCameraConfig

CONTEXT_LOCK = threading.RLock()
LISTING_HINT = "`twinvla-ros cameras` lists the connected RealSense devices"


class CameraError(RuntimeError):
    """A RealSense camera is not connected, does not offer the configured profile, or has stopped
    delivering frames."""


@dataclass(frozen=True)
class ColourProfile:
    width: int               # px
    height: int              # px
    fps: int
    format: str              # librealsense's format name: rgb8, bgr8, yuyv, ...


@dataclass(frozen=True)
class SensorInfo:
    name: str                # "RGB Camera", "Stereo Module" (the D405's colour comes from this one)
    colour_profiles: tuple[ColourProfile, ...]
    depth: bool              # offers a z16 depth stream


@dataclass(frozen=True)
class DeviceInfo:
    name: str                # "Intel RealSense D405"
    serial: str
    firmware: str
    product_line: str        # "D400"
    usb_type: str            # "3.2"; a camera on a USB 2 port cannot stream three 640x480 colour streams
    sensors: tuple[SensorInfo, ...]


def camera_info(entity, key: rs.camera_info) -> str:
    """A device's or sensor's info string, empty when it does not report that one."""
    return entity.get_info(key) if entity.supports(key) else ""


def connected_devices(context: rs.context) -> dict[str, rs.device]:
    """Serial -> device, for every device the context sees now (USB and software devices)."""
    with CONTEXT_LOCK:
        devices = list(context.query_devices())
    return {camera_info(device, rs.camera_info.serial_number): device for device in devices
            if camera_info(device, rs.camera_info.serial_number)}


def video_profiles(sensor: rs.sensor, stream: rs.stream) -> list[rs.video_stream_profile]:
    return [profile.as_video_stream_profile() for profile in sensor.get_stream_profiles()
            if profile.stream_type() == stream and profile.is_video_stream_profile()]


def describe(device: rs.device) -> DeviceInfo:
    sensors = []
    for sensor in device.query_sensors():
        colour = sorted({ColourProfile(p.width(), p.height(), p.fps(), p.format().name)
                         for p in video_profiles(sensor, rs.stream.color)},
                        key=lambda c: (c.format, -c.width, -c.height, c.fps))
        depth = any(p.format() == rs.format.z16 for p in video_profiles(sensor, rs.stream.depth))
        sensors.append(SensorInfo(camera_info(sensor, rs.camera_info.name), tuple(colour), depth))
    return DeviceInfo(name=camera_info(device, rs.camera_info.name),
                      serial=camera_info(device, rs.camera_info.serial_number),
                      firmware=camera_info(device, rs.camera_info.firmware_version),
                      product_line=camera_info(device, rs.camera_info.product_line),
                      usb_type=camera_info(device, rs.camera_info.usb_type_descriptor),
                      sensors=tuple(sensors))


def list_devices(context: rs.context | None = None) -> list[DeviceInfo]:
    """Every connected RealSense device with the colour profiles each of its sensors offers."""
    devices = connected_devices(context if context is not None else rs.context())
    return [describe(device) for _, device in sorted(devices.items())]


def summarize_profiles(profiles: Iterable[ColourProfile], pixel_format: str = "rgb8") -> str:
    """'1280x720@6/15/30, 640x480@6/15/30/60' for the profiles of one format, largest first."""
    rates: dict[tuple[int, int], set[int]] = defaultdict(set)
    for profile in profiles:
        if profile.format == pixel_format:
            rates[(profile.width, profile.height)].add(profile.fps)
    return ", ".join(f"{w}x{h}@{'/'.join(str(f) for f in sorted(fps))}"
                     for (w, h), fps in sorted(rates.items(), key=lambda item: (-item[0][0], -item[0][1])))


def format_device_table(devices: list[DeviceInfo]) -> str:
    """The connected devices as a table: what `hardware.cameras` needs (serial, an rgb8 profile)."""
    if not devices:
        return ("no RealSense device connected (check the cable and `lsusb | grep 8086`; librealsense "
                "needs libusb-1.0 and the RealSense udev rules)")
    header = ("serial", "model", "firmware", "line", "usb", "colour (rgb8) per sensor")
    rows = []
    for device in devices:
        colour = "; ".join(f"{sensor.name}: {summarize_profiles(sensor.colour_profiles)}"
                           for sensor in device.sensors if summarize_profiles(sensor.colour_profiles))
        rows.append((device.serial, device.name, device.firmware or "-", device.product_line or "-",
                     device.usb_type or "-", colour or "no rgb8 colour stream"))
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    lines = ["  ".join([*(cell.ljust(width) for cell, width in zip(row, widths)), row[-1]]).rstrip()
             for row in [header, *rows]]
    return "\n".join(lines)


def missing_cameras_error(missing: Iterable[RealSenseCameraConfig], connected: dict[str, rs.device]) -> CameraError:
    """One error for every configured camera that is not connected, listing what is."""
    reasons = []
    for config in missing:
        if config.serial:
            reasons.append(f"{config.name} (serial {config.serial!r} is not connected)")
        else:
            reasons.append(f"{config.name} (no serial configured: set hardware.cameras.{config.name}.serial)")
    present = ", ".join(f"{serial} ({camera_info(device, rs.camera_info.name) or 'unnamed'})"
                        for serial, device in sorted(connected.items())) or "none"
    return CameraError(f"RealSense cameras not found: {'; '.join(reasons)}. Connected: {present}. {LISTING_HINT}.")
