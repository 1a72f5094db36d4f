"""The small files beside an episode's MCAP: the rosbag2 `metadata.yaml` and our `episode.json`.

Both are replaced atomically (write a temporary file in the same folder, fsync, rename), so a
crash leaves either the old or the new version, never half a file.

`episode.json` (the sidecar) is written when an episode starts, so a bag whose recorder died
still says what it was: task, note, config, start time and status ("recording" until stopped;
then "complete", or "recovered" after `recover_bag`).

`metadata.yaml` is rosbag2's bag description, version 9 as rosbag2 (Kilted) writes it:
storage `mcap`, per-topic counts, QoS profiles as a list, type hashes, and `custom_data`
(string -> string) where the episode's task, note, success and flags live for any rosbag2 tool.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from .topics import RecordingError, parse_qos

SIDECAR = "episode.json"
METADATA = "metadata.yaml"
ROSBAG2_VERSION = 9


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)


def write_sidecar(bag_dir: Path, sidecar: dict) -> None:
    atomic_write_text(bag_dir / SIDECAR, json.dumps(sidecar, indent=2, sort_keys=True) + "\n")


def read_sidecar(bag_dir: Path) -> dict:
    """The episode's sidecar; {} when it has none or it cannot be read (a foreign bag)."""
    try:
        sidecar = json.loads((Path(bag_dir) / SIDECAR).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return sidecar if isinstance(sidecar, dict) else {}


def update_sidecar(bag_dir: Path, **changes) -> dict:
    sidecar = read_sidecar(bag_dir)
    sidecar.update(changes)
    write_sidecar(bag_dir, sidecar)
    return sidecar


def bag_metadata(mcap_name: str, topics: list[dict], start_ns: int, end_ns: int,
                 custom_data: dict[str, str]) -> dict:
    """The rosbag2_bagfile_information mapping. topics: [{name, type, qos, rihs01, count}];
    start/end: first and last message log time (0, 0 for an empty bag)."""
    count = sum(topic["count"] for topic in topics)
    duration = max(0, end_ns - start_ns)
    return {
        "version": ROSBAG2_VERSION,
        "storage_identifier": "mcap",
        "relative_file_paths": [mcap_name],
        "duration": {"nanoseconds": duration},
        "starting_time": {"nanoseconds_since_epoch": start_ns},
        "message_count": count,
        "topics_with_message_count": [
            {"topic_metadata": {"name": topic["name"], "type": topic["type"],
                                "serialization_format": "cdr",
                                "offered_qos_profiles": parse_qos(topic["qos"]),
                                "type_description_hash": topic["rihs01"]},
             "message_count": topic["count"]}
            for topic in topics],
        "compression_format": "",
        "compression_mode": "",
        "files": [{"path": mcap_name, "starting_time": {"nanoseconds_since_epoch": start_ns},
                   "duration": {"nanoseconds": duration}, "message_count": count}],
        "custom_data": {str(key): str(value) for key, value in custom_data.items()},
        "ros_distro": "kilted",
    }


def dump_metadata(information: dict) -> str:
    return yaml.safe_dump({"rosbag2_bagfile_information": information}, sort_keys=False)


def write_metadata(bag_dir: Path, information: dict) -> None:
    atomic_write_text(bag_dir / METADATA, dump_metadata(information))


def read_metadata(bag_dir: Path) -> dict | None:
    """The bag's rosbag2_bagfile_information, None when metadata.yaml is missing."""
    path = Path(bag_dir) / METADATA
    if not path.exists():
        return None
    try:
        information = yaml.safe_load(path.read_text(encoding="utf-8"))["rosbag2_bagfile_information"]
    except (OSError, yaml.YAMLError, TypeError, KeyError) as error:
        raise RecordingError(f"{path} is not a rosbag2 metadata file: {error}") from None
    if not isinstance(information, dict):
        raise RecordingError(f"{path} is not a rosbag2 metadata file")
    return information


def update_custom_data(bag_dir: Path, **changes: str) -> None:
    """Change custom_data entries of an existing metadata.yaml (no-op while it has none: a bag
    still recording gets its metadata.yaml when it stops)."""
    information = read_metadata(bag_dir)
    if information is None:
        return
    custom = dict(information.get("custom_data") or {})
    custom.update({key: str(value) for key, value in changes.items()})
    information["custom_data"] = custom
    write_metadata(bag_dir, information)
