"""The sim demo: the whole graph in one process, one instruction, a video and a plot.

Runs anubis_policy (MuJoCo sim + arm driver + policy) on an isolated DDS domain, waits for the
robot and cameras, publishes the instruction, records for `duration` seconds while printing
progress, then writes:
  <out>/ego.mp4            the ego camera as the policy saw it
  <out>/trajectories.png   commanded (policy) vs reached (robot) EEF positions of both arms
  <out>/summary.json       rates, stalls, inference latency, tracking error
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import String

from twinvla_ros.bimanual import ARMS
from twinvla_ros.graph import anubis_policy
from twinvla_ros.media import plot_eef_tracking, write_video
from twinvla_ros.nodes.common import COMMAND_QOS, SENSOR_QOS, image_to_rgb, pose_to_matrix
from twinvla_ros.ros_env import isolate_dds
from twinvla_ros.runner import GraphRunner


class DemoRecorder(Node):
    """Records the ego camera and both arms' commanded and reached EEF positions."""

    def __init__(self, context):
        super().__init__("demo_recorder", context=context)
        self._lock = threading.Lock()
        self.t0: float | None = None
        self.frames: list[np.ndarray] = []
        self.commanded = {side: ([], []) for side in ARMS}
        self.reached = {side: ([], []) for side in ARMS}
        self.create_subscription(Image, "/cameras/ego/color/image_raw", self._on_image, SENSOR_QOS)
        for side in ARMS:
            self.create_subscription(PoseStamped, f"/{side}_arm/eef_target",
                                     lambda msg, s=side: self._on_pose(self.commanded[s], msg), COMMAND_QOS)
            self.create_subscription(PoseStamped, f"/{side}_arm/eef_pose",
                                     lambda msg, s=side: self._on_pose(self.reached[s], msg), COMMAND_QOS)
        self.instruction_pub = self.create_publisher(String, "/instruction", COMMAND_QOS)

    def start(self) -> None:
        with self._lock:
            self.t0 = time.monotonic()

    def _on_image(self, msg: Image) -> None:
        with self._lock:
            if self.t0 is not None:
                self.frames.append(image_to_rgb(msg))

    def _on_pose(self, store, msg: PoseStamped) -> None:
        with self._lock:
            if self.t0 is not None:
                store[0].append(time.monotonic() - self.t0)
                store[1].append(pose_to_matrix(msg.pose)[:3, 3])

    def series(self, which) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        with self._lock:
            return {side: (np.array(t), np.array(xyz).reshape(-1, 3)) for side, (t, xyz) in which.items()}


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"demo: timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def _tracking_error(commanded, reached) -> dict[str, float]:
    """Mean distance between each commanded target and the pose reached 0.3 s later (mm)."""
    out = {}
    for side in ARMS:
        (tc, xc), (tr, xr) = commanded[side], reached[side]
        if len(tc) < 2 or len(tr) < 2:
            continue
        later = np.clip(np.searchsorted(tr, tc + 0.3), 0, len(tr) - 1)
        out[side] = float(np.linalg.norm(xr[later] - xc, axis=1).mean() * 1e3)
    return out


def run_demo(out: str | Path = "demo_out", duration: float = 20.0, instruction: str = "hand over the box",
             checkpoint: str = "", mode: str = "rtc", seed: int = 0, log=print) -> dict:
    out = Path(out)
    domain = isolate_dds()
    specs = anubis_policy(sim=True, checkpoint=checkpoint,
                          policy_node={"execution_mode": mode, "seed": seed}, sim_node={"seed": seed})
    log(f"[demo] starting sim + arm driver + policy (DDS domain {domain}, localhost only)")
    with GraphRunner(specs) as runner:
        recorder = DemoRecorder(runner.context)
        runner.add_node(recorder)
        policy = runner.node("policy_node")
        _wait(lambda: policy.gate.check(policy._ros_now()).ok, 60.0, "cameras and arm state to reach the policy")
        _wait(lambda: recorder.instruction_pub.get_subscription_count() > 0, 10.0, "the policy's /instruction subscription")
        recorder.start()
        recorder.instruction_pub.publish(String(data=instruction))
        log(f"[demo] instruction sent: '{instruction}'; recording {duration:.0f} s")
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < duration:
            time.sleep(min(2.0, duration - elapsed))
            stats = policy.scheduler.stats
            latencies = np.array(policy.worker.latencies)
            p50 = f"{np.percentile(latencies, 50) * 1e3:.0f} ms" if latencies.size else "-"
            log(f"[demo] t={time.monotonic() - started:4.1f}s  actions {policy.published_actions:4d}  "
                f"chunks {stats.chunks_accepted:3d}  stalls {stats.stall_ticks:3d}  inference p50 {p50}  "
                f"frames {len(recorder.frames)}")
        stats = policy.scheduler.stats
        latencies = np.array(policy.worker.latencies)
        tick_periods = policy.tick_meter.periods()
        sim = runner.node("sim_node")
        summary = {
            "instruction": instruction, "duration_s": duration, "execution_mode": mode,
            "checkpoint": checkpoint or "embedded tiny demo model (random weights)",
            "published_actions": policy.published_actions, "chunks": stats.chunks_accepted,
            "stall_ticks": stats.stall_ticks, "startup_ticks": stats.startup_ticks,
            "mean_boundary_jump": stats.mean_boundary_jump, "mean_plan_change": stats.mean_plan_change,
            "inference_ms_p50": float(np.percentile(latencies, 50) * 1e3) if latencies.size else None,
            "inference_ms_p99": float(np.percentile(latencies, 99) * 1e3) if latencies.size else None,
            "control_period_ms_p50": float(np.percentile(tick_periods, 50) * 1e3) if tick_periods.size else None,
            "control_period_ms_p99": float(np.percentile(tick_periods, 99) * 1e3) if tick_periods.size else None,
            "sim_realtime_factor": sim._realtime_factor,
            "ego_frames": len(recorder.frames),
        }
        commanded, reached = recorder.series(recorder.commanded), recorder.series(recorder.reached)
        frames = list(recorder.frames)
    summary["tracking_error_mm_after_0.3s"] = _tracking_error(commanded, reached)
    out.mkdir(parents=True, exist_ok=True)
    if frames:
        fps = len(frames) / duration
        write_video(out / "ego.mp4", frames, fps)
    plot_eef_tracking(out / "trajectories.png", commanded, reached,
                      title=f"'{instruction}' ({mode}, {summary['checkpoint']})")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log(f"[demo] wrote {out / 'ego.mp4'}, {out / 'trajectories.png'}, {out / 'summary.json'}")
    return summary
