"""What every benchmark prints first: the machine the figures were measured on."""
from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

# The benchmarks run from a source checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_line(**versions: str) -> str:
    """`machine=...` with CPU, cores, Python, the given library versions and the 1-minute load
    average (other processes share these cores: the load says how shared the figures are)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    extra = "".join(f", {name}={value}" for name, value in versions.items())
    return (f'machine=cpu="{cpu_model()}", cores={cores}, python={platform.python_version()}'
            f"{extra}, loadavg_1min={load:.2f}")
