"""RealSense camera backend (pyrealsense2): cameras chosen by serial number from the
`hardware.cameras` section of config/anubis.yaml, one capture thread each, reconnecting on their
own; device listing for `twinvla-ros cameras`; software devices for running without hardware.

A process that also runs ROS nodes imports rclpy before this package: the pyrealsense2 wheel
carries its own Fast DDS, and loaded first it binds ROS's (the process crashes at exit)."""
from twinvla_ros.hardware.cameras.realsense.config import (
    RealSenseCameraConfig, load_camera_configs, optical_frames, parse_camera_configs)
from twinvla_ros.hardware.cameras.realsense.devices import (
    CameraError, ColourProfile, DeviceInfo, SensorInfo, connected_devices, format_device_table, list_devices)
from twinvla_ros.hardware.cameras.realsense.realsense_camera import RealSenseCamera, open_cameras
from twinvla_ros.hardware.cameras.realsense.software import FrameStream, SoftwareRealSense

__all__ = ["CameraError", "ColourProfile", "DeviceInfo", "FrameStream", "RealSenseCamera", "RealSenseCameraConfig",
           "SensorInfo", "SoftwareRealSense", "connected_devices", "format_device_table", "list_devices",
           "load_camera_configs", "open_cameras", "optical_frames", "parse_camera_configs"]
