"""The dataset's videos: per-episode encoding, concatenation by stream copy, probing, decoding.

lerobot stores each camera as mp4 files holding many episodes back to back; a frame is found
at from_timestamp + timestamp and must lie within 1e-4 s of a decoded frame. So every file
here is constant frame rate with frame i at pts i / fps, without B-frame reordering (pts ==
dts), which lets episodes be joined by remuxing packets with shifted timestamps.

Encoder settings (random access matters: training reads short windows anywhere):
- av1: libsvtav1, crf 30, keyframe every 2 frames (g=2), as lerobot encodes; preset 10
  (lerobot gets SVT-AV1's default, 8 in this build): measured at 320x240 on a CPU, ~15%
  faster for ~6% larger files (preset 11 and up were not faster).
- h264: libx264, crf 23, g=2 as for av1, no B-frames (bf=0) so that pts == dts.
Both yuv420p (even width and height).

SVT-AV1 run as root (a robot PC's service, a container, CI) moves the thread that opens it,
and every thread it starts, to SCHED_FIFO priority 99; nothing in ffmpeg or PyAV turns that
off. A converter thread or worker at that priority starves every other process on the machine
(on a 2-core machine the sim's cameras fell to half their rate and the policy held on stale
frames), and the threads the caller starts afterwards inherit it. The encoder therefore puts
every thread it promoted back to the caller's scheduling policy (see `_demote_realtime_threads`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Callable

import av
import numpy as np

from twinvla_ros.data.lerobot.format import CODECS, DatasetError

# lerobot's frame-lookup tolerance: a frame is "at" t when its pts is within this of t.
TIMESTAMP_TOLERANCE_S = 1e-4
ENCODER_OPTIONS = {
    "av1": {"g": "2", "crf": "30", "preset": "10"},
    "h264": {"g": "2", "crf": "23", "bf": "0"},
}


_REALTIME_POLICIES = (os.SCHED_FIFO, os.SCHED_RR)


def _thread_policies() -> dict[int, int]:
    policies = {}
    for name in os.listdir("/proc/self/task"):
        try:
            policies[int(name)] = os.sched_getscheduler(int(name))
        except OSError:              # the thread ended meanwhile
            pass
    return policies


def _demote_realtime_threads(before: dict[int, int], policy: int, param: os.sched_param) -> None:
    """Threads of this process that turned real-time since `before` was taken (the caller, or
    new ones) get `policy`/`param` back; threads real-time on purpose before are left alone."""
    for tid, now in _thread_policies().items():
        if now in _REALTIME_POLICIES and before.get(tid) not in _REALTIME_POLICIES:
            try:
                os.sched_setscheduler(tid, policy, param)
            except OSError:          # ended meanwhile
                pass


class _SchedulingGuard:
    """Undoes an encoder library's real-time promotion of this process's threads."""

    def __init__(self) -> None:
        self._supported = hasattr(os, "sched_getscheduler") and os.path.isdir("/proc/self/task")
        if self._supported:
            self._policy = os.sched_getscheduler(0)
            self._param = os.sched_getparam(0)

    def __enter__(self) -> None:
        self._before = _thread_policies() if self._supported else {}

    def __exit__(self, *exc_info) -> None:
        if self._supported:
            _demote_realtime_threads(self._before, self._policy, self._param)


@dataclass(frozen=True)
class VideoInfo:
    """What a mp4's (first) video stream holds; frames counted by demuxing its packets."""

    frames: int
    width: int
    height: int
    codec: str                  # "av1", "h264" (the codec, not the encoder/decoder library)
    pix_fmt: str
    fps: float
    duration_s: float


class VideoEncoder:
    """Streams uint8 RGB frames into a constant-frame-rate mp4, frame i at i / fps."""

    def __init__(self, path: str | Path, *, fps: int, width: int, height: int, codec: str = "av1") -> None:
        if codec not in CODECS:
            raise DatasetError(f"{path}: unknown codec {codec!r}, expected one of {sorted(CODECS)}")
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise DatasetError(f"{path}: video size {width}x{height} must be positive and even (yuv420p)")
        if fps <= 0 or int(fps) != fps:
            raise DatasetError(f"{path}: fps must be a positive integer, got {fps}")
        # SVT-AV1 prints a configuration banner for every encoder it opens: one per episode
        # and camera would bury the converter's own output. Errors still show.
        os.environ.setdefault("SVT_LOG", "1")
        self.path = Path(path)
        self.width, self.height, self.fps = width, height, int(fps)
        self._frames = 0
        self._time_base = Fraction(1, self.fps)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), "w", format="mp4")
        try:
            self._stream = self._container.add_stream(CODECS[codec], rate=self.fps, options=ENCODER_OPTIONS[codec])
            self._stream.width, self._stream.height = width, height
            self._stream.pix_fmt = "yuv420p"
            self._stream.codec_context.time_base = self._time_base
            # SVT-AV1 starts its threads when it opens (and two more on the first frame).
            self._scheduling = _SchedulingGuard()
            with self._scheduling:
                self._stream.codec_context.open()
        except Exception:
            self._container.close()
            raise
        self._closed = False

    def write(self, frame: np.ndarray) -> None:
        if self._closed:
            raise DatasetError(f"{self.path}: write after close")
        if frame.dtype != np.uint8 or frame.shape != (self.height, self.width, 3):
            raise DatasetError(f"{self.path}: frame {self._frames} is {frame.dtype} {frame.shape}, expected "
                               f"uint8 ({self.height}, {self.width}, 3)")
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        video_frame.pts = self._frames
        video_frame.time_base = self._time_base
        if self._frames == 0:
            with self._scheduling:
                packets = self._stream.encode(video_frame)
        else:
            packets = self._stream.encode(video_frame)
        self._container.mux(packets)
        self._frames += 1

    def close(self) -> int:
        """Flushes the encoder and finishes the file; returns the number of frames written."""
        if not self._closed:
            self._closed = True
            try:
                self._container.mux(self._stream.encode(None))
            finally:
                self._container.close()
        return self._frames

    def __enter__(self) -> VideoEncoder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
            return
        # A half-encoded episode is of no use to anyone: do not leave it looking like a video.
        try:
            self.close()
        finally:
            self.path.unlink(missing_ok=True)


def probe_video(path: str | Path) -> VideoInfo:
    path = Path(path)
    try:
        container = av.open(str(path))
    except (OSError, av.FFmpegError) as error:
        raise DatasetError(f"{path}: cannot open as a video: {error}") from error
    with container:
        if not container.streams.video:
            raise DatasetError(f"{path}: no video stream")
        stream = container.streams.video[0]
        frames = sum(1 for packet in container.demux(stream) if packet.size)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        if stream.duration is not None:
            duration_s = float(stream.duration * stream.time_base)
        else:
            duration_s = frames / fps if fps else 0.0
        return VideoInfo(frames=frames, width=stream.codec_context.width, height=stream.codec_context.height,
                         codec=stream.codec_context.codec.canonical_name,
                         pix_fmt=str(stream.codec_context.pix_fmt), fps=fps, duration_s=duration_s)


def concatenate_videos(inputs: list[Path], output: Path, *,
                       on_input_done: Callable[[int], None] | None = None) -> list[tuple[float, float]]:
    """Joins same-codec, same-size mp4s into `output` by stream copy (no re-encoding).

    Returns each input's (from_timestamp, to_timestamp) in the output: from = the previous
    input's to (0.0 first), to = from + frames / fps. `on_input_done(n)` is called after
    the n-th input (for progress bars).
    """
    if not inputs:
        raise DatasetError(f"{output}: no videos to concatenate")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    spans: list[tuple[float, float]] = []
    reference: tuple | None = None
    with av.open(str(output), "w", format="mp4", container_options={"movflags": "faststart"}) as joined:
        out_stream = None
        offset_s = 0.0
        for path in inputs:
            with av.open(str(path)) as source:
                if not source.streams.video:
                    raise DatasetError(f"{path}: no video stream")
                stream = source.streams.video[0]
                rate = stream.average_rate or stream.guessed_rate
                # Packets of one file share one codec configuration (the mp4 sample description).
                layout = (stream.codec_context.codec.canonical_name, stream.codec_context.width,
                          stream.codec_context.height, stream.time_base, rate, stream.codec_context.extradata)
                if reference is None:
                    reference = layout
                    out_stream = joined.add_stream_from_template(stream, opaque=True)
                elif layout[:5] != reference[:5]:
                    raise DatasetError(f"{path}: (codec, width, height, time base, fps) {layout[:5]} differs from "
                                       f"the first video's {reference[:5]}: cannot concatenate without re-encoding")
                elif layout[5] != reference[5]:
                    raise DatasetError(f"{path}: codec configuration (extradata) differs from the first video's: "
                                       "encoded with other settings, cannot concatenate without re-encoding")
                offset = round(offset_s / stream.time_base)
                first_pts = None
                frames = 0
                for packet in source.demux(stream):
                    if packet.dts is None:          # the demuxer's end-of-stream marker
                        continue
                    if first_pts is None:
                        first_pts = packet.pts
                    packet.pts += offset - first_pts
                    packet.dts += offset - first_pts
                    packet.stream = out_stream
                    joined.mux(packet)
                    frames += 1
                end_s = offset_s + frames / float(rate)
                spans.append((offset_s, end_s))
                offset_s = end_s
            if on_input_done is not None:
                on_input_done(len(spans))
    return spans


def decode_frames(path: str | Path, start_s: float, count: int, fps: float) -> np.ndarray:
    """The frames at start_s + i / fps (i < count) as (count, H, W, 3) uint8 RGB.

    Seeks to the keyframe at or before start_s and decodes forward; a frame counts as the one
    at t when its pts is within 1e-4 s of t (lerobot's lookup). DatasetError when one is missing.
    """
    path = Path(path)
    if count <= 0:
        raise DatasetError(f"{path}: asked for {count} frames")
    targets = start_s + np.arange(count) / fps
    try:
        container = av.open(str(path))
    except (OSError, av.FFmpegError) as error:
        raise DatasetError(f"{path}: cannot open as a video: {error}") from error
    with container:
        # No frame threading: with PyAV 15 (lerobot's and TwinVLA's pin) and FFmpeg's log routed
        # to Python (importing torchvision.io does it), threaded h264 decoding can deadlock.
        stream = container.streams.video[0]
        seek_pts = int(np.floor((start_s - TIMESTAMP_TOLERANCE_S) / stream.time_base))
        container.seek(max(seek_pts, 0), stream=stream, backward=True, any_frame=False)
        frames: list[np.ndarray] = []
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            time_s = float(frame.pts * stream.time_base)
            target = targets[len(frames)]
            if time_s < target - TIMESTAMP_TOLERANCE_S:
                continue
            if time_s > target + TIMESTAMP_TOLERANCE_S:
                raise DatasetError(f"{path}: no frame at {target:.6f} s (next frame at {time_s:.6f} s)")
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == count:
                return np.stack(frames)
    raise DatasetError(f"{path}: video ends before {targets[len(frames)]:.6f} s "
                       f"({len(frames)} of {count} frames from {start_s:.6f} s)")
