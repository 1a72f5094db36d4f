import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from twinvla_ros.robot.bimanual import BIMANUAL_DIM, ArmPose, arm_slice, pack, unpack


def _arm(seed, batch=()):
    rng = np.random.default_rng(seed)
    n = int(np.prod(batch)) if batch else 1
    r = Rotation.random(n, random_state=seed).as_matrix().reshape(batch + (3, 3))
    return ArmPose(rng.normal(size=batch + (3,)), r, rng.uniform(0, 1, size=batch))


def test_layout_is_left_then_right_xyz_6d_gripper():
    left, right = _arm(1), _arm(2)
    v = pack(left, right)
    assert v.shape == (BIMANUAL_DIM,)
    np.testing.assert_array_equal(v[0:3], left.position)
    np.testing.assert_array_equal(v[3:6], left.rotation[:, 0])
    np.testing.assert_array_equal(v[6:9], left.rotation[:, 1])
    assert v[9] == left.gripper
    np.testing.assert_array_equal(v[10:13], right.position)
    assert v[19] == right.gripper
    assert arm_slice("right") == slice(10, 20)


def test_round_trip_batched():
    left, right = _arm(3, (4, 5)), _arm(4, (4, 5))
    v = pack(left, right)
    assert v.shape == (4, 5, 20)
    l2, r2 = unpack(v)
    for a, b in ((left, l2), (right, r2)):
        np.testing.assert_allclose(b.position, a.position, atol=1e-12)
        np.testing.assert_allclose(b.rotation, a.rotation, atol=1e-9)
        np.testing.assert_allclose(b.gripper, a.gripper, atol=1e-12)
    np.testing.assert_allclose(pack(l2, r2), v, atol=1e-9)


def test_matrix_round_trip():
    arm = _arm(5)
    again = ArmPose.from_matrix(arm.matrix(), arm.gripper)
    np.testing.assert_allclose(again.to_vector(), arm.to_vector(), atol=1e-12)


def test_bad_vectors_raise():
    with pytest.raises(ValueError, match="trailing size 20"):
        unpack(np.zeros(14))
    v = pack(_arm(1), _arm(2))
    v[12] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        unpack(v)
    with pytest.raises(ValueError, match="arm must be"):
        arm_slice("middle")
