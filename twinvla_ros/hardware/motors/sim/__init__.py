"""Arm-bus backend for the MuJoCo sim node (its motors, reached over the sim bus topics)."""
from twinvla_ros.hardware.motors.sim.sim_arm_bus import SimArmBus

__all__ = ["SimArmBus"]
