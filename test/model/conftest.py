"""Fixtures for the TwinVLA model tests: the tiny preset, built in memory (nothing downloaded)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from twinvla_ros.model import Observation, TwinVLAPolicy

torch.set_num_threads(2)


def make_obs(seed: int = 0, instruction: str = "pick up the red cube", sizes=((480, 640), (240, 320), (224, 224))) -> Observation:
    rng = np.random.default_rng(seed)
    ego, left, right = (rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes)
    arm = lambda x: [x, 0.05, 0.3, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.5]  # noqa: E731
    proprio = np.asarray(arm(0.1) + arm(0.2)) + rng.normal(scale=0.01, size=20)
    return Observation(instruction, ego, left, right, proprio)


@pytest.fixture(scope="session")
def make_observation():
    """Factory: make_observation(seed, instruction=..., sizes=...) -> Observation."""
    return make_obs


@pytest.fixture(scope="session")
def policy() -> TwinVLAPolicy:
    """Shared, read-only: tests that change a policy build their own."""
    return TwinVLAPolicy.tiny(seed=0)


@pytest.fixture(scope="session")
def obs() -> Observation:
    return make_obs(0)
