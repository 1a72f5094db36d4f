"""The rclpy nodes: sim_node, arm_driver_node, policy_node. Each converts messages and calls a
pure-Python core (twinvla_ros.sim, twinvla_ros.control, twinvla_ros.execution)."""
