"""Success checks of the sim tasks, from the object poses alone.

`task_success(task, object_poses)` takes what SimWorld.object_poses() returns (base_link frame,
[x y z qw qx qy qz]) and says whether the task's goal holds now, with a reason a person can read
in a log or a test failure. Pure geometry: the same check serves the offline rollouts
(twinvla_ros.evaluation.sim_rollout), the sim node's `~/task_status` service and the benchmarks.

- lift_box, lift_box_narrow: the box's lowest point is at least LIFT_MIN (5 cm) above the table
  top. Checked at the end of a demo, a box can only be that high while a gripper holds it.
- handover_box: the box rests on the green pad: its centre over the pad's top face (inside by
  PAD_INSIDE_MARGIN) and its lowest point on that face (within REST_TOLERANCE), standing on any
  face; the pad itself still lies on the table.
- empty: no objects, nothing to check: a demo that ran to its end succeeded.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from twinvla_ros.robot.rotations import quat_wxyz_to_xyzw, quat_xyzw_to_matrix
from twinvla_ros.sim.scene import TABLE_TOP_Z, ObjectSpec, task_spec

LIFT_MIN = 0.05               # m: lift_box's goal, the box's lowest point above the table top
REST_TOLERANCE = 0.01         # m: "resting on" a surface = lowest point within this of it
PAD_INSIDE_MARGIN = 0.005     # m: the box centre this far inside the pad's edges


def _pose_matrix(name: str, value) -> tuple[np.ndarray, np.ndarray]:
    try:
        pose = np.array(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"pose of {name!r} is not 7 numbers (x y z qw qx qy qz)") from None
    if pose.shape != (7,) or not np.isfinite(pose).all():
        raise ValueError(f"pose of {name!r} must be 7 finite numbers (x y z qw qx qy qz)")
    norm = float(np.linalg.norm(pose[3:]))
    if norm < 1e-6:
        raise ValueError(f"quaternion of {name!r} is zero")
    return pose[:3], quat_xyzw_to_matrix(quat_wxyz_to_xyzw(pose[3:] / norm))


def _lowest_point(position: np.ndarray, rotation: np.ndarray, spec: ObjectSpec) -> float:
    """World z of a box's lowest corner: centre minus its vertical half extent."""
    return float(position[2] - np.abs(rotation[2]) @ np.asarray(spec.half_size))


def _objects(task: str, object_poses: Mapping) -> dict[str, tuple[np.ndarray, np.ndarray, ObjectSpec]]:
    if not isinstance(object_poses, Mapping):
        raise ValueError(f"object poses must be a mapping name -> pose, got {type(object_poses).__name__}")
    out = {}
    for spec in task_spec(task).objects:
        if spec.name not in object_poses:
            raise ValueError(f"{task}: object {spec.name!r} is missing from the object poses")
        out[spec.name] = (*_pose_matrix(spec.name, object_poses[spec.name]), spec)
    return out


def _lift_box(objects) -> tuple[bool, str]:
    position, rotation, spec = objects["box"]
    height = _lowest_point(position, rotation, spec) - TABLE_TOP_Z
    if height >= LIFT_MIN:
        return True, f"box lifted {height * 100:.1f} cm above the table (goal >= {LIFT_MIN * 100:.0f} cm)"
    return False, f"box only {height * 100:.1f} cm above the table (goal >= {LIFT_MIN * 100:.0f} cm)"


def _handover_box(objects) -> tuple[bool, str]:
    box_position, box_rotation, box_spec = objects["box"]
    pad_position, pad_rotation, pad_spec = objects["target_pad"]
    pad_bottom = _lowest_point(pad_position, pad_rotation, pad_spec)
    if abs(pad_bottom - TABLE_TOP_Z) > REST_TOLERANCE:
        return False, f"the pad is not on the table (its bottom is {(pad_bottom - TABLE_TOP_Z) * 100:.1f} cm off it)"
    pad_top = pad_position[2] + pad_spec.half_size[2]
    offset = pad_rotation.T @ (box_position - pad_position)        # box centre in the pad's frame
    outside = np.abs(offset[:2]) - (np.asarray(pad_spec.half_size[:2]) - PAD_INSIDE_MARGIN)
    if np.any(outside > 0):
        distance = float(np.linalg.norm(box_position[:2] - pad_position[:2]))
        return False, f"box not over the pad: its centre is {distance * 100:.1f} cm from the pad's"
    gap = _lowest_point(box_position, box_rotation, box_spec) - pad_top
    if abs(gap) > REST_TOLERANCE:
        where = "above" if gap > 0 else "below"
        return False, f"box over the pad but {abs(gap) * 100:.1f} cm {where} its top: not resting on it"
    return True, "box on the pad"


def _empty(objects) -> tuple[bool, str]:
    return True, "no objects to check: the demo ran to its end"


_CHECKS = {"lift_box": _lift_box, "lift_box_narrow": _lift_box, "handover_box": _handover_box, "empty": _empty}


def task_success(task: str, object_poses: Mapping[str, np.ndarray]) -> tuple[bool, str]:
    """(goal reached now, why). ValueError for an unknown task or a missing/malformed pose."""
    task_spec(task)                     # ValueError listing the tasks
    if task not in _CHECKS:
        raise ValueError(f"no success check for task {task!r}; checks: {', '.join(sorted(_CHECKS))}")
    return _CHECKS[task](_objects(task, object_poses))
