"""Fine-tuning TwinVLA on LeRobot v3.0 datasets (the training issue). Pure Python over
twinvla_ros.model and twinvla_ros.data; no ROS import."""
