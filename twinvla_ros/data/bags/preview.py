"""What an episode looked like, before anyone fine-tunes on it: a video of one camera and a plot
of both arms' commanded vs reached EEF positions, read from the episode's bag.

Images are decoded from the bag as recorded (rgb8/bgr8 `Image`, or the camera node's JPEG
`CompressedImage`); the video plays at the rate the frames arrived, and its frame count is
what the bag holds, so a camera that stalled shows as a short or jerky video. The plot's time
axis is the recorder's receive time since the first message of the episode.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from twinvla_ros.data.media import plot_eef_tracking, write_video

from .images import decode_image
from .recovery import find_mcap
from .topics import RecordingError


@dataclass(frozen=True)
class Preview:
    video: Path | None        # None when the bag holds no frame of the camera
    plot: Path | None         # None when the bag holds no EEF pose or target
    frames: int
    fps: float


def _position(pose) -> list[float]:
    return [pose.position.x, pose.position.y, pose.position.z]


def episode_preview(bag: str | Path, out: str | Path, camera: str = "ego") -> Preview:
    """Writes <out>/<episode>_<camera>.mp4 and <out>/<episode>_eef.png; RecordingError when the
    bag cannot be read."""
    from rosbags.highlevel import AnyReader

    bag = Path(bag)
    find_mcap(bag)                          # a clear error for a folder that holds no bag
    out = Path(out)
    image_topics = {f"/cameras/{camera}/color/image_raw", f"/cameras/{camera}/color/image_raw/compressed"}
    frames: list[np.ndarray] = []
    frame_times: list[int] = []
    series = {"commanded": {}, "reached": {}}
    first = None
    try:
        with AnyReader([bag]) as reader:
            wanted = [c for c in reader.connections if c.topic in image_topics
                      or c.topic.endswith(("_arm/eef_pose", "_arm/eef_target"))]
            for connection, timestamp, raw in reader.messages(connections=wanted):
                first = timestamp if first is None else first
                msg = reader.deserialize(raw, connection.msgtype)
                if connection.topic in image_topics:
                    frames.append(decode_image(msg, connection.msgtype))
                    frame_times.append(timestamp)
                    continue
                side = connection.topic.strip("/").split("_arm/")[0]
                kind = "reached" if connection.topic.endswith("eef_pose") else "commanded"
                times, xyz = series[kind].setdefault(side, ([], []))
                times.append((timestamp - first) * 1e-9)
                xyz.append(_position(msg.pose))
    except (OSError, ValueError, KeyError) as error:   # rosbags' reader errors derive from these
        raise RecordingError(f"{bag}: cannot read the bag: {error}") from None
    fps = 0.0
    video = plot = None
    if frames:
        span = (frame_times[-1] - frame_times[0]) * 1e-9
        fps = (len(frames) - 1) / span if span > 0 else 1.0
        video = write_video(out / f"{bag.name}_{camera}.mp4", frames, fps=max(1.0, fps))
    if series["commanded"] or series["reached"]:
        as_arrays = {kind: {side: (np.array(t), np.array(xyz).reshape(-1, 3)) for side, (t, xyz) in sides.items()}
                     for kind, sides in series.items()}
        plot = plot_eef_tracking(out / f"{bag.name}_eef.png", as_arrays["commanded"], as_arrays["reached"],
                                 title=f"{bag.name}: commanded (targets) vs reached (eef_pose)")
    return Preview(video, plot, len(frames), fps)
