"""sim_node's `~/task_status` service over real DDS: the task's success check on the live world."""
import json

import pytest
from std_srvs.srv import Trigger

from ros_probe import Probe
from twinvla_ros.bringup.graph import sim_robot
from twinvla_ros.bringup.runner import GraphRunner
from twinvla_ros.sim.scene import TABLE_TOP_Z

pytestmark = [pytest.mark.ros, pytest.mark.sim]


def test_task_status_reports_the_check_on_the_live_object_poses():
    specs = [spec for spec in sim_robot(sim_node={"task": "handover_box", "seed": 2, "camera_rate": 1.0})
             if spec.name == "sim_node"]
    with GraphRunner(specs) as runner:
        probe = Probe(runner.context)
        runner.add_node(probe)
        reply = probe.call(Trigger, "/sim_node/task_status", Trigger.Request())
        assert reply.success
        status = json.loads(reply.message)
        assert status["task"] == "handover_box" and status["success"] is False
        assert "not over the pad" in status["reason"]
        box, pad = status["objects"]["box"], status["objects"]["target_pad"]
        assert len(box) == len(pad) == 7 and box[2] == pytest.approx(TABLE_TOP_Z + 0.025, abs=0.003)
        # Put the box on the pad in the live world (it rests there): the next status sees it.
        runner.nodes["sim_node"].world.set_object_pose("box", [pad[0], pad[1], TABLE_TOP_Z + 0.008 + 0.025,
                                                               1.0, 0.0, 0.0, 0.0])
        done = json.loads(probe.call(Trigger, "/sim_node/task_status", Trigger.Request()).message)
        assert done["success"] is True and done["reason"] == "box on the pad"
        assert done["objects"]["box"][:2] == pytest.approx(pad[:2], abs=0.005)
