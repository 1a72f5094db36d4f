"""Test-session setup: every run gets its own DDS domain, discovery limited to this host, and
the helpers in this folder (ros_probe) importable from every test folder."""
import os
import sys
from pathlib import Path

from twinvla_ros.bringup.dds import isolate_dds

sys.path.insert(0, str(Path(__file__).parent))
isolate_dds()
os.environ.setdefault("MUJOCO_GL", "egl")
