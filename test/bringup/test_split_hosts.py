"""Split deployment: the policy on one host, the sim robot on another, DDS between them.

The two hosts are network namespaces this test makes (twinvla_ros.bringup.split_hosts), joined
by a veth link whose addresses exist only inside them; every DDS process runs inside one of
them (this test process is in the root namespace and never joins the DDS graph: it reads the
observer's summary from a file). Skipped where namespaces cannot be made (not root, no `ip`).
"""
import os

import pytest

from twinvla_ros.bringup.split_hosts import NetnsError, NetnsHosts, host_environments, run_split_hosts, say_across

pytestmark = [pytest.mark.ros]


def _skip_without_namespaces():
    reason = NetnsHosts.unavailable_reason()
    if reason:
        pytest.skip(f"split-host test needs network namespaces: {reason}")


@pytest.fixture
def split_tag():
    """A tag for this test's namespaces; whatever carries it is removed afterwards, pass or fail."""
    tag = str(os.getpid())
    yield tag
    for name in NetnsHosts.existing():
        if name.startswith("twinvla_") and name.endswith(f"_{tag}"):
            NetnsHosts._delete(name)


@pytest.fixture
def routed_hosts():
    """Two hosts on two subnets behind a router namespace: unicast crosses, multicast does not."""
    _skip_without_namespaces()
    hosts = NetnsHosts(f"{os.getpid()}r", routed=True)
    try:
        hosts.create()
    except NetnsError as error:
        pytest.skip(f"split-host test needs network namespaces: {error}")
    yield hosts
    hosts.destroy()
    assert not set(hosts.names.values()) & NetnsHosts.existing()


def test_without_multicast_between_hosts_static_peers_make_discovery_work(routed_hosts):
    # No multicast across the router: automatic (SUBNET) discovery finds nobody ...
    said, heard = say_across(routed_hosts, host_environments(routed_hosts), timeout=4.0)
    assert said.returncode == 1 and "no subscriber" in said.stderr
    assert heard["received"] == []
    # ... the other host's address in ROS_STATIC_PEERS does.
    said, heard = say_across(routed_hosts, host_environments(routed_hosts, static_peers=True), timeout=20.0)
    assert said.returncode == 0, said.stderr
    assert heard["received"] == ["hand over the box"]


@pytest.mark.sim
@pytest.mark.slow
def test_policy_on_another_host_drives_the_arms_at_20_hz(split_tag):
    _skip_without_namespaces()
    seconds = 8.0
    try:
        summary = run_split_hosts(seconds=seconds, injected_latency=0.2, camera_rate=10.0,
                                  startup_timeout=45.0, tag=split_tag)
    except NetnsError as error:
        pytest.skip(f"split-host test needs network namespaces: {error}")
    assert summary["ok"], summary
    assert not summary["nodes_exited"], summary
    for side in ("left", "right"):
        arm = summary[side]
        # The policy's 20 Hz target stream as the robot host receives it (machines are shared:
        # +-1 Hz here, the bench's goal is +-0.5 Hz), with no hole an arm would stop for.
        assert 19.0 <= arm["rate_hz"] <= 21.0, (side, arm)
        assert arm["max_gap_ms"] < 250.0, (side, arm)
        assert arm["driver_stamp_rejected"] == 0, (side, arm)
    # The arm follows: the default policy reaches with the right arm (its left one holds).
    assert summary["right"]["moved_m"] > 0.01, summary["right"]
    # The data really crossed the link: the three camera streams (240x320 rgb8 at 10 Hz,
    # ~6.9 MB/s) left the robot host through its veth, not through shared memory.
    expected = 3 * 240 * 320 * 3 * 10.0 * summary["window_s"]
    assert summary["link_bytes"]["tx_bytes"] > 0.5 * expected, summary["link_bytes"]
    # Nothing is left behind.
    assert not {f"twinvla_{host}_{split_tag}" for host in ("robot", "gpu")} & NetnsHosts.existing()
