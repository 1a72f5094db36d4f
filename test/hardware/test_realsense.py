"""The RealSense backend through the real librealsense: cameras are librealsense software devices
(SoftwareRealSense) registered in a context under a serial, so device lookup, the pipeline, the
frame syncer and depth alignment are librealsense's own code, as with a USB camera."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import rclpy  # noqa: F401 -- loaded before pyrealsense2 for the ROS tests of the same session (camera_node.py)
import pyrealsense2 as rs
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from twinvla_ros.hardware.cameras.realsense import (
    CameraError, FrameStream, RealSenseCamera, RealSenseCameraConfig, SoftwareRealSense, format_device_table,
    list_devices, load_camera_configs, open_cameras, parse_camera_configs)
from twinvla_ros.hardware.cameras.realsense.config import DEFAULTS, MAX_FPS, MAX_SIDE_PX
from twinvla_ros.robot.cameras import CAMERAS, CameraIntrinsics
from waiting import wait_for

W, H, FPS = 320, 240, 30
CLOCK_OFFSET_S = 1000.0          # the caller's clock runs this far ahead of the host clock


def ahead_clock() -> float:
    return time.time() + CLOCK_OFFSET_S


def pattern(seed: int, width: int = W, height: int = H) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def config(name="ego", serial="100000000001", **kwargs) -> RealSenseCameraConfig:
    return RealSenseCameraConfig(name=name, serial=serial, **{"width": W, "height": H, "fps": FPS, **kwargs})


def push_until_read(camera: RealSenseCamera, device: SoftwareRealSense, image, depth=None, **push):
    """Push the same exposure until the camera delivers it (a stream that has just started drops
    frames pushed before librealsense opened it)."""
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        device.push(image, depth, **push)
        try:
            return camera.read(timeout=0.1)
        except CameraError:
            continue
    raise AssertionError(f"camera {camera.config.name} delivered nothing in 10 s")


@pytest.fixture
def context():
    return rs.context()


@pytest.fixture
def plug(context):
    """plug(serial, model, ...) connects a software camera to `context` for the rest of the test."""
    held = []

    def plug(serial: str, model: str = "D405", width: int = W, height: int = H, fps: int = FPS, **kwargs):
        held.append(SoftwareRealSense(context, serial, model, width, height, fps, **kwargs))
        return held[-1]

    return plug


@pytest.fixture
def streaming(context, plug):
    """A started camera on a software D405, closed at the end."""
    cameras = []

    def start(**kwargs) -> tuple[RealSenseCamera, SoftwareRealSense]:
        device = plug(kwargs.pop("serial", "100000000001"), kwargs.pop("model", "D405"))
        camera = RealSenseCamera(config(serial=device.serial, **kwargs.pop("config", {})), context, **kwargs)
        cameras.append(camera)
        camera.start()
        return camera, device

    yield start
    for camera in cameras:
        camera.close()


def capture_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("realsense-")]


# ---- finding cameras -------------------------------------------------------------------------------


def test_missing_cameras_are_all_named_with_the_connected_ones_listed(context, plug):
    plug("200000000002", "D435")
    configs = [config("ego", serial="200000000002"), config("wrist_left", serial="123456789012"),
               config("wrist_right", serial="")]
    with pytest.raises(CameraError) as raised:
        open_cameras(configs, context)
    message = str(raised.value)
    assert "wrist_left (serial '123456789012' is not connected)" in message
    assert "wrist_right (no serial configured: set hardware.cameras.wrist_right.serial)" in message
    assert "ego" not in message.split("Connected:")[0]
    assert "Connected: 200000000002 (Intel RealSense D435)" in message
    assert not capture_threads(), "a camera started although another was missing"
    with pytest.raises(CameraError, match="wrist_left .*123456789012"):
        RealSenseCamera(configs[1], context)


def test_nothing_stays_open_when_a_later_camera_lacks_its_profile(context, plug):
    plug("200000000002", "D435")
    plug("300000000003", "D405")
    with pytest.raises(CameraError, match=r"wrist_left .*no colour profile 1280x720 rgb8 at 30 fps.*320x240@30"):
        open_cameras([config("ego", serial="200000000002"),
                      config("wrist_left", serial="300000000003", width=1280, height=720)], context)
    assert not capture_threads()


def test_a_camera_is_found_by_serial_and_its_colour_sensor_chosen(context, plug):
    plug("200000000002", "D435")
    plug("300000000003", "D405")
    cameras = open_cameras([config("ego", serial="200000000002"), config("wrist_left", serial="300000000003")],
                           context)
    assert cameras["ego"].device_name == "Intel RealSense D435"
    assert cameras["ego"].colour_sensor == "RGB Camera"
    # The D405 has no RGB sensor: its colour stream is one of the depth module's.
    assert cameras["wrist_left"].device_name == "Intel RealSense D405"
    assert cameras["wrist_left"].colour_sensor == "Stereo Module"


def test_listed_devices_say_what_each_sensor_offers(context, plug):
    plug("300000000003", "D405", firmware="5.12.14.100")
    plug("200000000002", "D435", 640, 480, 15)
    devices = {d.serial: d for d in list_devices(context)}
    assert set(devices) == {"200000000002", "300000000003"}
    d405 = devices["300000000003"]
    assert (d405.name, d405.firmware, d405.product_line, d405.usb_type) == (
        "Intel RealSense D405", "5.12.14.100", "D400", "3.2")
    assert [(s.name, s.depth) for s in d405.sensors] == [("Stereo Module", True)]
    assert [(p.width, p.height, p.fps, p.format) for p in d405.sensors[0].colour_profiles] == [(W, H, FPS, "rgb8")]
    d435 = {s.name: s for s in devices["200000000002"].sensors}
    assert d435["RGB Camera"].colour_profiles[0].fps == 15 and not d435["RGB Camera"].depth
    assert d435["Stereo Module"].depth and not d435["Stereo Module"].colour_profiles
    table = format_device_table(list_devices(context))
    assert "300000000003  Intel RealSense D405  5.12.14.100" in table
    assert "Stereo Module: 320x240@30" in table and "RGB Camera: 640x480@15" in table
    assert "no RealSense device connected" in format_device_table([])


# ---- frames --------------------------------------------------------------------------------------


def test_pushed_pixels_come_out_of_read_stamped_at_exposure_on_the_callers_clock(streaming):
    camera, device = streaming(clock=ahead_clock)
    image = pattern(1)
    before = time.time()
    frame = push_until_read(camera, device, image, timestamp_ms=(time.time() - 0.3) * 1e3)
    after = time.time()
    assert frame.image.dtype == np.uint8 and frame.image.shape == (H, W, 3) and frame.image.flags.c_contiguous
    np.testing.assert_array_equal(frame.image, image)          # rgb8: R, G, B per pixel, row by row
    assert frame.depth is None
    # Exposed 0.3 s before the push, on the host clock, mapped onto a clock 1000 s ahead.
    assert before - 0.3 + CLOCK_OFFSET_S <= frame.stamp <= after - 0.3 + CLOCK_OFFSET_S
    assert camera.health()["time_domain"] == "global"


@pytest.mark.parametrize("domain, stamp_ms, expected", [
    ("hardware", 12345.0, "arrival (hardware_clock is not the host clock)"),
    ("global", 12345.0, "arrival (global_time stamp"),       # a global stamp decades off the host clock
])
def test_frames_without_a_usable_host_stamp_are_stamped_at_arrival(streaming, domain, stamp_ms, expected):
    camera, device = streaming(clock=ahead_clock)
    before = time.time()
    frame = push_until_read(camera, device, pattern(2), timestamp_ms=stamp_ms, domain=domain)
    after = time.time()
    assert before + CLOCK_OFFSET_S <= frame.stamp <= after + CLOCK_OFFSET_S
    assert camera.health()["time_domain"].startswith(expected)


def test_intrinsics_are_the_devices_with_the_urdf_optical_frame(context, plug):
    plug("300000000003", "D405", intrinsics=(301.5, 302.25, 158.75, 121.5))
    camera = RealSenseCamera(config("wrist_left", serial="300000000003"), context)
    assert camera.intrinsics == CameraIntrinsics(W, H, 301.5, 302.25, 158.75, 121.5,
                                                 frame_id="left_wrist_camera_color_optical_frame")


@pytest.mark.parametrize("model, device_units, millimetres", [("D405", 12346, 1235), ("D435", 987, 987)])
def test_depth_is_aligned_to_colour_in_millimetres(streaming, model, device_units, millimetres):
    camera, device = streaming(model=model, config={"depth": True})
    assert camera.depth_scale == pytest.approx({"D405": 1e-4, "D435": 1e-3}[model])
    image = pattern(3)
    frame = push_until_read(camera, device, image, np.full((H, W), device_units, np.uint16))
    np.testing.assert_array_equal(frame.image, image)
    assert frame.depth.dtype == np.uint16 and frame.depth.shape == (H, W)
    # Same intrinsics, no offset between the imagers: each pixel maps onto itself, but for the
    # odd hole (0: no data) where alignment rounds two depth pixels onto one colour pixel.
    assert set(np.unique(frame.depth)) <= {0, millimetres}
    assert np.mean(frame.depth == millimetres) > 0.98


def test_read_returns_each_frame_once_and_fails_clearly_without_one(streaming, context, plug):
    stopped = RealSenseCamera(config(serial=plug("400000000004").serial), context)
    with pytest.raises(CameraError, match="not streaming"):
        stopped.read()
    camera, device = streaming(frame_timeout=5.0)
    push_until_read(camera, device, pattern(4))
    with pytest.raises(CameraError, match=r"camera ego .*serial 100000000001.*no new frame for 0.20 s"):
        camera.read(timeout=0.2)                 # nothing newer than the frame already read


def test_dropped_frames_are_counted_from_frame_numbers(streaming):
    camera, device = streaming()
    push_until_read(camera, device, pattern(5), frame_number=1)
    for number in (2, 5, 6):
        device.push(pattern(number), frame_number=number)
        camera.read(timeout=5.0)
    values = camera.health()
    assert values["drops"] == "2" and values["state"] == "streaming"


# ---- reconnecting --------------------------------------------------------------------------------


def test_an_unplugged_camera_is_found_again_when_replugged(streaming):
    camera, device = streaming(frame_timeout=0.3)
    with FrameStream([device], FPS, lambda _, index: pattern(index % 7)):
        camera.read(timeout=5.0)
        device.unplug()
        wait_for(lambda: camera.health()["state"] == "reconnecting", 10.0, "the camera to notice the unplug")
        wait_for(lambda: "100000000001 is not connected" in camera.health()["last_error"], 10.0,
                 "a restart attempt that finds the serial gone")
        with pytest.raises(CameraError, match="reconnecting"):
            camera.read(timeout=0.05)
        device.plug()
        wait_for(lambda: camera.health()["reconnects"] == "1", 15.0, "the stream back on the replugged device")
        frame = camera.read(timeout=5.0)
    assert any(np.array_equal(frame.image, pattern(i)) for i in range(7))
    values = camera.health()
    assert values["state"] == "streaming" and values["stream_failures"] == "1"
    assert int(values["failed_restarts"]) >= 1
    messages = [message for _, message in camera.events.drain()]
    assert any("no frame for 0.3 s" in m for m in messages) and any("streaming again" in m for m in messages)


def test_a_stream_that_goes_silent_is_restarted_on_the_same_device(streaming):
    camera, device = streaming(frame_timeout=0.3)
    push_until_read(camera, device, pattern(6))
    wait_for(lambda: camera.health()["state"] == "reconnecting", 10.0, "the silent stream to be noticed")
    frame = push_until_read(camera, device, pattern(7))
    np.testing.assert_array_equal(frame.image, pattern(7))
    assert camera.health()["reconnects"] == "1"


def test_stop_and_start_again(streaming):
    camera, device = streaming()
    push_until_read(camera, device, pattern(8))
    camera.stop()
    assert camera.health()["state"] == "stopped" and not capture_threads()
    with pytest.raises(CameraError, match="not streaming"):
        camera.read()
    camera.start()
    np.testing.assert_array_equal(push_until_read(camera, device, pattern(9)).image, pattern(9))


# ---- configuration -------------------------------------------------------------------------------


def test_the_shipped_config_describes_three_640x480_cameras():
    configs = load_camera_configs()
    assert list(configs) == list(CAMERAS)
    for name, camera in configs.items():
        assert (camera.width, camera.height, camera.fps, camera.depth) == (640, 480, 30, False)
        assert camera.serial == ""               # to be filled in per robot
    assert configs["ego"].frame_id == "ego_camera_color_optical_frame"
    assert configs["wrist_right"].frame_id == "right_wrist_camera_color_optical_frame"


@pytest.mark.parametrize("section, message", [
    ({"ego": {"serial": 218622270123}}, r'write it in quotes \("218622270123"\)'),
    ({"ego": {"serial": "1"}, "wrist_left": {"serial": "1"}}, "ego and wrist_left have the same serial '1'"),
    ({"ego": {"dept": True}}, r"hardware.cameras.ego: unknown keys \['dept'\]"),
    ({"head": {}}, r"unknown cameras \['head'\]"),
    ({"ego": [640, 480]}, "hardware.cameras.ego must be a mapping"),
    ([], "must be a mapping of camera name"),
    ({"ego": {"width": 640.0}}, "ego: .*width must be a whole number of pixels"),
    ({"ego": {"fps": 29.97}}, "ego: .*fps must be a whole number"),
    ({"ego": {"depth": "yes please"}}, "ego: .*depth must be true or false"),
])
def test_config_mistakes_are_named(section, message):
    with pytest.raises(ValueError, match=message):
        parse_camera_configs(section)


def test_a_file_without_the_section_is_named(tmp_path):
    path = tmp_path / "robot.yaml"
    path.write_text(yaml.safe_dump({"hardware": {"arms": {}}}))
    with pytest.raises(ValueError, match=f"{path}: no `hardware.cameras` section"):
        load_camera_configs(path)


def _valid_side(value) -> bool:
    return type(value) is int and 1 <= value <= MAX_SIDE_PX


def _valid_fps(value) -> bool:
    return ((type(value) is int and 1 <= value <= MAX_FPS)
            or (type(value) is float and value.is_integer() and 1 <= value <= MAX_FPS))


def _problem(section: dict) -> str | None:
    """The camera whose entry is wrong, per the rules of hardware.cameras (None: all valid)."""
    serials: dict[str, str] = {}
    for name, entry in section.items():
        values = {**DEFAULTS, **entry}
        serial = "" if values["serial"] is None else values["serial"]
        if not (isinstance(serial, str) and _valid_side(values["width"]) and _valid_side(values["height"])
                and _valid_fps(values["fps"]) and type(values["depth"]) is bool):
            return name
    for name, entry in section.items():
        serial = entry.get("serial") or ""
        if serial and serial in serials:
            return name
        serials[serial] = name
    return None


sides = st.one_of(st.integers(-2, MAX_SIDE_PX + 2), st.sampled_from([640.0, float("nan"), True, "640", None]))
rates = st.one_of(st.integers(-2, MAX_FPS + 2), st.sampled_from([30.0, 29.97, float("inf"), False, "30", None]))
serials = st.one_of(st.sampled_from(["", "218622270123", "130322273456"]), st.integers(0, 10**12), st.none())
entries = st.fixed_dictionaries({}, optional={
    "serial": serials, "width": sides, "height": sides, "fps": rates,
    "depth": st.sampled_from([True, False, 1, None])})


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(CAMERAS), entries))
def test_config_parsing_accepts_exactly_the_valid_entries(section):
    culprit = _problem(section)
    if culprit is not None:
        with pytest.raises(ValueError, match=culprit):
            parse_camera_configs(section)
        return
    configs = parse_camera_configs(section)
    assert list(configs) == list(section)
    for name, entry in section.items():
        values = {**DEFAULTS, **entry}
        camera = configs[name]
        assert (camera.width, camera.height, camera.fps, camera.depth) == (
            values["width"], values["height"], values["fps"], values["depth"])
        assert camera.serial == (values["serial"] or "")
