"""Resampling onto the 1/fps grid: exact ticks, linear xyz, slerp equal to scipy's, hold,
never a later frame, gaps found where they are."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation, Slerp

from twinvla_ros.data.conversion.timeline import (NS, TimelineError, check_stamps, hold, interpolate_poses,
                                                  largest_gap, latest_at_or_before, tick_grid)

stamps = st.lists(st.integers(0, 10 * NS), min_size=1, max_size=60).map(lambda v: np.array(sorted(v), np.int64))


def test_tick_k_is_exactly_k_over_fps_after_the_start():
    start = 1_796_180_429_574_394_246                 # a real recorder stamp: ns since 1970
    ticks = tick_grid(start, start + 10 * NS, 20)
    assert len(ticks) == 201 and ticks[-1] == start + 10 * NS
    assert np.array_equal(ticks - start, np.arange(201) * 50_000_000)
    ticks = tick_grid(start, start + NS, 30)           # 1/30 s is not a whole number of ns
    assert np.array_equal(ticks - start, (np.arange(31) * NS) // 30)
    assert len(tick_grid(start, start - 1, 20)) == 0


@given(st.integers(0, 10**18), st.integers(0, 100 * NS), st.sampled_from([1, 10, 15, 20, 30, 50]))
def test_the_grid_stays_inside_the_span(start, length, fps):
    ticks = tick_grid(start, start + length, fps)
    assert ticks[0] == start and ticks[-1] <= start + length
    assert start + length - ticks[-1] < NS / fps        # no tick left out at the end
    assert np.all(np.abs(np.diff(ticks) - NS / fps) <= 1)


@given(stamps, st.lists(st.integers(0, 12 * NS), min_size=1, max_size=40))
def test_the_frame_chosen_is_the_latest_at_or_before_the_tick(times, ticks):
    ticks = np.array(sorted(t for t in ticks if t >= times[0]), np.int64)
    chosen = latest_at_or_before(times, ticks)
    for tick, index in zip(ticks, chosen):
        assert times[index] <= tick                       # never a later frame
        assert index == len(times) - 1 or times[index + 1] > tick    # and no newer one that was there


def test_a_tick_before_the_first_sample_has_nothing_to_hold():
    with pytest.raises(TimelineError):
        latest_at_or_before(np.array([10, 20]), np.array([5]))


def test_hold_keeps_a_step_until_the_next_command():
    times = np.array([0, 100, 200])
    assert hold(times, np.array([0.0, 1.0, 0.5]), np.array([0, 99, 100, 150, 250])).tolist() == [0, 0, 1, 1, 0.5]


def random_rotations(n, seed):
    return Rotation.random(n, random_state=seed).as_matrix()


@pytest.mark.parametrize("seed", range(5))
def test_rotations_equal_scipys_slerp_and_positions_are_linear(seed):
    rng = np.random.default_rng(seed)
    times = np.cumsum(rng.integers(5_000_000, 40_000_000, 30)).astype(np.int64)
    rotations = random_rotations(30, seed)
    positions = rng.normal(size=(30, 3))
    ticks = tick_grid(int(times[0]), int(times[-1]), 20)
    xyz, rot = interpolate_poses(times, positions, rotations, ticks)
    expected = Slerp(times / 1e9, Rotation.from_matrix(rotations))(ticks / 1e9).as_matrix()
    assert np.abs(rot - expected).max() < 1e-9
    for axis in range(3):
        assert np.allclose(xyz[:, axis], np.interp(ticks, times, positions[:, axis]), atol=1e-12)


def test_a_constant_rate_turn_is_reproduced_between_samples():
    times = np.arange(0, 2 * NS + 1, 40_000_000, dtype=np.int64)     # 25 Hz samples of a 0.7 rad/s turn
    rotations = Rotation.from_rotvec(np.outer(0.7 * times / NS, [0.2, 0.3, 0.93])).as_matrix()
    ticks = tick_grid(0, 2 * NS, 20)
    _, rot = interpolate_poses(times, np.zeros((len(times), 3)), rotations, ticks)
    truth = Rotation.from_rotvec(np.outer(0.7 * ticks / NS, [0.2, 0.3, 0.93]))
    assert (Rotation.from_matrix(rot) * truth.inv()).magnitude().max() < 1e-9


def test_a_resent_stamp_keeps_the_last_message_instead_of_dividing_by_zero():
    times = np.array([0, 50, 50, 100], np.int64)
    positions = np.array([[0.0] * 3, [1.0] * 3, [2.0] * 3, [3.0] * 3])
    xyz, _ = interpolate_poses(times, positions, np.repeat(np.eye(3)[None], 4, 0), np.array([0, 50, 75, 100]))
    assert xyz[:, 0].tolist() == [0.0, 2.0, 2.5, 3.0]


def test_interpolation_never_extrapolates():
    with pytest.raises(TimelineError):
        interpolate_poses(np.array([0, 10]), np.zeros((2, 3)), np.repeat(np.eye(3)[None], 2, 0), np.array([11]))


def test_stamps_that_go_backwards_are_refused_with_the_place():
    with pytest.raises(TimelineError, match="backwards at message 2"):
        check_stamps("/joint_states", np.array([0, 10, 5]))
    with pytest.raises(TimelineError, match="no messages"):
        check_stamps("/joint_states", np.array([], np.int64))


def test_the_largest_gap_is_found_with_its_place():
    times = np.array([0, 100, 200, 700, 800]) * 1_000_000        # ms -> ns
    gap = largest_gap("/cameras/ego/color/image_raw", times, 50_000_000, 800_000_000)
    assert gap.seconds == pytest.approx(0.5) and gap.at_s == pytest.approx(0.15)
    tail = largest_gap("cam", times, 0, 1_500_000_000)           # silent after the last frame
    assert tail.seconds == pytest.approx(0.7) and tail.at_s == pytest.approx(0.8)


@settings(max_examples=60)
@given(stamps, st.integers(0, 5 * NS), st.integers(0, 5 * NS))
def test_no_stretch_without_a_sample_is_longer_than_the_largest_gap(times, a, b):
    start, end = sorted((a, b))
    if times[0] > start:
        return                                                   # the timeline starts at the first sample
    gap = largest_gap("s", times, start, end)
    probe = np.linspace(start, end, 200)
    for t in probe:
        before = times[times <= t]
        assert (t - before[-1]) / NS <= gap.seconds + 1e-9
