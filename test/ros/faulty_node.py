"""A node whose callback fails on demand: publishing "boom" on /faulty/trigger raises inside
its subscription callback. The runner tests start it both ways (in-process and as its own
process) to check that a failing callback is reported the same way and never ends the node."""
from std_msgs.msg import Int64, String

from twinvla_ros.ros.node import TwinvlaNode, run_node
from twinvla_ros.ros.qos import COMMAND_QOS


class FaultyNode(TwinvlaNode):
    def __init__(self, **node_kwargs):
        super().__init__("faulty_node", **node_kwargs)
        self.ticks = 0
        self._alive = self.create_publisher(Int64, "/faulty/alive", COMMAND_QOS)
        self.subscribe(String, "/faulty/trigger", self._on_trigger, COMMAND_QOS)
        self.timer(0.1, self._tick, "alive tick")

    def _on_trigger(self, msg: String) -> None:
        if msg.data == "boom":
            raise ValueError("boom on request")

    def _tick(self) -> None:
        self.ticks += 1
        self._alive.publish(Int64(data=self.ticks))
        self.publish_diagnostics([])


def main(args=None):
    run_node(FaultyNode, args)
