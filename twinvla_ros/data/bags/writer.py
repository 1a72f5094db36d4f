"""One episode's MCAP file, written the way rosbag2's MCAP storage writes it, and crash safe.

Why the `mcap` library's Writer and not rosbags' `rosbag2.Writer`: rosbags closes a chunk only
when it passes 1 MiB and writes through a buffered file it never flushes, so a slow topic set
keeps minutes of data in memory and a `kill -9` loses it; changing that means reaching into its
storage internals. The mcap Writer has a public `flush()` that closes the open chunk and flushes
the stream, so this class decides when a chunk ends (its size reaches `chunk_size`, or it has
been open `chunk_seconds`) and calls it. After each flush everything closed is in the OS (page
cache): a killed process loses at most the open chunk. `recover_bag` reads such a file back.
About once a second (`sync_seconds`) the closed chunks are also synced to the disk: a power cut
then loses about a second, and the sync at the end of an episode has only that second left to
write (raw cameras write ~80 MB/s: a single sync at stop of a minute's page cache took seconds).

What goes into the file matches rosbag2 so that `ros2 bag info`, rosbags' AnyReader, the mcap
reader with the ROS 2 decoder and Foxglove all read it: profile `ros2`; one schema per message
type (encoding `ros2msg`, dependencies appended); one channel per topic (encoding `cdr`,
metadata `offered_qos_profiles` and `topic_type_hash`); message log and publish time = the
receive time handed in; at close a `rosbag2` metadata record holding the serialized
metadata.yaml, then the summary (schemas, channels, statistics, chunk indexes) and the footer.
Chunk compression is off by default: camera images barely compress (zstd: ~1.1x on a noisy
640x480 frame) and the CPU is needed by the robot.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from mcap.writer import CompressionType, Writer

from .files import bag_metadata, dump_metadata, write_metadata
from .topics import TopicSpec, describe

COMPRESSION = {"none": CompressionType.NONE, "zstd": CompressionType.ZSTD, "lz4": CompressionType.LZ4}
# A message record's framing in a chunk: opcode 1 + length 8 + channel 2 + sequence 4 + 2 times 8.
MESSAGE_RECORD_OVERHEAD = 31
LIBRARY = "twinvla_ros recorder"


def mcap_name(bag_dir: Path) -> str:
    return f"{bag_dir.name}_0.mcap"   # rosbag2's name for the first (only) file of a bag


class BagFileWriter:
    """Not thread safe: the recorder's writer thread owns it."""

    def __init__(self, bag_dir: Path, *, chunk_size: int = 2**20, chunk_seconds: float = 1.0,
                 compression: str = "none", sync_seconds: float = 1.0):
        self.bag_dir = Path(bag_dir)
        self.path = self.bag_dir / mcap_name(self.bag_dir)
        self.chunk_size = chunk_size
        self.chunk_seconds = chunk_seconds
        self._file = open(self.path, "xb")
        # The Writer's own chunk limit is never reached: maybe_close_chunk decides.
        self._mcap = Writer(self._file, chunk_size=2**62, compression=COMPRESSION[compression])
        self._mcap.start(profile="ros2", library=LIBRARY)
        self._file.flush()
        self._schemas: dict[str, int] = {}
        self.channels: dict[str, int] = {}
        self.topics: dict[str, TopicSpec] = {}
        self.counts: dict[str, int] = {}
        self.bytes: dict[str, int] = {}
        self.first_ns: int | None = None
        self.last_ns = 0
        self.chunks_closed = 0
        self._open_bytes = 0
        self._open_since: float | None = None   # monotonic time of the open chunk's first message
        self.sync_seconds = sync_seconds
        self._synced = time.monotonic()

    def add_topic(self, spec: TopicSpec) -> None:
        if spec.name in self.channels:
            return
        description = describe(spec.msgtype)
        if spec.msgtype not in self._schemas:
            self._schemas[spec.msgtype] = self._mcap.register_schema(
                spec.msgtype, "ros2msg", description.definition.encode())
        self.channels[spec.name] = self._mcap.register_channel(
            spec.name, "cdr", self._schemas[spec.msgtype],
            {"offered_qos_profiles": spec.qos, "topic_type_hash": description.rihs01})
        self.topics[spec.name] = spec
        self.counts[spec.name] = 0
        self.bytes[spec.name] = 0

    def write(self, topic: str, timestamp_ns: int, data: bytes) -> None:
        self._mcap.add_message(self.channels[topic], log_time=timestamp_ns, data=data,
                               publish_time=timestamp_ns, sequence=self.counts[topic])
        self.counts[topic] += 1
        self.bytes[topic] += len(data)
        self.first_ns = timestamp_ns if self.first_ns is None else min(self.first_ns, timestamp_ns)
        self.last_ns = max(self.last_ns, timestamp_ns)
        self._open_bytes += len(data) + MESSAGE_RECORD_OVERHEAD
        if self._open_since is None:
            self._open_since = time.monotonic()
        self.maybe_close_chunk()

    def chunk_age(self) -> float | None:
        """Seconds the open chunk has held messages; None when it holds none."""
        return None if self._open_since is None else time.monotonic() - self._open_since

    def maybe_close_chunk(self) -> None:
        age = self.chunk_age()
        if age is not None and (self._open_bytes >= self.chunk_size or age >= self.chunk_seconds):
            self.close_chunk()

    def close_chunk(self) -> None:
        """The open chunk and its message indexes to the OS (nothing left in Python buffers)."""
        if self._open_since is None:
            return
        self._mcap.flush()
        self.chunks_closed += 1
        self._open_bytes = 0
        self._open_since = None
        if time.monotonic() - self._synced >= self.sync_seconds:
            os.fdatasync(self._file.fileno())
            self._synced = time.monotonic()

    def topic_table(self) -> list[dict]:
        return [{"name": name, "type": spec.msgtype, "qos": spec.qos,
                 "rihs01": describe(spec.msgtype).rihs01, "count": self.counts[name]}
                for name, spec in self.topics.items()]

    def finish(self, custom_data: dict[str, str]) -> dict:
        """Close the MCAP (metadata record, summary, footer), fsync it, write metadata.yaml.
        Returns the metadata.yaml information."""
        self.close_chunk()
        first = self.first_ns if self.first_ns is not None else 0
        information = bag_metadata(self.path.name, self.topic_table(), first, self.last_ns, custom_data)
        # rosbag2 (MetadataIo::serialize_metadata) stores the metadata.yaml document here.
        self._mcap.add_metadata("rosbag2", {"serialized_metadata": dump_metadata(information)})
        self._mcap.finish()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        write_metadata(self.bag_dir, information)
        return information

    def abort(self) -> None:
        """Close the file as it stands (the episode is being discarded)."""
        self._file.close()

    @property
    def file_bytes(self) -> int:
        return self.path.stat().st_size
