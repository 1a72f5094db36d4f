"""Recorded data: videos and plots a person looks at (media.py); episode bags and LeRobot v3.0
datasets come with the recorder and conversion issues. Pure Python, no ROS import (bags are
read and written with `rosbags`)."""
