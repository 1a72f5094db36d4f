"""Publish one language instruction, waiting until the policy is there to hear it."""
from __future__ import annotations

import time

import rclpy
from rclpy.executors import ExternalShutdownException
from std_msgs.msg import String

from twinvla_ros.ros.qos import COMMAND_QOS


def publish_instruction(text: str, topic: str = "/instruction", timeout: float = 10.0) -> tuple[int, str]:
    """(exit code, what happened): 0 sent, 1 no subscriber within `timeout`, 130 interrupted.
    `text` must already be a valid instruction (twinvla_ros.execution.instruction)."""
    rclpy.init()
    node = rclpy.create_node("twinvla_say")
    try:
        pub = node.create_publisher(String, topic, COMMAND_QOS)
        deadline = time.monotonic() + timeout
        # Wait for the policy to be discovered, or the message would go nowhere.
        while pub.get_subscription_count() == 0:
            if time.monotonic() > deadline:
                return 1, (f"no subscriber on {topic} after {timeout:.0f} s (is the policy running, "
                           f"same ROS_DOMAIN_ID?)")
            rclpy.spin_once(node, timeout_sec=0.1)
        pub.publish(String(data=text))
        rclpy.spin_once(node, timeout_sec=0.2)
        return 0, f"sent to {pub.get_subscription_count()} subscriber(s) on {topic}: '{text}'"
    except (KeyboardInterrupt, ExternalShutdownException):
        return 130, "interrupted"
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
