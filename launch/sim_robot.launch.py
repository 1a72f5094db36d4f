"""ros2 launch twinvla_ros sim_robot.launch.py [config:=FILE]

The simulated Anubis alone (MuJoCo sim node + arm driver): drive it with EEF targets on
/left_arm/eef_target and /right_arm/eef_target, or with the teleop node.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration

from twinvla_ros.bringup.graph import sim_robot
from twinvla_ros.bringup.launch_actions import launch_nodes


def _nodes(context):
    return launch_nodes(sim_robot(config=LaunchConfiguration("config").perform(context) or None))


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("config", default_value="",
                              description="extra ROS parameter file overriding config/sim_robot.yaml"),
        OpaqueFunction(function=_nodes),
    ])
