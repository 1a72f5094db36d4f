"""Hardware behind small interfaces, one folder per backend (the layout of LeRobot's
`motors/` and `cameras/`): `motors/` (arm bus: sim | dynamixel) and `cameras/` (sim |
realsense). Pure Python: no ROS import; the nodes in twinvla_ros.ros drive these."""
