"""Records until killed: images (320x240 rgb8) and joint states offered as a 30 Hz / 100 Hz
robot would, into DATASET_DIR. Run by test_bag_recovery's crash test, which kills it with SIGKILL."""
import sys
import time

import bag_messages as m
from twinvla_ros.data.bags import EpisodeRecorder, RecordingDirectory, TopicSpec

CAMERA, JOINTS = "/cameras/ego/color/image_raw", "/joint_states"


def main(root: str) -> None:
    recorder = EpisodeRecorder(RecordingDirectory(root, min_free_bytes=0),
                               [TopicSpec(CAMERA, m.IMAGE), TopicSpec(JOINTS, m.JOINTS)])
    recorder.start("crash test", config={"camera": [320, 240]}, operator_note="killed on purpose")
    print("recording", flush=True)
    for k in range(10**9):
        now = time.time_ns()
        recorder.offer(JOINTS, m.cdr(m.joints(now, seed=k), m.JOINTS), now)
        if k % 3 == 0:
            recorder.offer(CAMERA, m.cdr(m.image(now, width=320, height=240, seed=k), m.IMAGE), now)
        time.sleep(0.01)   # the robot's pace, not a wait for anything


if __name__ == "__main__":
    main(sys.argv[1])
