"""Arm buses: the interface (arm_bus.py) and its backends (sim/; dynamixel/ with the hardware issue)."""
from twinvla_ros.hardware.motors.arm_bus import ArmBus, BusError, BusReading

__all__ = ["ArmBus", "BusError", "BusReading"]
