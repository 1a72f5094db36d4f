"""`twinvla-ros record`: demonstrations into episode bags, by keyboard or unattended in the sim.

  twinvla-ros record --task "fold the towel" --out demos/towel          the robot; keys drive it
  twinvla-ros record --sim --task lift_box --episodes 50 --out demos/lift   the sim's scripted expert
  ros2 run twinvla_ros record_keys                    the keys for a graph started by ros2 launch

Keys (a terminal, SSH works): right arrow ends the episode, left arrow discards it and records
it again, Esc ends the episode and quits; after an episode y / n marks it a success / failure.
Between episodes a reset period (`--reset-time`) lets the operator put the scene back; right
arrow or space skips it.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Callable, Protocol, TextIO

from twinvla_ros.cli.waiting import wait_until


class EpisodeControl(Protocol):
    def start_episode(self) -> dict: ...
    def stop_episode(self) -> dict: ...
    def discard_episode(self) -> dict: ...
    def mark_success(self, success: bool) -> None: ...
    def live_rates(self) -> dict[str, float]: ...


def format_summary(summary: dict) -> str:
    lines = [f"episode {summary['index']}: {summary['duration_s']:.1f} s, {summary['dropped']} dropped -> "
             f"{summary['path']}"]
    for topic, stats in sorted(summary["topics"].items()):
        lines.append(f"  {topic:<48} {stats['count']:>6} msgs {stats['rate_hz']:>7.1f} Hz "
                     f"(worst 1 s: {stats['worst_window_rate_hz']:.1f}) dropped {stats['dropped']}")
    for reason in summary["flagged"]:
        lines.append(f"  FLAGGED: {reason}")
    return "\n".join(lines)


def format_rates(rates: dict[str, float]) -> str:
    short = {topic.replace("/color/image_raw", "").replace("/cameras/", "").replace("/compressed", "*"): hz
             for topic, hz in rates.items()}
    return "  ".join(f"{name} {hz:.0f}Hz" for name, hz in sorted(short.items()))


class KeyboardSession:
    """The operator's loop: reset period -> recording -> review -> reset ..., driven by keys
    and the clock (`handle(key, now)`, `tick(now)`); `done` once `episodes` are kept or Esc.
    Service refusals (streams missing, disk full ...) are printed and the state stays put, so
    the operator can fix the cause and press again."""

    def __init__(self, control: EpisodeControl, out: TextIO, *, episodes: int = 0, reset_time: float = 5.0,
                 episode_time: float = 0.0, now: float = 0.0):
        self.control, self.out = control, out
        self.episodes, self.reset_time, self.episode_time = episodes, reset_time, episode_time
        self.kept = 0
        self.done = False
        self.state = ""
        self._since = now
        self._last_rates = now
        self._enter_reset(now)

    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def _try(self, action: Callable[[], object]):
        try:
            return action(), None
        except RuntimeError as error:      # EpisodeControlError, RecordingError
            self._say(f"!! {error}")
            return None, error

    def _enter_reset(self, now: float) -> None:
        self.state, self._since = "reset", now
        self._say(f"\n-- reset the scene: episode {self.kept + 1}"
                  + (f" of {self.episodes}" if self.episodes else "")
                  + f" starts in {self.reset_time:.0f} s (right arrow / space: now, Esc: quit)")

    def _start(self, now: float) -> None:
        started, error = self._try(self.control.start_episode)
        if error is not None:
            self._since = now            # wait another reset period before trying by itself again
            return
        self.state, self._since, self._last_rates = "recording", now, now
        self._say(f">> recording episode {started['index']}: '{started['task']}' "
                  "(right arrow: end, left arrow: discard + redo, Esc: end + quit)")

    def _stop(self, now: float) -> bool:
        summary, error = self._try(self.control.stop_episode)
        if error is not None:
            return False
        self._say(format_summary(summary))
        self.kept += 1
        self.state, self._since = "review", now
        self._say("?? success? y / n (Enter or right arrow: leave unmarked, left arrow: discard + redo)")
        return True

    def _discard(self, now: float) -> None:
        result, error = self._try(self.control.discard_episode)
        if error is None:
            self._say(f"xx discarded {result['discarded']}; recording it again")
            if self.state == "review":
                self.kept -= 1
            self._enter_reset(now)

    def _next(self, now: float) -> None:
        if self.episodes and self.kept >= self.episodes:
            self._say(f"== {self.kept} episode(s) recorded")
            self.done = True
        else:
            self._enter_reset(now)

    def handle(self, key: str, now: float) -> None:
        if self.done:
            return
        if key in ("esc", "ctrl-c"):
            if self.state == "recording":
                self._stop(now)
            self._say("== quit")
            self.done = True
        elif self.state == "reset" and key in ("right", "space"):
            self._start(now)
        elif self.state == "recording":
            if key == "right":
                self._stop(now)
            elif key == "left":
                self._discard(now)
        elif self.state == "review":
            if key in ("y", "n"):
                if self._try(lambda: self.control.mark_success(key == "y"))[1] is None:
                    self._say("marked " + ("success" if key == "y" else "failure"))
                    self._next(now)
            elif key in ("enter", "right", "space"):
                self._next(now)
            elif key == "left":
                self._discard(now)

    def tick(self, now: float) -> None:
        if self.done:
            return
        if self.state == "reset" and now - self._since >= self.reset_time:
            self._start(now)
        elif self.state == "recording":
            if self.episode_time and now - self._since >= self.episode_time:
                self._say(f".. episode time limit {self.episode_time:.0f} s reached")
                self._stop(now)
            elif now - self._last_rates >= 1.0:
                self._last_rates = now
                self._say(f"   {now - self._since:5.1f} s  {format_rates(self.control.live_rates())}")


def run_keyboard(control: EpisodeControl, *, episodes: int, reset_time: float, episode_time: float,
                 out: TextIO = sys.stdout) -> int:
    from twinvla_ros.cli.keys import RawTerminal

    with RawTerminal() as terminal:
        session = KeyboardSession(control, out, episodes=episodes, reset_time=reset_time,
                                  episode_time=episode_time, now=time.monotonic())
        while not session.done:
            for key in terminal.read_keys(0.1):
                session.handle(key, time.monotonic())
            session.tick(time.monotonic())
    return 0


def record_sim_episodes(client, episodes: int, *, seed: int, out: TextIO = sys.stdout,
                        timeout: float = 120.0, failed: Callable[[], dict] | None = None) -> list[dict]:
    """N scripted-expert episodes, unattended: for each, the sim is reset with its own seed
    (base seed + episode index: a resumed recording gets new scenes), the expert runs while the
    recorder records, and the sim's success check marks the episode. Returns the summaries."""
    index = int(wait_until(lambda: client.recorder_status()[1].get("next_index"), 60.0,
                           "the recorder's first status", failed))
    summaries = []
    for _ in range(episodes):
        episode_seed = seed + index
        client.set_parameters(client.teleop, seed=episode_seed)
        client.set_parameters(client.recorder, episode_tags=[f"seed={episode_seed}", "source=scripted_expert"])
        demo = client.start_demo()
        started = wait_until(lambda: _try_start(client), 30.0, "the recorder to accept the episode", failed)
        wait_until(lambda: client.demo_status().get("done"), demo["duration"] + timeout,
                   f"the expert's demo (seed {episode_seed})", failed)
        summary = client.stop_episode()
        index = started["index"] + 1
        status = client.task_status()
        client.mark_success(bool(status["success"]))
        summary["success"] = bool(status["success"])
        summaries.append(summary)
        print(f"episode {started['index']} seed {episode_seed}: {'success' if status['success'] else 'FAILED'} "
              f"({status['reason']}), {summary['duration_s']:.1f} s, {summary['dropped']} dropped"
              + (f", flagged: {'; '.join(summary['flagged'])}" if summary["flagged"] else ""), file=out, flush=True)
    return summaries


def _try_start(client):
    from twinvla_ros.ros.episode_client import EpisodeControlError

    try:
        return client.start_episode()
    except EpisodeControlError as error:
        if "streams missing" in str(error):
            return None               # the graph is still coming up: try again
        raise


def cmd_record(args) -> int:
    from twinvla_ros.bringup.graph import teleop_record
    from twinvla_ros.bringup.preflight import HardwareMissing
    from twinvla_ros.bringup.runner import GraphRunner, ProcessGraphRunner
    from twinvla_ros.ros.episode_client import EpisodeClient, EpisodeControlError
    from twinvla_ros.ros.node import StartupError

    if args.isolate:
        from twinvla_ros.bringup.dds import isolate_dds
        print(f"[record] isolated DDS domain {isolate_dds()} (localhost only)")
    specs = teleop_record(sim=args.sim, task=args.task, output_dir=args.out, config=args.config)
    runner = ProcessGraphRunner(specs) if args.processes else GraphRunner(specs)
    here = GraphRunner([]) if args.processes else runner
    try:
        runner.start()
        if here is not runner:
            here.start()
    except (HardwareMissing, StartupError) as error:
        print(f"[record] not started: {error}", file=sys.stderr)
        runner.stop()
        return 2
    client = EpisodeClient(context=here.context)
    here.add_node(client)
    try:
        if args.sim and not args.keys:
            summaries = record_sim_episodes(client, args.episodes, seed=args.seed,
                                            failed=runner.failed if args.processes else None)
            ok = sum(1 for s in summaries if s["success"])
            print(f"[record] {ok}/{len(summaries)} episodes succeeded -> {args.out}")
            return 0
        return run_keyboard(client, episodes=args.episodes, reset_time=args.reset_time,
                            episode_time=args.episode_time)
    except (EpisodeControlError, TimeoutError, RuntimeError) as error:
        print(f"[record] stopped: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        if here is not runner:
            here.stop()
        runner.stop()


def add_parser(sub) -> None:
    record = sub.add_parser("record", help="record demonstration episodes (keys, or the sim's scripted expert)",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    record.add_argument("--out", required=True, help="episode directory (an existing one is resumed)")
    record.add_argument("--task", default="", help="robot: the task text; --sim: the sim task (lift_box, ...)")
    record.add_argument("--sim", action="store_true", help="the MuJoCo sim and its scripted expert")
    record.add_argument("--keys", action="store_true", help="with --sim: keyboard control instead of unattended")
    record.add_argument("--episodes", type=int, default=0, help="episodes to record (0: until Esc; "
                        "unattended sim: required)")
    record.add_argument("--seed", type=int, default=0, help="sim: base seed (episode i uses seed + i)")
    record.add_argument("--reset-time", type=float, default=5.0, help="seconds to reset the scene between episodes")
    record.add_argument("--episode-time", type=float, default=0.0, help="end an episode after this many seconds (0: never)")
    record.add_argument("--config", default=None, help="ROS parameter file overriding config/*.yaml")
    record.add_argument("--processes", action="store_true", help="one process per node, as ros2 launch does")
    record.add_argument("--isolate", action="store_true", help="random DDS domain, localhost only")
    record.set_defaults(func=_checked_cmd_record)


def _checked_cmd_record(args) -> int:
    if args.sim and not args.keys and args.episodes <= 0:
        print("record --sim needs --episodes N (or --keys for keyboard control)", file=sys.stderr)
        return 2
    if not args.sim and not args.task:
        print("record needs --task 'what the demonstrations do'", file=sys.stderr)
        return 2
    return cmd_record(args)


def keys_main(argv: list[str] | None = None) -> int:
    """`ros2 run twinvla_ros record_keys`: the keyboard controls for a running teleop_record graph."""
    from twinvla_ros.ros.episode_client import standalone_client

    parser = argparse.ArgumentParser(prog="record_keys", description=keys_main.__doc__)
    parser.add_argument("--episodes", type=int, default=0, help="quit after this many (0: until Esc)")
    parser.add_argument("--reset-time", type=float, default=5.0)
    parser.add_argument("--episode-time", type=float, default=0.0)
    parser.add_argument("--recorder", default="recorder_node", help="name of the recorder node")
    args, ros_args = parser.parse_known_args(argv)
    try:
        with standalone_client(ros_args, recorder=args.recorder) as client:
            return run_keyboard(client, episodes=args.episodes, reset_time=args.reset_time,
                                episode_time=args.episode_time)
    except KeyboardInterrupt:
        return 130
