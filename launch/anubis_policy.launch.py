"""ros2 launch twinvla_ros anubis_policy.launch.py [sim:=true|false] [checkpoint:=DIR] [config:=FILE]

The robot (MuJoCo sim by default; sim:=false: the RealSense camera node and the arm driver on
the Dynamixel buses, refused with the list of missing devices when any is absent) and the
TwinVLA policy node. The node graph comes from
twinvla_ros.bringup.graph, the same description the in-process runner (`twinvla-ros launch`) uses.
Then: ros2 topic pub --once /instruction std_msgs/msg/String "{data: 'pick up the red box'}"
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration

from twinvla_ros.bringup.graph import anubis_policy
from twinvla_ros.bringup.launch_actions import launch_nodes


def _nodes(context):
    sim = LaunchConfiguration("sim").perform(context).lower() in ("true", "1", "yes")
    return launch_nodes(anubis_policy(sim=sim, checkpoint=LaunchConfiguration("checkpoint").perform(context),
                                      config=LaunchConfiguration("config").perform(context) or None))


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("sim", default_value="true", description="MuJoCo sim instead of the real robot"),
        DeclareLaunchArgument("checkpoint", default_value="default",
                              description="TwinVLA checkpoint directory; default: the shipped sim policy, "
                                          "tiny: the embedded tiny model with random weights"),
        DeclareLaunchArgument("config", default_value="",
                              description="extra ROS parameter file overriding config/*.yaml"),
        OpaqueFunction(function=_nodes),
    ])
