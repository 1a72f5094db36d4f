"""Colour cameras: the interface (camera.py) and its backends (sim/; realsense/ with the hardware issue)."""
from twinvla_ros.hardware.cameras.camera import Camera, CameraConfig, Frame

__all__ = ["Camera", "CameraConfig", "Frame"]
