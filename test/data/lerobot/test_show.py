"""`dataset show` on a real dataset: the PNGs read back, with the sheet's cells holding the
decoded frames of the right cameras at the right times."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from matplotlib.image import imread

import lerobot_datasets as datasets
from twinvla_ros.data.lerobot.format import IMAGE_KEYS, DatasetError
from twinvla_ros.data.lerobot.show import SHEET_PAD_PX, sheet_frame_indices, show_episode
from twinvla_ros.data.lerobot.writer import DatasetWriter


BAND_PX = 14                # the label bands for frames narrower than 200 px


@pytest.fixture(scope="module")
def shown(tmp_path_factory):
    root = datasets.make_dataset(tmp_path_factory.mktemp("show") / "tiny")
    return show_episode(root, 1, tmp_path_factory.mktemp("out"))


def test_the_plot_is_a_png_of_the_figure_size(shown):
    assert shown.plot.name == "tiny_episode_0001_trajectory.png"
    image = imread(shown.plot)
    assert image.shape[:2] == (900, 1200)
    assert image[..., :3].std() > 0.05        # lines and text, not a blank canvas


def test_the_contact_sheet_has_a_row_of_six_frames_per_camera(shown):
    sheet = np.round(imread(shown.contact_sheet)[..., :3] * 255)
    height, width = datasets.IMAGE_SIZE
    row_height = BAND_PX + height + BAND_PX
    assert sheet.shape[:2] == (SHEET_PAD_PX + 3 * (row_height + SHEET_PAD_PX),
                               SHEET_PAD_PX + 6 * (width + SHEET_PAD_PX))
    frames = [0, 6, 12, 19, 25, 31]           # round(linspace(0, 31, 6)): episode 1 has 32 frames
    for camera, key in enumerate(IMAGE_KEYS.values()):       # one row per camera, in feature order
        top = SHEET_PAD_PX + camera * (row_height + SHEET_PAD_PX) + BAND_PX
        for column, frame in enumerate(frames):
            left = SHEET_PAD_PX + column * (width + SHEET_PAD_PX)
            cell = sheet[top:top + height, left:left + width]
            errors = {other: np.abs(cell - datasets.frame_pixels(1, camera, other)).mean()
                      for other in (frame - 1, frame, frame + 1) if 0 <= other < 32}
            assert errors[frame] < 3.0, (key, frame, errors)
            assert errors[frame] == min(errors.values()), (key, frame, errors)


def test_an_episode_out_of_range_names_the_range(tmp_path):
    root = datasets.make_dataset(tmp_path / "two", episodes=2, lengths=(5, 6))
    with pytest.raises(DatasetError, match=r"episode 2 out of range 0\.\.1"):
        show_episode(root, 2, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_frames_without_a_rotation_leave_a_gap_not_an_error(tmp_path):
    root = tmp_path / "degenerate"
    with DatasetWriter(root, fps=20, image_size=datasets.IMAGE_SIZE) as writer:
        episode = datasets.make_episode(writer.staging_dir / "episode", seed=4, length=8, task="wave")
        state = episode.state.copy()
        state[:2, 3:9] = 0.0                    # the left arm's 6D: no rotation in frames 0 and 1
        state[5, 13:19] = np.tile(state[5, 13:16], 2)   # the right arm's: parallel columns
        writer.add(dataclasses.replace(episode, state=state))
        writer.finalize()
    result = show_episode(root, 0, tmp_path / "out")
    assert imread(result.plot).shape[:2] == (900, 1200)


@given(length=st.integers(1, 2000))
def test_sheet_frames_are_spread_from_first_to_last(length):
    indices = sheet_frame_indices(length)
    assert len(indices) == min(6, length)
    assert indices[0] == 0 and indices[-1] == length - 1
    assert np.all(np.diff(indices) > 0)
    if length >= 6:
        steps = np.diff(indices)
        assert steps.max() - steps.min() <= 1
