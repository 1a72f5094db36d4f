"""Where the package's data files (urdf/, config/, launch/) live.

Three ways the package gets installed, one lookup:
- a source checkout or `pip install -e .`: next to the `twinvla_ros/` source directory;
- `pip install .`: `<prefix>/share/twinvla_ros` (setup.py data_files);
- colcon: the ament index (`share/twinvla_ros` of an install space on AMENT_PREFIX_PATH).
"""
from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path

PACKAGE_NAME = "twinvla_ros"


def _ament_share_dirs() -> list[Path]:
    """What ament_index_python's get_package_share_directory finds, without importing ROS
    (this module sits below the ROS layer): every prefix on AMENT_PREFIX_PATH whose index
    registers the package."""
    dirs = []
    for prefix in filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)):
        if (Path(prefix) / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE_NAME).is_file():
            dirs.append(Path(prefix) / "share" / PACKAGE_NAME)
    return dirs


@lru_cache(maxsize=1)
def share_dir() -> Path:
    candidates = []
    if os.environ.get("TWINVLA_ROS_SHARE"):
        candidates.append(Path(os.environ["TWINVLA_ROS_SHARE"]))
    candidates.append(Path(__file__).resolve().parent.parent)
    candidates.append(Path(sys.prefix) / "share" / PACKAGE_NAME)
    candidates += _ament_share_dirs()
    for candidate in candidates:
        if (candidate / "urdf" / "anubis.urdf").is_file():
            return candidate
    raise FileNotFoundError(
        "twinvla_ros data files (urdf/, config/) not found; looked in "
        + ", ".join(str(c) for c in candidates)
        + ". Set TWINVLA_ROS_SHARE to the directory that holds urdf/ and config/."
    )


def urdf_path(name: str = "anubis.urdf") -> Path:
    return share_dir() / "urdf" / name


def config_path(name: str) -> Path:
    return share_dir() / "config" / name


# The trained policy the package ships (policies/<name>/, a checkpoint in the published
# layout): what the policy node, `twinvla-ros demo` and `eval` run unless told otherwise.
DEFAULT_POLICY = "lift_box_narrow"
# The shipped policy runs each chunk's right-conditioned half only (TwinVLAPolicy.chunk_offset):
# measured over 50 held-out seeds, 50/50 with it and 0/8 without (bench/RESULTS.md).
DEFAULT_POLICY_CHUNK_OFFSET = 10
DEFAULT_CHECKPOINT = "default"    # the `checkpoint` setting that names it
TINY_CHECKPOINT = "tiny"          # the embedded tiny model with random weights (plumbing only)


def policy_path(name: str = DEFAULT_POLICY) -> Path:
    return share_dir() / "policies" / name


def resolve_checkpoint(value: str) -> str:
    """A `checkpoint` setting -> a checkpoint directory, or "" for the embedded tiny model.

    "default": the shipped policy; "tiny" (or empty): the tiny random model; anything else is
    a directory, returned as given."""
    value = value.strip()
    if value in ("", TINY_CHECKPOINT):
        return ""
    if value == DEFAULT_CHECKPOINT:
        path = policy_path()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"the shipped default policy is missing: no {path / 'config.json'} "
                                    "(reinstall the package, or pass a checkpoint directory)")
        return str(path)
    return value


def resolve_chunk_offset(checkpoint: str, chunk_offset: int) -> int:
    """A `chunk_offset` setting -> the steps to drop: < 0 is the checkpoint's own (the shipped
    policy's DEFAULT_POLICY_CHUNK_OFFSET, 0 for any other)."""
    if chunk_offset >= 0:
        return chunk_offset
    return DEFAULT_POLICY_CHUNK_OFFSET if checkpoint.strip() == DEFAULT_CHECKPOINT else 0
