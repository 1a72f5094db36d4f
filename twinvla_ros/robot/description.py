"""The Anubis robot description as the code uses it, read from config/anubis.yaml.

The YAML is also what urdf/anubis.urdf is generated from, so joint names, limits and frames
agree between the URDF consumers (pinocchio, MuJoCo, RViz) and the driver's safety limits.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from twinvla_ros.robot.bimanual import ARMS
from twinvla_ros.paths import config_path, urdf_path


@dataclass(frozen=True)
class ArmDescription:
    side: str
    joint_names: tuple[str, ...]      # the six arm joints, base to wrist
    lower: np.ndarray                 # (6,) rad
    upper: np.ndarray                 # (6,) rad
    velocity: np.ndarray              # (6,) rad/s
    home: np.ndarray                  # (6,) rad
    gripper_joint: str                # actuated finger joint (metres of travel per finger)
    gripper_stroke: float             # finger travel at fully open, m
    gripper_velocity: float           # m/s
    tip_frame: str                    # EEF (grasp point) frame
    wrist_camera_frame: str           # optical frame of the wrist camera
    workspace_min: tuple[float, float, float]   # EEF box in the reference frame, m; the floor
    workspace_max: tuple[float, float, float]   # is the table top plus a margin


@dataclass(frozen=True)
class RobotDescription:
    urdf: Path
    base_frame: str
    reference_frame: str
    ego_camera_frame: str
    table_top_z: float                # the work surface in the reference frame, m
    arms: dict[str, ArmDescription]

    @property
    def camera_frames(self) -> dict[str, str]:
        """Camera name (robot.cameras.CAMERAS) -> the URDF optical frame its images are in."""
        return {"ego": self.ego_camera_frame, "wrist_left": self.arms["left"].wrist_camera_frame,
                "wrist_right": self.arms["right"].wrist_camera_frame}

    @property
    def joint_names(self) -> tuple[str, ...]:
        """All actuated joints in /joint_states order: left arm, left gripper, right arm, right gripper."""
        names: list[str] = []
        for side in ARMS:
            names += [*self.arms[side].joint_names, self.arms[side].gripper_joint]
        return tuple(names)


def load_description(config: Path | str | None = None, urdf: Path | str | None = None) -> RobotDescription:
    cfg = yaml.safe_load(Path(config or config_path("anubis.yaml")).read_text())
    table_top = float(cfg["table"]["top_z"]) - float(cfg["reference_offset"][2])   # in the reference frame
    workspace = cfg["workspace"]
    floor = table_top + float(workspace["floor_margin"])
    arms = {}
    for side in ARMS:
        box = workspace[side]
        arms[side] = ArmDescription(
            side=side,
            joint_names=tuple(f"{side}_{name}" for name in cfg["joint_names"]),
            lower=np.asarray(cfg["joint_lower"], dtype=np.float64),
            upper=np.asarray(cfg["joint_upper"], dtype=np.float64),
            velocity=np.asarray(cfg["joint_velocity"], dtype=np.float64),
            home=np.asarray(cfg["home"][side], dtype=np.float64),
            gripper_joint=f"{side}_gripper",
            gripper_stroke=float(cfg["gripper"]["stroke"]),
            gripper_velocity=float(cfg["gripper"]["velocity"]),
            tip_frame=f"{side}_eef",
            wrist_camera_frame=f"{side}_wrist_camera_color_optical_frame",
            workspace_min=(float(box["x"][0]), float(box["y"][0]), floor),
            workspace_max=(float(box["x"][1]), float(box["y"][1]), float(workspace["ceiling"])),
        )
        a = arms[side]
        if not (np.all(a.lower < a.upper) and np.all(a.home >= a.lower) and np.all(a.home <= a.upper)):
            raise ValueError(f"config: {side} joint limits are inverted or the home pose is outside them")
        if not np.all(np.less(a.workspace_min, a.workspace_max)):
            raise ValueError(f"config: {side} workspace box is empty: {a.workspace_min} .. {a.workspace_max}")
    return RobotDescription(
        urdf=Path(urdf or urdf_path()),
        base_frame=cfg["base_frame"],
        reference_frame=cfg["reference_frame"],
        ego_camera_frame="ego_camera_color_optical_frame",
        table_top_z=table_top,
        arms=arms,
    )
