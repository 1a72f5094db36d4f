"""A dataset folder of episode bags: root/episode_000000, root/episode_000001, ...

`recording.json` at the root holds the robot/camera configuration the dataset was recorded
with (written by the first `check_config`); a later session with a different configuration is
refused with every difference listed, because a dataset mixing camera sizes or joint sets
cannot be trained on. Numbering resumes after the highest episode on disk, so re-opening a
folder appends and a discarded last episode's number is used again.

The checks run before an episode writes anything: the root can be created and written (a real
write, not a permission guess) and has at least `min_free_bytes` free.
"""
from __future__ import annotations

import json
import math
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from .files import atomic_write_text, read_sidecar
from .topics import ConfigMismatch, RecordingError

EPISODE_DIR = re.compile(r"episode_(\d{6,})")
DATASET_FILE = "recording.json"


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


@dataclass
class EpisodeRecord:
    index: int
    path: Path
    sidecar: dict = field(default_factory=dict)   # episode.json ({} when missing)

    @property
    def task(self) -> str:
        return str(self.sidecar.get("task", ""))

    @property
    def success(self) -> bool | None:
        return self.sidecar.get("success")

    @property
    def status(self) -> str:
        return str(self.sidecar.get("status", "unknown"))

    @property
    def flags(self) -> list[str]:
        return list(self.sidecar.get("flags", []))

    @property
    def duration_s(self) -> float | None:
        return self.sidecar.get("duration_s")


def normalized_config(config: object) -> dict:
    """The config as JSON would store it (tuples -> lists), or RecordingError saying why not."""
    if not isinstance(config, dict):
        raise RecordingError(f"the recording config must be a dict, got {type(config).__name__}")

    def check_keys(value, where):
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise RecordingError(f"config key {key!r} at {where or 'top level'} is not a string")
                check_keys(item, f"{where}.{key}" if where else key)
        elif isinstance(value, (list, tuple)):
            for item in value:
                check_keys(item, where)
        elif isinstance(value, float) and not math.isfinite(value):
            raise RecordingError(f"config value at {where} is {value}, not a finite number")

    check_keys(config, "")
    try:
        return json.loads(json.dumps(config, allow_nan=False))
    except (TypeError, ValueError) as error:
        raise RecordingError(f"the recording config cannot be stored as JSON: {error}") from None


def config_differences(dataset: object, now: object, prefix: str = "") -> list[str]:
    """Every difference between two configs: nested dicts by dotted key, the rest by value."""
    if isinstance(dataset, dict) and isinstance(now, dict):
        found = []
        for key in list(dataset) + [k for k in now if k not in dataset]:
            where = f"{prefix}.{key}" if prefix else key
            if key not in now:
                found.append(f"{where}: dataset {json.dumps(dataset[key])}, now missing")
            elif key not in dataset:
                found.append(f"{where}: dataset missing, now {json.dumps(now[key])}")
            else:
                found += config_differences(dataset[key], now[key], where)
        return found
    # JSON tells true from 1, Python's == does not.
    if dataset != now or isinstance(dataset, bool) != isinstance(now, bool):
        return [f"{prefix or '(config)'}: dataset {json.dumps(dataset)}, now {json.dumps(now)}"]
    return []


class RecordingDirectory:
    def __init__(self, root: str | Path, *, min_free_bytes: int = 2 * 2**30):
        self.root = Path(root).expanduser()
        self.min_free_bytes = int(min_free_bytes)

    def check_ready(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write_test_{time.time_ns()}"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as error:
            raise RecordingError(f"cannot write to {self.root}: {error.strerror or error}") from None
        free = shutil.disk_usage(self.root).free
        if free < self.min_free_bytes:
            raise RecordingError(f"only {_gib(free)} free on {self.root}, the minimum is "
                                 f"{_gib(self.min_free_bytes)} (min_free_gb)")

    def dataset_config(self) -> dict | None:
        """The config recording.json holds; None for a new dataset."""
        path = self.root / DATASET_FILE
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))["config"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise RecordingError(f"{path} cannot be read ({error}); fix or remove it") from None

    def check_config(self, config: dict) -> None:
        now = normalized_config(config)
        dataset = self.dataset_config()
        if dataset is None:
            self.root.mkdir(parents=True, exist_ok=True)
            record = {"config": now, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            atomic_write_text(self.root / DATASET_FILE, json.dumps(record, indent=2) + "\n")
            return
        differences = config_differences(dataset, now)
        if differences:
            raise ConfigMismatch(str(self.root), differences)

    def _indices(self) -> dict[int, Path]:
        if not self.root.is_dir():
            return {}
        return {int(match.group(1)): path for path in self.root.iterdir()
                if path.is_dir() and (match := EPISODE_DIR.fullmatch(path.name))}

    def next_index(self) -> int:
        return max(self._indices(), default=-1) + 1

    def episode_dir(self, index: int) -> Path:
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise RecordingError(f"an episode index is an int >= 0, got {index!r}")
        return self.root / f"episode_{index:06d}"

    def episodes(self) -> list[EpisodeRecord]:
        return [EpisodeRecord(index, path, read_sidecar(path))
                for index, path in sorted(self._indices().items())]


def bags_under(path: str | Path) -> list[Path]:
    """A dataset folder -> its episode folders in order; a bag folder or .mcap file -> itself."""
    path = Path(path)
    if path.is_dir() and not any(path.glob("*.mcap*")):
        episodes = RecordingDirectory(path).episodes()
        if episodes:
            return [episode.path for episode in episodes]
    return [path]
