"""One arm's Dynamixel X-series servos (Protocol 2.0, ROBOTIS dynamixel_sdk) as an ArmBus.

Per cycle one GroupSyncRead fetches present current, velocity and position (126..135, one
contiguous block) of every motor, and one GroupSyncWrite sends every goal position (116);
shadow motors get the goal through their own direction and offset. What is slow on a real
bus is set up at open: Return Delay Time (default 500 us per motor), and the FTDI adapter's
latency timer (default 16 ms per read) is checked and reported. A failed packet is tried
`io_retries` more times before BusError; everything is counted for /diagnostics (`health()`).
"""
from __future__ import annotations

import fcntl
import os
import termios
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import serial
from dynamixel_sdk import COMM_RX_CORRUPT, COMM_RX_TIMEOUT, COMM_SUCCESS, GroupSyncRead, GroupSyncWrite, \
    PacketHandler, PortHandler

from twinvla_ros.hardware.motors.arm_bus import ArmBus, BusError, BusReading
from twinvla_ros.hardware.motors.dynamixel import control_table as ct
from twinvla_ros.hardware.motors.dynamixel.config import ArmConversion, DynamixelArmConfig
from twinvla_ros.reporting import Level, Status
from twinvla_ros.robot.description import load_description

USB_SERIAL_SYSFS = Path("/sys/bus/usb-serial/devices")
# What the serial layer raises under the SDK when the adapter goes away (termios: a flush).
SERIAL_ERRORS = (serial.SerialException, OSError, termios.error)
WANTED_LATENCY_TIMER_MS = 1


def ftdi_latency_timer_ms(port: str, sysfs: Path | None = None) -> int | None:
    """The FTDI driver's latency_timer (ms) of a serial port, following udev symlinks
    (/dev/ttyDXL_x -> /dev/ttyUSB0); None when the port is not an FTDI usb-serial device."""
    device = Path(os.path.realpath(port)).name
    try:
        return int(((sysfs or USB_SERIAL_SYSFS) / device / "latency_timer").read_text().strip())
    except (OSError, ValueError):
        return None


def _ids_text(ids: Sequence[int]) -> str:
    return "[" + ", ".join(map(str, ids)) + "]"


class DynamixelArmBus(ArmBus):
    """The servos of one arm on one serial port. Opening it pings every motor (BusError listing
    the missing IDs, port closed again: nothing half started), writes the settings that differ
    (torque off first where an EEPROM setting changes) and checks the latency timer; torque is
    otherwise left as found until `set_torque`.

    read() -> BusReading: positions rad (gripper: finger travel m), velocities rad/s (m/s),
    efforts = motor current in A (see config.py). `read_only` (a leader arm): torque is turned
    off at open, and goals and torque-on raise BusError.
    """

    def __init__(self, config: DynamixelArmConfig, joint_names: Sequence[str] | None = None,
                 gripper_stroke: float | None = None, *, read_only: bool = False,
                 hardware_error_period: float = 1.0, clock: Callable[[], float] = time.monotonic):
        """`joint_names` (six arm joints then the gripper joint) and `gripper_stroke` (m) come
        from the robot description of `config.side` when not given. `hardware_error_period`:
        seconds between reads of Hardware Error Status (0: at every read)."""
        if joint_names is None or gripper_stroke is None:
            arm = load_description().arms[config.side]
            joint_names = joint_names or (*arm.joint_names, arm.gripper_joint)
            gripper_stroke = arm.gripper_stroke if gripper_stroke is None else gripper_stroke
        self.joint_names = tuple(joint_names)
        expected = [f"{config.side}_{joint.name}" for joint in config.joints]
        if len(self.joint_names) != len(expected) + 1 or any(
                given not in (name, name.split("_", 1)[1]) for given, name in zip(self.joint_names, expected)):
            raise ValueError(f"joint_names {list(self.joint_names)} do not match the configured joints "
                             f"{expected} + the gripper joint")
        self.config = config
        self.read_only = read_only
        self.conversion = ArmConversion(config, gripper_stroke)
        self.warnings: list[str] = []           # set up problems that do not stop the bus
        self._ids = config.motor_ids
        self._clock = clock
        self._hardware_error_period = hardware_error_period
        self._lock = threading.RLock()          # one transaction on the wire at a time
        self._closed = True
        self._torque: bool | None = None        # None: mixed or unknown
        self._hardware_errors: dict[int, int] = {}
        self._models: dict[int, int] = {}
        self._goal_range: dict[int, tuple[int, int]] = {}
        self._next_hardware_check = 0.0
        self._counts = {"reads": 0, "writes": 0, "retries": 0, "timeouts": 0, "corrupt_replies": 0,
                        "failures": 0, "goal_clamps": 0}
        self._consecutive_failures = 0
        self._last_error = ""
        self._last_read_ms = float("nan")
        self._shadow_disagreement = 0.0
        self._latency_timer = ftdi_latency_timer_ms(config.port)

        self._port = PortHandler(config.port)
        self._packets = PacketHandler(ct.PROTOCOL_VERSION)
        try:
            # setBaudRate opens the port at that rate (openPort is setBaudRate(1 Mbps)).
            opened = self._port.setBaudRate(config.baud)
        except SERIAL_ERRORS as error:
            raise BusError(f"{config.role}: cannot open Dynamixel port {config.port}: {error}") from error
        if not opened:
            raise BusError(f"{config.role}: cannot open Dynamixel port {config.port} at {config.baud} bit/s")
        try:
            # One owner per bus: a second process (a calibration, a teleop script) interleaving
            # packets with the driver's would corrupt both. pyserial's `exclusive` is this flock.
            fcntl.flock(self._port.ser.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            self._port.closePort()
            raise BusError(f"{config.role}: Dynamixel port {config.port} is in use by another process "
                           f"(the arm driver?): {error}") from error
        self._closed = False
        try:
            self._start()
        except BaseException:
            self._port.closePort()
            self._closed = True
            raise

    # ---- set up ---------------------------------------------------------------------------------

    def _start(self) -> None:
        missing = []
        for motor_id in self._ids:
            try:
                self._models[motor_id] = self._transact("ping", [motor_id],
                                                        lambda i=motor_id: self._packets.ping(self._port, i))[0]
            except BusError:
                missing.append(motor_id)
        if missing:
            found = [i for i in self._ids if i not in missing]
            raise BusError(f"{self.config.role} on {self.config.port}: motor(s) {_ids_text(missing)} do not "
                           f"answer a ping (answering: {_ids_text(found)}); nothing was started")
        torque_found = []
        for motor_id in self._ids:
            torque_found.append(self._set_up_motor(motor_id))
        self._torque = all(torque_found) if len(set(torque_found)) == 1 else None

        self._present = GroupSyncRead(self._port, self._packets, *ct.PRESENT_BLOCK)
        self._errors = GroupSyncRead(self._port, self._packets, *ct.HARDWARE_ERROR_STATUS)
        self._goals = GroupSyncWrite(self._port, self._packets, *ct.GOAL_POSITION)
        for motor_id in self._ids:
            self._present.addParam(motor_id)
            self._errors.addParam(motor_id)
            self._goals.addParam(motor_id, ct.to_bytes(0, ct.GOAL_POSITION.size))
        self._next_hardware_check = self._clock() + self._hardware_error_period

        if self._latency_timer is not None and self._latency_timer != WANTED_LATENCY_TIMER_MS:
            device = Path(os.path.realpath(self.config.port)).name
            self.warnings.append(
                f"{self.config.port}: the FTDI latency_timer is {self._latency_timer} ms, not "
                f"{WANTED_LATENCY_TIMER_MS} ms: every read waits for it. Set it with `echo 1 | sudo tee "
                f"{USB_SERIAL_SYSFS}/{device}/latency_timer` or a udev rule")
        for motor_id, bits in self._hardware_errors.items():
            self.warnings.append(f"motor {motor_id}: hardware error {', '.join(ct.hardware_error_names(bits))} "
                                 "(reboot or power-cycle it)")

    def _set_up_motor(self, motor_id: int) -> bool:
        """Reads the motor's settings and writes those that differ; returns its torque state
        after set-up. EEPROM settings need torque off: it is turned off first only then."""
        data = bytes(self._transact("read of the settings", [motor_id], lambda: self._packets.readTxRx(
            self._port, motor_id, *ct.SETTINGS_BLOCK))[0])

        def register(reg: ct.Register) -> int:
            start = reg.address - ct.SETTINGS_BLOCK.address
            return int.from_bytes(data[start:start + reg.size], "little", signed=reg.size == 4)

        wanted = [(ct.RETURN_DELAY_TIME, self.config.return_delay_register)]
        mode = self.config.operating_mode(motor_id)
        if not self.read_only:
            wanted.append((ct.OPERATING_MODE, int(mode)))
            if motor_id == self.config.gripper.motor.id:
                wanted.append((ct.CURRENT_LIMIT, self.config.gripper.current_limit))
            wanted.append((ct.PROFILE_VELOCITY, self.config.profile_velocity))
        changes = [(reg, value) for reg, value in wanted if register(reg) != value]
        torque = bool(register(ct.TORQUE_ENABLE))
        eeprom = any(reg.address < ct.TORQUE_ENABLE.address for reg, _ in changes)
        if torque and (eeprom or self.read_only):
            self._write(motor_id, ct.TORQUE_ENABLE, 0)
            torque = False
        for reg, value in changes:
            self._write(motor_id, reg, value)
        if register(ct.HARDWARE_ERROR_STATUS):
            self._hardware_errors[motor_id] = register(ct.HARDWARE_ERROR_STATUS)
        self._goal_range[motor_id] = (
            (register(ct.MIN_POSITION_LIMIT), register(ct.MAX_POSITION_LIMIT)) if mode == ct.OperatingMode.POSITION
            else ct.MULTI_TURN_RANGE)
        return torque

    # ---- the wire -------------------------------------------------------------------------------

    def _transact(self, what: str, ids: Sequence[int], attempt: Callable[[], int | tuple]) -> tuple:
        """Runs one SDK call with retries and returns what it returned, as a tuple. The SDK
        returns `result` (tx only, group calls), `(result, error)` (writes) or
        `(value, result, error)` (ping, read). BusError naming the motors and the SDK's text
        when every try failed, or when a servo's status packet reports an error (the Alert bit
        alone only schedules a Hardware Error Status read)."""
        with self._lock:
            if self._closed:
                raise BusError(f"{self.config.role}: the bus on {self.config.port} is closed")
            text = ""
            for attempt_number in range(self.config.io_retries + 1):
                if attempt_number:
                    self._counts["retries"] += 1
                try:
                    returned = attempt()
                except SERIAL_ERRORS as error:
                    self._release_port()
                    text = f"serial port error: {error}"
                    continue
                values = returned if isinstance(returned, tuple) else (returned,)
                result, error = (values[0], 0) if len(values) == 1 else values[-2:]
                if result == COMM_SUCCESS:
                    self._consecutive_failures = 0
                    if error:
                        self._status_error(ids[0], error, what)
                    return values
                self._counts["timeouts"] += result == COMM_RX_TIMEOUT
                self._counts["corrupt_replies"] += result == COMM_RX_CORRUPT
                text = self._packets.getTxRxResult(result)
            self._counts["failures"] += 1
            self._consecutive_failures += 1
            motors = f"motor {ids[0]}" if len(ids) == 1 else f"motors {_ids_text(ids)}"
            self._last_error = f"{what} for {motors} failed after {self.config.io_retries + 1} tries: {text}"
            raise BusError(f"{self.config.role} on {self.config.port}: {self._last_error}")

    def _release_port(self) -> None:
        # The SDK marks the port in use per packet and does not clear the mark when the serial
        # layer raises (adapter unplugged); under our lock nothing else is using it.
        self._port.is_using = False

    def _status_error(self, motor_id: int, error: int, what: str) -> None:
        if error & ct.STATUS_ALERT:
            self._next_hardware_check = 0.0        # read Hardware Error Status at the next read
        if error & ~ct.STATUS_ALERT:
            refusal = self._packets.getRxPacketError(error & ~ct.STATUS_ALERT)
            self._last_error = f"{what} refused by motor {motor_id}: {refusal}"
            self._counts["failures"] += 1
            self._consecutive_failures = 1
            raise BusError(f"{self.config.role} on {self.config.port}: {self._last_error}")

    def _write(self, motor_id: int, reg: ct.Register, value: int) -> None:
        write = {1: self._packets.write1ByteTxRx, 2: self._packets.write2ByteTxRx,
                 4: self._packets.write4ByteTxRx}[reg.size]
        unsigned = value & ((1 << (8 * reg.size)) - 1)
        self._transact(f"write of {value} to address {reg.address}", [motor_id],
                       lambda: write(self._port, motor_id, reg.address, unsigned))

    def _read_present(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """(position counts, velocity units, current units) of every motor and the stamp."""
        stamp = [0.0]

        def attempt():
            stamp[0] = self._clock()             # the servos sample as the instruction arrives
            return self._complete(self._present, ct.PRESENT_BLOCK.size)

        with self._lock:
            started = time.perf_counter()
            try:
                self._transact("sync read of present position/velocity/current", self._ids, attempt)
            except BusError as error:
                raise BusError(f"{error}{self._diagnosis()}") from None
            self._last_read_ms = (time.perf_counter() - started) * 1e3
            get = self._present.getData
            currents = [ct.to_signed(get(i, *ct.PRESENT_CURRENT), 2) for i in self._ids]
            velocities = [ct.to_signed(get(i, *ct.PRESENT_VELOCITY), 4) for i in self._ids]
            positions = [ct.to_signed(get(i, *ct.PRESENT_POSITION), 4) for i in self._ids]
            self._counts["reads"] += 1
            if self._clock() >= self._next_hardware_check:
                self._check_hardware_errors()
        return np.array(positions), np.array(velocities), np.array(currents), stamp[0]

    def _complete(self, group: GroupSyncRead, size: int) -> int:
        """A sync read's result, or COMM_RX_CORRUPT when the SDK accepted a reply holding fewer
        bytes than asked for (a late status packet of an earlier transaction read as this one's):
        its getData would index past the end, so the read is retried like any corrupt reply."""
        result = group.txRxPacket()
        if result == COMM_SUCCESS and any(len(group.data_dict.get(i) or ()) < size for i in self._ids):
            return COMM_RX_CORRUPT
        return result

    def _check_hardware_errors(self) -> None:
        """Hardware Error Status of every motor in one sync read; a failure here is counted,
        not raised (the reading it follows is good)."""
        self._next_hardware_check = self._clock() + self._hardware_error_period
        try:
            self._transact("sync read of hardware error status", self._ids,
                           lambda: self._complete(self._errors, ct.HARDWARE_ERROR_STATUS.size))
        except BusError:
            return
        for motor_id in self._ids:
            bits = self._errors.getData(motor_id, *ct.HARDWARE_ERROR_STATUS)
            if bits:
                self._hardware_errors[motor_id] = bits
            else:
                self._hardware_errors.pop(motor_id, None)

    def _diagnosis(self) -> str:
        """After a failed sync read: which motors still answer a ping (one try each)."""
        try:
            silent = [i for i in self._ids if self._packets.ping(self._port, i)[1] != COMM_SUCCESS]
        except SERIAL_ERRORS as error:
            self._release_port()
            return f"; the port fails: {error}"
        return f"; not answering a ping: {_ids_text(silent)}" if silent else "; every motor answers a ping"

    # ---- ArmBus ---------------------------------------------------------------------------------

    def read(self) -> BusReading:
        counts, velocities, currents, stamp = self._read_present()
        positions, velocities, efforts = self.conversion.joint_values(counts, velocities, currents)
        self._shadow_disagreement = self.conversion.shadow_disagreement(counts)
        return BusReading(positions, velocities, efforts, stamp)

    def raw_positions(self) -> dict[int, int]:
        """Present position counts by motor ID (what calibration records)."""
        counts, _, _, _ = self._read_present()
        return dict(zip(self._ids, counts.tolist()))

    def write_targets(self, positions: np.ndarray) -> None:
        """(7,) goals: six joints in rad then finger travel in m (clamped to the stroke). A goal
        beyond a motor's range (position mode: its position limits) is clamped and counted:
        the servo would refuse it silently (a sync write has no reply)."""
        if self.read_only:
            raise BusError(f"{self.config.role} is read-only (a leader arm): it takes no goal positions")
        targets = np.asarray(positions, dtype=np.float64)
        if targets.shape != (len(self.joint_names),) or not np.all(np.isfinite(targets)):
            raise ValueError(f"write_targets needs {len(self.joint_names)} finite values, got {positions!r}")
        goals = self.conversion.goal_counts(targets)
        with self._lock:
            for motor_id, goal in zip(self._ids, goals.tolist()):
                low, high = self._goal_range[motor_id]
                if not low <= goal <= high:
                    self._counts["goal_clamps"] += 1
                    goal = min(max(goal, low), high)
                self._goals.changeParam(motor_id, ct.to_bytes(goal, ct.GOAL_POSITION.size))
            self._transact("sync write of goal positions", self._ids, self._goals.txPacket)
            self._counts["writes"] += 1

    def set_torque(self, enabled: bool) -> None:
        """Torque Enable of every motor (acknowledged writes). Before enabling, each motor's goal
        is set to its present position (acknowledged too), so nothing jumps."""
        if enabled and self.read_only:
            raise BusError(f"{self.config.role} is read-only (a leader arm): its torque stays off")
        with self._lock:
            if enabled:
                counts, _, _, _ = self._read_present()
                for motor_id, count in zip(self._ids, counts.tolist()):
                    self._write(motor_id, ct.GOAL_POSITION, count)
                    self._goals.changeParam(motor_id, ct.to_bytes(count, ct.GOAL_POSITION.size))
            self._torque = None
            for motor_id in self._ids:
                self._write(motor_id, ct.TORQUE_ENABLE, int(bool(enabled)))
            self._torque = bool(enabled)

    def close(self) -> None:
        """Applies `torque_on_shutdown` (hold: torque left on, holding the last goal; off:
        torque off) and closes the port. BusError, after closing, when torque-off failed."""
        with self._lock:
            if self._closed:
                return
            problem = None
            try:
                if not self.read_only and self.config.torque_on_shutdown == "off":
                    for motor_id in self._ids:
                        try:
                            self._write(motor_id, ct.TORQUE_ENABLE, 0)
                        except BusError as error:
                            problem = problem or error
                    self._torque = False if problem is None else None
            finally:
                self._port.closePort()
                self._closed = True
            if problem is not None:
                raise BusError(f"torque off at close failed, the arm may still hold: {problem}")

    # ---- reporting ------------------------------------------------------------------------------

    @property
    def hardware_errors(self) -> dict[int, tuple[str, ...]]:
        """Motor ID -> names of its set Hardware Error Status bits, as last read."""
        with self._lock:
            return {i: ct.hardware_error_names(bits) for i, bits in sorted(self._hardware_errors.items())}

    def health(self) -> Status:
        """For /diagnostics: ERROR while a motor reports a hardware error or the last transaction
        failed, WARN with set-up warnings (latency timer), else OK; values are str -> str."""
        with self._lock:
            errors = self.hardware_errors
            models = sorted({ct.MODEL_NAMES.get(m, f"model {m}") for m in self._models.values()})
            latency = "unknown (not an FTDI usb-serial device)" if self._latency_timer is None \
                else str(self._latency_timer)
            values = {
                "role": self.config.role,
                "port": self.config.port,
                "baud": str(self.config.baud),
                "motors": ",".join(map(str, self._ids)),
                "models": ", ".join(models),
                "access": "read-only (leader)" if self.read_only else "read-write",
                "torque": {True: "on", False: "off", None: "mixed or unknown"}[self._torque],
                "open": str(not self._closed).lower(),
                **{name: str(count) for name, count in self._counts.items()},
                "last_error": self._last_error,
                "last_read_ms": f"{self._last_read_ms:.2f}",
                "hardware_errors": "; ".join(f"{i}: {', '.join(names)}" for i, names in errors.items()) or "none",
                "latency_timer_ms": latency,
                "shadow_disagreement_rad": f"{self._shadow_disagreement:.4f}",
                "calibration": str(self.config.calibration_file) if self.config.calibrated else "none (YAML values)",
            }
            if errors:
                return Status(Level.ERROR, f"hardware error: {values['hardware_errors']}", values)
            if self._consecutive_failures:
                return Status(Level.ERROR, f"failing: {self._last_error}", values)
            if self.warnings:
                return Status(Level.WARN, self.warnings[0], values)
            return Status(Level.OK, "ok", values)

    def __enter__(self) -> "DynamixelArmBus":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
