#!/usr/bin/env python3
"""Dynamixel arm-bus cycle over a pseudo-terminal: the time our side takes per sync read and
per sync write of all motors, against the Protocol 2.0 responder of the tests (in its own
process, so it does not share this one's GIL).

    python bench/hardware_dynamixel.py [--motors 14] [--repeats 1000]

Prints `name=value` lines: dxl_sync_read_ms_pty (median ms per DynamixelArmBus.read(): one
GroupSyncRead of present current/velocity/position of every motor, and the unit conversion),
dxl_sync_write_ms_pty (median ms per write_targets(): conversion and one GroupSyncWrite of
every goal). The port is opened at 1 Mbps, but a pty has no baud rate: the figures are the
software cost (SDK, pyserial, the responder's turnaround), without the time on the wire, which
a comment line estimates for a real 1 Mbps bus. The motors are one arm config's: six joints
and a gripper, shadow motors added to the joints up to `--motors`. Each cycle is a read then a
write, as the servo loop does (the read's reply also means the previous write was parsed).
"""
from __future__ import annotations

import argparse
import importlib.metadata
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from common import machine_line  # also puts the checkout on sys.path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))
from dynamixel_responder import DynamixelResponder, arm_hardware  # noqa: E402

from twinvla_ros.hardware.motors.dynamixel import DynamixelArmBus, parse_arm_config  # noqa: E402

BAUD = 1_000_000
SYNC_INSTRUCTION_BYTES = 14             # header 4, ID, length 2, instruction, address 2, size 2, CRC 2
STATUS_BYTES = 11 + 10                   # per motor: header 4, ID, length 2, instruction, error, CRC 2; 10 data


def _serve(ids, connection) -> None:
    with DynamixelResponder(ids) as responder:
        connection.send(responder.port)
        connection.recv()                # until the parent is done


def arm_with(motors: int, port: str):
    """An arm config of `motors` servos: IDs 1.. over six joints (shadows round-robin), the last the gripper."""
    section = arm_hardware(port)
    ids = iter(range(1, motors))
    per_joint = [[] for _ in range(6)]
    for n, motor_id in enumerate(ids):
        per_joint[n % 6].append(motor_id)
    section["joints"] = {f"joint{j + 1}": {"ids": i, "directions": [1] * len(i), "offsets": [0.0] * len(i), "gear": 1.0}
                         for j, i in enumerate(per_joint)}
    section["gripper"] = {**section["gripper"], "id": motors}
    return parse_arm_config(section, "follower_left")


def measure(motors: int = 14, repeats: int = 1000) -> dict[str, float]:
    """Median ms per sync read and per sync write of `motors` servos over the pty responder."""
    if motors < 7:
        raise ValueError("an arm has at least 7 motors (six joints and the gripper)")
    parent, child = multiprocessing.Pipe()
    server = multiprocessing.get_context("fork").Process(target=_serve, args=(range(1, motors + 1), child), daemon=True)
    server.start()
    try:
        port = parent.recv()
        joints = [f"left_joint{i}" for i in range(1, 7)] + ["left_gripper"]
        with DynamixelArmBus(arm_with(motors, port), joints, 0.04) as bus:
            targets = np.array([0.1, -0.1, 0.2, 1.0, 0.0, 0.3, 0.02])
            reads, writes = [], []
            for n in range(repeats + 50):            # the first 50 warm up
                start = time.perf_counter()
                bus.read()
                middle = time.perf_counter()
                bus.write_targets(targets)
                end = time.perf_counter()
                if n >= 50:
                    reads.append(middle - start)
                    writes.append(end - middle)
            failures = bus.health().values["failures"]
    finally:
        parent.send("done")
        server.join(timeout=10)
    if failures != "0":
        raise RuntimeError(f"{failures} bus failures during the benchmark")
    return {"dxl_sync_read_ms_pty": statistics.median(reads) * 1e3,
            "dxl_sync_write_ms_pty": statistics.median(writes) * 1e3}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--motors", type=int, default=14)
    parser.add_argument("--repeats", type=int, default=1000)
    args = parser.parse_args(argv)
    print(machine_line(dynamixel_sdk=importlib.metadata.version("dynamixel-sdk")), flush=True)
    figures = measure(args.motors, args.repeats)
    for name, value in figures.items():
        print(f"{name}={value:.3f}")
    # 10 bits a byte (start, 8 data, stop); the sync read lists one ID per motor, the write ID + 4 bytes.
    wire_read = (SYNC_INSTRUCTION_BYTES + args.motors + STATUS_BYTES * args.motors) * 10 / BAUD * 1e3
    wire_write = (SYNC_INSTRUCTION_BYTES + 5 * args.motors) * 10 / BAUD * 1e3
    print(f"# {args.motors} motors, port set to {BAUD} bit/s on a pty, which has no baud-rate delay: add "
          f"~{wire_read:.2f} ms (read) / ~{wire_write:.2f} ms (write) of wire time on a real 1 Mbps bus, "
          "plus the USB adapter's latency (FTDI latency_timer 1 ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
