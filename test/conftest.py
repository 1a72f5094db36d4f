"""Test-session setup: every run gets its own DDS domain, discovery limited to this host."""
import os

from twinvla_ros.ros_env import isolate_dds

isolate_dds()
os.environ.setdefault("MUJOCO_GL", "egl")
