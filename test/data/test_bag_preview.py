"""Episode previews from real bags: the video holds every recorded frame of the camera, at the
rate they arrived, with the pictures the bag holds; the plot is written; raw and JPEG frames."""
import av
import cv2
import numpy as np
import pytest

from bag_messages import COMPRESSED, IMAGE, POSE, T, cdr, header, pose
from twinvla_ros.cli.main import main as cli
from twinvla_ros.data.bags import EpisodeRecorder, RecordingDirectory, RecordingError, TopicSpec, episode_preview

FRAMES, WIDTH, HEIGHT = 12, 64, 48
FRAME_NS = 50_000_000            # 20 fps


def frame(i: int) -> np.ndarray:
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    image[:, :, 0] = 20 * i          # red grows frame by frame
    image[:, : WIDTH // 2, 2] = 200  # a blue left half
    return image


def record(root, compressed: bool, with_poses: bool = True):
    topic = "/cameras/ego/color/image_raw" + ("/compressed" if compressed else "")
    topics = [TopicSpec(topic, COMPRESSED if compressed else IMAGE), TopicSpec("/right_arm/eef_pose", POSE),
              TopicSpec("/right_arm/eef_target", POSE)]
    clock = iter(range(0, 10**12, FRAME_NS // 4))
    recorder = EpisodeRecorder(RecordingDirectory(root, min_free_bytes=0), topics, clock_ns=lambda: next(clock))
    recorder.start("lift the box", config={"robot": "test"})
    for i in range(FRAMES):
        stamp = i * FRAME_NS
        if compressed:
            ok, jpeg = cv2.imencode(".jpg", frame(i)[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
            msg = T[COMPRESSED](header=header(stamp), format="rgb8; jpeg compressed bgr8", data=jpeg.ravel())
        else:
            msg = T[IMAGE](header=header(stamp), height=HEIGHT, width=WIDTH, encoding="rgb8", is_bigendian=0,
                           step=WIDTH * 3, data=frame(i).ravel())
        assert recorder.offer(topic, cdr(msg, COMPRESSED if compressed else IMAGE), stamp)
        if with_poses:
            recorder.offer("/right_arm/eef_pose", cdr(pose(stamp, seed=i), POSE), stamp)
            recorder.offer("/right_arm/eef_target", cdr(pose(stamp, seed=100 + i), POSE), stamp)
    return recorder.stop().path


def video_frames(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate)
        return [f.to_ndarray(format="rgb24") for f in container.decode(stream)], rate


@pytest.mark.parametrize("compressed", [False, True], ids=["raw", "jpeg"])
def test_the_video_shows_every_recorded_frame(tmp_path, compressed):
    bag = record(tmp_path / "demos", compressed)
    preview = episode_preview(bag, tmp_path / "out")
    assert preview.frames == FRAMES and preview.fps == pytest.approx(20.0)
    decoded, rate = video_frames(preview.video)
    assert len(decoded) == FRAMES and rate == pytest.approx(20.0)
    for i, image in enumerate(decoded):
        assert abs(float(image[:, WIDTH // 2:, 0].mean()) - 20 * i) < 8, i        # the frame's own picture
        assert image[:, : WIDTH // 4, 2].mean() > 150 and image[:, -WIDTH // 4:, 2].mean() < 50
    assert preview.plot.stat().st_size > 10_000


def test_a_bag_without_the_camera_gives_the_plot_only_and_bad_paths_say_why(tmp_path, capsys):
    bag = record(tmp_path / "demos", compressed=False)
    preview = episode_preview(bag, tmp_path / "out", camera="wrist_left")
    assert preview.video is None and preview.frames == 0 and preview.plot is not None
    with pytest.raises(RecordingError):
        episode_preview(tmp_path / "empty_folder_that_is_no_bag", tmp_path / "out")
    assert cli(["bag", "preview", str(tmp_path / "demos"), "--out", str(tmp_path / "cli")]) == 0
    assert "12 ego frames at 20.0 fps" in capsys.readouterr().out
    assert (tmp_path / "cli" / f"{bag.name}_ego.mp4").exists()
