"""What a bag holds, in the shape of `ros2 bag info`, read without ROS.

A complete MCAP is read through its summary (channels, schemas, statistics, chunk indexes)
and its message indexes (each topic's first and last time), so no chunk is read: summarizing
a 10 GB episode is instant. A file whose writer died has no summary; then the complete records
are scanned (recovery.McapScan) and the summary says it needs `bag recover`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from mcap.data_stream import ReadDataStream
from mcap.reader import make_reader
from mcap.records import Channel, Message, MessageIndex, Schema

from .files import read_metadata, read_sidecar
from .recovery import McapScan, find_mcap


@dataclass
class TopicSummary:
    type: str
    count: int
    first_ns: int | None
    last_ns: int | None

    @property
    def rate_hz(self) -> float:
        if self.count < 2 or self.first_ns is None or self.last_ns == self.first_ns:
            return 0.0
        return (self.count - 1) * 1e9 / (self.last_ns - self.first_ns)


@dataclass
class BagSummary:
    path: Path                   # the bag folder
    mcap_path: Path
    complete: bool               # False: the writer died, `twinvla-ros bag recover` it
    size_bytes: int
    topics: dict[str, TopicSummary]
    custom_data: dict[str, str] = field(default_factory=dict)   # from metadata.yaml
    sidecar: dict = field(default_factory=dict)                 # episode.json
    ros_distro: str = ""

    @property
    def message_count(self) -> int:
        return sum(topic.count for topic in self.topics.values())

    @property
    def start_ns(self) -> int | None:
        firsts = [t.first_ns for t in self.topics.values() if t.first_ns is not None]
        return min(firsts) if firsts else None

    @property
    def end_ns(self) -> int | None:
        lasts = [t.last_ns for t in self.topics.values() if t.last_ns is not None]
        return max(lasts) if lasts else None

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9 if self.start_ns is not None else 0.0

    def format(self) -> str:
        def stamp(ns):
            if ns is None:
                return "-"
            return f"{time.strftime('%b %d %Y %H:%M:%S', time.localtime(ns // 10**9))}.{ns % 10**9:09d} " \
                   f"({ns // 10**9}.{ns % 10**9:09d})"

        lines = [f"Files:             {self.mcap_path.name}",
                 f"Bag size:          {self.size_bytes / 2**20:.1f} MiB",
                 "Storage id:        mcap",
                 f"ROS Distro:        {self.ros_distro or '-'}",
                 f"Duration:          {self.duration_s:.9f}s",
                 f"Start:             {stamp(self.start_ns)}",
                 f"End:               {stamp(self.end_ns)}",
                 f"Messages:          {self.message_count}"]
        if not self.complete:
            lines.append("State:             INCOMPLETE (the recorder did not close it): "
                         "run `twinvla-ros bag recover` on it")
        label = "Topic information: "
        for name, topic in self.topics.items():
            lines.append(f"{label}Topic: {name} | Type: {topic.type} | Count: {topic.count} | "
                         f"Hz: {topic.rate_hz:.1f} | Serialization Format: cdr")
            label = " " * len(label)
        label = "Custom data:       "
        for key, value in self.custom_data.items():
            lines.append(f"{label}{key}: {value}")
            label = " " * len(label)
        if self.sidecar:
            lines.append(f"Episode:           status {self.sidecar.get('status', '?')}, "
                         f"task {self.sidecar.get('task', '')!r}")
        return "\n".join(lines)


def _from_summary(mcap_path: Path) -> dict[str, TopicSummary] | None:
    """Topics from the summary and message indexes; None when the file has no usable index."""
    with open(mcap_path, "rb") as file:
        summary = make_reader(file).get_summary()
        if summary is None or summary.statistics is None:
            return None
        firsts: dict[int, int] = {}
        lasts: dict[int, int] = {}
        for chunk in summary.chunk_indexes:
            if not chunk.message_index_offsets and chunk.message_index_length == 0:
                return None
            for channel_id, offset in chunk.message_index_offsets.items():
                file.seek(offset + 9)   # past the record's opcode and length
                times = [t for t, _ in MessageIndex.read(ReadDataStream(file)).records]
                if times:
                    firsts[channel_id] = min(times + [firsts.get(channel_id, times[0])])
                    lasts[channel_id] = max(times + [lasts.get(channel_id, times[0])])
        counts = summary.statistics.channel_message_counts
        return {channel.topic: TopicSummary(
                    summary.schemas[channel.schema_id].name if channel.schema_id in summary.schemas else "",
                    counts.get(channel_id, 0), firsts.get(channel_id), lasts.get(channel_id))
                for channel_id, channel in summary.channels.items()}


def _from_scan(scan: McapScan) -> dict[str, TopicSummary]:
    schemas: dict[int, str] = {}
    channels: dict[int, Channel] = {}
    topics: dict[int, TopicSummary] = {}
    for record in scan.records():
        if isinstance(record, Schema):
            schemas[record.id] = record.name
        elif isinstance(record, Channel):
            channels[record.id] = record
            topics[record.id] = TopicSummary(schemas.get(record.schema_id, ""), 0, None, None)
        elif isinstance(record, Message) and record.channel_id in topics:
            topic = topics[record.channel_id]
            topic.count += 1
            topic.first_ns = record.log_time if topic.first_ns is None else min(topic.first_ns, record.log_time)
            topic.last_ns = record.log_time if topic.last_ns is None else max(topic.last_ns, record.log_time)
    return {channels[channel_id].topic: topic for channel_id, topic in topics.items()}


def bag_summary(path: str | Path) -> BagSummary:
    mcap_path = find_mcap(path)   # RecoveryError (a RecordingError) when there is none
    bag_dir = mcap_path.parent
    scan = McapScan(mcap_path)
    topics = None
    if scan.is_complete:
        try:
            topics = _from_summary(mcap_path)
        except Exception:   # noqa: BLE001 -- a damaged summary: count from the records instead
            topics = None
    if topics is None:
        topics = _from_scan(scan)
    information = read_metadata(bag_dir) or {}
    return BagSummary(path=bag_dir, mcap_path=mcap_path, complete=scan.is_complete,
                      size_bytes=scan.size, topics=topics,
                      custom_data=dict(information.get("custom_data") or {}),
                      sidecar=read_sidecar(bag_dir), ros_distro=str(information.get("ros_distro", "")))
