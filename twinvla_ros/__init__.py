"""twinvla_ros: TwinVLA on the Anubis dual-arm robot with ROS 2.

Layer 1 (no ROS import): model/, rotations, bimanual, kinematics, control/, policy/, sim/.
Layer 2: nodes/ (thin rclpy adapters). Layer 3: launch/ files, graph, runner and cli.
"""
__version__ = "0.1.0"
