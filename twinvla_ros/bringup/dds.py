"""DDS settings: isolation for tests and the sim demo (design.md, "Isolation and access"), and
the environment of nodes that must find each other across hosts (a split deployment).

isolate_dds: a random ROS_DOMAIN_ID and localhost-only discovery, so two runs on one machine
(or a run on the robot's LAN) never hear each other. Must run before rclpy initializes its
context.

network_dds_environment: the variables for node processes on two hosts (policy on a GPU host,
sim or robot on the robot PC): the same domain, discovery on the subnet, optional static peers
where multicast does not reach, UDP only. Measured with the installed rmw_fastrtps_cpp 9.3.3 /
Fast DDS 3.2.3 (Kilted wheels) across two network namespaces (twinvla_ros.bringup.split_hosts):
- ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET: multicast discovery (239.255.0.1) works over a veth
  pair; LOCALHOST (what isolate_dds sets) finds nothing on the other host.
- Where multicast does not reach (hosts on two routed subnets), SUBNET alone finds nothing;
  ROS_STATIC_PEERS (the other host's address; one side is enough) makes it work.
  ROS_AUTOMATIC_DISCOVERY_RANGE=OFF finds nothing even with static peers.
- FASTDDS_BUILTIN_TRANSPORTS=UDPv4 is honoured (a wrong value is reported and ignored; SHM
  alone finds nothing across namespaces). It keeps Fast DDS from choosing shared memory for
  two processes it takes for one host, which would bypass the network being tested.
- Socket buffers: a 240x320 rgb8 frame is 230 KB, and the sim sends three at once; with the
  system's default receive buffer (net.core.rmem_default, 208 KiB) the policy host's kernel
  drops datagrams (RcvbufErrors), frames go missing, the policy holds for stale images and the
  target stream has gaps (16-17 Hz instead of 20, 0.5 s holes). `UDPv4?sockets_size=N` (bytes)
  is honoured (the kernel grants up to net.core.rmem_max, doubled); 1 MiB and more: no drops.
  LARGE_DATA (UDP discovery, TCP data; it also enables SHM) works as well without big buffers.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Sequence

# Receive/send buffer of the DDS sockets for camera images between hosts: a few 230 KB frames.
NETWORK_SOCKET_BUFFER = 4 * 1024 * 1024


def isolate_dds(domain_id: int | None = None) -> int:
    """Pick a domain (random unless given) and restrict discovery to this host; returns the domain."""
    domain = random.SystemRandom().randint(1, 100) if domain_id is None else int(domain_id)
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    # Iron and newer read ROS_AUTOMATIC_DISCOVERY_RANGE; Humble only knows ROS_LOCALHOST_ONLY.
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    if os.environ.get("ROS_DISTRO", "") == "humble":
        os.environ["ROS_LOCALHOST_ONLY"] = "1"
    return domain


def socket_buffer_limit() -> int | None:
    """net.core.rmem_max: the largest socket receive buffer a process may ask for (Linux)."""
    try:
        return int(Path("/proc/sys/net/core/rmem_max").read_text())
    except (OSError, ValueError):
        return None


def network_dds_environment(domain_id: int | None = None, static_peers: Sequence[str] = (),
                            transports: str | None = "UDPv4",
                            socket_buffer: int | None = NETWORK_SOCKET_BUFFER) -> dict[str, str | None]:
    """Environment changes (value None: remove the variable) for node processes that talk to
    nodes on other hosts: ProcessGraphRunner(specs, env=...), or `export` them in a shell.

    domain_id: the domain both hosts use (default: this process's ROS_DOMAIN_ID, else 0).
    static_peers: addresses of the other hosts (ROS_STATIC_PEERS, Iron and newer) for a network
    without multicast between them. transports: FASTDDS_BUILTIN_TRANSPORTS (Fast DDS 2.12 and
    newer; None: leave it alone); the default UDPv4 sends everything through the network stack,
    never shared memory. socket_buffer: bytes of socket buffer asked for (`?sockets_size=`,
    unless `transports` has options already); the kernel caps it at net.core.rmem_max, which
    must be raised where it is lower (sysctl -w net.core.rmem_max=4194304).
    """
    if domain_id is None:
        domain_id = int(os.environ.get("ROS_DOMAIN_ID", "0") or 0)
    humble = os.environ.get("ROS_DISTRO", "") == "humble"
    env: dict[str, str | None] = {
        "ROS_DOMAIN_ID": str(int(domain_id)),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET",
        # Humble's only switch; deprecated (and warned about) from Jazzy on: leave it unset.
        "ROS_LOCALHOST_ONLY": "0" if humble else None,
        "ROS_STATIC_PEERS": ";".join(static_peers) if static_peers else None,
    }
    if transports:
        if socket_buffer and "?" not in transports:
            transports = f"{transports}?sockets_size={int(socket_buffer)}"
        env["FASTDDS_BUILTIN_TRANSPORTS"] = transports
    return env
