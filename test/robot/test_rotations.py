import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from twinvla_ros.robot import rotations as rot


@pytest.fixture(scope="module")
def random_matrices():
    return Rotation.random(500, random_state=7).as_matrix()


def test_matrix_rot6d_round_trip_exact(random_matrices):
    six = rot.matrix_to_rot6d(random_matrices)
    assert six.shape == (500, 6)
    np.testing.assert_array_equal(six[:, :3], random_matrices[:, :, 0])
    np.testing.assert_array_equal(six[:, 3:], random_matrices[:, :, 1])
    np.testing.assert_allclose(rot.rot6d_to_matrix(six), random_matrices, atol=1e-9, rtol=0)


def test_quaternion_round_trip_and_order(random_matrices):
    q = rot.matrix_to_quat_xyzw(random_matrices)
    assert np.all(q[:, 3] >= 0)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(rot.quat_xyzw_to_matrix(q), random_matrices, atol=1e-9, rtol=0)
    # scipy uses xyzw as well: an independent check of the order and of the sign convention.
    expected = Rotation.from_matrix(random_matrices).as_quat()
    expected[expected[:, 3] < 0] *= -1
    np.testing.assert_allclose(q, expected, atol=1e-9)
    wxyz = rot.quat_xyzw_to_wxyz(q)
    np.testing.assert_array_equal(wxyz[:, 0], q[:, 3])
    np.testing.assert_array_equal(rot.quat_wxyz_to_xyzw(wxyz), q)


def test_half_turns_keep_precision():
    # 180-degree rotations are where naive quaternion extraction loses digits.
    half_turns = Rotation.from_rotvec(np.pi * np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]]) /
                                      np.linalg.norm([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]], axis=1)[:, None])
    m = half_turns.as_matrix()
    np.testing.assert_allclose(rot.quat_xyzw_to_matrix(rot.matrix_to_quat_xyzw(m)), m, atol=1e-12)


def test_batched_over_leading_dims(random_matrices):
    m = random_matrices[:24].reshape(2, 3, 4, 3, 3)
    six = rot.matrix_to_rot6d(m)
    assert six.shape == (2, 3, 4, 6)
    assert rot.rot6d_to_matrix(six).shape == (2, 3, 4, 3, 3)
    assert rot.rot6d_to_quat_xyzw(six).shape == (2, 3, 4, 4)
    np.testing.assert_allclose(rot.quat_xyzw_to_rot6d(rot.rot6d_to_quat_xyzw(six)), six, atol=1e-9)


def test_non_orthogonal_6d_is_reorthonormalized():
    rng = np.random.default_rng(3)
    six = rng.normal(size=(100, 6))
    m = rot.rot6d_to_matrix(six)
    np.testing.assert_allclose(m @ np.swapaxes(m, 1, 2), np.broadcast_to(np.eye(3), m.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(m), 1.0, atol=1e-12)
    # Gram-Schmidt keeps the first column's direction and the plane of the first two.
    first = six[:, :3] / np.linalg.norm(six[:, :3], axis=1, keepdims=True)
    np.testing.assert_allclose(m[:, :, 0], first, atol=1e-12)
    np.testing.assert_allclose(np.einsum("ni,ni->n", m[:, :, 2], six[:, 3:]), 0.0, atol=1e-9)


def test_rotation_angle_between():
    a = Rotation.random(50, random_state=1)
    delta = Rotation.from_rotvec(np.array([[0, 0, 1e-7], [0, 0.3, 0], [2.0, 0, 0]]))
    for d, angle in zip(delta, [1e-7, 0.3, 2.0]):
        got = rot.rotation_angle_between(a.as_matrix(), (a * d).as_matrix())
        np.testing.assert_allclose(got, angle, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("bad, message", [
    (np.full(6, np.nan), "NaN"),
    (np.zeros(6), "zero-length"),
    (np.array([1.0, 0, 0, 2.0, 0, 0]), "parallel"),
    (np.ones(5), "trailing shape"),
])
def test_bad_6d_input_raises(bad, message):
    with pytest.raises(ValueError, match=message):
        rot.rot6d_to_matrix(bad)


def test_bad_quaternion_input_raises():
    with pytest.raises(ValueError, match="zero-length"):
        rot.quat_xyzw_to_matrix([0, 0, 0, 0])
    with pytest.raises(ValueError, match="NaN"):
        rot.quat_xyzw_to_matrix([0, 0, np.inf, 1])
