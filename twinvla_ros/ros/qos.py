"""QoS profiles of twinvla_ros topics, chosen on purpose.

- cameras: sensor-data QoS (best effort, keep last few): a late frame is worth nothing, and a
  reliable image stream backs up the whole graph when a subscriber is slow;
- commands and states: reliable, keep last 10: a dropped EEF target is a visible hiccup;
- latched (e-stop, robot description): reliable + transient local, so a node that starts
  later still gets the last message (the e-stop pressed before it started, the URDF).
"""
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

SENSOR_QOS = qos_profile_sensor_data
COMMAND_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                         history=HistoryPolicy.KEEP_LAST, durability=DurabilityPolicy.VOLATILE)
LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         history=HistoryPolicy.KEEP_LAST, durability=DurabilityPolicy.TRANSIENT_LOCAL)
