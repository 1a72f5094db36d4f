"""The ROS 2 layer: thin rclpy nodes (nodes/) and the helpers they share (QoS, message
conversion, parameters, the guarded node base). The only layer besides bringup that imports
rclpy or message packages."""
