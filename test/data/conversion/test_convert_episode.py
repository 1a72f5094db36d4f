"""One bag -> one staged episode, checked against the closed-form streams the bag was made of
(episode_bags.py): the state and action at each tick, the frame each tick shows, the
rejections with their reasons."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation, Slerp

from episode_bags import (CAMERAS, DESCRIPTION, NS, T0, TARGET_LEAD_S, EpisodeSpec, arm_joints, camera_stamps,
                          eef_position, eef_rotation, frame_level, gripper_command, gripper_opening, write_episode)
from twinvla_ros.data.bags.files import update_sidecar
from twinvla_ros.data.conversion import ConversionOptions, EpisodeRejected, convert_episode
from twinvla_ros.data.lerobot.format import IMAGE_KEYS
from twinvla_ros.data.lerobot.video import decode_frames, probe_video
from twinvla_ros.robot.bimanual import unpack
from twinvla_ros.robot.kinematics import ArmKinematics

OPTIONS = ConversionOptions(fps=20, image_size=(32, 48), codec="h264")


def convert(tmp_path, spec=EpisodeSpec(), options=OPTIONS):
    bag = write_episode(tmp_path / "demos", spec)
    return convert_episode(bag, tmp_path / "staging", options)


def tick_seconds(spec, episode, fps=20):
    """The ticks' times since the bag's T0: the timeline starts when the last stream starts."""
    start = episode.report["start_ns"] - T0
    return (start + (np.arange(episode.length) * NS) // fps) / NS


def expected_length(spec, episode, fps):
    """Ticks from the last stream's start to the first stream's end (a camera's last frame)."""
    start = episode.report["start_ns"] - T0
    end = min([int(spec.duration_s * NS)] + [int(camera_stamps(spec, c)[-1]) for c in CAMERAS])
    return (end - start) * fps // NS + 1


def test_state_and_action_equal_the_recorded_paths_at_every_tick(tmp_path):
    spec = EpisodeSpec(duration_s=2.0)
    episode = convert(tmp_path, spec)
    ticks = tick_seconds(spec, episode)
    latest_camera_start = max(camera_stamps(spec, c)[0] for c in CAMERAS) / NS
    assert ticks[0] == pytest.approx(latest_camera_start, abs=1e-9)
    assert episode.length == expected_length(spec, episode, 20)
    assert episode.state.dtype == np.float32 and episode.action.dtype == np.float32
    for k in (0, 7, episode.length // 2, episode.length - 1):
        t = ticks[k]
        state, action = unpack(episode.state[k]), unpack(episode.action[k])
        for side, arm_state, arm_action in zip(("left", "right"), state, action):
            assert np.abs(arm_state.position - eef_position(side, t)).max() < 1e-6
            assert np.abs(arm_state.rotation - eef_rotation(side, t)).max() < 1e-5
            # Gripper: the latest /joint_states sample at or before the tick (50 Hz samples).
            held = np.floor(t * 50 + 1e-9) / 50
            assert arm_state.gripper == pytest.approx(gripper_opening(side, held), abs=1e-6)
            assert np.abs(arm_action.position - eef_position(side, t + TARGET_LEAD_S)).max() < 1e-6
            assert np.abs(arm_action.rotation - eef_rotation(side, t + TARGET_LEAD_S)).max() < 1e-5
            assert arm_action.gripper == pytest.approx(gripper_command(side, held), abs=1e-6)


def test_each_video_frame_is_the_latest_recorded_frame_at_or_before_its_tick(tmp_path):
    spec = EpisodeSpec(duration_s=1.5, camera_hz=8.0)         # slower than the rows: frames repeat
    episode = convert(tmp_path, spec)
    ticks_ns = np.round(tick_seconds(spec, episode) * NS).astype(np.int64)
    for camera in CAMERAS:
        path = episode.videos[IMAGE_KEYS[camera]]
        info = probe_video(path)
        assert (info.frames, info.height, info.width) == (episode.length, 32, 48)
        frames = decode_frames(path, 0.0, episode.length, 20)
        stamps = camera_stamps(spec, camera)
        expected = [frame_level(int(np.searchsorted(stamps, tick, side="right") - 1)) for tick in ticks_ns]
        measured = frames.reshape(episode.length, -1).mean(axis=1)
        assert np.abs(measured - expected).max() < 3, camera
    ages = [episode.report["camera_state_skew_s"][c]["max"] for c in CAMERAS]
    assert max(ages) == episode.report["oldest_frame"]["age_s"] and 0 < max(ages) < 1 / 8 + 0.004


def test_jpeg_frames_and_a_resize_to_the_dataset_size(tmp_path):
    episode = convert(tmp_path, EpisodeSpec(compressed=True, camera_size=(96, 128)))
    assert episode.report["source_image_size"]["ego"] == [96, 128]
    frames = decode_frames(episode.videos[IMAGE_KEYS["ego"]], 0.0, 3, 20)
    assert frames.shape == (3, 32, 48, 3)


def test_without_eef_poses_the_state_is_forward_kinematics_of_the_joint_states(tmp_path):
    spec = EpisodeSpec(with_poses=False, skip_topics=("/left_arm/eef_pose", "/right_arm/eef_pose"))
    episode = convert(tmp_path, spec)
    assert episode.report["state_source"] == "joint_states (FK)"
    ticks = tick_seconds(spec, episode)
    for side, arm in zip(("left", "right"), range(2)):
        kinematics = ArmKinematics(DESCRIPTION, side)
        for k in (0, episode.length - 1):
            expected = kinematics.fk(arm_joints(side, ticks[k]))
            got = unpack(episode.state[k])[arm]
            assert np.abs(got.position - expected[:3, 3]).max() < 2e-4     # chords of 50 Hz samples
            assert np.abs(got.rotation - expected[:3, :3]).max() < 2e-3


def test_joint_space_teleop_commands_become_eef_actions_through_the_urdf(tmp_path):
    spec = EpisodeSpec(joint_command=True)
    episode = convert(tmp_path, spec)
    assert episode.report["action_source"] == "joint_command (FK)"
    ticks = tick_seconds(spec, episode)
    times = np.arange(0, spec.duration_s + 1e-9, 1 / spec.target_hz)
    for side, arm in zip(("left", "right"), range(2)):
        kinematics = ArmKinematics(DESCRIPTION, side)
        poses = np.array([kinematics.fk(arm_joints(side, t + TARGET_LEAD_S)) for t in times])
        k = episode.length // 2
        expected_xyz = [np.interp(ticks[k], times, poses[:, i, 3]) for i in range(3)]
        expected_rot = Slerp(times, Rotation.from_matrix(poses[:, :3, :3]))(ticks[k]).as_matrix()
        got = unpack(episode.action[k])[arm]
        assert np.abs(got.position - expected_xyz).max() < 1e-6
        assert np.abs(got.rotation - expected_rot).max() < 1e-5
        held = np.floor(ticks[k] * 50 + 1e-9) / 50
        assert got.gripper == pytest.approx(gripper_command(side, held), abs=1e-6)


def test_a_silent_camera_rejects_the_episode_naming_it_and_where(tmp_path):
    with pytest.raises(EpisodeRejected, match=r"/cameras/ego/color/image_raw is silent for 0\.8\d s at 0\.5\d s"):
        convert(tmp_path, EpisodeSpec(camera_silence=(0.6, 1.3)))
    relaxed = ConversionOptions(fps=20, image_size=(32, 48), codec="h264", max_gap_s=1.0)
    episode = convert(tmp_path / "again", EpisodeSpec(camera_silence=(0.6, 1.3)), relaxed)
    assert episode.report["largest_gap_s"]["/cameras/ego/color/image_raw"] > 0.6


def without_task(bag):
    """A bag from a recorder that stored no task text (ours refuses to record one)."""
    update_sidecar(bag, task="")
    return bag


@pytest.mark.parametrize("spec, reason", [
    (EpisodeSpec(success=False), "marked as a failed demonstration"),
    (EpisodeSpec(skip_topics=("/cameras/wrist_left/color/image_raw",)), "wrist_left camera"),
    (EpisodeSpec(skip_topics=("/left_arm/gripper_target",)), "no commanded targets for both arms"),
], ids=["failed", "camera-missing", "no-targets"])
def test_episodes_left_out_say_why(tmp_path, spec, reason):
    with pytest.raises(EpisodeRejected, match=reason):
        convert(tmp_path, spec)


def test_an_episode_without_task_text_needs_one_given(tmp_path):
    bag = without_task(write_episode(tmp_path / "demos", EpisodeSpec(success=False)))
    with pytest.raises(EpisodeRejected, match="no task text recorded; pass --task"):
        convert_episode(bag, tmp_path / "staging", OPTIONS)
    options = ConversionOptions(fps=20, image_size=(32, 48), codec="h264", task="fold the towel", include_failed=True)
    episode = convert_episode(bag, tmp_path / "staging", options)
    assert episode.task == "fold the towel" and episode.report["success"] is False


@pytest.mark.parametrize("fps", [10, 30])
def test_other_rates_give_rows_at_that_rate(tmp_path, fps):
    spec = EpisodeSpec(duration_s=1.5)
    options = ConversionOptions(fps=fps, image_size=(32, 48), codec="h264")
    episode = convert(tmp_path, spec, options)
    assert episode.length == expected_length(spec, episode, fps)
    ticks = tick_seconds(spec, episode, fps)
    k = episode.length - 1
    assert np.abs(unpack(episode.state[k])[0].position - eef_position("left", ticks[k])).max() < 1e-6
    assert probe_video(episode.videos[IMAGE_KEYS["ego"]]).frames == episode.length


@pytest.mark.parametrize("bad", [dict(fps=0), dict(image_size=(31, 48)), dict(codec="vp9"), dict(max_gap_s=0)])
def test_bad_options_are_refused(bad):
    with pytest.raises(ValueError):
        ConversionOptions(**bad)
