"""What every benchmark prints first: the machine the figures were measured on."""
from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
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


def median_ms(action, repeats: int = 20, warmup: int = 1) -> float:
    """Median wall time of `action()` in ms over `repeats` calls, after `warmup` untimed ones."""
    for _ in range(warmup):
        action()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def record_sim_demos(out: Path, episodes: int) -> None:
    """lift_box demonstrations recorded by the real graph (`twinvla-ros record --sim`, the
    scripted expert) into `out`; exits with the recorder's error if it fails."""
    done = subprocess.run([sys.executable, "-m", "twinvla_ros.cli.main", "record", "--sim", "--task", "lift_box",
                           "--episodes", str(episodes), "--out", str(out), "--isolate"], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"recording the demos failed:\n{done.stderr[-3000:]}")

