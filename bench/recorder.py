#!/usr/bin/env python3
"""Benchmark of the recorder node under the robot's real load: prints `name=value` lines.

For each stream kind another process publishes three 640x480 camera streams at 30 fps
(sensor-data QoS, as camera_node does) and /joint_states at 100 Hz (reliable) for `--seconds`;
recorder_node runs in a process of its own and records one episode of it. Kinds: `raw` (rgb8,
Fast DDS's default transports), `raw_large_data` (rgb8, both processes with
config/fastdds_large_data.xml: a shared-memory segment that holds a whole image), `jpeg`.

  <kind>_published_messages        messages the load process published (all topics)
  <kind>_dropped_messages          published - recorded: lost in DDS or in the recorder's queue (goal 0)
  <kind>_recorder_queue_drops      of those, dropped by the recorder's bounded queue (disk too slow)
  <kind>_recorder_cpu_percent      recorder process CPU over the episode, % of one core
  <kind>_write_mb_per_s            bag bytes written per second of episode
  <kind>_episode_stop_latency_s    stop request -> bag closed (the service answers after the close; goal < 1)
  scripted_expert_success_rate     from bench/scripted_expert.py (lift_box, 50 seeds) with --expert

    python bench/recorder.py [--seconds 60] [--kinds raw raw_large_data jpeg] [--expert]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from common import machine_line  # also puts the checkout on sys.path

WIDTH, HEIGHT, FPS, JOINT_RATE = 640, 480, 30, 100
CAMERAS = ("ego", "wrist_left", "wrist_right")
KINDS = ("raw", "raw_large_data", "jpeg")

# The load: prebuilt messages re-stamped and published on wall-clock schedules from SIGUSR1 (the
# episode has started) to SIGINT; then it prints the number published per topic.
LOAD = textwrap.dedent("""
    import json, signal, sys, time
    import numpy as np, rclpy
    from sensor_msgs.msg import CompressedImage, Image, JointState
    from twinvla_ros.ros.messages import rgb_to_compressed, rgb_to_image
    from twinvla_ros.ros.qos import COMMAND_QOS, SENSOR_QOS
    kind, width, height, fps, joint_rate = sys.argv[1], *map(int, sys.argv[2:6])
    rclpy.init()
    node = rclpy.create_node("recorder_bench_load")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    image = np.stack([(xx * 255 // width), (yy * 255 // height), ((xx + yy) % 256)], -1).astype(np.uint8)
    image = np.clip(image + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)   # sensor-like noise
    cameras = ("ego", "wrist_left", "wrist_right")
    if kind == "raw":
        template = rgb_to_image(image, node.get_clock().now().to_msg(), "camera")
        topics = {c: f"/cameras/{c}/color/image_raw" for c in cameras}
        pubs = {c: node.create_publisher(Image, t, SENSOR_QOS) for c, t in topics.items()}
    else:
        template = rgb_to_compressed(image, node.get_clock().now().to_msg(), "camera", 90)
        topics = {c: f"/cameras/{c}/color/image_raw/compressed" for c in cameras}
        pubs = {c: node.create_publisher(CompressedImage, t, SENSOR_QOS) for c, t in topics.items()}
    joints = node.create_publisher(JointState, "/joint_states", COMMAND_QOS)
    names = [f"{s}_joint{i}" for s in ("left", "right") for i in range(1, 7)] + ["left_gripper", "right_gripper"]
    counts = {t: 0 for t in [*topics.values(), "/joint_states"]}
    stop, go = [], []
    signal.signal(signal.SIGINT, lambda *a: stop.append(1))
    signal.signal(signal.SIGUSR1, lambda *a: go.append(1))
    print("ready", flush=True)
    while not go and not stop:      # the publishers exist (the recorder can discover them); wait for the episode
        time.sleep(0.01)
    start = time.monotonic(); next_frame = next_joint = start
    while not stop:
        now = time.monotonic()
        if now >= next_frame:
            template.header.stamp = node.get_clock().now().to_msg()
            for c in cameras:
                pubs[c].publish(template); counts[topics[c]] += 1
            next_frame += 1.0 / fps
        if now >= next_joint:
            msg = JointState(name=names, position=[0.0] * 14, velocity=[0.0] * 14, effort=[0.0] * 14)
            msg.header.stamp = node.get_clock().now().to_msg()
            joints.publish(msg); counts["/joint_states"] += 1
            next_joint += 1.0 / joint_rate
        time.sleep(max(0.0, min(next_frame, next_joint) - time.monotonic()))
    print(json.dumps(counts), flush=True)
    node.destroy_node(); rclpy.shutdown()
""")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_kind(kind: str, seconds: float) -> dict[str, float]:
    from twinvla_ros.bringup.dds import isolate_dds
    from twinvla_ros.bringup.graph import RECORDER, teleop_record
    from twinvla_ros.bringup.runner import GraphRunner, ProcessGraphRunner
    from twinvla_ros.cli.waiting import wait_until
    from twinvla_ros.data.bags import bag_summary
    from twinvla_ros.ros.episode_client import EpisodeClient

    isolate_dds()
    env = dict(os.environ)
    if kind == "raw_large_data":
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(Path(__file__).resolve().parent.parent / "config"
                                                   / "fastdds_large_data.xml")
    suffix = "/compressed" if kind == "jpeg" else ""
    topics = [f"/cameras/{c}/color/image_raw{suffix}" for c in CAMERAS] + ["/joint_states"]
    with tempfile.TemporaryDirectory(prefix="recorder_bench_") as tmp:
        recorder = [s for s in teleop_record(sim=False, task="benchmark load", output_dir=tmp,
                                             recorder_node={"topics": topics, "min_rates": [""],
                                                            "publish_task": False, "min_free_gb": 1.0})
                    if s.name == RECORDER.name]
        load = subprocess.Popen([sys.executable, "-c", LOAD, "jpeg" if kind == "jpeg" else "raw", str(WIDTH),
                                 str(HEIGHT), str(FPS), str(JOINT_RATE)],
                                stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent, env=env)
        try:
            assert load.stdout.readline().strip() == "ready"
            with ProcessGraphRunner(recorder, env=env) as process, GraphRunner([]) as here:
                client = EpisodeClient(context=here.context)
                here.add_node(client)
                wait_until(lambda: client.recorder_status()[1].get("topics") == str(len(topics)), 60.0,
                           "the recorder to subscribe to every stream", process.failed)
                pid = process.processes[RECORDER.name].pid
                started = client.start_episode()
                load.send_signal(signal.SIGUSR1)
                cpu0, t0 = _cpu_seconds(pid), time.monotonic()
                time.sleep(seconds)
                load.send_signal(signal.SIGINT)      # the load stops; its counts are final
                published = json.loads(load.communicate(timeout=30)[0].strip().splitlines()[-1])
                time.sleep(0.5)                      # the last messages in flight reach the recorder
                cpu1, t1 = _cpu_seconds(pid), time.monotonic()
                stop_start = time.monotonic()
                summary = client.stop_episode()
                stop_latency = time.monotonic() - stop_start
            recorded = {topic: info.count for topic, info in bag_summary(started["path"]).topics.items()}
            for topic, count in published.items():
                print(f"# {kind} {topic}: published {count}, recorded {recorded.get(topic, 0)}")
        finally:
            if load.poll() is None:
                load.kill()
    total = sum(published.values())
    return {
        f"{kind}_published_messages": total,
        f"{kind}_dropped_messages": total - sum(recorded.get(t, 0) for t in published),
        f"{kind}_recorder_queue_drops": summary["dropped"],
        f"{kind}_recorder_cpu_percent": 100.0 * (cpu1 - cpu0) / (t1 - t0),
        f"{kind}_write_mb_per_s": summary["write_mb_per_s"],
        f"{kind}_episode_stop_latency_s": stop_latency,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--expert", action="store_true", help="also run bench/scripted_expert.py (50 seeds)")
    args = parser.parse_args()
    print(machine_line())
    print(f"# {len(CAMERAS)} cameras {WIDTH}x{HEIGHT} at {FPS} fps + /joint_states at {JOINT_RATE} Hz "
          f"from another process, {args.seconds:.0f} s per kind")
    for kind in args.kinds:
        for name, value in run_kind(kind, args.seconds).items():
            print(f"{name}={value:.3f}" if isinstance(value, float) else f"{name}={value}", flush=True)
    if args.expert:
        subprocess.run([sys.executable, str(Path(__file__).with_name("scripted_expert.py"))], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
