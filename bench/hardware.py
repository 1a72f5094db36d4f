#!/usr/bin/env python3
"""The hardware backends' benchmark: runs bench/hardware_dynamixel.py and
bench/hardware_cameras.py, each in its own process (the camera one imports rclpy before
pyrealsense2; the Dynamixel one must not share its process with a DDS participant), and prints
their `name=value` lines after one `machine=` line.

  dxl_sync_read_ms_pty, dxl_sync_write_ms_pty       14 motors over the pty servo responder
  camera_msg_build_ms_640x480, camera_jpeg_ms_640x480, camera_publish_cpu_percent_3x30fps, ...

    python bench/hardware.py
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from common import machine_line

HERE = Path(__file__).resolve().parent
PARTS = ("hardware_dynamixel.py", "hardware_cameras.py")


def main() -> int:
    print(machine_line())
    for part in PARTS:
        result = subprocess.run([sys.executable, str(HERE / part)], capture_output=True, text=True)
        for line in result.stdout.splitlines():
            if not line.startswith("machine="):
                print(line)
        if result.returncode:
            print(f"{part} failed ({result.returncode}):\n{result.stderr[-2000:]}", file=sys.stderr)
            return result.returncode
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
