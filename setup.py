"""twinvla_ros: builds with colcon (ament_python) and installs with pip into a plain venv.

Runtime dependencies are declared in package.xml (rosdep keys) for colcon users and pinned in
requirements.txt for pip users; install_requires stays minimal so that neither route fights the
other over versions.
"""
import os
from glob import glob

from setuptools import find_packages, setup

package_name = "twinvla_ros"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*", "bench"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        ("share/" + package_name + "/config", glob("config/*.yaml") + glob("config/*.xml")),
        ("share/" + package_name + "/urdf", glob("urdf/*.urdf")),
        # The shipped policies: checkpoints in the published layout (a folder inside each).
        *[("share/" + package_name + "/" + root, [os.path.join(root, f) for f in files])
          for root, _, files in os.walk("policies") if files],
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="twinvla_ros developers",
    maintainer_email="twinvla-ros@users.noreply.github.com",
    description="ROS 2 stack that runs the TwinVLA bimanual policy on the Anubis dual-arm robot",
    license="MIT",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "twinvla-ros = twinvla_ros.cli.main:main",
            "arm_driver_node = twinvla_ros.ros.nodes.arm_driver_node:main",
            "sim_node = twinvla_ros.ros.nodes.sim_node:main",
            "camera_node = twinvla_ros.ros.nodes.camera_node:main",
            "policy_node = twinvla_ros.ros.nodes.policy_node:main",
            "teleop_node = twinvla_ros.ros.nodes.teleop_node:main",
            "recorder_node = twinvla_ros.ros.nodes.recorder_node:main",
            "record_keys = twinvla_ros.cli.record:keys_main",
        ],
    },
)
