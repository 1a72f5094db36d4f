"""ros2 launch twinvla_ros teleop_record.launch.py [sim:=false|true] [task:=TEXT] [output_dir:=DIR] [config:=FILE]

Demonstrations. The robot (real by default: RealSense cameras and the follower arms; with
sim:=true the MuJoCo sim), the teleop node (the leader arms drive the followers; with sim:=true
the sim task's scripted expert) and the recorder (one MCAP bag per episode under output_dir).
Then, in a second terminal: ros2 run twinvla_ros record_keys
(right arrow ends an episode, left arrow discards and redoes it, Esc quits), or the services
/recorder_node/start_episode, stop_episode, discard_episode, mark_success.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration

from twinvla_ros.bringup.graph import teleop_record
from twinvla_ros.bringup.launch_actions import launch_nodes


def _nodes(context):
    sim = LaunchConfiguration("sim").perform(context).lower() in ("true", "1", "yes")
    return launch_nodes(teleop_record(sim=sim, task=LaunchConfiguration("task").perform(context),
                                      output_dir=LaunchConfiguration("output_dir").perform(context),
                                      config=LaunchConfiguration("config").perform(context) or None))


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("sim", default_value="false", description="MuJoCo sim + scripted expert instead of the robot"),
        DeclareLaunchArgument("task", default_value="",
                              description="robot: the episodes' task text; sim: the sim task (lift_box, handover_box)"),
        DeclareLaunchArgument("output_dir", default_value="", description="episode directory (default: demos)"),
        DeclareLaunchArgument("config", default_value="",
                              description="extra ROS parameter file overriding config/*.yaml"),
        OpaqueFunction(function=_nodes),
    ])
