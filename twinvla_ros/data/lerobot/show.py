"""`dataset show`: one episode of a LeRobot v3.0 dataset as two pictures a person checks.

- A plot of the state (solid) and action (dashed) against time: per arm xyz, the rotation as
  its angle from the episode's first state rotation (so state and action share one reference
  and a lagging or jumping action shows; a 6D that defines no rotation is a gap), and the
  gripper.
- A contact sheet: one row per camera, frames evenly spaced in time (first and last included),
  each labelled with its time, to see that cameras, episode boundaries and timing line up.
Both read the dataset through our reader, i.e. the way training will see it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from twinvla_ros.data.lerobot.reader import LeRobotEpisodes
from twinvla_ros.robot.bimanual import ARMS, GRIPPER, POSITION, ROT6D, arm_slice
from twinvla_ros.robot.rotations import rot6d_to_matrix, rotation_angle_between

SHEET_FRAMES = 6
ROTATION_EPS = 1e-6
SHEET_PAD_PX = 4
SHEET_BACKGROUND = (32, 32, 32)
SHEET_TEXT = (235, 235, 235)


@dataclass(frozen=True)
class ShowResult:
    plot: Path
    contact_sheet: Path


def sheet_frame_indices(length: int, count: int = SHEET_FRAMES) -> np.ndarray:
    """`count` frame indices evenly spaced over 0..length-1, both ends included (fewer when
    the episode is shorter)."""
    return np.unique(np.round(np.linspace(0, length - 1, min(count, length))).astype(int))


def show_episode(root: str | Path, episode: int, out_dir: str | Path) -> ShowResult:
    """Writes `<dataset>_episode_NNNN_trajectory.png` and `..._cameras.png` into out_dir.
    DatasetError (naming the range) for an episode the dataset does not have."""
    dataset = LeRobotEpisodes(root, cached_episodes=1)
    data = dataset.episode(episode)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{dataset.root.resolve().name}_episode_{episode:04d}"
    plot = _plot_trajectory(dataset, data, out_dir / f"{stem}_trajectory.png")
    sheet = _contact_sheet(dataset, data, out_dir / f"{stem}_cameras.png")
    return ShowResult(plot=plot, contact_sheet=sheet)


def _defines_rotation(rot6d: np.ndarray) -> np.ndarray:
    """Per row: are the two 6D columns finite, non-zero and not parallel (Gram-Schmidt works)?"""
    first, second = rot6d[:, :3], rot6d[:, 3:]
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = first / np.linalg.norm(first, axis=1, keepdims=True)
        rest = second - np.sum(unit * second, axis=1, keepdims=True) * unit
        return (np.isfinite(rot6d).all(axis=1) & (np.linalg.norm(first, axis=1) > ROTATION_EPS)
                & (np.linalg.norm(rest, axis=1) > ROTATION_EPS))


def _angles_deg(rot6d: np.ndarray, reference: np.ndarray | None) -> np.ndarray:
    """Each row's angle from `reference` (deg); NaN (a gap in the plot) where a row defines no
    rotation: a broken frame should show, not stop the plot."""
    angles = np.full(len(rot6d), np.nan)
    valid = _defines_rotation(rot6d)
    if reference is not None and valid.any():
        angles[valid] = np.degrees(rotation_angle_between(reference, rot6d_to_matrix(rot6d[valid])))
    return angles


def _plot_trajectory(dataset: LeRobotEpisodes, data: dict, path: Path) -> Path:
    state, action = data["state"].astype(np.float64), data["action"].astype(np.float64)
    time = np.arange(len(state)) / dataset.fps
    figure = Figure(figsize=(12, 9))
    FigureCanvasAgg(figure)
    axes = figure.subplots(3, len(ARMS), sharex=True, squeeze=False)
    for column, arm in enumerate(ARMS):
        arm_state, arm_action = state[:, arm_slice(arm)], action[:, arm_slice(arm)]
        position, rotation, gripper = axes[0][column], axes[1][column], axes[2][column]
        for axis, color in zip(range(3), ("tab:red", "tab:green", "tab:blue")):
            name = "xyz"[axis]
            position.plot(time, arm_state[:, POSITION][:, axis], "-", color=color, label=f"state {name}")
            position.plot(time, arm_action[:, POSITION][:, axis], "--", color=color, label=f"action {name}")
        valid = np.flatnonzero(_defines_rotation(arm_state[:, ROT6D]))
        reference = rot6d_to_matrix(arm_state[valid[0], ROT6D]) if valid.size else None
        rotation.plot(time, _angles_deg(arm_state[:, ROT6D], reference), "-", color="tab:purple", label="state")
        rotation.plot(time, _angles_deg(arm_action[:, ROT6D], reference), "--", color="tab:purple", label="action")
        gripper.plot(time, arm_state[:, GRIPPER], "-", color="tab:orange", label="state")
        gripper.plot(time, arm_action[:, GRIPPER], "--", color="tab:orange", label="action")
        position.set_title(f"{arm} arm")
        position.set_ylabel("position [m]")
        rotation.set_ylabel("rotation from first state [deg]")
        gripper.set_ylabel("gripper (0 closed, 1 open)")
        gripper.set_xlabel("time [s]")
        for axis in (position, rotation, gripper):
            axis.grid(alpha=0.3)
            axis.legend(loc="best", fontsize=7, ncol=2 if axis is position else 1)
    figure.suptitle(f"{dataset.root.resolve().name}: episode {data['episode_index']}, \"{data['task']}\", "
                    f"{len(state)} frames at {dataset.fps} fps ({len(state) / dataset.fps:.2f} s)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def _label(width: int, height: int, text: str, scale: float) -> np.ndarray:
    band = _background(height, width)
    cv2.putText(band, text, (2, height - 5), cv2.FONT_HERSHEY_SIMPLEX, scale, SHEET_TEXT, 1, cv2.LINE_AA)
    return band


def _background(height: int, width: int) -> np.ndarray:
    area = np.empty((height, width, 3), np.uint8)
    area[:] = SHEET_BACKGROUND
    return area


def _contact_sheet(dataset: LeRobotEpisodes, data: dict, path: Path) -> Path:
    """Rows of [camera name band; frames; time band], SHEET_PAD_PX apart, RGB on dark grey;
    a row narrower than the widest (a smaller camera) is padded on the right."""
    indices = sheet_frame_indices(len(data["state"]))
    rows = []
    for key in dataset.image_keys:
        height, width = dataset.image_sizes[key]
        scale, band = (0.35, 14) if width < 200 else (0.55, 22)
        frames = data["images"][key]
        cells = [np.concatenate([frames[i], _label(width, band, f"{i / dataset.fps:.2f} s", scale)]) for i in indices]
        gap = _background(height + band, SHEET_PAD_PX)
        strip = np.concatenate([gap] + [part for cell in cells for part in (cell, gap)], axis=1)
        rows.append(np.concatenate([_label(strip.shape[1], band, key.split(".")[-1], scale), strip]))
    sheet_width = max(row.shape[1] for row in rows)
    parts = [_background(SHEET_PAD_PX, sheet_width)]
    for row in rows:
        parts += [np.concatenate([row, _background(row.shape[0], sheet_width - row.shape[1])], axis=1),
                  _background(SHEET_PAD_PX, sheet_width)]
    sheet = np.concatenate(parts)
    if not cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
    return path
