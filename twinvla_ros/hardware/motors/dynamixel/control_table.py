"""ROBOTIS Dynamixel X-series control table (Protocol 2.0): the registers this backend uses.

Addresses and sizes as in the ROBOTIS e-manual for XM430-W350 / XM540-W270 / XL430 / XL330
(shared reference: anubis-hardware.md). EEPROM registers (address < 64) can be written only
with Torque Enable = 0; multi-byte values are little-endian, the present values signed.
"""
from __future__ import annotations

from enum import IntEnum, IntFlag
from typing import NamedTuple

PROTOCOL_VERSION = 2.0


class Register(NamedTuple):
    address: int
    size: int        # bytes


# EEPROM
MODEL_NUMBER = Register(0, 2)
FIRMWARE_VERSION = Register(6, 1)
RETURN_DELAY_TIME = Register(9, 1)        # units of 2 us; factory default 250 (500 us)
OPERATING_MODE = Register(11, 1)
CURRENT_LIMIT = Register(38, 2)           # units of CURRENT_UNIT_A
MAX_POSITION_LIMIT = Register(48, 4)      # position mode only: goals beyond are refused
MIN_POSITION_LIMIT = Register(52, 4)
# RAM
TORQUE_ENABLE = Register(64, 1)
HARDWARE_ERROR_STATUS = Register(70, 1)
PROFILE_VELOCITY = Register(112, 4)       # units of VELOCITY_UNIT_RPM; 0: no profile
GOAL_POSITION = Register(116, 4)
PRESENT_CURRENT = Register(126, 2)
PRESENT_VELOCITY = Register(128, 4)
PRESENT_POSITION = Register(132, 4)

# One sync read fetches current, velocity and position: three registers, one contiguous block.
PRESENT_BLOCK = Register(PRESENT_CURRENT.address,
                         PRESENT_POSITION.address + PRESENT_POSITION.size - PRESENT_CURRENT.address)
# The settings checked and written at start, read back in one READ per motor.
SETTINGS_BLOCK = Register(RETURN_DELAY_TIME.address,
                          PROFILE_VELOCITY.address + PROFILE_VELOCITY.size - RETURN_DELAY_TIME.address)

COUNTS_PER_REV = 4096            # 0.088 deg per count
CENTRE_COUNT = 2048              # the count this backend calls 0 rad of the motor
VELOCITY_UNIT_RPM = 0.229
CURRENT_UNIT_A = 0.00269         # XM430 / XM540: 2.69 mA per unit
RETURN_DELAY_UNIT_US = 2
POSITION_MODE_RANGE = (0, COUNTS_PER_REV - 1)            # one turn; the EEPROM limits narrow it
MULTI_TURN_RANGE = (-1_048_575, 1_048_575)               # extended / current-based position


class OperatingMode(IntEnum):
    """Values of Operating Mode (11); the YAML names them in lower case."""
    CURRENT = 0
    VELOCITY = 1
    POSITION = 3
    EXTENDED_POSITION = 4
    CURRENT_BASED_POSITION = 5
    PWM = 16


class HardwareError(IntFlag):
    """Bits of Hardware Error Status (70). A servo with one set answers every packet with the
    Alert bit (STATUS_ALERT) in its error byte; overload, overheating and electrical shock also
    shut its torque off (factory Shutdown setting) until it is rebooted or power-cycled."""
    INPUT_VOLTAGE = 1 << 0
    OVERHEATING = 1 << 2
    MOTOR_ENCODER = 1 << 3
    ELECTRICAL_SHOCK = 1 << 4
    OVERLOAD = 1 << 5


STATUS_ALERT = 0x80              # the status packet's error byte: see Hardware Error Status


def hardware_error_names(bits: int) -> tuple[str, ...]:
    """('overload', 'overheating', ...) for the set bits of Hardware Error Status; unknown bits
    are named by number so nothing a servo reports is dropped."""
    names = [flag.name.lower() for flag in HardwareError if bits & flag]
    unknown = bits & ~sum(HardwareError) & 0xFF
    names += [f"bit{i}" for i in range(8) if unknown & (1 << i)]
    return tuple(names)


MODEL_NAMES = {1020: "XM430-W350", 1030: "XM430-W210", 1120: "XM540-W270", 1130: "XM540-W150",
               1060: "XL430-W250", 1190: "XL330-M077", 1200: "XL330-M288"}


def to_signed(value: int, size: int) -> int:
    """Two's complement of a `size`-byte register value (the SDK returns them unsigned)."""
    bits = 8 * size
    return value - (1 << bits) if value & (1 << (bits - 1)) else value


def to_bytes(value: int, size: int) -> list[int]:
    """Little-endian bytes of a (possibly negative) register value, as the SDK's params want."""
    return list(int(value).to_bytes(size, "little", signed=value < 0))
