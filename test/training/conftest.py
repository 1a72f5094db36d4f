"""The dataset builders of test/data/lerobot (lerobot_datasets.py) and the single-arm
checkpoint writer of test/model (single_arm_checkpoints.py) for the training tests."""
import sys
from pathlib import Path

import pytest

for helpers in ("data/lerobot", "model"):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / helpers))

from lerobot_datasets import make_dataset  # noqa: E402


@pytest.fixture(scope="session")
def training_dataset(tmp_path_factory) -> Path:
    """Two tasks, three episodes (25, 32, 40 frames), 64x80 px, h264: read-only for the tests."""
    return make_dataset(tmp_path_factory.mktemp("training") / "lift_box", codec="h264")
