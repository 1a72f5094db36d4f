"""Arm-bus backend for ROBOTIS Dynamixel X-series servos (Protocol 2.0) on a U2D2/FTDI port:
followers (`DynamixelArmBus`), leaders (`LeaderArm`, torque off, read only), their settings
from the `hardware:` section of config/anubis.yaml (`load_arm_config`) and the calibration that
`twinvla-ros calibrate` runs (`run_calibration`)."""
from twinvla_ros.hardware.motors.dynamixel.bus import DynamixelArmBus, ftdi_latency_timer_ms
from twinvla_ros.hardware.motors.dynamixel.calibration import compute_calibration, run_calibration, \
    write_calibration
from twinvla_ros.hardware.motors.dynamixel.config import ArmConversion, DynamixelArmConfig, GripperSpec, \
    JointSpec, MotorSpec, load_arm_config, parse_arm_config
from twinvla_ros.hardware.motors.dynamixel.leader import LeaderArm
from twinvla_ros.hardware.motors.dynamixel.pair import open_arm_pair

__all__ = ["ArmConversion", "DynamixelArmBus", "DynamixelArmConfig", "GripperSpec", "JointSpec", "LeaderArm",
           "MotorSpec", "compute_calibration", "ftdi_latency_timer_ms", "load_arm_config", "open_arm_pair", "parse_arm_config",
           "run_calibration", "write_calibration"]
