"""The arm driver's control core, pure Python (no ROS).

- safety: SafetyLimits (every limit of the arm driver, with its units and how its default was
  chosen) and the pure functions that enforce them (pose validation, workspace clamp, per-tick
  step caps, the tracking margin).
- controller: ArmController, one arm's servo loop: EEF/joint/gripper targets and bus readings in,
  safe joint targets out; every intervention counted and reported (status(), drain_events()).
- teleop: ArmTeleop, one leader -> follower arm: the safe start, the joint / EEF mappings, the
  gripper mapping, stale and bad leader readings (the teleop node feeds it).

The arm driver node (twinvla_ros.ros.nodes.arm_driver_node) only converts messages, computes the
targets' stamp ages and runs the servo timer.
"""
from twinvla_ros.control.safety import SafetyLimits
from twinvla_ros.control.controller import ArmController, Mode

__all__ = ["ArmController", "Mode", "SafetyLimits"]
