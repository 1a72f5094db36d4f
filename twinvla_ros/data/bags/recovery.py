"""Bags whose recorder died: keep every complete record, rewrite a complete MCAP.

MCAP is append-only and the recorder closes chunks by size and age, so a killed recorder leaves
a file whose every chunk but the last is whole. `McapScan` walks the record framing first
(opcode + length, seeks only) to find where the last complete record ends, then hands exactly
that prefix to the mcap library's `StreamReader`; a chunk whose CRC fails is skipped and counted
(its framing is intact, so the records after it still count), any other unreadable record ends
the scan there. `recover_bag` writes what was read into a new, complete MCAP (schemas, channels,
messages, metadata and attachments as they were; chunked as the recorder chunks), keeps the
original as `<name>.mcap.truncated`, writes metadata.yaml with the recovered counts and marks
the sidecar "recovered". A complete bag is left alone.
"""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from mcap.opcode import Opcode
from mcap.records import Attachment, Channel, Chunk, Footer, Message, Metadata, Schema
from mcap.stream_reader import StreamReader, breakup_chunk
from mcap.writer import Writer

from .files import bag_metadata, dump_metadata, read_metadata, read_sidecar, update_sidecar, write_metadata
from .topics import RecordingError, parse_qos
from .writer import LIBRARY

MAGIC = b"\x89MCAP0\r\n"
TRUNCATED_SUFFIX = ".truncated"
# Whatever a damaged file makes the record parsers raise: the file is unreadable from there on.
_DAMAGE = (ValueError, KeyError, IndexError, struct.error, EOFError, OverflowError, RuntimeError,
           MemoryError, TypeError, AttributeError, UnicodeDecodeError, LookupError)


class RecoveryError(RecordingError):
    """The bag cannot be recovered (no MCAP file, not an MCAP file); the message says why."""


class _Prefix:
    """The first `end` bytes of a file, as a stream."""

    def __init__(self, file, end: int):
        self._file, self._left = file, end - file.tell()

    def read(self, n: int = -1) -> bytes:
        n = self._left if n < 0 else min(n, self._left)
        data = self._file.read(n) if n > 0 else b""
        self._left -= len(data)
        return data


class McapScan:
    """The complete records of one MCAP file, chunk contents expanded."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.size = self.path.stat().st_size
            with open(self.path, "rb") as file:
                magic = file.read(len(MAGIC))
                if magic != MAGIC:
                    raise RecoveryError(f"{self.path} is not an MCAP file (it does not start with the MCAP magic)")
                self.complete_end, self.has_footer = self._frame(file)
        except OSError as error:
            raise RecoveryError(f"cannot read {self.path}: {error.strerror or error}") from None
        self.ends_with_magic = self.has_footer and self.complete_end + len(MAGIC) == self.size
        self.reason = ""          # why reading stopped before the end, "" if it did not
        self.chunks = 0           # chunks read by records()
        self.corrupt_chunks = 0   # of which skipped because their CRC or compression failed

    def _frame(self, file) -> tuple[int, bool]:
        """(end of the last complete record, whether that record is the footer)."""
        position, is_footer = len(MAGIC), False
        while position + 9 <= self.size and not is_footer:
            file.seek(position)
            opcode, length = struct.unpack("<BQ", file.read(9))
            if position + 9 + length > self.size:
                break
            position += 9 + length
            is_footer = opcode == Opcode.FOOTER
        return position, is_footer

    @property
    def is_complete(self) -> bool:
        return self.ends_with_magic

    @property
    def lost_bytes(self) -> int:
        return self.size - self.complete_end - (len(MAGIC) if self.ends_with_magic else 0)

    def records(self) -> Iterator:
        """Header, Schema, Channel, Message, Metadata, Attachment... in file order."""
        with open(self.path, "rb") as file:
            file.seek(len(MAGIC))
            stream = StreamReader(_Prefix(file, self.complete_end), skip_magic=True, emit_chunks=True,
                                  validate_crcs=True, record_size_limit=self.size)
            self.chunks = self.corrupt_chunks = 0
            try:
                for record in stream.records:
                    if isinstance(record, Chunk):
                        self.chunks += 1
                        try:
                            inner = breakup_chunk(record, validate_crc=True)
                        except Exception as error:   # noqa: BLE001 -- CRC, decompression: the chunk is lost
                            self.corrupt_chunks += 1
                            self.reason = f"chunk {self.chunks} is damaged ({error}); skipped"
                            continue
                        yield from inner
                    else:
                        yield record
                    if isinstance(record, Footer):
                        return
            except _DAMAGE as error:
                self.reason = f"unreadable record after chunk {self.chunks} ({type(error).__name__}: {error})"
            except Exception as error:   # noqa: BLE001 -- McapError and relatives from a damaged file
                if type(error).__name__ != "EndOfFile":
                    self.reason = f"unreadable record after chunk {self.chunks} ({error})"
        if not self.has_footer and not self.reason:
            self.reason = f"the file ends inside a record ({self.lost_bytes} bytes after the last complete one)"


@dataclass
class RecoveryReport:
    path: Path
    action: str                      # "nothing to do", "recovered", "metadata written"
    counts: dict[str, int] = field(default_factory=dict)
    bytes_dropped: int = 0           # bytes after the last complete record (the open chunk)
    reason: str = ""                 # why the file was incomplete

    @property
    def changed(self) -> bool:
        return self.action != "nothing to do"

    def format(self) -> str:
        lines = [f"{self.path}: {self.action}"]
        if self.reason:
            lines.append(f"  {self.reason}")
        if self.changed:
            lines.append(f"  {sum(self.counts.values())} messages kept, {self.bytes_dropped} bytes lost")
            width = max([5] + [len(name) for name in self.counts])
            lines += [f"  {name:<{width}}  {count:>8}" for name, count in self.counts.items()]
        return "\n".join(lines)


def find_mcap(bag: str | Path) -> Path:
    """The bag's MCAP file: `bag` itself, or the one .mcap in the folder (else its .truncated
    original, when a recovery was interrupted before the new file took its name)."""
    bag = Path(bag)
    if bag.is_file():
        return bag
    if not bag.is_dir():
        raise RecoveryError(f"{bag} does not exist")
    files = sorted(bag.glob("*.mcap")) or sorted(bag.glob(f"*.mcap{TRUNCATED_SUFFIX}"))
    if not files:
        raise RecoveryError(f"{bag} holds no .mcap file")
    if len(files) > 1:
        raise RecoveryError(f"{bag} holds {len(files)} .mcap files; give one of them")
    return files[0]


def _topic_table(channels: dict[int, Channel], schemas: dict[int, Schema], counts: dict[int, int]) -> list[dict]:
    table = []
    for channel_id, channel in channels.items():
        qos = channel.metadata.get("offered_qos_profiles", "")
        try:
            parse_qos(qos)
        except RecordingError:
            qos = ""    # a foreign writer's QoS we cannot read is left out rather than fail recovery
        schema = schemas.get(channel.schema_id)
        table.append({"name": channel.topic, "type": schema.name if schema else "", "qos": qos,
                      "rihs01": channel.metadata.get("topic_type_hash", ""), "count": counts[channel_id]})
    return table


def _custom_data(sidecar: dict, flags: list[str]) -> dict[str, str]:
    success = sidecar.get("success")
    custom = {"task": sidecar.get("task", ""), "operator_note": sidecar.get("operator_note", ""),
              "success": {True: "true", False: "false"}.get(success, "unknown"),
              "start_time_ns": str(sidecar.get("start_time_ns", "")), "flags": json.dumps(flags),
              "recorder": "twinvla_ros"}
    if "index" in sidecar:
        custom["episode_index"] = str(sidecar["index"])
    custom.update({str(k): str(v) for k, v in (sidecar.get("extra") or {}).items()})
    return custom


def recover_bag(path: str | Path, *, chunk_size: int = 2**20) -> RecoveryReport:
    source = find_mcap(path)
    bag_dir = source.parent
    scan = McapScan(source)
    if scan.is_complete and source.suffix == ".mcap":
        if read_metadata(bag_dir) is not None:
            return RecoveryReport(bag_dir, "nothing to do")
        action = "metadata written"   # the MCAP was closed, the recorder died before metadata.yaml
    else:
        action = "recovered"
    final = source.with_name(source.name.removesuffix(TRUNCATED_SUFFIX))
    target = final.with_name(final.name + ".recovering") if action == "recovered" else None

    schemas: dict[int, Schema] = {}
    channels: dict[int, Channel] = {}
    counts: dict[int, int] = {}
    new_schema: dict[int, int] = {}
    new_channel: dict[int, int] = {}
    first, last, lost_messages = None, 0, 0
    output = open(target, "wb") if target else None
    try:
        writer = None
        if output:
            writer = Writer(output, chunk_size=chunk_size)
            writer.start(profile="ros2", library=f"{LIBRARY} (recovered)")
        for record in scan.records():
            if isinstance(record, Schema) and record.id not in schemas:
                schemas[record.id] = record
                if writer:
                    new_schema[record.id] = writer.register_schema(record.name, record.encoding, record.data)
            elif isinstance(record, Channel) and record.id not in channels:
                channels[record.id] = record
                counts[record.id] = 0
                if writer:
                    new_channel[record.id] = writer.register_channel(
                        record.topic, record.message_encoding, new_schema.get(record.schema_id, 0),
                        record.metadata)
            elif isinstance(record, Message):
                if record.channel_id not in channels:
                    lost_messages += 1   # its channel was in a damaged chunk
                    continue
                counts[record.channel_id] += 1
                first = record.log_time if first is None else min(first, record.log_time)
                last = max(last, record.log_time)
                if writer:
                    writer.add_message(new_channel[record.channel_id], record.log_time, record.data,
                                       record.publish_time, record.sequence)
            elif writer and isinstance(record, Metadata) and record.name != "rosbag2":
                writer.add_metadata(record.name, record.metadata)
            elif writer and isinstance(record, Attachment):
                writer.add_attachment(record.create_time, record.log_time, record.name,
                                      record.media_type, record.data)
        sidecar = read_sidecar(bag_dir)
        flags = list(sidecar.get("flags", []))
        reason = scan.reason + (f"; {lost_messages} messages of unknown channels dropped" if lost_messages else "")
        if action == "recovered":
            flags.append(f"recovered after the recorder stopped writing: {scan.reason}")
        information = bag_metadata(final.name, _topic_table(channels, schemas, counts),
                                   first or 0, last, _custom_data(sidecar, flags))
        if writer:
            writer.add_metadata("rosbag2", {"serialized_metadata": dump_metadata(information)})
            writer.finish()
            output.flush()
            os.fsync(output.fileno())
    except OSError as error:
        if target:
            target.unlink(missing_ok=True)
        raise RecoveryError(f"cannot write the recovered bag in {bag_dir}: {error.strerror or error}") from None
    finally:
        if output:
            output.close()
    if target:
        if source == final:
            os.replace(source, final.with_name(final.name + TRUNCATED_SUFFIX))
        os.replace(target, final)
    write_metadata(bag_dir, information)
    if sidecar:
        update_sidecar(bag_dir, status="recovered", flags=flags,
                       counts={channels[c].topic: n for c, n in counts.items()})
    lost = scan.lost_bytes if action == "recovered" else 0
    return RecoveryReport(bag_dir, action, {channels[c].topic: n for c, n in counts.items()},
                          lost, reason)

