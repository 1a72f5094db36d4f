"""The tasks' success checks: on hand-made poses (each check can fail, with a reason) and on a
real MuJoCo world whose objects are teleported and left to settle."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim_helpers import settle
from twinvla_ros.sim import SimConfig, SimWorld, task_success
from twinvla_ros.sim.scene import TABLE_TOP_Z, TASKS

BOX_HALF = 0.025
PAD_TOP = TABLE_TOP_Z + 0.008
UPRIGHT = [1.0, 0.0, 0.0, 0.0]
UPSIDE_DOWN = [0.0, 1.0, 0.0, 0.0]


def box_at(x, y, z, quat=UPRIGHT):
    return np.array([x, y, z, *quat])


def pad_at(x=0.27, y=0.2):
    return np.array([x, y, TABLE_TOP_Z + 0.004, *UPRIGHT])


def test_every_scene_task_has_a_check():
    for task in TASKS:
        objects = {o.name: box_at(0.27, 0.0, TABLE_TOP_Z + o.half_size[2]) for o in TASKS[task].objects}
        success, reason = task_success(task, objects)
        assert isinstance(success, bool) and reason


def test_lift_box_needs_the_box_5_cm_above_the_table():
    resting = box_at(0.27, -0.2, TABLE_TOP_Z + BOX_HALF)
    assert task_success("lift_box", {"box": resting}) == (False, "box only 0.0 cm above the table (goal >= 5 cm)")
    low = box_at(0.27, -0.2, TABLE_TOP_Z + BOX_HALF + 0.049)
    assert not task_success("lift_box", {"box": low})[0]
    lifted = box_at(0.27, -0.2, TABLE_TOP_Z + BOX_HALF + 0.051)
    success, reason = task_success("lift_box", {"box": lifted})
    assert success and "5.1 cm" in reason
    # Tilted 90 deg its lowest point is lower (half width 2 cm instead of 2.5): not lifted.
    tilted = box_at(0.27, -0.2, TABLE_TOP_Z + 0.02 + 0.048, [math.cos(math.pi / 4), math.sin(math.pi / 4), 0, 0])
    assert not task_success("lift_box", {"box": tilted})[0]


def test_handover_needs_the_box_resting_on_the_pad():
    pad = pad_at()
    on = box_at(0.28, 0.21, PAD_TOP + BOX_HALF)
    assert task_success("handover_box", {"box": on, "target_pad": pad}) == (True, "box on the pad")
    flipped = box_at(0.27, 0.2, PAD_TOP + BOX_HALF, UPSIDE_DOWN)
    assert task_success("handover_box", {"box": flipped, "target_pad": pad})[0]
    beside = box_at(0.27, 0.27, TABLE_TOP_Z + BOX_HALF)
    success, reason = task_success("handover_box", {"box": beside, "target_pad": pad})
    assert not success and "not over the pad" in reason
    held_above = box_at(0.27, 0.2, PAD_TOP + BOX_HALF + 0.05)
    success, reason = task_success("handover_box", {"box": held_above, "target_pad": pad})
    assert not success and "5.0 cm above its top" in reason
    pad_lifted = pad.copy()
    pad_lifted[2] += 0.1
    success, reason = task_success("handover_box", {"box": on + [0, 0, 0.1, 0, 0, 0, 0], "target_pad": pad_lifted})
    assert not success and "pad is not on the table" in reason
    assert not task_success("handover_box", {"box": box_at(0.27, -0.2, TABLE_TOP_Z + BOX_HALF), "target_pad": pad})[0]


def test_unknown_tasks_and_missing_or_malformed_poses_are_value_errors():
    with pytest.raises(ValueError, match="unknown sim task"):
        task_success("stack", {})
    with pytest.raises(ValueError, match="'target_pad' is missing"):
        task_success("handover_box", {"box": box_at(0.27, 0.2, 0.9)})
    with pytest.raises(ValueError, match="mapping"):
        task_success("lift_box", [1, 2, 3])
    assert task_success("empty", {})[0]


@settings(max_examples=100, deadline=None)
@given(pose=st.one_of(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=9),
                      st.text(max_size=5), st.none()))
def test_garbage_poses_are_value_errors_or_a_verdict(pose):
    try:
        success, reason = task_success("lift_box", {"box": pose})
    except ValueError:
        return
    assert isinstance(success, bool) and reason     # 7 finite numbers with a usable quaternion


@pytest.fixture
def world():
    w = SimWorld(SimConfig(task="handover_box", seed=5))
    yield w
    w.close()


def test_in_the_sim_a_reset_scene_is_not_done_and_a_box_teleported_onto_the_pad_is(world):
    objects = world.reset(5)
    success, reason = task_success("handover_box", objects)
    assert not success and "not over the pad" in reason
    pad = objects["target_pad"]
    world.set_object_pose("box", [pad[0], pad[1], PAD_TOP + BOX_HALF + 0.01, *UPRIGHT])
    settle(world, 0.5)                  # it drops 1 cm and comes to rest
    assert task_success("handover_box", world.object_poses()) == (True, "box on the pad")
    world.set_object_pose("box", [pad[0] + 0.08, pad[1], TABLE_TOP_Z + BOX_HALF + 0.005, *UPRIGHT])
    settle(world, 0.5)
    assert not task_success("handover_box", world.object_poses())[0]
