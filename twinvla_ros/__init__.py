"""twinvla_ros: TwinVLA on the Anubis dual-arm robot with ROS 2.

Layers, each importing only those below it (test/test_layers.py checks it):
  robot, reporting         the robot as numbers; statuses and events
  sim, model, execution    MuJoCo world; TwinVLA; chunk execution and the policy runtime
  hardware, data           arm buses and cameras (sim backends use the sim); recorded data
  control, training        the arm's safety and servo loop; fine-tuning
  ros                      rclpy nodes and their helpers (the only layer, with bringup, that imports ROS)
  bringup                  graph description, runners, launch glue
  cli, evaluation          the command line, the demo, closed-loop evaluation
"""
__version__ = "0.1.0"
