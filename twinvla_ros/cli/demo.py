"""The sim demo: the whole graph, one instruction, a video and a plot.

Runs anubis_policy (MuJoCo sim + arm driver + policy) one process per node, as `ros2 launch`
would, on an isolated DDS domain. A recorder node in this process waits for the robot and
cameras, publishes the instruction, records for `duration` seconds while printing progress
(from the nodes' /diagnostics), then writes:
  <out>/ego.mp4            the ego camera as the policy saw it
  <out>/trajectories.png   commanded (policy) vs reached (robot) EEF positions of both arms
  <out>/summary.json       rates, stalls, inference latency, tracking error
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from twinvla_ros.bringup.dds import isolate_dds
from twinvla_ros.bringup.graph import anubis_policy
from twinvla_ros.bringup.runner import GraphRunner, ProcessGraphRunner
from twinvla_ros.cli.waiting import wait_until
from twinvla_ros.data.media import plot_eef_tracking, write_video
from twinvla_ros.paths import DEFAULT_POLICY, resolve_checkpoint
from twinvla_ros.robot.bimanual import ARMS
from twinvla_ros.ros.demo_recorder import DemoRecorder


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


def _number(values: dict[str, str], key: str) -> float | None:
    return float(values[key]) if key in values else None


def run_demo(out: str | Path = "demo_out", duration: float = 20.0, task: str = DEFAULT_POLICY, instruction: str = "",
             checkpoint: str = "default", mode: str = "rtc", seed: int = 1000, log=print) -> dict:
    """instruction: empty for the task's own (lift_box: "pick up the red box")."""
    from twinvla_ros.sim.scene import task_spec

    out = Path(out)
    instruction = instruction or task_spec(task).instruction
    domain = isolate_dds()
    specs = anubis_policy(sim=True, checkpoint=checkpoint,
                          policy_node={"execution_mode": mode, "seed": seed}, sim_node={"seed": seed, "task": task})
    log(f"[demo] starting sim, arm driver and policy, one process each (DDS domain {domain}, localhost only)")
    with ProcessGraphRunner(specs) as graph, GraphRunner([]) as here:
        recorder = DemoRecorder(here.context)
        here.add_node(recorder)
        policy_status = "policy_node: policy"
        wait_until(lambda: recorder.policy_listening() and recorder.values(policy_status), 120.0,
                   "the policy node to come up", graph.failed)
        recorder.start()
        wait_until(lambda: len(recorder.frames) > 0 and all(recorder.series(recorder.reached)[s][0].size for s in ARMS),
                   60.0, "cameras and arm state", graph.failed)
        recorder.start()                       # the recording starts with the instruction
        recorder.send_instruction(instruction)
        log(f"[demo] instruction sent: '{instruction}'; recording {duration:.0f} s")
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < duration:
            time.sleep(min(2.0, duration - elapsed))
            if graph.failed():
                raise RuntimeError(f"demo: node process(es) exited: {graph.failed()}")
            p = recorder.values(policy_status)
            log(f"[demo] t={time.monotonic() - started:4.1f}s  actions {p.get('published_actions', '-'):>4}  "
                f"chunks {p.get('chunks', '-'):>3}  stalls {p.get('stall_ticks', '-'):>3}  "
                f"inference p50 {p.get('inference_p50_ms', '-')} ms  frames {len(recorder.frames)}")
        time.sleep(1.2)                        # one more diagnostics round with the final counts
        outcome = recorder.task_status()
        log(f"[demo] {task}: {'done' if outcome['success'] else 'not done'} ({outcome['reason']})")
        p = recorder.values(policy_status)
        sim = recorder.values("sim_node: simulation")
        summary = {
            "task": task, "instruction": instruction, "task_success": bool(outcome["success"]),
            "task_reason": outcome["reason"], "duration_s": duration, "execution_mode": mode,
            "checkpoint": checkpoint if resolve_checkpoint(checkpoint) else "embedded tiny model (random weights)",
            "published_actions": _number(p, "published_actions"), "chunks": _number(p, "chunks"),
            "stall_ticks": _number(p, "stall_ticks"), "mean_boundary_jump": _number(p, "mean_boundary_jump"),
            "mean_plan_change": _number(p, "mean_plan_change"),
            "inference_ms_p50": _number(p, "inference_p50_ms"), "inference_ms_p99": _number(p, "inference_p99_ms"),
            "control_period_ms_p50": _number(p, "tick_period_p50_ms"),
            "control_period_ms_p99": _number(p, "tick_period_p99_ms"),
            "sim_realtime_factor": _number(sim, "realtime_factor"),
            "ego_frames": len(recorder.frames),
        }
        commanded, reached = recorder.series(recorder.commanded), recorder.series(recorder.reached)
        frames = list(recorder.frames)
    summary["tracking_error_mm_after_0.3s"] = _tracking_error(commanded, reached)
    out.mkdir(parents=True, exist_ok=True)
    if frames:
        write_video(out / "ego.mp4", frames, len(frames) / (duration + 1.2))
    plot_eef_tracking(out / "trajectories.png", commanded, reached,
                      title=f"'{instruction}' ({mode}, {summary['checkpoint']})")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log(f"[demo] wrote {out / 'ego.mp4'}, {out / 'trajectories.png'}, {out / 'summary.json'}")
    return summary
