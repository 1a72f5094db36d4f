"""One episode bag -> one StagedEpisode: the 20-D state and action on a fixed-rate timeline,
and one encoded video per camera, ready for the dataset writer.

State = each arm's recorded `eef_pose` (or, where the bag has none, forward kinematics of
/joint_states through the URDF) and gripper opening (gripper joint / stroke, as the policy
node builds its proprio). Action = what was commanded at the tick: `eef_target` +
`gripper_target` (EEF teleop, the sim's scripted expert, a policy), or forward kinematics of
`joint_command` (joint-space teleop). The timeline covers the span in which every stream has
data, one tick per 1/fps; an episode with a longer silence than `max_gap_s` in any stream is
rejected with the stream and the place, not converted with frozen frames.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from twinvla_ros.data.lerobot.format import CODECS, IMAGE_KEYS, StagedEpisode
from twinvla_ros.robot.bimanual import ARMS, ArmPose, pack
from twinvla_ros.robot.cameras import CAMERAS
from twinvla_ros.robot.description import RobotDescription, load_description
from twinvla_ros.robot.kinematics import ArmKinematics

from .bag_streams import BagStreams, decode_used_frames, read_bag_streams
from .timeline import NS, TimelineError, check_stamps, hold, interpolate_poses, largest_gap, latest_at_or_before, tick_grid

Progress = Callable[[str, int, int], None]      # (stage, done, total)
PROGRESS_EVERY = 10                              # frames between progress reports of a camera


class EpisodeRejected(Exception):
    """An episode that is not converted; the message is the reason, for the report."""


@dataclass(frozen=True)
class ConversionOptions:
    fps: int = 20
    image_size: tuple[int, int] = (240, 320)      # (height, width)
    codec: str = "av1"
    task: str | None = None                       # overrides the recorded task text
    max_gap_s: float = 0.25                       # longest silence of any stream
    include_failed: bool = False                  # convert episodes marked as failures too

    def __post_init__(self) -> None:
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        height, width = self.image_size
        if height <= 0 or width <= 0 or height % 2 or width % 2:
            raise ValueError(f"image size must be positive and even (yuv420p video), got {height}x{width}")
        if self.codec not in CODECS:
            raise ValueError(f"codec must be one of {sorted(CODECS)}, got {self.codec!r}")
        if not self.max_gap_s > 0:
            raise ValueError(f"max_gap_s must be positive, got {self.max_gap_s}")


@dataclass
class _Track:
    """A stamped pose or scalar source of the 20-D vector, named for the report."""

    name: str
    times: np.ndarray
    positions: np.ndarray | None = None       # (n, 3)
    rotations: np.ndarray | None = None       # (n, 3, 3)
    values: np.ndarray | None = None          # (n,) gripper opening 0..1


def _fk_tracks(name: str, times: np.ndarray, joints: np.ndarray, kinematics: ArmKinematics) -> _Track:
    transforms = np.array([kinematics.fk(q) for q in joints]).reshape(-1, 4, 4)
    return _Track(name, times, transforms[:, :3, 3], transforms[:, :3, :3])


def _state_tracks(streams: BagStreams, description: RobotDescription,
                  kinematics: dict[str, ArmKinematics]) -> tuple[str, dict[str, _Track], dict[str, _Track]]:
    """(source, {side: pose track}, {side: gripper track}) of the measured state."""
    grippers = {}
    for side in ARMS:
        arm = description.arms[side]
        track = streams.joint_states.track(arm.gripper_joint)
        if track is None:
            raise EpisodeRejected(f"/joint_states has no '{arm.gripper_joint}' (the {side} gripper)")
        grippers[side] = _Track(f"{side} gripper (/joint_states)", track.times, values=track.values / arm.gripper_stroke)
    if all(side in streams.poses for side in ARMS):
        poses = {}
        for side in ARMS:
            stream = streams.poses[side]
            if stream.frame_id != description.reference_frame:
                raise EpisodeRejected(f"/{side}_arm/eef_pose is in frame '{stream.frame_id}', the model's "
                                      f"frame is '{description.reference_frame}'")
            poses[side] = _Track(f"/{side}_arm/eef_pose", stream.times, stream.positions, stream.rotations)
        return "eef_pose", poses, grippers
    poses = {}
    for side in ARMS:
        joints = streams.joint_states.tracks(description.arms[side].joint_names)
        if joints is None:
            raise EpisodeRejected(f"no {side} eef_pose and /joint_states lacks the {side} arm's joints")
        poses[side] = _fk_tracks(f"{side} arm (FK of /joint_states)", *joints, kinematics[side])
    return "joint_states (FK)", poses, grippers


def _action_tracks(streams: BagStreams, description: RobotDescription,
                   kinematics: dict[str, ArmKinematics]) -> tuple[str, dict[str, _Track], dict[str, _Track]]:
    """(source, {side: pose track}, {side: gripper track}) of what was commanded."""
    if all(side in streams.targets and side in streams.gripper_targets for side in ARMS):
        poses, grippers = {}, {}
        for side in ARMS:
            stream = streams.targets[side]
            if stream.frame_id not in (description.reference_frame, ""):
                raise EpisodeRejected(f"/{side}_arm/eef_target is in frame '{stream.frame_id}', the model's "
                                      f"frame is '{description.reference_frame}'")
            poses[side] = _Track(f"/{side}_arm/eef_target", stream.times, stream.positions, stream.rotations)
            gripper = streams.gripper_targets[side]
            grippers[side] = _Track(f"/{side}_arm/gripper_target", gripper.times, values=gripper.values)
        return "eef_target", poses, grippers
    if all(side in streams.joint_commands for side in ARMS):
        poses, grippers = {}, {}
        for side in ARMS:
            arm = description.arms[side]
            commands = streams.joint_commands[side]
            joints = commands.tracks(arm.joint_names)
            gripper = commands.track(arm.gripper_joint)
            if joints is None or gripper is None:
                raise EpisodeRejected(f"/{side}_arm/joint_command lacks the {side} arm's joints or gripper")
            poses[side] = _fk_tracks(f"/{side}_arm/joint_command (FK)", *joints, kinematics[side])
            grippers[side] = _Track(f"/{side}_arm/joint_command gripper", gripper.times,
                                    values=gripper.values / arm.gripper_stroke)
        return "joint_command (FK)", poses, grippers
    have = sorted(f"/{side}_arm/{kind}" for side in ARMS for kind, streams_of in
                  (("eef_target", streams.targets), ("gripper_target", streams.gripper_targets),
                   ("joint_command", streams.joint_commands)) if side in streams_of)
    raise EpisodeRejected("no commanded targets for both arms (eef_target + gripper_target, or joint_command); "
                          f"the bag has {have or 'none of them'}")


def _vectors(poses: dict[str, _Track], grippers: dict[str, _Track], ticks: np.ndarray) -> np.ndarray:
    arms = []
    for side in ARMS:
        xyz, rotations = interpolate_poses(poses[side].times, poses[side].positions, poses[side].rotations, ticks)
        opening = hold(grippers[side].times, grippers[side].values, ticks)
        arms.append(ArmPose(xyz, rotations, opening))
    return pack(*arms).astype(np.float32)


def _resize(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    import cv2

    if frame.shape[:2] == (height, width):
        return np.ascontiguousarray(frame)
    shrinking = frame.shape[0] >= height and frame.shape[1] >= width
    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def convert_episode(bag: str | Path, staging: str | Path, options: ConversionOptions, *,
                    description: RobotDescription | None = None, progress: Progress | None = None) -> StagedEpisode:
    """Converts one bag; writes its videos under `staging`. EpisodeRejected says why an
    episode is left out; a file that cannot be read raises what the reader raised."""
    from twinvla_ros.data.lerobot.stats import ImageStatsAccumulator
    from twinvla_ros.data.lerobot.video import VideoEncoder

    progress = progress or (lambda stage, done, total: None)
    bag, staging = Path(bag), Path(staging)
    description = description or load_description()
    progress("read", 0, 1)
    streams = read_bag_streams(bag)
    progress("read", 1, 1)
    task = (options.task or streams.task).strip()
    if not task:
        raise EpisodeRejected("no task text recorded; pass --task")
    if streams.success is False and not options.include_failed:
        raise EpisodeRejected("marked as a failed demonstration (--include-failed converts it)")
    missing = [camera for camera in CAMERAS if camera not in streams.image_topics]
    if missing:
        raise EpisodeRejected(f"no frames of the {', '.join(missing)} camera(s)")

    kinematics = {side: ArmKinematics(description, side) for side in ARMS}
    state_source, state_poses, state_grippers = _state_tracks(streams, description, kinematics)
    action_source, action_poses, action_grippers = _action_tracks(streams, description, kinematics)
    timed = {track.name: track.times for group in (state_poses, state_grippers, action_poses, action_grippers)
             for track in group.values()}
    timed.update({streams.image_topics[camera][0]: streams.image_times[camera] for camera in CAMERAS})
    try:
        timed = {name: check_stamps(name, times) for name, times in timed.items()}
    except TimelineError as error:
        raise EpisodeRejected(str(error)) from None
    start = max(int(times[0]) for times in timed.values())
    end = min(int(times[-1]) for times in timed.values())
    ticks = tick_grid(start, end, options.fps)
    if len(ticks) < 2:
        latest = max(timed, key=lambda name: timed[name][0])
        raise EpisodeRejected(f"the streams overlap for {max(0, end - start) / NS:.2f} s (less than two frames "
                              f"at {options.fps} Hz); the last to start is {latest}")
    gaps = {name: largest_gap(name, times, start, end) for name, times in timed.items()}
    too_long = [gap for gap in gaps.values() if gap.seconds > options.max_gap_s]
    if too_long:
        raise EpisodeRejected("; ".join(f"{gap.stream} is silent for {gap.seconds:.2f} s at {gap.at_s:.2f} s"
                                        for gap in sorted(too_long, key=lambda g: -g.seconds))
                              + f" (longer than max gap {options.max_gap_s:.2f} s)")

    state = _vectors(state_poses, state_grippers, ticks)
    action = _vectors(action_poses, action_grippers, ticks)
    frame_of_tick = {camera: latest_at_or_before(streams.image_times[camera], ticks) for camera in CAMERAS}
    ticks_per_frame = {camera: np.bincount(indices) for camera, indices in frame_of_tick.items()}
    ages = {camera: (ticks - streams.image_times[camera][indices]) / NS for camera, indices in frame_of_tick.items()}

    height, width = options.image_size
    staging.mkdir(parents=True, exist_ok=True)
    videos = {camera: staging / f"{camera}.mp4" for camera in CAMERAS}
    encoders = {camera: VideoEncoder(videos[camera], fps=options.fps, width=width, height=height,
                                     codec=options.codec) for camera in CAMERAS}
    accumulators = {camera: ImageStatsAccumulator() for camera in CAMERAS}
    written = dict.fromkeys(CAMERAS, 0)
    source_sizes: dict[str, tuple[int, int]] = {}
    total = len(ticks) * len(CAMERAS)
    try:
        for camera, index, frame in decode_used_frames(bag, streams.image_topics,
                                                  {c: np.unique(i) for c, i in frame_of_tick.items()}):
            source_sizes.setdefault(camera, frame.shape[:2])
            resized = _resize(frame, height, width)
            # The ticks that use this frame follow each other, since ticks and frames both advance.
            uses = int(ticks_per_frame[camera][index])
            for _ in range(uses):
                encoders[camera].write(resized)
                accumulators[camera].add(resized)
            written[camera] += uses
            if index % PROGRESS_EVERY == 0:
                progress("frames", sum(written.values()), total)
    finally:
        for encoder in encoders.values():
            encoder.close()
    progress("frames", sum(written.values()), total)
    short = {camera: n for camera, n in written.items() if n != len(ticks)}
    if short:
        raise EpisodeRejected(f"frames missing from the bag on the second read: {short} of {len(ticks)}")

    duration = (end - start) / NS
    report = {
        "source": str(bag), "task": task, "recorded_task": streams.task, "success": streams.success,
        "recorder_flags": streams.flags, "extra": streams.extra,
        "frames": int(len(ticks)), "fps": options.fps, "duration_s": round(duration, 4),
        "start_ns": int(start), "state_source": state_source, "action_source": action_source,
        "stamp_sources": streams.stamp_sources,
        "largest_gap_s": {name: round(gap.seconds, 4) for name, gap in gaps.items()},
        "camera_state_skew_s": {camera: {"mean": round(float(age.mean()), 4), "max": round(float(age.max()), 4)}
                                for camera, age in ages.items()},
        "oldest_frame": max(({"camera": camera, "age_s": round(float(age.max()), 4),
                              "frame_index": int(np.argmax(age))} for camera, age in ages.items()),
                            key=lambda entry: entry["age_s"]),
        "source_image_size": {camera: list(size) for camera, size in source_sizes.items()},
        "instructions": sorted(set(streams.instructions)),
    }
    return StagedEpisode(task=task, state=state, action=action,
                         videos={IMAGE_KEYS[camera]: videos[camera] for camera in CAMERAS},
                         image_stats={IMAGE_KEYS[camera]: accumulators[camera].result() for camera in CAMERAS},
                         source=str(bag), report=report)
