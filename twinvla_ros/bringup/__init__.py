"""Bringing the nodes up: the graph description (graph.py) read by the launch files and by the
runners (runner.py: in-process or one process per node, where `ros2 launch` is missing), the
launch glue (launch_actions.py) and DDS isolation (dds.py)."""
