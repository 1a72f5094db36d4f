#!/usr/bin/env python3
"""Benchmark of a split deployment: the policy on one host, the sim robot on another.

    sudo .venv/bin/python bench/split_hosts.py [--seconds 20]      (root: network namespaces)

Two network namespaces joined by a veth pair stand for the GPU host and the robot PC
(twinvla_ros.bringup.split_hosts): the sim node and the arm driver (one process each, cameras
240x320 at 10 Hz) on the robot host, the policy node (the shipped default policy on the CPU, rtc,
200 ms injected latency) on the GPU host, DDS between them over UDP only (no shared memory),
discovery by multicast (ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET). The instruction is sent with
`twinvla-ros say` on the robot host; an observer there measures `--seconds` of steady state
(from 1 s after the first target). Prints:
  split_hosts_rate_hz                  EEF target rate received on the robot host (slower arm)
  split_hosts_max_gap_ms               largest gap between two targets (either arm)
  split_hosts_target_latency_ms        median receipt time minus the target's stamp: both
                                       namespaces read one system clock here, so this is the
                                       DDS transfer time; across real hosts it also holds
                                       their clock offset
  split_hosts_target_latency_p99_ms
  split_hosts_stall_ticks              policy control ticks without an action (in the window)
  split_hosts_link_mb_s                robot host -> GPU host over the link (the camera images)
  split_hosts_rcvbuf_drops             UDP datagrams the GPU host's kernel dropped for full
                                       socket buffers (whole run)
  ..._default_buffers                  the same with the system's default socket buffers
                                       (`--no-default-buffers` to skip that run)
"""
from __future__ import annotations

import argparse
import sys

from common import machine_line

from twinvla_ros.bringup.dds import isolate_dds, socket_buffer_limit
from twinvla_ros.bringup.split_hosts import NetnsHosts, link_transports, run_split_hosts


def figures(summary: dict, suffix: str = "") -> list[str]:
    arms = [summary[side] for side in ("left", "right")]
    window = summary["window_s"]
    return [f"split_hosts_rate_hz{suffix}={min(a['rate_hz'] for a in arms):.2f}",
            f"split_hosts_max_gap_ms{suffix}={max(a['max_gap_ms'] for a in arms):.1f}",
            f"split_hosts_target_latency_ms{suffix}={max(a['latency_p50_ms'] for a in arms):.2f}",
            f"split_hosts_target_latency_p99_ms{suffix}={max(a['latency_p99_ms'] for a in arms):.2f}",
            f"split_hosts_stall_ticks{suffix}={summary.get('window_stall_ticks', '?')}",
            f"split_hosts_link_mb_s{suffix}={summary['link_bytes'].get('tx_bytes', 0) / window / 1e6:.2f}",
            f"split_hosts_rcvbuf_drops{suffix}={summary['udp']['gpu'].get('RcvbufErrors', 0)}"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="steady-state measuring time")
    parser.add_argument("--injected-latency", type=float, default=0.2, help="added to every inference, s")
    parser.add_argument("--no-default-buffers", action="store_true",
                        help="skip the run with the system's default socket buffers")
    args = parser.parse_args(argv)
    reason = NetnsHosts.unavailable_reason()
    if reason:
        print(f"split_hosts: cannot run: {reason}", file=sys.stderr)
        return 2
    isolate_dds()        # a random domain for the namespaces' processes
    print(machine_line(transports=link_transports(), rmem_max=str(socket_buffer_limit())), flush=True)
    quiet = lambda *_: None  # noqa: E731 -- the figures are the output
    for line in figures(run_split_hosts(args.seconds, args.injected_latency, log=quiet)):
        print(line, flush=True)
    if not args.no_default_buffers:
        summary = run_split_hosts(args.seconds, args.injected_latency, transports="UDPv4?sockets_size=0", log=quiet)
        for line in figures(summary, "_default_buffers"):
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
