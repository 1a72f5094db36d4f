"""Episode bags -> one LeRobot v3.0 dataset: episodes converted in parallel worker processes,
appended in the order given, published only when complete.

Each worker reads a bag, builds its timeline and encodes its videos into the writer's staging
folder (convert_episode); the parent appends the staged episodes in input order (so a
dataset's episode numbering does not depend on which worker finished first) and finalizes.
A bag that cannot be read or is rejected is skipped and reported; nothing is published if no
episode converts. With `resume`, bags already in the dataset (by resolved path) are left out,
so the same command run again after more recording adds just the new episodes.
"""
from __future__ import annotations

import ctypes
import multiprocessing
import os
import queue
import signal
import sys
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing.managers import SyncManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from twinvla_ros.data.bags.directory import bags_under

from .episode import ConversionOptions, EpisodeRejected, convert_episode

# (bag, stage, done, total): stage "read" / "frames" from a worker, "done" / "skipped" when it ends.
ProgressEvent = Callable[[str, str, int, int], None]


@dataclass
class ConversionResult:
    dataset: object | None                          # writer.DatasetSummary; None: nothing published
    converted: list[tuple[str, dict]] = field(default_factory=list)      # (bag, report)
    skipped: list[tuple[str, str]] = field(default_factory=list)         # (bag, reason)
    notes: list[str] = field(default_factory=list)      # the writer's (a stale partial folder removed ...)


def find_bags(inputs: Iterable[str | Path]) -> list[Path]:
    """Bag folders under the inputs (a recording folder: its episodes in order; a bag folder;
    an .mcap file: its folder), each once; FileNotFoundError names a missing input."""
    bags: list[Path] = []
    for entry in inputs:
        path = Path(entry).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file or folder")
        for bag in bags_under(path):
            bag = (bag.parent if bag.is_file() else bag).resolve()
            if bag not in bags:
                bags.append(bag)
    return bags


def _die_with_parent(parent: int) -> None:
    """In a helper process: end when the converter ends. On Linux the kernel kills it when its
    parent dies (PR_SET_PDEATHSIG), so a convert killed with SIGKILL leaves no worker behind."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)          # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:                               # it died before prctl took effect
        os._exit(1)


def _worker(bag: str, staging: str, options: ConversionOptions, events) -> tuple[str, object]:
    """In a worker process: ("ok", StagedEpisode) or ("skipped", reason)."""
    def progress(stage: str, done: int, total: int) -> None:
        events.put((bag, stage, done, total))

    try:
        return "ok", convert_episode(bag, staging, options, progress=progress)
    except EpisodeRejected as error:
        return "skipped", str(error)
    except Exception as error:     # a corrupt or truncated bag: reported, the others go on
        return "skipped", f"cannot be read: {type(error).__name__}: {error}"


def convert(inputs: Iterable[str | Path], out: str | Path, options: ConversionOptions = ConversionOptions(), *,
            workers: int = 2, resume: bool = False, on_event: ProgressEvent | None = None,
            on_stage: Callable[[str, int, int], None] | None = None) -> ConversionResult:
    """Converts the bags under `inputs` into the dataset `out`. `on_event` hears each
    episode's progress, `on_stage` the writer's finalize stages."""
    from twinvla_ros.data.lerobot.writer import DatasetWriter

    out = Path(out).expanduser()
    on_event = on_event or (lambda bag, stage, done, total: None)
    result = ConversionResult(dataset=None)
    bags = find_bags(inputs)
    resume = resume and (out / "meta/info.json").is_file()      # nothing there yet: a new dataset
    with DatasetWriter(out, fps=options.fps, image_size=options.image_size, codec=options.codec,
                       resume=resume) as writer:
        already = {str(Path(source).resolve()) for source in writer.existing_sources}
        for bag in [b for b in bags if str(b) in already]:
            result.skipped.append((str(bag), "already in the dataset"))
            on_event(str(bag), "skipped", 1, 1)
        bags = [b for b in bags if str(b) not in already]
        for bag, (status, value) in _in_workers(bags, writer.staging_dir, options, workers, on_event):
            if status == "ok":
                writer.add(value)
                result.converted.append((str(bag), value.report))
                on_event(str(bag), "done", 1, 1)
            else:
                result.skipped.append((str(bag), value))
                on_event(str(bag), "skipped", 1, 1)
        if result.converted:
            result.dataset = writer.finalize(progress=on_stage)
        else:
            writer.abort()
        result.notes = list(writer.notes)
    return result


def _in_workers(bags: list[Path], staging: Path, options: ConversionOptions, workers: int,
                on_event: ProgressEvent) -> Iterator[tuple[Path, tuple[str, object]]]:
    """(bag, _worker's result) for each bag, in input order, converted in worker processes
    (none are started when there is nothing to convert); their progress goes to on_event."""
    if not bags:
        return
    context = multiprocessing.get_context("spawn")      # no fork of a process holding codec threads
    manager = SyncManager(ctx=context)
    manager.start(_die_with_parent, (os.getpid(),))
    with manager, ProcessPoolExecutor(max(1, workers), mp_context=context, initializer=_die_with_parent,
                                      initargs=(os.getpid(),)) as pool:
        events = manager.Queue()
        futures: list[tuple[Path, Future]] = [
            (bag, pool.submit(_worker, str(bag), str(staging / f"{i:06d}"), options, events))
            for i, bag in enumerate(bags)]
        for bag, future in futures:
            while not future.done():
                _drain(events, on_event, timeout=0.2)
            _drain(events, on_event, timeout=0.0)
            yield bag, future.result()


def _drain(events, on_event: ProgressEvent, timeout: float) -> None:
    try:
        event = events.get(timeout=timeout) if timeout else events.get_nowait()
        while True:
            on_event(*event)
            event = events.get_nowait()
    except queue.Empty:
        pass
