"""Fixtures over lerobot_datasets.py: small datasets written by our own DatasetWriter."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from lerobot_datasets import CAMERAS, IMAGE_SIZE, LENGTHS, TASKS, episode_arrays, frame_pixels, make_dataset, make_episode


@pytest.fixture(scope="session")
def dataset_factory():
    """make_dataset, for tests that build datasets of their own."""
    return make_dataset


@pytest.fixture(scope="session")
def dataset_kit() -> SimpleNamespace:
    """The builders and the inputs they use, to compare what is read with what was written."""
    return SimpleNamespace(make_dataset=make_dataset, make_episode=make_episode, episode_arrays=episode_arrays,
                           frame_pixels=frame_pixels, image_size=IMAGE_SIZE, lengths=LENGTHS, tasks=TASKS,
                           cameras=CAMERAS)


@pytest.fixture
def small_dataset(tmp_path: Path) -> Path:
    """Three episodes (25, 32, 40 frames, two tasks) at 20 fps, 64x80 px, AV1."""
    return make_dataset(tmp_path / "tiny")
