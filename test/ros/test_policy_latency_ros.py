"""The arms never pause: the main graph one process per node (as `ros2 launch` and
`twinvla-ros launch --processes` run it), observed from this process over DDS only.

A missed control tick would leave a 100 ms hole in the 20 Hz target stream (measured on the
targets' stamps, the policy's publish times); on a stall the policy re-publishes its last
action, so a hole means the control loop itself was late, or the policy held for stale inputs.
The second is the input gate doing its job (test_policy_ros), not the model making the arms
wait, so this graph's policy accepts images up to 2 s old: on a loaded 2-core machine the sim's
ego camera fell behind the default 0.5 s (reproduced with three busy processes: 7 input holds
in 15 s, holes of 300-700 ms on the 50 ms tick grid, no stall tick, the arm driver's stream
without a hole). A hole the arm driver's stream shares is the shared machine pausing every
process and is left out. Stall ticks (the scheduler had no new action) are counted on
/diagnostics.
"""
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger

from ros_probe import Probe, diagnostic_values, run_for, wait_for
from twinvla_ros.bringup.graph import anubis_policy
from twinvla_ros.bringup.runner import GraphRunner, ProcessGraphRunner
from twinvla_ros.ros.messages import stamp_to_seconds
from twinvla_ros.ros.qos import COMMAND_QOS

pytestmark = [pytest.mark.ros, pytest.mark.sim, pytest.mark.slow]

POLICY = "policy_node: policy"
TASK = "hand over the box"
MISSED_TICK = 0.09           # s: shorter holes are scheduling jitter of a shared 2-core machine
# Stall ticks tolerated in a steady-state window: the benchmark measures 0 (bench/RESULTS.md);
# CI shares its two cores with other work, and a held tick is not a pause of the arms.
TOLERATED_STALLS = 2
HALF_CHUNK_S = 0.475         # half of a 20-step chunk at 20 Hz
MAX_IMAGE_AGE = 2.0          # s: see the module's docstring


@pytest.fixture(scope="module")
def graph():
    # The tiny model: its 20-step chunks, whatever the shipped policy's chunk_offset leaves.
    specs = anubis_policy(sim=True, checkpoint="tiny", policy_node={"seed": 0, "max_image_age": MAX_IMAGE_AGE},
                           sim_node={"camera_rate": 10.0})
    with ProcessGraphRunner(specs) as processes, GraphRunner([]) as here:
        probe = Probe(here.context, "latency_probe")
        for side in ("left", "right"):
            probe.record(PoseStamped, f"/{side}_arm/eef_target", COMMAND_QOS)
        probe.record(DiagnosticArray, "/diagnostics", COMMAND_QOS)
        probe.record(JointState, "/joint_states", COMMAND_QOS)
        here.add_node(probe)
        probe.instruction = probe.create_publisher(String, "/instruction", COMMAND_QOS)
        wait_for(lambda: "input_skew_ms" in diagnostic_values(probe, POLICY) or processes.failed(), 120.0,
                 "the policy matching camera and state inputs")
        assert not processes.failed()
        wait_for(lambda: probe.instruction.get_subscription_count() > 0, 10.0, "the policy's /instruction")
        probe.processes = processes
        yield probe
        assert not processes.failed(), f"node processes exited: {processes.failed()}"


@pytest.fixture
def probe(graph):
    yield graph
    assert graph.call(Trigger, "/policy_node/stop", Trigger.Request()).success
    assert set_parameter(graph, "injected_latency", 0.0).successful


def set_parameter(probe, name, value):
    request = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
    return probe.call(SetParameters, "/policy_node/set_parameters", request).results[0]


def policy_report(probe, since, condition=lambda values: True, timeout=60.0, what="a policy report"):
    return wait_for(lambda: (v := diagnostic_values(probe, POLICY, since)) and condition(v) and v, timeout, what)


def steady_window(probe, seconds):
    """Values of the policy report at the start and at the end of `seconds` of running."""
    start = time.monotonic()
    first = policy_report(probe, start, what="a report at the window's start")
    wait_for(lambda: time.monotonic() > start + seconds and diagnostic_values(probe, POLICY, start + seconds),
             seconds + 5.0, f"{seconds:.0f} s of reports")
    return start, first, diagnostic_values(probe, POLICY, start + seconds)


def largest_gap(probe, since):
    """The longest time between two consecutive targets as the policy published them (their
    header stamps: the control loop's own holes, not this process's pauses in receiving them),
    leaving out holes the arm driver's /joint_states (another process, 50 Hz, stamped as
    published) shared for at least half their length: those are the shared machine stopping
    every process, which no scheduling in the policy can prevent. A policy that waits for its
    model leaves a hole the driver's stream does not have."""
    state = np.array([stamp_to_seconds(msg.header.stamp) for _, msg in probe.stamped("/joint_states", since)])
    worst = 0.0
    for side in ("left", "right"):
        stamps = [stamp_to_seconds(msg.header.stamp) for _, msg in probe.stamped(f"/{side}_arm/eef_target", since)]
        for t0, t1 in zip(stamps[:-1], stamps[1:]):
            hole = t1 - t0
            if hole <= worst:
                continue
            edges = np.concatenate([[t0], state[(state > t0) & (state < t1)], [t1]])
            if np.diff(edges).max() < 0.5 * hole:      # the driver kept publishing meanwhile
                worst = hole
    return worst


def start_task(probe):
    """Sends the task; returns a report taken once four chunks of it were accepted (by then
    every result of a request made before the instruction has come back and been dropped)."""
    since = time.monotonic()
    probe.instruction.publish(String(data=TASK))
    wait_for(lambda: len(probe.stamped("/right_arm/eef_target", since)) >= 10, 30.0, "the task's targets")
    running = policy_report(probe, time.monotonic(), lambda v: v["state"] == "running", what="the task running")
    return policy_report(probe, time.monotonic(), lambda v: int(v["chunks"]) >= int(running["chunks"]) + 4,
                         what="four chunks of the task")


def test_latency_a_chunk_can_cover_never_pauses_the_arms(probe):
    """Latency added to every inference up to ~0.55 s in all: more than half of a 0.95 s
    chunk, less than it with margin, whatever the model itself takes on this machine."""
    model_s = float(start_task(probe)["inference_p50_ms"]) / 1e3
    injected = max(0.05, 0.55 - model_s)
    assert set_parameter(probe, "injected_latency", injected).successful
    added = time.monotonic()
    policy_report(probe, added, lambda v: float(v["latency_estimate_s"]) > HALF_CHUNK_S,
                  what="the added latency estimated")
    start, first, last = steady_window(probe, 12.0)
    assert float(last["latency_estimate_s"]) > HALF_CHUNK_S, f"model {model_s:.2f} s + {injected:.2f} s: {last}"
    assert int(last["chunks"]) >= int(first["chunks"]) + 8
    stalls = int(last["stall_ticks"]) - int(first["stall_ticks"])
    assert stalls <= TOLERATED_STALLS, f"{stalls} stall ticks in 12 s (model {model_s:.2f} s + {injected:.2f} s): {last}"
    gap = largest_gap(probe, start)
    holds = int(last["input_holds"]) - int(first["input_holds"])
    assert gap < MISSED_TICK, f"a {gap * 1e3:.0f} ms hole in the target stream ({holds} input holds): {last}"


def test_repeating_the_instruction_continues_the_task(probe):
    """What `ros2 topic pub /instruction ...` without --once does: the same text once a second."""
    first = start_task(probe)             # the counters on /diagnostics are cumulative
    repeating = time.monotonic()
    run_for(10.0, 1.0, lambda: probe.instruction.publish(String(data=TASK)))
    last = policy_report(probe, repeating + 10.0, lambda v: int(v["repeated_instructions"]) >= 10,
                         what="ten repeats counted")
    assert last["instruction"] == TASK and last["state"] == "running"
    # A stale-input hold cancels what is in flight (its results are dropped); a repeat must not.
    drops = int(last["dropped_chunks"]) - int(first["dropped_chunks"])
    holds = int(last["input_holds"]) - int(first["input_holds"])
    assert drops <= 3 * holds, f"{drops} chunks dropped with {holds} input holds while repeating: {last}"
    assert last["rejected_instructions"] == first["rejected_instructions"]
    stalls = int(last["stall_ticks"]) - int(first["stall_ticks"])
    assert stalls <= TOLERATED_STALLS, f"{stalls} stall ticks while the instruction was repeated"
    gap = largest_gap(probe, repeating)
    assert gap < MISSED_TICK, f"a {gap * 1e3:.0f} ms hole in the target stream ({holds} input holds): {last}"
    # ~/stop stops, although the publisher goes on repeating the task.
    assert probe.call(Trigger, "/policy_node/stop", Trigger.Request()).success
    stopped = time.monotonic()
    run_for(3.0, 1.0, lambda: probe.instruction.publish(String(data=TASK)))
    after = policy_report(probe, stopped + 3.0, lambda v: int(v["ignored_after_stop"]) >= 2,
                          what="the repeats after the stop ignored")
    assert after["state"] == "idle"
    assert not probe.stamped("/right_arm/eef_target", stopped + 0.2), "the arms moved after the stop"
