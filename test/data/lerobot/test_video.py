"""Encoding, probing, concatenating and decoding the dataset's mp4s, on real files."""
from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import pytest

from twinvla_ros.data.lerobot.format import DatasetError
from twinvla_ros.data.lerobot.video import VideoEncoder, concatenate_videos, decode_frames, probe_video
from twinvla_ros.data.lerobot.video import _thread_policies

HEIGHT, WIDTH, FPS = 64, 80, 20


def smooth_frame(index: int, seed: int = 0) -> np.ndarray:
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    red = 30 + (7 * index + 11 * seed) % 180 + 20 * x / WIDTH
    green = 40 + 150 * x / WIDTH
    blue = 50 + 120 * y / HEIGHT + 20 * seed
    return np.clip(np.stack([red, green, blue], axis=-1), 0, 255).astype(np.uint8)


def encode(path: Path, count: int, codec: str, seed: int = 0) -> list[np.ndarray]:
    frames = [smooth_frame(i, seed) for i in range(count)]
    with VideoEncoder(path, fps=FPS, width=WIDTH, height=HEIGHT, codec=codec) as encoder:
        for frame in frames:
            encoder.write(frame)
    return frames


def top_level_boxes(path: Path) -> list[str]:
    data, boxes, offset = path.read_bytes(), [], 0
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset:offset + 4], "big")
        boxes.append(data[offset + 4:offset + 8].decode("ascii"))
        if size == 1:                                                    # 64-bit size follows the type
            size = int.from_bytes(data[offset + 8:offset + 16], "big")
        offset += size if size else len(data)
    return boxes


def mean_abs_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.abs(a.astype(np.float64) - b.astype(np.float64)))) / 255


@pytest.mark.parametrize("codec, codec_name", [("av1", "av1"), ("h264", "h264")])
def test_encoded_video_probes_and_decodes_back_to_its_frames(tmp_path, codec, codec_name):
    path = tmp_path / f"{codec}.mp4"
    encoder = VideoEncoder(path, fps=FPS, width=WIDTH, height=HEIGHT, codec=codec)
    frames = [smooth_frame(i) for i in range(30)]
    for frame in frames:
        encoder.write(frame)
    assert encoder.close() == 30

    info = probe_video(path)
    assert (info.frames, info.width, info.height) == (30, WIDTH, HEIGHT)
    assert (info.codec, info.pix_fmt) == (codec_name, "yuv420p")
    assert info.fps == pytest.approx(FPS)
    assert info.duration_s == pytest.approx(30 / FPS, abs=1e-6)

    decoded = decode_frames(path, 0.0, 30, FPS)
    assert decoded.shape == (30, HEIGHT, WIDTH, 3) and decoded.dtype == np.uint8
    assert max(mean_abs_error(d, f) for d, f in zip(decoded, frames)) < 8 / 255

    # A window from the middle is the right window: each frame is nearer its own original than a neighbour.
    window = decode_frames(path, 13 / FPS, 5, FPS)
    for offset, frame in enumerate(window):
        own = mean_abs_error(frame, frames[13 + offset])
        assert own < mean_abs_error(frame, frames[12 + offset]) and own < mean_abs_error(frame, frames[14 + offset])


@pytest.mark.parametrize("codec", ["av1", "h264"])
def test_encoding_leaves_every_thread_at_the_callers_scheduling_policy(tmp_path, codec):
    """Run as root, SVT-AV1 moves the thread that opens it and the threads it starts to
    SCHED_FIFO 99 (as a normal user it cannot, and this passes either way)."""
    policy = os.sched_getscheduler(0)
    encoder = VideoEncoder(tmp_path / "a.mp4", fps=FPS, width=WIDTH, height=HEIGHT, codec=codec)
    encoder.write(smooth_frame(0))
    during = {tid: p for tid, p in _thread_policies().items() if p in (os.SCHED_FIFO, os.SCHED_RR)}
    for index in range(1, 5):
        encoder.write(smooth_frame(index))
    encoder.close()
    assert not during, f"threads at real-time priority while encoding: {during}"
    assert os.sched_getscheduler(0) == policy


def test_frames_are_at_i_over_fps_with_constant_rate_and_no_reordering(tmp_path):
    path = tmp_path / "h.mp4"
    encode(path, 12, "h264")
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = [p for p in container.demux(stream) if p.size]
        times = [float(p.pts * stream.time_base) for p in packets]
        assert [p.pts for p in packets] == [p.dts for p in packets]
        assert sum(p.is_keyframe for p in packets) == 6                  # g=2
    np.testing.assert_allclose(times, np.arange(12) / FPS, atol=1e-9)


def test_concatenation_copies_every_packet_and_returns_each_inputs_span(tmp_path):
    lengths = (10, 7, 12)
    inputs, originals = [], []
    for k, length in enumerate(lengths):
        inputs.append(tmp_path / f"in{k}.mp4")
        originals.append(encode(inputs[-1], length, "av1", seed=k))
    output = tmp_path / "out" / "joined.mp4"

    spans = concatenate_videos(inputs, output)

    np.testing.assert_allclose(spans, [(0.0, 0.5), (0.5, 0.85), (0.85, 1.45)], atol=1e-9)
    info = probe_video(output)
    assert info.frames == sum(lengths) and info.duration_s == pytest.approx(1.45, abs=1e-6)
    # Stream copy: the output's packets are the inputs' packets, byte for byte, in order.
    with av.open(str(output)) as joined:
        out_packets = [bytes(p) for p in joined.demux(joined.streams.video[0]) if p.size]
    in_packets = []
    for path in inputs:
        with av.open(str(path)) as source:
            in_packets += [bytes(p) for p in source.demux(source.streams.video[0]) if p.size]
    assert out_packets == in_packets
    boxes = top_level_boxes(output)
    assert boxes.index("moov") < boxes.index("mdat")                      # movflags=faststart
    for (start, _), frames in zip(spans, originals):
        decoded = decode_frames(output, start, len(frames), FPS)
        assert max(mean_abs_error(d, f) for d, f in zip(decoded, frames)) < 8 / 255


def test_concatenating_videos_of_different_sizes_is_refused(tmp_path):
    encode(tmp_path / "a.mp4", 4, "h264")
    with VideoEncoder(tmp_path / "b.mp4", fps=FPS, width=WIDTH + 2, height=HEIGHT, codec="h264") as encoder:
        for _ in range(4):
            encoder.write(np.zeros((HEIGHT, WIDTH + 2, 3), np.uint8))
    with pytest.raises(DatasetError, match="b.mp4"):
        concatenate_videos([tmp_path / "a.mp4", tmp_path / "b.mp4"], tmp_path / "out.mp4")


@pytest.mark.parametrize("width, height", [(81, 64), (80, 63), (0, 64)])
def test_odd_or_empty_sizes_are_refused(tmp_path, width, height):
    with pytest.raises(DatasetError, match="even"):
        VideoEncoder(tmp_path / "x.mp4", fps=FPS, width=width, height=height)


@pytest.mark.parametrize("frame", [np.zeros((HEIGHT, WIDTH + 2, 3), np.uint8), np.zeros((HEIGHT, WIDTH, 3), np.float32),
                                   np.zeros((HEIGHT, WIDTH), np.uint8)])
def test_frames_of_the_wrong_size_or_type_are_refused(tmp_path, frame):
    with VideoEncoder(tmp_path / "x.mp4", fps=FPS, width=WIDTH, height=HEIGHT, codec="h264") as encoder:
        encoder.write(smooth_frame(0))
        with pytest.raises(DatasetError, match="x.mp4: frame 1"):
            encoder.write(frame)


def test_an_exception_while_encoding_leaves_no_file(tmp_path):
    path = tmp_path / "x.mp4"
    with pytest.raises(RuntimeError):
        with VideoEncoder(path, fps=FPS, width=WIDTH, height=HEIGHT, codec="h264") as encoder:
            encoder.write(smooth_frame(0))
            raise RuntimeError("converter failed")
    assert not path.exists()


def test_decoding_a_missing_or_off_grid_frame_is_an_error(tmp_path):
    path = tmp_path / "x.mp4"
    encode(path, 10, "h264")
    with pytest.raises(DatasetError, match="ends before"):
        decode_frames(path, 8 / FPS, 3, FPS)
    with pytest.raises(DatasetError, match="no frame at"):
        decode_frames(path, 4 / FPS + 0.003, 1, FPS)
    assert decode_frames(path, 4 / FPS + 0.00005, 1, FPS).shape == (1, HEIGHT, WIDTH, 3)   # within 1e-4 s
