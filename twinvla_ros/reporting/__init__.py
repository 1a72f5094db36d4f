"""What every part reports, without ROS: severity levels and statuses (diagnostic_msgs'
vocabulary) and an event log that counts every event but lets only a few reach the log."""
from twinvla_ros.reporting.rate import RateMeter
from twinvla_ros.reporting.status import EventLog, Level, Status

__all__ = ["EventLog", "Level", "RateMeter", "Status"]
