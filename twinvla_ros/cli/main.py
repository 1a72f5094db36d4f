"""twinvla-ros: the command-line tool.

  twinvla-ros demo [--duration 20] [--out demo_out]     sim + policy, one instruction, video + plot
  twinvla-ros launch anubis_policy --sim [--checkpoint DIR] [--config FILE]
                                                        a node graph in this process (no ros2 launch)
  twinvla-ros record --sim --task lift_box --episodes 5 --out demos/lift
                                                        demonstrations into episode bags (keys, or the sim expert)
  twinvla-ros convert demos/lift --out datasets/lift   episode bags -> a LeRobot v3.0 dataset (TwinVLA's keys)
  twinvla-ros dataset check|show datasets/lift          validate a dataset; plot an episode, a contact sheet
  twinvla-ros train --dataset datasets/lift --init tiny --out runs/lift
                                                        fine-tune TwinVLA (checkpoints, loss curve, resumable)
  twinvla-ros eval --checkpoint runs/lift/final --task lift_box --episodes 50
                                                        closed-loop rollouts in the sim: success rate, videos
  twinvla-ros say "hand over the box"                   publish an instruction (no ros2 CLI needed)
  twinvla-ros cameras                                   connected RealSense devices: serials, firmware, profiles
  twinvla-ros calibrate --arm leader_left               record a Dynamixel arm's offsets and directions
"""
from __future__ import annotations

import argparse
import sys
import time

from twinvla_ros.cli.record import add_parser as add_record_parser
from twinvla_ros.paths import DEFAULT_POLICY


def _parse_params(pairs: list[str]) -> dict[str, dict]:
    """['policy_node.execution_mode=sync', ...] -> {'policy_node': {'execution_mode': 'sync'}}"""
    import yaml

    out: dict[str, dict] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        node, dot, name = key.partition(".")
        if not sep or not dot:
            raise SystemExit(f"--param expects node.name=value, got '{pair}'")
        out.setdefault(node, {})[name] = yaml.safe_load(value)
    return out


def cmd_demo(args) -> int:
    from twinvla_ros.cli.demo import run_demo

    run_demo(out=args.out, duration=args.duration, task=args.task, instruction=args.instruction,
             checkpoint=args.checkpoint, mode=args.mode, seed=args.seed)
    return 0


def cmd_launch(args) -> int:
    from twinvla_ros.bringup.graph import GRAPHS
    from twinvla_ros.bringup.runner import GraphRunner, ProcessGraphRunner

    overrides = _parse_params(args.param)
    if args.graph == "anubis_policy":
        specs = GRAPHS[args.graph](sim=args.sim, checkpoint=args.checkpoint, config=args.config, **overrides)
    elif args.graph == "teleop_record":
        specs = GRAPHS[args.graph](sim=args.sim, config=args.config, **overrides)
    elif args.graph == "policy":
        specs = GRAPHS[args.graph](checkpoint=args.checkpoint, config=args.config, **overrides)
    else:
        specs = GRAPHS[args.graph](config=args.config, **overrides)
    if args.isolate:
        from twinvla_ros.bringup.dds import isolate_dds
        print(f"[launch] isolated DDS domain {isolate_dds()} (localhost only)")
    from twinvla_ros.bringup.preflight import HardwareMissing
    from twinvla_ros.ros.node import StartupError

    runner = ProcessGraphRunner(specs) if args.processes else GraphRunner(specs)
    try:
        runner.start()
    except (HardwareMissing, StartupError) as error:
        print(f"[launch] not started: {error}", file=sys.stderr)
        return 2
    try:
        layout = "one process per node" if args.processes else "in this process"
        print(f"[launch] {args.graph}: {', '.join(s.name for s in specs)} running {layout}; Ctrl-C to stop")
        deadline = time.monotonic() + args.duration if args.duration else None
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2)
            if args.processes and runner.failed():
                print(f"[launch] node process(es) exited: {runner.failed()}", file=sys.stderr)
                return 1
    except KeyboardInterrupt:
        pass
    finally:
        runner.stop()
    return 0


def cmd_say(args) -> int:
    from twinvla_ros.execution.instruction import validate_instruction
    from twinvla_ros.ros.say import publish_instruction

    try:
        text = validate_instruction(args.text)
    except ValueError as error:
        print(f"not sent: {error}", file=sys.stderr)
        return 2
    code, message = publish_instruction(text, args.topic, args.timeout)
    print(message, file=sys.stderr if code else sys.stdout)
    return code


def cmd_cameras(args) -> int:
    from twinvla_ros.hardware.cameras.realsense import format_device_table, list_devices

    devices = list_devices()
    print(format_device_table(devices) if devices else "no RealSense device connected (check USB 3 and udev rules)")
    return 0


def cmd_calibrate(args) -> int:
    from twinvla_ros.hardware.motors.dynamixel import run_calibration

    try:
        run_calibration(args.arm, config_path=args.config, calibration_dir=args.calibration_dir)
    except (OSError, RuntimeError, ValueError) as error:   # BusError is a RuntimeError
        print(f"calibration failed: {error}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="twinvla-ros", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the sim policy demo and write a video and a plot")
    demo.add_argument("--out", default="demo_out", help="output directory (default: demo_out)")
    demo.add_argument("--duration", type=float, default=20.0, help="seconds to run after the instruction")
    demo.add_argument("--task", default=DEFAULT_POLICY, help=f"sim task (default {DEFAULT_POLICY}, the default policy's)")
    demo.add_argument("--instruction", default="", help="default: the task's own (lift_box: 'pick up the red box')")
    demo.add_argument("--checkpoint", default="default", help="TwinVLA checkpoint dir; default: the shipped policy, "
                      "tiny: the embedded tiny model with random weights")
    demo.add_argument("--mode", default="rtc", choices=["sync", "async", "rtc"], help="chunk execution mode")
    demo.add_argument("--seed", type=int, default=1000, help="object placement and policy noise seed (default 1000: "
                      "`record --sim` demos use 0, 1, ...)")
    demo.set_defaults(func=cmd_demo)

    launch = sub.add_parser("launch", help="run a node graph in this process (where ros2 launch is missing)")
    launch.add_argument("graph", choices=["anubis_policy", "sim_robot", "real_robot", "policy", "teleop_record"])
    launch.add_argument("--sim", action=argparse.BooleanOptionalAction, default=True,
                        help="simulated robot (default) or the real one")
    launch.add_argument("--checkpoint", default="", help="TwinVLA checkpoint dir (anubis_policy, policy)")
    launch.add_argument("--config", default=None, help="ROS parameter file overriding config/*.yaml")
    launch.add_argument("--param", action="append", default=[], metavar="NODE.NAME=VALUE",
                        help="override one parameter (repeatable)")
    launch.add_argument("--processes", action="store_true",
                        help="one process per node, as ros2 launch does (best on a small CPU)")
    launch.add_argument("--isolate", action="store_true", help="random DDS domain, localhost only")
    launch.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: run until Ctrl-C)")
    launch.set_defaults(func=cmd_launch)

    add_record_parser(sub)

    say = sub.add_parser("say", help="publish a language instruction once")
    say.add_argument("text")
    say.add_argument("--topic", default="/instruction")
    say.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for a subscriber")
    say.set_defaults(func=cmd_say)

    cameras = sub.add_parser("cameras", help="list connected RealSense devices (serial, firmware, profiles)")
    cameras.set_defaults(func=cmd_cameras)

    calibrate = sub.add_parser("calibrate", help="record a Dynamixel arm's offsets and directions (torque off)")
    calibrate.add_argument("--arm", required=True, help="entry of hardware.arms: follower_left, leader_right, ...")
    calibrate.add_argument("--config", default=None, help="file with the hardware: section (default: config/anubis.yaml)")
    calibrate.add_argument("--calibration-dir", default=None, help="where to write <arm>.yaml "
                           "(default: hardware.calibration_dir)")
    calibrate.set_defaults(func=cmd_calibrate)

    from twinvla_ros.cli.bag import register as register_bag_commands
    from twinvla_ros.cli.dataset import register as register_dataset_commands
    from twinvla_ros.cli.eval import register as register_eval_command
    from twinvla_ros.cli.train import register as register_train_command
    register_bag_commands(sub)
    register_dataset_commands(sub)
    register_train_command(sub)
    register_eval_command(sub)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
