"""Running a graph without ros2 launch: one process per node, started and stopped like launch."""
import time

import pytest
from sensor_msgs.msg import JointState

from ros_probe import Probe, wait_for
from twinvla_ros.bringup.graph import anubis_policy, sim_robot
from twinvla_ros.ros.qos import COMMAND_QOS
from twinvla_ros.bringup.runner import GraphRunner, ProcessGraphRunner

pytestmark = [pytest.mark.ros, pytest.mark.sim]


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
    # SIGINT: every node ran its shutdown and exited on its own, none had to be killed.
    assert [p.returncode for p in processes] == [0, 0]


def test_graph_parameters_reach_the_nodes_and_files_override_defaults(tmp_path):
    override = tmp_path / "override.yaml"
    override.write_text("policy_node:\n  ros__parameters:\n    execution_mode: sync\n"
                        "'/**':\n  ros__parameters:\n    reference_frame: eef_reference\n")
    specs = {s.name: s for s in anubis_policy(sim=True, config=override, arm_driver_node={"servo_rate": 50.0})}
    assert specs["policy_node"].parameters["execution_mode"] == "sync"        # from the file
    assert specs["policy_node"].parameters["control_rate"] == 20.0            # config default
    assert specs["arm_driver_node"].parameters["servo_rate"] == 50.0          # argument wins
    assert specs["arm_driver_node"].parameters["backend"] == "sim"
    with pytest.raises(NotImplementedError, match="sim:=false"):
        anubis_policy(sim=False)


def test_the_cli_runs_a_graph_in_process_for_a_while(capsys):
    from twinvla_ros.cli.main import main

    started = time.monotonic()
    assert main(["launch", "sim_robot", "--duration", "3", "--param", "sim_node.camera_rate=5.0"]) == 0
    assert time.monotonic() - started >= 3.0
    assert "sim_node, arm_driver_node running in this process" in capsys.readouterr().out


def test_say_publishes_one_instruction_to_the_policy_topic():
    from std_msgs.msg import String

    from twinvla_ros.cli.main import main

    with GraphRunner([]) as here:
        probe = Probe(here.context)
        probe.record(String, "/instruction", COMMAND_QOS)
        here.add_node(probe)
        assert main(["say", "  hand over the box  ", "--timeout", "20"]) == 0
        wait_for(lambda: probe.messages("/instruction"), 5.0, "the instruction")
        assert [m.data for m in probe.messages("/instruction")] == ["hand over the box"]
    assert main(["say", "   "]) == 2
