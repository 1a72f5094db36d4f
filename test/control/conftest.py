"""Fixtures of the controller tests: the robot description and the right arm's kinematics."""
import pytest

from twinvla_ros.robot.description import load_description
from twinvla_ros.robot.kinematics import ArmKinematics


@pytest.fixture(scope="module")
def description():
    return load_description()


@pytest.fixture(scope="module")
def kinematics(description):
    return ArmKinematics(description, "right")
