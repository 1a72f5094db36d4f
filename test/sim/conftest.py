"""Fixtures of the MuJoCo sim tests (helpers live in sim_helpers.py)."""
from __future__ import annotations

import pytest

from twinvla_ros.sim import SimConfig, SimWorld


@pytest.fixture
def make_world():
    worlds = []

    def make(**kwargs) -> SimWorld:
        w = SimWorld(SimConfig(**kwargs))
        worlds.append(w)
        return w

    yield make
    for w in worlds:
        w.close()
