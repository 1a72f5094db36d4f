"""Dynamixel X-series servos on a pseudo-terminal: a Protocol 2.0 device simulator for tests.

The bus under test opens `responder.port` (the pty's slave) as it would open /dev/ttyUSB0 and
talks real packets: header FF FF FD 00, ID, length, instruction, parameters, CRC-16 (polynomial
0x8005, the ROBOTIS table algorithm, built here from the polynomial rather than taken from the
SDK so that the two implementations check each other), byte stuffing both ways. A thread reads
the pty's master side and answers PING, READ, WRITE, SYNC_READ and SYNC_WRITE from a control
table per servo. The register addresses below are written out from the reference
(anubis-hardware.md, ROBOTIS e-manual), not imported from the backend, for the same reason.

Motor model: with torque on and a position mode the present position moves towards the goal at
`speed` (rad/s); present velocity is that speed while moving (0.229 rpm units) and present
current is proportional to the position error, capped by Current Limit. Goal Position is
accepted with torque off, but nothing moves until Torque Enable is 1 (the backend, not the
servo, must make goal = present before enabling). Return Delay Time is stored, not waited.

Fault injection: `silent` IDs never answer; `corrupt_replies(n)` breaks the CRC of the next n
status packets; `set_hardware_error(id, bits)` sets Hardware Error Status (70) and the Alert bit
(0x80) of that servo's status packets and, as the factory Shutdown setting does, turns its
torque off. Every instruction received is recorded (`instructions`, `writes_to`).
"""
from __future__ import annotations

import math
import os
import select
import threading
import time
import tty
from dataclasses import dataclass

HEADER = bytes([0xFF, 0xFF, 0xFD, 0x00])
BROADCAST_ID = 0xFE
PING, READ, WRITE, STATUS, SYNC_READ, SYNC_WRITE = 0x01, 0x02, 0x03, 0x55, 0x82, 0x83
# Status packet error numbers (low 7 bits of the error byte); ALERT is the hardware-error flag.
RESULT_FAIL, INSTRUCTION_ERROR, CRC_ERROR, DATA_RANGE_ERROR, DATA_LENGTH_ERROR, DATA_LIMIT_ERROR, ACCESS_ERROR = range(1, 8)
ALERT = 0x80

# Control table of an XM430-W350 (addresses, bytes), from the reference.
TABLE_SIZE = 147                 # through Present Temperature (146)
MODEL_NUMBER, FIRMWARE, ID_ADDR, BAUD, RETURN_DELAY, DRIVE_MODE, OPERATING_MODE = 0, 6, 7, 8, 9, 10, 11
CURRENT_LIMIT, MAX_POSITION, MIN_POSITION, SHUTDOWN = 38, 48, 52, 63
TORQUE_ENABLE, HARDWARE_ERROR, GOAL_CURRENT, PROFILE_VELOCITY, GOAL_POSITION = 64, 70, 102, 112, 116
PRESENT_CURRENT, PRESENT_VELOCITY, PRESENT_POSITION, PRESENT_TEMPERATURE = 126, 128, 132, 146
EEPROM_END = 64                  # addresses below are writable only with torque off
WRITABLE = {BAUD, RETURN_DELAY, DRIVE_MODE, OPERATING_MODE, CURRENT_LIMIT, CURRENT_LIMIT + 1,
            *range(MAX_POSITION, MIN_POSITION + 4), SHUTDOWN, TORQUE_ENABLE, GOAL_CURRENT, GOAL_CURRENT + 1,
            *range(PROFILE_VELOCITY, GOAL_POSITION + 4)}
MODES = {0, 1, 3, 4, 5, 16}
POSITION_MODES = {3, 4, 5}
MULTI_TURN_LIMIT = 1_048_575
CURRENT_LIMIT_MAX = 1193         # XM430-W350
SHUTDOWN_BITS = 0x34             # factory Shutdown: overload, electrical shock, overheating
COUNTS_PER_RAD = 4096 / (2 * math.pi)
COUNTS_S_PER_VELOCITY_UNIT = 0.229 * 4096 / 60


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return table


CRC_TABLE = _crc_table()


def crc16(data: bytes) -> int:
    """CRC-16 of Protocol 2.0 (poly 0x8005, initial 0, MSB first), over header to parameters."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) ^ CRC_TABLE[((crc >> 8) ^ byte) & 0xFF]) & 0xFFFF
    return crc


def stuff(field: bytes) -> bytes:
    """Instruction + parameters with FD appended after every FF FF FD, so no header appears."""
    out = bytearray()
    for i, byte in enumerate(field):
        out.append(byte)
        if byte == 0xFD and i >= 2 and field[i - 1] == 0xFF and field[i - 2] == 0xFF:
            out.append(0xFD)
    return bytes(out)


def unstuff(field: bytes) -> bytes:
    out = bytearray()
    i = 0
    while i < len(field):
        out.append(field[i])
        if out[-3:] == b"\xff\xff\xfd" and i + 1 < len(field) and field[i + 1] == 0xFD:
            i += 1                     # the stuffed FD
        i += 1
    return bytes(out)


def packet(motor_id: int, instruction: int, params: bytes = b"") -> bytes:
    """A complete Protocol 2.0 packet: header, ID, length, stuffed instruction + params, CRC."""
    field = stuff(bytes([instruction]) + bytes(params))
    body = HEADER + bytes([motor_id]) + (len(field) + 2).to_bytes(2, "little") + field
    return body + crc16(body).to_bytes(2, "little")


@dataclass(frozen=True)
class Instruction:
    id: int
    instruction: int
    params: bytes                # unstuffed
    time: float                  # time.monotonic() when parsed


class SimulatedMotor:
    def __init__(self, motor_id: int, model_number: int, firmware: int, speed: float):
        self.id = motor_id
        self.table = bytearray(TABLE_SIZE)
        self.set(MODEL_NUMBER, 2, model_number)
        self.set(FIRMWARE, 1, firmware)
        self.set(ID_ADDR, 1, motor_id)
        self.set(BAUD, 1, 1)                  # factory 57600; the bus opens at the configured rate regardless
        self.set(RETURN_DELAY, 1, 250)        # factory 500 us
        self.set(OPERATING_MODE, 1, 3)
        self.set(CURRENT_LIMIT, 2, CURRENT_LIMIT_MAX)
        self.set(MAX_POSITION, 4, 4095)
        self.set(MIN_POSITION, 4, 0)
        self.set(SHUTDOWN, 1, SHUTDOWN_BITS)
        self.set(PRESENT_TEMPERATURE, 1, 30)
        self.position = 2048.0               # counts, continuous
        self.speed = speed * COUNTS_PER_RAD  # counts/s
        self.stamp = time.monotonic()
        self.pinned: dict[int, tuple[int, int]] = {}    # address -> (size, value) the model may not change
        self.sync_present(0.0)

    def get(self, address: int, size: int, signed: bool = False) -> int:
        return int.from_bytes(self.table[address:address + size], "little", signed=signed)

    def set(self, address: int, size: int, value: int) -> None:
        self.table[address:address + size] = int(value).to_bytes(size, "little", signed=value < 0)

    @property
    def torque(self) -> bool:
        return bool(self.table[TORQUE_ENABLE])

    def step(self, now: float) -> None:
        dt, self.stamp = now - self.stamp, now
        velocity = 0.0
        if self.torque and self.table[OPERATING_MODE] in POSITION_MODES:
            error = self.get(GOAL_POSITION, 4, signed=True) - self.position
            still_moving = abs(error) > self.speed * dt
            self.position += math.copysign(self.speed * dt, error) if still_moving else error
            velocity = math.copysign(self.speed, error) if still_moving else 0.0
        self.sync_present(velocity)

    def sync_present(self, velocity: float) -> None:
        self.set(PRESENT_POSITION, 4, round(self.position))
        self.set(PRESENT_VELOCITY, 4, round(velocity / COUNTS_S_PER_VELOCITY_UNIT))
        current = 0
        if self.torque:
            limit = self.get(CURRENT_LIMIT, 2)
            current = max(-limit, min(limit, round(2.0 * (self.get(GOAL_POSITION, 4, signed=True) - self.position))))
        self.set(PRESENT_CURRENT, 2, current)
        for address, (size, value) in self.pinned.items():
            self.set(address, size, value)

    def error_byte(self, error: int = 0) -> int:
        return error | (ALERT if self.table[HARDWARE_ERROR] else 0)

    def read(self, address: int, size: int) -> tuple[int, bytes]:
        if size == 0 or address + size > TABLE_SIZE:
            return ACCESS_ERROR, b""
        return 0, bytes(self.table[address:address + size])

    def write(self, address: int, data: bytes) -> int:
        """Error number (0: applied) of a write, checked as a servo checks it."""
        span = range(address, address + len(data))
        if not data or any(a not in WRITABLE for a in span):
            return ACCESS_ERROR
        if address < EEPROM_END and self.torque:
            return ACCESS_ERROR
        value = int.from_bytes(data, "little", signed=address == GOAL_POSITION)
        if address == OPERATING_MODE and value not in MODES:
            return DATA_RANGE_ERROR
        if address == CURRENT_LIMIT and value > CURRENT_LIMIT_MAX:
            return DATA_LIMIT_ERROR
        if address == GOAL_POSITION and not self.goal_allowed(value):
            return DATA_LIMIT_ERROR
        if address == TORQUE_ENABLE and value and self.table[HARDWARE_ERROR] & self.table[SHUTDOWN]:
            return RESULT_FAIL             # in shutdown: torque stays off until a reboot
        self.table[address:address + len(data)] = data
        return 0

    def goal_allowed(self, goal: int) -> bool:
        if self.table[OPERATING_MODE] == 3:
            return self.get(MIN_POSITION, 4) <= goal <= self.get(MAX_POSITION, 4)
        return -MULTI_TURN_LIMIT <= goal <= MULTI_TURN_LIMIT


def arm_hardware(port: str, role: str = "follower_left", **shared) -> dict:
    """A `hardware:` section (as parsed from YAML) for one arm of servos 1..7 on `port`: joints
    1-6 one motor each, gripper 7; `shared` replaces top-level keys (e.g. joints=...)."""
    section = {
        "calibration_dir": "calibration",
        "arms": {role: {"port": port, "baud": 1000000}},
        "joints": {f"joint{i}": {"ids": [i], "directions": [1], "offsets": [0.0], "gear": 1.0} for i in range(1, 7)},
        "gripper": {"id": 7, "direction": 1, "offset": 0.0, "closed": 0.0, "open": 1.5, "current_limit": 300},
        "joint_operating_mode": "position",
        "gripper_operating_mode": "current_based_position",
        "profile_velocity": 0,
        "return_delay_us": 0,
        "io_retries": 2,
        "torque_on_shutdown": "hold",
        "calibration": {"zero_pose": [0.0, 0.0, 0.0, 1.5708, 0.0, 0.0],
                        "direction_pose": [0.5, 0.5, 0.5, 2.0708, 0.5, 0.5]},
    }
    section.update(shared)
    return section


class DynamixelResponder:
    """Servos `ids` behind a pty; use as a context manager or call close()."""

    def __init__(self, ids, *, model_number: int = 1020, firmware: int = 52, speed: float = 3.0):
        self.motors = {i: SimulatedMotor(i, model_number, firmware, speed) for i in sorted(ids)}
        self.silent: set[int] = set()
        self.instructions: list[Instruction] = []
        self.replies = 0                  # status packets sent
        self._corrupt = 0
        self._short = 0
        self._lock = threading.Lock()
        self._buffer = bytearray()
        self._master, self._slave = os.openpty()
        # Raw at once: a cooked pty echoes what the bus writes back into the bus.
        tty.setraw(self._master)
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        self._wake_read, self._wake_write = os.pipe()
        self._running = True
        self._thread = threading.Thread(target=self._serve, name="dynamixel-responder", daemon=True)
        self._thread.start()

    # ---- test controls -----------------------------------------------------------------------

    def set_position(self, motor_id: int, counts: int) -> None:
        """Where the horn is (as if turned by hand): present position now, goal too if torque is off."""
        with self._lock:
            motor = self.motors[motor_id]
            motor.position = float(counts)
            motor.sync_present(0.0)

    def register(self, motor_id: int, address: int, size: int, signed: bool = False) -> int:
        with self._lock:
            motor = self.motors[motor_id]
            motor.step(time.monotonic())
            return motor.get(address, size, signed)

    def set_register(self, motor_id: int, address: int, size: int, value: int) -> None:
        with self._lock:
            self.motors[motor_id].set(address, size, value)

    def pin_register(self, motor_id: int, address: int, size: int, value: int) -> None:
        """Hold a present value (e.g. a current under load) whatever the motor model computes."""
        with self._lock:
            motor = self.motors[motor_id]
            motor.pinned[address] = (size, value)
            motor.set(address, size, value)

    def set_hardware_error(self, motor_id: int, bits: int) -> None:
        with self._lock:
            motor = self.motors[motor_id]
            motor.set(HARDWARE_ERROR, 1, bits)
            if bits & motor.table[SHUTDOWN]:
                motor.set(TORQUE_ENABLE, 1, 0)

    def corrupt_replies(self, count: int) -> None:
        """Break the CRC of the next `count` status packets."""
        with self._lock:
            self._corrupt = count

    def short_replies(self, count: int) -> None:
        """Send the next `count` status packets with their last three data bytes left out (valid
        CRC): what a late reply to an earlier, shorter read looks like to the reader. (The SDK
        takes the CRC for data when one or two bytes are missing.)"""
        with self._lock:
            self._short = count

    def received(self, instruction: int | None = None) -> list[Instruction]:
        with self._lock:
            return [i for i in self.instructions if instruction is None or i.instruction == instruction]

    def writes_to(self, address: int) -> list[tuple[int, bytes]]:
        """(motor ID, data) of every WRITE and SYNC_WRITE that starts at `address`, in order."""
        found = []
        for ins in self.received():
            start = int.from_bytes(ins.params[:2], "little")
            if ins.instruction == WRITE and start == address:
                found.append((ins.id, ins.params[2:]))
            elif ins.instruction == SYNC_WRITE and start == address:
                size = int.from_bytes(ins.params[2:4], "little")
                for at in range(4, len(ins.params), size + 1):
                    found.append((ins.params[at], ins.params[at + 1:at + 1 + size]))
        return found

    def clear_record(self) -> None:
        with self._lock:
            self.instructions.clear()

    def close(self) -> None:
        if not self._running:
            return
        self._running = False
        os.write(self._wake_write, b"x")
        self._thread.join(timeout=5.0)
        for fd in (self._master, self._slave, self._wake_read, self._wake_write):
            os.close(fd)

    def __enter__(self) -> "DynamixelResponder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- the device side ---------------------------------------------------------------------

    def _serve(self) -> None:
        while self._running:
            ready, _, _ = select.select([self._master, self._wake_read], [], [])
            if self._master in ready:
                try:
                    self._buffer += os.read(self._master, 4096)
                except OSError:
                    continue           # the bus closed its side; it may open it again
                with self._lock:
                    for parsed in self._packets():
                        self._answer(parsed)

    def _packets(self):
        """Complete, CRC-checked packets from the buffer; a bad CRC is answered by its target."""
        while True:
            start = self._buffer.find(HEADER)
            if start < 0:
                del self._buffer[:max(0, len(self._buffer) - 3)]       # keep a possible partial header
                return
            del self._buffer[:start]
            if len(self._buffer) < 7:
                return
            length = int.from_bytes(self._buffer[5:7], "little")
            if length < 3 or length > 1024:
                del self._buffer[:1]                                     # not a header after all
                continue
            if len(self._buffer) < 7 + length:
                return
            raw = bytes(self._buffer[:7 + length])
            del self._buffer[:7 + length]
            motor_id, field = raw[4], unstuff(raw[7:-2])
            if crc16(raw[:-2]) != int.from_bytes(raw[-2:], "little"):
                if motor_id in self.motors and motor_id not in self.silent:
                    self._send(motor_id, self.motors[motor_id].error_byte(CRC_ERROR))
                continue
            instruction = Instruction(motor_id, field[0], field[1:], time.monotonic())
            self.instructions.append(instruction)
            yield instruction

    def _send(self, motor_id: int, error: int, data: bytes = b"") -> None:
        if self._short and len(data) > 3:
            self._short -= 1
            data = data[:-3]
        reply = bytearray(packet(motor_id, STATUS, bytes([error]) + data))
        if self._corrupt:
            self._corrupt -= 1
            reply[-1] ^= 0xFF
        self.replies += 1
        os.write(self._master, bytes(reply))

    def _answer(self, ins: Instruction) -> None:
        now = time.monotonic()
        for motor in self.motors.values():
            motor.step(now)
        p = ins.params
        if ins.instruction == SYNC_READ:
            address, size = int.from_bytes(p[0:2], "little"), int.from_bytes(p[2:4], "little")
            for motor_id in p[4:]:                # each servo answers in the order listed
                if motor_id in self.motors and motor_id not in self.silent:
                    error, data = self.motors[motor_id].read(address, size)
                    self._send(motor_id, self.motors[motor_id].error_byte(error), data)
            return
        if ins.instruction == SYNC_WRITE:
            address, size = int.from_bytes(p[0:2], "little"), int.from_bytes(p[2:4], "little")
            for at in range(4, len(p) - size, size + 1):
                if p[at] in self.motors:
                    self.motors[p[at]].write(address, p[at + 1:at + 1 + size])
            return
        targets = sorted(self.motors) if ins.id == BROADCAST_ID and ins.instruction == PING else [ins.id]
        for motor_id in targets:
            motor = self.motors.get(motor_id)
            if motor is None or motor_id in self.silent:
                continue
            if ins.instruction == PING:
                self._send(motor_id, motor.error_byte(), bytes(motor.table[MODEL_NUMBER:MODEL_NUMBER + 2])
                           + bytes([motor.table[FIRMWARE]]))
            elif ins.instruction == READ:
                error, data = motor.read(int.from_bytes(p[0:2], "little"), int.from_bytes(p[2:4], "little"))
                self._send(motor_id, motor.error_byte(error), data)
            elif ins.instruction == WRITE:
                error = motor.write(int.from_bytes(p[0:2], "little"), p[2:])
                if ins.id != BROADCAST_ID:
                    self._send(motor_id, motor.error_byte(error))
            else:
                self._send(motor_id, motor.error_byte(INSTRUCTION_ERROR))
