"""Closed-loop evaluation of a policy in the sim through the running node graph (sim node, arm
driver, policy node), and its report.

Per episode: the policy stops, the arms go home, the sim resets with the episode's seed (the
object poses follow from it), the task's instruction goes out on /instruction, and the sim's
success check (`~/task_status`) is polled until it holds or `max_seconds` pass; then the policy
stops. The ego camera's frames of the first `videos` episodes are kept for their videos, and
the first and last frame of every episode for the contact sheet.

`evaluate(client, ...)` drives any client with the methods of
twinvla_ros.ros.evaluation_client.EvaluationClient (the ROS side lives there: layer 2).
Results: success rate with a 95 % Wilson score interval (honest at 0 or N successes out of N,
unlike the normal approximation), mean time to success over the successes, and per episode the
seed, outcome, the success check's reason and the time.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

POLL_PERIOD_S = 0.25
# What the report keeps of the policy node's diagnostics at the end (its counters and means run
# over the whole evaluation): chunk execution (the chunk-boundary jump and the plan change of
# twinvla_ros.execution.scheduler, m + rad + gripper in the 20-D action), holds, latency.
POLICY_FIGURES = ("chunks", "stall_ticks", "input_holds", "held_actions", "mean_boundary_jump", "mean_plan_change",
                  "inference_p50_ms", "inference_p99_ms", "latency_estimate_s")


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """The score interval of a binomial proportion (95 % for the default z)."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    # At 0 or N successes the bound is exactly 0 or 1 (centre and half then cancel in theory).
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high


@dataclass
class EpisodeOutcome:
    seed: int
    success: bool
    reason: str                        # the sim's success check, as it last said
    seconds: float                     # from the instruction to success, or to the time limit
    initial_objects: dict = field(default_factory=dict)   # name -> [x y z qw qx qy qz] after the reset
    video: str | None = None


@dataclass
class EvaluationReport:
    task: str
    instruction: str
    checkpoint: str
    execution_mode: str
    max_seconds: float
    episodes: list[EpisodeOutcome] = field(default_factory=list)
    contact_sheet: str | None = None
    policy_settings: dict = field(default_factory=dict)     # policy node parameters set for the evaluation
    policy: dict = field(default_factory=dict)              # POLICY_FIGURES as the policy node last reported them

    @property
    def successes(self) -> int:
        return sum(e.success for e in self.episodes)

    @property
    def success_rate(self) -> float:
        return self.successes / len(self.episodes) if self.episodes else 0.0

    @property
    def confidence_interval(self) -> tuple[float, float]:
        return wilson_interval(self.successes, len(self.episodes))

    @property
    def mean_time_to_success_s(self) -> float | None:
        times = [e.seconds for e in self.episodes if e.success]
        return float(np.mean(times)) if times else None

    def to_json(self) -> dict:
        low, high = self.confidence_interval
        return {"task": self.task, "instruction": self.instruction, "checkpoint": self.checkpoint,
                "execution_mode": self.execution_mode, "max_seconds": self.max_seconds,
                "num_episodes": len(self.episodes), "successes": self.successes,
                "success_rate": self.success_rate, "confidence_interval_95": [low, high],
                "mean_time_to_success_s": self.mean_time_to_success_s,
                "contact_sheet": self.contact_sheet, "policy_settings": self.policy_settings,
                "policy": self.policy, "episodes": [asdict(e) for e in self.episodes]}

    def summary(self) -> str:
        low, high = self.confidence_interval
        mean = self.mean_time_to_success_s
        return (f"{self.task}: {self.successes}/{len(self.episodes)} succeeded, success rate "
                f"{self.success_rate:.2f} (95 % CI {low:.2f}-{high:.2f}), mean time to success "
                + (f"{mean:.1f} s" if mean is not None else "- (no success)"))


def run_episode(client, seed: int, instruction: str, max_seconds: float, keep_frames: bool) -> tuple[EpisodeOutcome, list]:
    """One rollout; returns its outcome and the ego frames kept [(seconds, rgb), ...]."""
    client.stop_policy()
    client.go_home()
    objects = client.reset_sim(seed)["objects"]
    client.start_frames(keep_all=keep_frames)
    client.say(instruction)
    started = time.monotonic()
    status = client.task_status()
    while not status["success"] and time.monotonic() - started < max_seconds:
        time.sleep(POLL_PERIOD_S)
        status = client.task_status()
    seconds = time.monotonic() - started
    client.stop_policy()
    frames = client.stop_frames()
    outcome = EpisodeOutcome(seed, bool(status["success"]), str(status["reason"]), round(seconds, 2), objects)
    return outcome, frames


def evaluate(client, *, task: str, instruction: str, seeds: list[int], max_seconds: float, out: Path,
             checkpoint: str, execution_mode: str, videos: int = 3, policy_settings: dict | None = None,
             progress: Callable[[int, EpisodeOutcome], None] | None = None) -> EvaluationReport:
    """Every seed once, in order; writes out/eval_report.json, out/videos/seed_S.mp4 for the first
    `videos` episodes and out/contact_sheet.png."""
    from twinvla_ros.data.media import write_video

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = EvaluationReport(task, instruction, checkpoint, execution_mode, max_seconds,
                              policy_settings=dict(policy_settings or {}))
    ends: list[tuple[EpisodeOutcome, np.ndarray, np.ndarray]] = []
    for index, seed in enumerate(seeds):
        outcome, frames = run_episode(client, seed, instruction, max_seconds, keep_frames=index < videos)
        if index < videos and len(frames) >= 2:
            duration = frames[-1][0] - frames[0][0]
            fps = (len(frames) - 1) / duration if duration > 0 else 10.0
            outcome.video = str(write_video(out / "videos" / f"seed_{seed}.mp4", [f for _, f in frames], fps))
        if frames:
            ends.append((outcome, frames[0][1], frames[-1][1]))
        report.episodes.append(outcome)
        values = client.policy_diagnostics()
        report.policy = {key: _number(values[key]) for key in POLICY_FIGURES if key in values}
        if progress is not None:
            progress(index, outcome)
        (out / "eval_report.json").write_text(json.dumps(report.to_json(), indent=2) + "\n")   # a partial run says what it has
    if ends:
        report.contact_sheet = str(contact_sheet(ends, out / "contact_sheet.png", report.summary()))
    (out / "eval_report.json").write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return report


def _number(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def contact_sheet(ends: list[tuple[EpisodeOutcome, np.ndarray, np.ndarray]], path: Path, title: str) -> Path:
    """One row per episode: its first and last ego frame, labelled with the seed and outcome."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(ends), 2, figsize=(7.2, 2.6 * len(ends) + 0.6), squeeze=False)
    for row, (outcome, first, last) in enumerate(ends):
        verdict = "success" if outcome.success else "failed"
        for column, (frame, when) in enumerate(((first, "first"), (last, f"last, {outcome.seconds:.1f} s"))):
            axis = axes[row][column]
            axis.imshow(frame)
            axis.set_xticks([])
            axis.set_yticks([])
            axis.set_title(f"seed {outcome.seed}: {verdict} ({when})", fontsize=8,
                           color="tab:green" if outcome.success else "tab:red")
    figure.suptitle(title, fontsize=9)
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.5 / figure.get_figheight()))   # room for the title
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
