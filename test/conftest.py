"""Test-session setup: every run gets its own DDS domain, discovery limited to this host, and
the helpers in this folder (ros_probe) importable from every test folder."""
import os
import sys
from pathlib import Path

# Before anything loads pyrealsense2: its wheel carries its own Fast DDS, and loaded first it
# binds ROS's (the process crashes at exit once a node has run).
import rclpy  # noqa: F401

from twinvla_ros.bringup.dds import isolate_dds

sys.path.insert(0, str(Path(__file__).parent))
isolate_dds()
os.environ.setdefault("MUJOCO_GL", "egl")
