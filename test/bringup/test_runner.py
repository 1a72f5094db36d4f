"""Running a graph without ros2 launch: in this process, or one process per node started and
stopped like launch; both treat a failing callback the same way."""
import gc
import threading
import time
from pathlib import Path

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Log
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Int64, String

from ros_probe import Probe, diagnostic_status, wait_for
from twinvla_ros.bringup.graph import NodeSpec, anubis_policy, sim_robot
from twinvla_ros.bringup.runner import GraphRunner, ProcessGraphRunner
from twinvla_ros.ros.qos import COMMAND_QOS, SENSOR_QOS

pytestmark = [pytest.mark.ros]

FAULTY = NodeSpec("faulty_node", "", "faulty_node:FaultyNode")


@pytest.mark.sim
def test_process_runner_starts_the_graph_and_stops_it_with_sigint():
    specs = sim_robot(sim_node={"camera_rate": 5.0})
    with ProcessGraphRunner(specs) as graph, GraphRunner([]) as here:
        probe = Probe(here.context)
        probe.record(JointState, "/joint_states", COMMAND_QOS)
        here.add_node(probe)
        wait_for(lambda: len(probe.messages("/joint_states")) > 10 or graph.failed(), 60.0,
                 "joint states from the arm driver process")
        assert not graph.failed()
        processes = list(graph.processes.values())
        # Named as the graph says (the process remaps __node), discovered through DDS.
        wait_for(lambda: {"sim_node", "arm_driver_node"} <= set(probe.get_node_names()), 10.0,
                 "both nodes in the ROS graph")
        probe.record(Log, "/rosout", QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE))
        wait_for(lambda: probe.count_publishers("/rosout") >= 2, 10.0, "the nodes' /rosout publishers")
        graph.stop()
        # The nodes close while ROS is still up: the driver's shutdown reaches /rosout, its
        # lifecycle announces the shutdown transition (rclpy's own SIGINT handler shut the
        # context down first: "Failed to publish log message to rosout").
        driver_says = lambda: [m.msg for m in probe.messages("/rosout") if m.name == "arm_driver_node"]  # noqa: E731
        wait_for(lambda: "lifecycle: finalized" in driver_says(), 10.0, "the driver's shutdown on /rosout")
        assert any(line.startswith("arm driver shutdown: arms hold") for line in driver_says())
    # SIGINT: every node ran its shutdown and exited on its own, none had to be killed.
    assert [p.returncode for p in processes] == [0, 0]


def test_graph_parameters_reach_the_nodes_and_files_override_defaults(tmp_path):
    override = tmp_path / "override.yaml"
    override.write_text("policy_node:\n  ros__parameters:\n    execution_mode: sync\n"
                        "'/**':\n  ros__parameters:\n    stale_timeout: 0.4\n")
    specs = {s.name: s for s in anubis_policy(sim=True, config=override, arm_driver_node={"servo_rate": 50.0})}
    assert specs["policy_node"].parameters["execution_mode"] == "sync"        # from the file
    assert specs["policy_node"].parameters["control_rate"] == 20.0            # config default
    assert specs["arm_driver_node"].parameters["servo_rate"] == 50.0          # argument wins
    assert specs["arm_driver_node"].parameters["stale_timeout"] == 0.4        # the wildcard entry
    assert specs["arm_driver_node"].parameters["backend"] == "sim"
    real = {s.name: s for s in anubis_policy(sim=False, config=override)}
    assert list(real) == ["camera_node", "arm_driver_node", "policy_node"]
    assert real["arm_driver_node"].parameters["backend"] == "dynamixel"      # never the sim
    assert real["camera_node"].parameters["backend"] == "realsense"
    assert real["arm_driver_node"].parameters["stale_timeout"] == 0.4


@pytest.mark.sim
def test_the_cli_runs_a_graph_in_process_and_messages_flow(capsys):
    from twinvla_ros.cli.main import main

    with GraphRunner([]) as here:
        probe = Probe(here.context)
        probe.record(JointState, "/joint_states", COMMAND_QOS)
        probe.record(Image, "/cameras/ego/color/image_raw", SENSOR_QOS)
        here.add_node(probe)
        result = []
        cli = threading.Thread(target=lambda: result.append(main(
            ["launch", "sim_robot", "--duration", "6", "--param", "sim_node.camera_rate=5.0"])))
        cli.start()
        wait_for(lambda: len(probe.messages("/joint_states")) > 20
                 and len(probe.messages("/cameras/ego/color/image_raw")) > 2, 30.0,
                 "joint states and ego images from the CLI's graph")
        cli.join(timeout=30.0)
    assert result == [0]
    assert "sim_node, arm_driver_node running in this process" in capsys.readouterr().out


def test_say_publishes_one_instruction_to_the_policy_topic():
    from twinvla_ros.cli.main import main

    with GraphRunner([]) as here:
        probe = Probe(here.context)
        probe.record(String, "/instruction", COMMAND_QOS)
        here.add_node(probe)
        assert main(["say", "  hand over the box  ", "--timeout", "20"]) == 0
        wait_for(lambda: probe.messages("/instruction"), 5.0, "the instruction")
        assert [m.data for m in probe.messages("/instruction")] == ["hand over the box"]
    assert main(["say", "   "]) == 2


@pytest.mark.parametrize("layout", ["in_process", "processes"])
def test_a_failing_callback_is_reported_and_the_node_keeps_running(layout, monkeypatch):
    # The node process imports faulty_node from the test folder.
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parents[1] / "ros"))
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "ros"))
    runner = GraphRunner([FAULTY]) if layout == "in_process" else ProcessGraphRunner([FAULTY])
    with runner, GraphRunner([]) as here:
        probe = Probe(here.context)
        probe.record(Int64, "/faulty/alive", COMMAND_QOS)
        probe.record(DiagnosticArray, "/diagnostics", COMMAND_QOS)
        here.add_node(probe)
        trigger = probe.create_publisher(String, "/faulty/trigger", COMMAND_QOS)
        wait_for(lambda: probe.messages("/faulty/alive") and trigger.get_subscription_count(), 30.0,
                 "the faulty node up")
        healthy = wait_for(lambda: diagnostic_status(probe, "faulty_node: callbacks"), 5.0, "its diagnostics")
        assert healthy.level == bytes([0])
        for _ in range(3):
            trigger.publish(String(data="boom"))
        failing = wait_for(lambda: (s := diagnostic_status(probe, "faulty_node: callbacks")) and s.level == bytes([2])
                           and s, 10.0, "ERROR on /diagnostics")
        assert "boom on request" in failing.message
        values = {kv.key: kv.value for kv in failing.values}
        wait_for(lambda: int({kv.key: kv.value for kv in diagnostic_status(
            probe, "faulty_node: callbacks").values}["failures"]) == 3, 5.0, "three failures counted")
        assert "ValueError" in values["last_failure"]
        after = time.monotonic()
        wait_for(lambda: len(probe.messages("/faulty/alive", after)) >= 5, 5.0, "the node still ticking")
        if layout == "processes":
            assert not runner.failed()


def test_the_teleop_record_graph_keeps_one_task_for_scene_expert_and_recorder():
    from twinvla_ros.bringup.graph import teleop_record
    from twinvla_ros.sim.scene import task_spec

    specs = {s.name: s.parameters for s in teleop_record(sim=True, task="lift_box", output_dir="/data/demos")}
    assert set(specs) == {"sim_node", "arm_driver_node", "teleop_node", "recorder_node"}
    assert specs["sim_node"]["task"] == specs["teleop_node"]["task"] == "lift_box"
    assert specs["teleop_node"]["backend"] == "sim_expert"
    assert specs["recorder_node"]["task"] == task_spec("lift_box").instruction
    assert specs["recorder_node"]["output_dir"] == "/data/demos"
    assert specs["recorder_node"]["robot"] == "anubis_sim"
    real = {s.name: s.parameters for s in teleop_record(sim=False, task="fold the towel",
                                                          recorder_node={"min_free_gb": 10.0})}
    assert set(real) == {"camera_node", "arm_driver_node", "teleop_node", "recorder_node"}
    assert real["teleop_node"]["backend"] == "leader" and real["recorder_node"]["task"] == "fold the towel"
    assert real["recorder_node"]["min_free_gb"] == 10.0 and real["recorder_node"]["robot"] == "anubis"


def test_a_running_graph_keeps_the_collector_off_what_startup_built(monkeypatch):
    """A full collection of the objects the imports and a model leave took 0.28 s, the
    interpreter held all along: a node's control loop stood still for as long."""
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "ros"))
    assert gc.get_freeze_count() == 0
    with GraphRunner([FAULTY]):
        assert gc.get_freeze_count() > 10_000
    assert gc.get_freeze_count() == 0

