"""Recorded data: videos and plots a person looks at (media.py); episode bags (bags/: the
recorder core, MCAP writing, recovery, bag info); LeRobot v3.0 datasets (lerobot/: writer,
checker, reader) and the conversion between the two (conversion/). Pure Python, no ROS import
(MCAP with the `mcap` library, message definitions from `rosbags`)."""
