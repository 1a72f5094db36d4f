"""Rehearse a split deployment on one machine: the policy on a "GPU host", the sim and the arm
driver on a "robot PC", each in its own network namespace, talking DDS over a veth link.

    python -m twinvla_ros.bringup.split_hosts run [--seconds 20]   (root: it makes namespaces)

NetnsHosts makes the two hosts: namespaces `twinvla_robot_<tag>` and `twinvla_gpu_<tag>`,
each with `lo` and one interface `twinvla0`, either joined directly (one /30 subnet, multicast
discovery works) or through a third namespace that routes between two subnets (multicast does
not cross it: a network where discovery needs static peers). The addresses (10.213.0.x) exist
only inside the namespaces; nothing is sent on the machine's own interfaces.

run_split_hosts starts the sim_robot graph in the robot namespace and the policy graph in the
GPU namespace (ProcessGraphRunner under `ip netns exec`, environment from
network_dds_environment: SUBNET discovery, UDP only with 4 MiB socket buffers), an observer in
the robot namespace (`observe` below), then sends the instruction from the robot namespace
with `twinvla-ros say`, and returns the observer's summary: the EEF target rate and largest gap as the robot side
receives them, target latency (receipt minus stamp: both namespaces read one system clock
here, so the stamps are comparable; across real hosts only as far as their clocks agree), how
far each arm moved, the driver's stamp rejections, and the bytes the robot side sent and
received on the link (the camera images cross it, so the data did not take a shortcut).

All DDS work happens in processes inside the namespaces; the calling process only reads files.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

MODULE = "twinvla_ros.bringup.split_hosts"     # run inside the namespaces with python -m
HOSTS = ("robot", "gpu")
INTERFACE = "twinvla0"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=20)


class NetnsError(RuntimeError):
    """Network namespaces cannot be made here (not root, no `ip`, a kernel without them)."""


class NetnsHosts:
    """Two network namespaces standing for two hosts. routed=False: one veth pair, one subnet
    (10.213.0.1/30 robot, .2 GPU). routed=True: each host on its own subnet (10.213.0.1/30 and
    10.213.0.5/30) behind a router namespace that forwards unicast but no multicast."""

    def __init__(self, tag: str | None = None, routed: bool = False):
        tag = tag or str(os.getpid())
        self.routed = routed
        self.names = {host: f"twinvla_{host}_{tag}" for host in HOSTS}
        self.router = f"twinvla_router_{tag}" if routed else None
        if routed:
            self.addresses = {"robot": "10.213.0.1", "gpu": "10.213.0.5"}
            self._gateways = {"robot": "10.213.0.2", "gpu": "10.213.0.6"}
        else:
            self.addresses = {"robot": "10.213.0.1", "gpu": "10.213.0.2"}
            self._gateways = {}
        self._made: list[str] = []

    @staticmethod
    def unavailable_reason() -> str | None:
        """Why namespaces cannot be made here, or None if they can be tried."""
        if shutil.which("ip") is None:
            return "the `ip` command (iproute2) is not installed"
        if hasattr(os, "geteuid") and os.geteuid() != 0:
            return "network namespaces need root (ip netns add)"
        return None

    def prefix(self, host: str) -> list[str]:
        """Command prefix that runs a program on `host` (it execs, so signals reach it)."""
        return self.prefix_of(self.names[host])

    def create(self) -> "NetnsHosts":
        reason = self.unavailable_reason()
        if reason:
            raise NetnsError(reason)
        try:
            for name in [*self.names.values(), *([self.router] if self.router else [])]:
                if name in self.existing():
                    self._delete(name)        # left behind by a killed run with this pid
                _ip("netns", "add", name)
                self._made.append(name)
                _ip("-n", name, "link", "set", "lo", "up")
            robot, gpu = self.names["robot"], self.names["gpu"]
            if not self.routed:
                _ip("link", "add", INTERFACE, "netns", robot, "type", "veth", "peer", "name", INTERFACE, "netns", gpu)
                for host in HOSTS:
                    self._configure(self.names[host], INTERFACE, f"{self.addresses[host]}/30")
                    # Fast DDS sends discovery multicast on each interface it uses; a multicast
                    # route makes the same true for any other program on these hosts.
                    _ip("-n", self.names[host], "route", "add", "224.0.0.0/4", "dev", INTERFACE)
            else:
                for host in HOSTS:
                    port = f"to_{host}"
                    _ip("link", "add", INTERFACE, "netns", self.names[host], "type", "veth",
                        "peer", "name", port, "netns", self.router)
                    self._configure(self.names[host], INTERFACE, f"{self.addresses[host]}/30")
                    self._configure(self.router, port, f"{self._gateways[host]}/30")
                    _ip("-n", self.names[host], "route", "add", "default", "via", self._gateways[host])
                subprocess.run([*self.prefix_of(self.router), "sysctl", "-qw", "net.ipv4.ip_forward=1"],
                               check=True, capture_output=True, text=True, timeout=20)
        except subprocess.CalledProcessError as error:
            self.destroy()
            raise NetnsError(f"{' '.join(error.cmd)}: {error.stderr.strip() or error}") from None
        except BaseException:
            self.destroy()
            raise
        return self

    @staticmethod
    def prefix_of(namespace: str) -> list[str]:
        return ["ip", "netns", "exec", namespace]

    @staticmethod
    def _configure(namespace: str, interface: str, address: str) -> None:
        _ip("-n", namespace, "addr", "add", address, "dev", interface)
        _ip("-n", namespace, "link", "set", interface, "up", "multicast", "on")

    @staticmethod
    def existing() -> set[str]:
        result = _ip("netns", "list", check=False)
        return {line.split()[0] for line in result.stdout.splitlines() if line.strip()}

    @staticmethod
    def _delete(name: str) -> None:
        # Whatever still runs in it was started by this run (or a killed one with its pid).
        pids = _ip("netns", "pids", name, check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        _ip("netns", "del", name, check=False)

    def destroy(self) -> None:
        """Remove the namespaces (their interfaces go with them); safe to call twice."""
        for name in reversed(self._made):
            self._delete(name)
        self._made.clear()

    def counters(self, host: str) -> dict[str, int]:
        """Bytes and packets `host` sent and received on its link interface."""
        out = _ip("-n", self.names[host], "-s", "-j", "link", "show", INTERFACE).stdout
        stats = json.loads(out)[0]["stats64"]
        return {"tx_bytes": stats["tx"]["bytes"], "rx_bytes": stats["rx"]["bytes"],
                "tx_packets": stats["tx"]["packets"], "rx_packets": stats["rx"]["packets"]}

    def udp_counters(self, host: str) -> dict[str, int]:
        """The UDP counters of `host`'s kernel (/proc/net/snmp): RcvbufErrors counts datagrams
        dropped because a socket's receive buffer was full."""
        text = subprocess.run([*self.prefix(host), "cat", "/proc/net/snmp"], capture_output=True, text=True,
                              check=True, timeout=20).stdout
        rows = [line.split()[1:] for line in text.splitlines() if line.startswith("Udp:")]
        return {name: int(value) for name, value in zip(rows[0], rows[1])} if len(rows) >= 2 else {}

    def __enter__(self) -> "NetnsHosts":
        return self.create()

    def __exit__(self, *exc) -> None:
        self.destroy()


# ---- the observer: runs inside the robot namespace ------------------------------------------

def _interface_bytes(interface: str) -> dict[str, int]:
    """tx/rx bytes of an interface of this process's namespace (`ip netns exec` mounts its /sys)."""
    base = Path("/sys/class/net") / interface / "statistics"
    try:
        return {name: int((base / name).read_text()) for name in ("tx_bytes", "rx_bytes")}
    except OSError:
        return {}


def _gaps_summary(receipts: list[float], stamps: list[float], start: float, end: float) -> dict:
    import numpy as np

    pairs = [(r, s) for r, s in zip(receipts, stamps) if start <= r <= end]
    if len(pairs) < 2:
        return {"count": len(pairs)}
    r = np.array([p[0] for p in pairs])
    s = np.array([p[1] for p in pairs])
    gaps = np.diff(r)
    latency = r - s
    return {"count": len(pairs),
            "rate_hz": float((len(r) - 1) / (r[-1] - r[0])),
            "stamp_rate_hz": float((len(s) - 1) / (s[-1] - s[0])) if s[-1] > s[0] else 0.0,
            "max_gap_ms": float(gaps.max() * 1e3),
            "gap_p99_ms": float(np.percentile(gaps, 99) * 1e3),
            "latency_p50_ms": float(np.percentile(latency, 50) * 1e3),
            "latency_p99_ms": float(np.percentile(latency, 99) * 1e3),
            "latency_max_ms": float(latency.max() * 1e3)}


def observe(seconds: float, settle: float = 1.0, first_target_timeout: float = 60.0,
            interface: str = INTERFACE) -> dict:
    """Record both arms' EEF targets and poses and the driver's diagnostics; after the first
    target and `settle` seconds, measure for `seconds`. Returns the summary."""
    import numpy as np
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseStamped
    from rclpy.executors import SingleThreadedExecutor

    from twinvla_ros.robot.bimanual import ARMS
    from twinvla_ros.ros.messages import stamp_to_seconds
    from twinvla_ros.ros.qos import COMMAND_QOS

    rclpy.init()
    node = rclpy.create_node("split_hosts_observer")
    lock = threading.Lock()
    targets: dict[str, tuple[list[float], list[float]]] = {side: ([], []) for side in ARMS}
    poses: dict[str, list[tuple[float, np.ndarray]]] = {side: [] for side in ARMS}
    diagnostics: dict[str, dict[str, str]] = {}

    def on_target(side):
        def store(msg: PoseStamped):
            now = time.time()
            with lock:
                targets[side][0].append(now)
                targets[side][1].append(stamp_to_seconds(msg.header.stamp))
        return store

    def on_pose(side):
        def store(msg: PoseStamped):
            p = msg.pose.position
            with lock:
                poses[side].append((time.time(), np.array([p.x, p.y, p.z])))
        return store

    def on_diagnostics(msg: DiagnosticArray):
        with lock:
            for status in msg.status:
                diagnostics[status.name] = {kv.key: kv.value for kv in status.values}

    for side in ARMS:
        node.create_subscription(PoseStamped, f"/{side}_arm/eef_target", on_target(side), COMMAND_QOS)
        node.create_subscription(PoseStamped, f"/{side}_arm/eef_pose", on_pose(side), COMMAND_QOS)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, COMMAND_QOS)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    summary: dict = {"ok": False}
    try:
        deadline = time.monotonic() + first_target_timeout
        while not all(targets[side][0] for side in ARMS):
            if time.monotonic() > deadline:
                summary["error"] = f"no EEF target from the policy host within {first_target_timeout:.0f} s"
                with lock:
                    summary["poses_received"] = {side: len(poses[side]) for side in ARMS}
                return summary
            time.sleep(0.05)
        with lock:
            first = {side: targets[side][0][0] for side in ARMS}
        time.sleep(settle)
        start, bytes_start = time.time(), _interface_bytes(interface)
        with lock:
            policy_start = dict(diagnostics.get("policy_node: policy", {}))
        time.sleep(seconds)
        end, bytes_end = time.time(), _interface_bytes(interface)
        with lock:
            for side in ARMS:
                summary[side] = _gaps_summary(*targets[side], start, end)
                before = [p for t, p in poses[side] if t <= first[side]] or [p for _, p in poses[side][:1]]
                after = [p for t, p in poses[side] if t > first[side]]
                moved = max((float(np.linalg.norm(p - before[-1])) for p in after), default=0.0) if before else 0.0
                summary[side]["moved_m"] = moved
                driver = diagnostics.get(f"arm_driver_node: {side} arm", {})
                summary[side]["driver_rejected"] = int(driver.get("rejected", -1))
                summary[side]["driver_stamp_rejected"] = int(driver.get("stamp_rejected", -1))
            summary["policy"] = diagnostics.get("policy_node: policy", {})
            # Control ticks without an action within the window (the diagnostics come once a second).
            if "stall_ticks" in policy_start and "stall_ticks" in summary["policy"]:
                summary["window_stall_ticks"] = int(summary["policy"]["stall_ticks"]) - int(policy_start["stall_ticks"])
        summary["window_s"] = end - start
        summary["link_bytes"] = {name: bytes_end[name] - bytes_start[name] for name in bytes_start} \
            if bytes_start and bytes_end else {}
        summary["ok"] = True
        return summary
    finally:
        executor.shutdown(timeout_sec=2.0)
        node.destroy_node()
        rclpy.try_shutdown()


def listen(topic: str, timeout: float) -> dict:
    """Wait for one std_msgs/String on `topic` (the instruction); {'received': [...]}."""
    import rclpy
    from std_msgs.msg import String

    from twinvla_ros.ros.qos import COMMAND_QOS

    rclpy.init()
    node = rclpy.create_node("split_hosts_listener")
    received: list[str] = []
    node.create_subscription(String, topic, lambda msg: received.append(msg.data), COMMAND_QOS)
    deadline = time.monotonic() + timeout
    try:
        while not received and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
        return {"received": received}
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


# ---- the whole rehearsal, from the root namespace -------------------------------------------

def _python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def _merged(env: dict[str, str | None]) -> dict[str, str]:
    merged = dict(os.environ)
    for name, value in env.items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value
    return merged


# Socket buffers below this drop camera frames on the policy host (see dds.py).
MIN_SOCKET_BUFFER = 1024 * 1024


def link_transports() -> str:
    """FASTDDS_BUILTIN_TRANSPORTS for the rehearsal: UDP only, with socket buffers for a burst
    of three camera frames, where net.core.rmem_max allows 1 MiB; else LARGE_DATA (TCP data)."""
    from twinvla_ros.bringup.dds import NETWORK_SOCKET_BUFFER, socket_buffer_limit

    limit = socket_buffer_limit()
    if limit is not None and limit < MIN_SOCKET_BUFFER:
        return "LARGE_DATA"
    return f"UDPv4?sockets_size={min(NETWORK_SOCKET_BUFFER, limit or NETWORK_SOCKET_BUFFER)}"


def host_environments(hosts: NetnsHosts, domain_id: int | None = None, static_peers: bool = False,
                      transports: str | None = None) -> dict[str, dict[str, str | None]]:
    """DDS environment of each host: SUBNET discovery, `transports` (default link_transports()),
    and with static_peers each host's ROS_STATIC_PEERS set to the other host's address (needed
    where routed=True)."""
    from twinvla_ros.bringup.dds import network_dds_environment

    transports = transports or link_transports()
    other = {"robot": "gpu", "gpu": "robot"}
    return {host: network_dds_environment(
                domain_id, static_peers=[hosts.addresses[other[host]]] if static_peers else (), transports=transports)
            for host in HOSTS}


def run_split_hosts(seconds: float = 20.0, injected_latency: float = 0.2, camera_rate: float = 10.0,
                    instruction: str = "hand over the box", startup_timeout: float = 60.0,
                    domain_id: int | None = None, routed: bool = False, transports: str | None = None,
                    tag: str | None = None, log=print) -> dict:
    """Run the split rehearsal (root needed) and return the observer's summary, with
    'link_bytes_robot' (the robot side's link counters over the whole run), 'udp' (each host's
    UDP counters), 'transports' and 'nodes_exited' added. routed: the hosts on two subnets
    without multicast between them, found through ROS_STATIC_PEERS. transports:
    FASTDDS_BUILTIN_TRANSPORTS (default link_transports())."""
    from twinvla_ros.bringup.graph import policy_only, sim_robot
    from twinvla_ros.bringup.runner import ProcessGraphRunner

    with NetnsHosts(tag, routed=routed) as hosts, tempfile.TemporaryDirectory(prefix="twinvla_split_") as workdir:
        envs = host_environments(hosts, domain_id, static_peers=routed, transports=transports)
        robot_env = _merged(envs["robot"])
        log(f"[split] hosts {hosts.names['robot']} ({hosts.addresses['robot']}) and "
            f"{hosts.names['gpu']} ({hosts.addresses['gpu']}){', routed, static peers' if routed else ''}, "
            f"domain {envs['robot']['ROS_DOMAIN_ID']}, transports {envs['robot']['FASTDDS_BUILTIN_TRANSPORTS']}")
        robot = ProcessGraphRunner(sim_robot(sim_node={"camera_rate": camera_rate}),
                                   prefix=hosts.prefix("robot"), env=envs["robot"])
        gpu = ProcessGraphRunner(policy_only(policy_node={"injected_latency": injected_latency, "seed": 0}),
                                 prefix=hosts.prefix("gpu"), env=envs["gpu"])
        out = Path(workdir) / "observer.json"
        processes: dict[str, subprocess.Popen] = {}
        with robot, gpu:
            processes.update(robot.processes)
            processes.update(gpu.processes)
            observer = subprocess.Popen(
                [*hosts.prefix("robot"), *_python_module(
                    MODULE, "observe", "--seconds", str(seconds), "--out", str(out),
                    "--first-target-timeout", str(startup_timeout + 15.0))], env=robot_env)
            try:
                # The operator on the robot PC: waits for the policy to be discovered, then sends.
                said = subprocess.run([*hosts.prefix("robot"), *_python_module(
                    "twinvla_ros.cli.main", "say", instruction, "--timeout", str(startup_timeout))],
                    env=robot_env, capture_output=True, text=True, timeout=startup_timeout + 30.0)
                log(f"[split] say: {(said.stdout or said.stderr).strip()}")
                if said.returncode != 0:
                    raise RuntimeError(f"the instruction was not sent from the robot host: "
                                       f"{(said.stderr or said.stdout).strip()} (nodes exited: "
                                       f"{robot.failed() or gpu.failed() or 'none'})")
                observer.wait(timeout=startup_timeout + seconds + 60.0)
            finally:
                if observer.poll() is None:
                    observer.kill()
                    observer.wait()
            failed = {**robot.failed(), **gpu.failed()}
            counters = hosts.counters("robot")
            udp = {host: hosts.udp_counters(host) for host in HOSTS}
        if not out.exists():
            raise RuntimeError(f"the observer wrote no summary (exit {observer.returncode}; nodes exited: "
                               f"{failed or 'none'})")
        summary = json.loads(out.read_text())
        summary["nodes_exited"] = failed
        # After SIGINT: 0 for a node that ran its safe shutdown and exited on its own.
        summary["exit_codes"] = {name: process.returncode for name, process in processes.items()}
        summary["transports"] = envs["robot"]["FASTDDS_BUILTIN_TRANSPORTS"]
        summary["link_bytes_robot"] = counters
        summary["udp"] = {host: {k: udp[host].get(k, 0) for k in ("InDatagrams", "RcvbufErrors", "InErrors")}
                          for host in HOSTS}
        return summary


def say_across(hosts: NetnsHosts, envs: dict[str, dict[str, str | None]], text: str = "hand over the box",
               timeout: float = 15.0) -> tuple[subprocess.CompletedProcess, dict]:
    """`twinvla-ros say` on the robot host, a listener on /instruction on the GPU host:
    (the say command's result, the listener's {'received': [...]}); a quick discovery check."""
    with tempfile.TemporaryDirectory(prefix="twinvla_split_") as workdir:
        out = Path(workdir) / "listener.json"
        listener = subprocess.Popen([*hosts.prefix("gpu"), *_python_module(
            MODULE, "listen", "--timeout", str(timeout + 5.0), "--out", str(out))], env=_merged(envs["gpu"]))
        try:
            said = subprocess.run([*hosts.prefix("robot"), *_python_module(
                "twinvla_ros.cli.main", "say", text, "--timeout", str(timeout))],
                env=_merged(envs["robot"]), capture_output=True, text=True, timeout=timeout + 30.0)
            listener.wait(timeout=timeout + 30.0)
        finally:
            if listener.poll() is None:
                listener.kill()
                listener.wait()
        heard = json.loads(out.read_text()) if out.exists() else {"received": []}
    return said, heard


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    obs = sub.add_parser("observe", help="(inside the robot namespace) measure the target stream")
    obs.add_argument("--seconds", type=float, default=20.0)
    obs.add_argument("--settle", type=float, default=1.0)
    obs.add_argument("--first-target-timeout", type=float, default=60.0)
    obs.add_argument("--interface", default=INTERFACE)
    obs.add_argument("--out", required=True)
    lis = sub.add_parser("listen", help="(inside a namespace) wait for one String message")
    lis.add_argument("--topic", default="/instruction")
    lis.add_argument("--timeout", type=float, default=20.0)
    lis.add_argument("--out", required=True)
    run = sub.add_parser("run", help="the whole rehearsal (root)")
    run.add_argument("--seconds", type=float, default=20.0)
    run.add_argument("--injected-latency", type=float, default=0.2)
    run.add_argument("--transports", default=None, help="FASTDDS_BUILTIN_TRANSPORTS of the nodes "
                     "(default: UDP only with 4 MiB socket buffers)")
    run.add_argument("--routed", action="store_true", help="two subnets, no multicast: static peers")
    args = parser.parse_args(argv)
    if args.command == "observe":
        result = observe(args.seconds, args.settle, args.first_target_timeout, args.interface)
    elif args.command == "listen":
        result = listen(args.topic, args.timeout)
    else:
        result = run_split_hosts(args.seconds, args.injected_latency, routed=args.routed,
                                 transports=args.transports)
        print(json.dumps(result, indent=2))
        return 0
    Path(args.out).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
