import numpy as np
import pytest

from twinvla_ros.robot.kinematics import ArmKinematics
from twinvla_ros.robot.rotations import rotation_angle_between

POSITION_TOL = 1e-3
ROTATION_TOL = np.deg2rad(1.0)


@pytest.fixture(scope="module", params=["left", "right"])
def arm(request):
    return ArmKinematics.for_arm(request.param, seed=11)


def _random_configurations(arm, n, seed):
    return np.random.default_rng(seed).uniform(arm.lower, arm.upper, size=(n, 6))


def _check(arm, result, target):
    assert arm.within_limits(result.q)
    reached = arm.fk(result.q)
    # The result's own residual must be the truth, not an estimate.
    assert np.linalg.norm(reached[:3, 3] - target[:3, 3]) == pytest.approx(result.position_error, abs=1e-9)
    assert rotation_angle_between(reached[:3, :3], target[:3, :3]) == pytest.approx(result.rotation_error, abs=1e-7)
    return result.reached and result.position_error <= POSITION_TOL and result.rotation_error <= ROTATION_TOL


def test_cold_start_recovers_random_poses(arm):
    configurations = _random_configurations(arm, 1000, seed=1)
    successes = 0
    for q in configurations:
        target = arm.fk(q)
        successes += _check(arm, arm.ik(target), target)
    assert successes / len(configurations) >= 0.995


def test_warm_start_always_recovers(arm):
    rng = np.random.default_rng(2)
    for q in _random_configurations(arm, 1000, seed=2):
        target = arm.fk(q)
        seed = np.clip(q + rng.uniform(-0.05, 0.05, size=6), arm.lower, arm.upper)
        result = arm.ik(target, seed)
        assert _check(arm, result, target)
        assert result.attempts == 1


def test_unreachable_target_is_reported_with_nearest_solution(arm):
    home_pose = arm.fk(arm.home)
    far = home_pose.copy()
    far[:3, 3] += np.array([1.5, 0.0, 0.0])       # well beyond the ~0.75 m reach
    result = arm.ik(far, arm.home, max_attempts=5)
    assert not result.reached
    assert arm.within_limits(result.q)
    # Nearest reachable: the solver moved towards the target, it did not stay at the seed.
    assert result.position_error < np.linalg.norm(far[:3, 3] - home_pose[:3, 3]) - 0.2
    reached = arm.fk(result.q)
    assert np.linalg.norm(reached[:3, 3] - far[:3, 3]) == pytest.approx(result.position_error, abs=1e-9)


def test_joint_limits_are_never_violated_near_the_boundary(arm):
    q = arm.upper - 1e-3                          # all joints at their upper limit
    target = arm.fk(q)
    target[:3, 3] += np.array([0.0, 0.0, 0.05])   # pull outward past the limit
    result = arm.ik(target, q, max_attempts=3)
    assert arm.within_limits(result.q)


@pytest.mark.parametrize("bad, message", [
    (np.full((4, 4), np.nan), "NaN"),
    (np.eye(3), "4x4"),
    (np.diag([2.0, 1.0, 1.0, 1.0]), "orthonormal"),
])
def test_bad_targets_raise(arm, bad, message):
    with pytest.raises(ValueError, match=message):
        arm.ik(bad)


def test_bad_joint_vectors_raise(arm):
    with pytest.raises(ValueError, match="6 entries"):
        arm.fk(np.zeros(7))
    with pytest.raises(ValueError, match="NaN"):
        arm.ik(arm.fk(arm.home), np.array([0, 0, np.nan, 0, 0, 0]))


def test_home_pose_is_above_the_table_pointing_down(arm):
    pose = arm.fk(arm.home)
    assert 0.15 < pose[0, 3] < 0.5                # in front of the robot
    assert pose[2, 2] < -0.8                      # tool axis points down at the table
