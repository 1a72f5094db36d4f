"""`twinvla-ros eval`: closed-loop rollouts of a checkpoint in the sim, through the real node
graph (sim node, arm driver, policy node: one process each, as `ros2 launch` runs them).

  twinvla-ros eval --checkpoint runs/lift_box/final --task lift_box --episodes 50 --seed 1000
                   [--mode rtc] [--max-seconds 40] [--videos 3] [--out eval_out]
                   [--policy-param injected_latency=0.15 --policy-param execution_horizon=5]

Writes eval_out/eval_report.json (success rate, 95 % Wilson interval, mean time to success,
every episode, the policy node's chunk-execution figures such as the mean chunk-boundary jump),
eval_out/videos/seed_S.mp4 (the ego camera of the first --videos episodes) and
eval_out/contact_sheet.png (first and last frame of each episode). Seeds S .. S+N-1 place the
objects; keep them apart from the seeds the training demos were recorded with.
"""
from __future__ import annotations

import sys

# The scripted experts' demos last ~12 s (lift_box) and ~49 s (handover_box): a policy gets
# about three times that before an episode counts as failed.
DEFAULT_MAX_SECONDS = {"lift_box": 40.0, "lift_box_narrow": 40.0, "handover_box": 150.0, "empty": 20.0}


def register(subparsers) -> None:
    evaluate = subparsers.add_parser("eval", help="closed-loop rollouts of a checkpoint in the sim: success rate, videos")
    evaluate.add_argument("--checkpoint", required=True,
                          help="checkpoint folder; 'default': the shipped policy; 'tiny': the embedded tiny model")
    evaluate.add_argument("--task", default="lift_box", help="sim task (default lift_box)")
    evaluate.add_argument("--episodes", type=int, default=10)
    evaluate.add_argument("--seed", type=int, default=1000, help="first object-placement seed (default 1000)")
    evaluate.add_argument("--mode", choices=["sync", "async", "rtc"], default="rtc", help="chunk execution mode")
    evaluate.add_argument("--max-seconds", type=float, default=None,
                          help="time limit per episode (default: by task, ~3x the expert's demo)")
    evaluate.add_argument("--videos", type=int, default=3, help="episodes whose ego video is written (default 3)")
    evaluate.add_argument("--instruction", default=None, help="instead of the task's own instruction")
    evaluate.add_argument("--policy-param", action="append", default=[], metavar="NAME=VALUE",
                          help="a policy node parameter for the evaluation (repeatable), e.g. injected_latency=0.15")
    evaluate.add_argument("--out", default="eval_out")
    evaluate.set_defaults(func=cmd_eval)


def cmd_eval(args) -> int:
    from twinvla_ros.bringup.dds import isolate_dds
    from twinvla_ros.bringup.graph import anubis_policy
    from twinvla_ros.bringup.runner import GraphRunner, ProcessGraphRunner
    from twinvla_ros.evaluation.closed_loop import evaluate
    from twinvla_ros.ros.evaluation_client import EvaluationClient
    from twinvla_ros.ros.node import StartupError
    from twinvla_ros.ros.service_client import ServiceCallError
    from twinvla_ros.sim.scene import TASKS

    if args.task not in TASKS:
        print(f"eval: unknown task {args.task!r}; tasks: {', '.join(TASKS)}", file=sys.stderr)
        return 2
    if args.episodes < 1:
        print("eval: --episodes must be at least 1", file=sys.stderr)
        return 2
    try:
        policy_settings = _parameters(args.policy_param)
    except ValueError as error:
        print(f"eval: {error}", file=sys.stderr)
        return 2
    max_seconds = args.max_seconds or DEFAULT_MAX_SECONDS.get(args.task, 60.0)
    instruction = args.instruction or TASKS[args.task].instruction
    # Its own DDS domain: an evaluation must not hear (or move) another graph on this machine.
    isolate_dds()
    specs = anubis_policy(sim=True, checkpoint=args.checkpoint, sim_node={"task": args.task},
                          policy_node={**policy_settings, "execution_mode": args.mode})
    graph, here = ProcessGraphRunner(specs), GraphRunner([])
    try:
        graph.start()
        here.start()
    except StartupError as error:
        print(f"eval: the graph did not start: {error}", file=sys.stderr)
        graph.stop()
        return 2
    client = EvaluationClient(context=here.context)
    here.add_node(client)

    def progress(index: int, outcome) -> None:
        verdict = "success" if outcome.success else "FAILED"
        print(f"[eval] episode {index + 1}/{args.episodes} seed {outcome.seed}: {verdict} in {outcome.seconds:.1f} s "
              f"({outcome.reason})", flush=True)

    try:
        client.wait_until_ready(120.0)
        # A misspelt parameter would be ignored by the node: the run would measure something else.
        unknown = sorted(set(policy_settings) - set(client.parameter_names(client.policy)))
        if unknown:
            print(f"eval: the policy node has no parameter {', '.join(unknown)} (`ros2 param list /policy_node`)",
                  file=sys.stderr)
            return 2
        report = evaluate(client, task=args.task, instruction=instruction,
                          seeds=list(range(args.seed, args.seed + args.episodes)), max_seconds=max_seconds,
                          out=args.out, checkpoint=args.checkpoint, execution_mode=args.mode, videos=args.videos,
                          policy_settings=policy_settings, progress=progress)
    except (ServiceCallError, TimeoutError) as error:
        print(f"eval: {error}" + (f" (node processes exited: {graph.failed()})" if graph.failed() else ""),
              file=sys.stderr)
        return 1
    finally:
        here.stop()
        graph.stop()
    print(f"[eval] {report.summary()}")
    print(f"[eval] report: {args.out}/eval_report.json; contact sheet: {report.contact_sheet}")
    return 0


def _parameters(items: list[str]) -> dict:
    """NAME=VALUE pairs -> {name: value}, the value read as YAML (0.15 a float, 5 an int, true a
    bool), as `ros2 run ... -p` reads it."""
    import yaml

    parameters = {}
    for item in items:
        name, equals, text = item.partition("=")
        if not equals or not name.strip():
            raise ValueError(f"--policy-param {item!r}: expected NAME=VALUE")
        if name.strip() in ("execution_mode", "checkpoint"):
            raise ValueError(f"--policy-param {name.strip()}: use --mode / --checkpoint")
        parameters[name.strip()] = yaml.safe_load(text) if text.strip() else ""
    return parameters
