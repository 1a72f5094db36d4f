"""Test-session setup: every run gets its own DDS domain, discovery limited to this host, and
the helpers in this folder (ros_probe) importable from every test folder."""
import os
import sys
from pathlib import Path

import pytest

# Before anything loads pyrealsense2: its wheel carries its own Fast DDS, and loaded first it
# binds ROS's (the process crashes at exit once a node has run).
import rclpy  # noqa: F401

from twinvla_ros.bringup.dds import isolate_dds

sys.path.insert(0, str(Path(__file__).parent))
isolate_dds()
os.environ.setdefault("MUJOCO_GL", "egl")

SESSION_SCHEDULING = os.sched_getscheduler(0)


@pytest.fixture(autouse=True)
def no_realtime_scheduling_left_behind():
    """Every process and thread started after a test inherits the test process's scheduling
    policy: one left at SCHED_FIFO (an encoder library run as root did) starves the nodes of
    every later test on a small machine."""
    yield
    assert os.sched_getscheduler(0) == SESSION_SCHEDULING, (
        f"the test changed the test process's scheduling policy to {os.sched_getscheduler(0)}")
