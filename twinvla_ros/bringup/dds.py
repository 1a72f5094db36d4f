"""DDS isolation for tests and the sim demo (design.md, "Isolation and access").

A random ROS_DOMAIN_ID and localhost-only discovery, so two runs on one machine (or a run on
the robot's LAN) never hear each other. Must run before rclpy initializes its context.
"""
from __future__ import annotations

import os
import random


def isolate_dds(domain_id: int | None = None) -> int:
    """Pick a domain (random unless given) and restrict discovery to this host; returns the domain."""
    domain = random.SystemRandom().randint(1, 100) if domain_id is None else int(domain_id)
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    # Iron and newer read ROS_AUTOMATIC_DISCOVERY_RANGE; Humble only knows ROS_LOCALHOST_ONLY.
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    if os.environ.get("ROS_DISTRO", "") == "humble":
        os.environ["ROS_LOCALHOST_ONLY"] = "1"
    return domain
