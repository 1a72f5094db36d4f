#!/usr/bin/env python3
"""Opens a dataset with the real lerobot 0.4.0 loader and with our reader and compares samples.

The dataset we write must be opened by lerobot (and so TwinVLA) and by twinvla_ros's own
reader alike. lerobot pins torch<2.8 (gigabytes of CUDA) and cannot go into the project's
venv, so this is run by hand, in a venv of its own, never by the test suite:

    python3.11 -m venv /tmp/lerobot-venv
    /tmp/lerobot-venv/bin/pip install --no-deps lerobot==0.4.0 \\
        /opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl torchvision==0.22.1 \\
        "datasets<4.2" "huggingface-hub<0.36" pandas pyarrow "av<16" numpy pillow draccus jsonlines \\
        packaging fsspec python-dateutil requests urllib3 idna certifi charset-normalizer tqdm pyyaml \\
        filelock multiprocess dill xxhash typing-extensions sympy mpmath accelerate safetensors
    /tmp/lerobot-venv/bin/python scripts/check_with_lerobot.py DATASET_DIR [--random 20]

--no-deps everywhere: pip must not resolve lerobot's torch pin (any torch works for reading;
the CPU torch 2.13 wheel is on disk). torchvision: lerobot's "pyav" backend is
torchvision.io.VideoReader, which torchvision removed in 0.24, so 0.22.1 it is; its compiled
ops (built for torch 2.7 with CUDA) do not load next to torch 2.13, and its import then fails
registering a fake kernel for the operator torchvision::nms. This script defines that
operator's schema (no kernel) before lerobot imports torchvision; the video path itself is
pure Python over PyAV and runs unchanged. That import also hands FFmpeg's log to Python, which
under PyAV 15 deadlocks threaded h264 decoding at times; the script turns that off again.

Per episode the first and last frame, plus --random random frames: lerobot's sample must have
a str task, (3, H, W) float32 images in [0, 1], a (20,) state, a (20, 20) action chunk
(delta_timestamps 0..19 / fps) and its pad mask, all equal to our reader's (images: mean
absolute difference below 2/255). Prints a summary; exit code 1 on any mismatch.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
IMAGE_TOLERANCE = 2 / 255
_KEEP_ALIVE: list = []


def _load_lerobot():
    """lerobot's dataset classes, importable next to a torch that torchvision 0.22 was not built for."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    # torchvision's own notes on its unloadable image extension and deprecated video API.
    warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
    # datasets writes an Arrow cache of the parquet files; keep it out of the user's cache.
    os.environ.setdefault("HF_DATASETS_CACHE", tempfile.mkdtemp(prefix="check_with_lerobot_"))
    import torch

    if not hasattr(torch.ops.torchvision, "nms"):
        schema = torch.library.Library("torchvision", "DEF")
        schema.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _KEEP_ALIVE.append(schema)              # the operator lives as long as its Library
    from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata
    import av

    # Importing torchvision.io routes FFmpeg's log into Python (av.logging.set_level(ERROR));
    # under PyAV 15 that deadlocks frame-threaded h264 decoding now and then (our reader's).
    av.logging.set_level(None)
    return LeRobotDataset, LeRobotDatasetMetadata


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--random", type=int, default=10, help="random frames to compare besides episode ends")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    root = args.dataset.resolve()

    LeRobotDataset, LeRobotDatasetMetadata = _load_lerobot()
    sys.path.insert(0, str(REPO))
    from twinvla_ros.data.lerobot.format import ACTION_KEY, STATE_KEY
    from twinvla_ros.data.lerobot.reader import LeRobotEpisodes

    ours = LeRobotEpisodes(root)
    repo_id = f"local/{root.name}"
    meta = LeRobotDatasetMetadata(repo_id, root=root)
    horizon = ours.action_horizon
    dataset = LeRobotDataset(repo_id, root=root, delta_timestamps={ACTION_KEY: [t / meta.fps for t in range(horizon)]},
                             video_backend="pyav")
    problems: list[str] = []

    def expect(condition: bool, message: str) -> None:
        if not condition:
            problems.append(message)

    lerobot_tasks = [str(task) for task in meta.tasks.index]
    expect(meta.total_episodes == ours.num_episodes,
           f"episodes: lerobot {meta.total_episodes}, ours {ours.num_episodes}")
    expect(meta.total_frames == ours.num_frames, f"frames: lerobot {meta.total_frames}, ours {ours.num_frames}")
    expect(len(dataset) == len(ours), f"len: lerobot {len(dataset)}, ours {len(ours)}")
    expect(meta.fps == ours.fps, f"fps: lerobot {meta.fps}, ours {ours.fps}")
    expect(lerobot_tasks == ours.tasks, f"tasks: lerobot {lerobot_tasks}, ours {ours.tasks}")
    for key in (STATE_KEY, ACTION_KEY):
        for stat in ("mean", "std", "q01", "q99"):
            value = (meta.stats or {}).get(key, {}).get(stat)
            expect(value is not None and np.shape(value) == (20,), f"meta.stats[{key}][{stat}] is {value!r}")

    frames = {int(start) for start in ours.episode_starts}
    frames |= {int(start + length - 1) for start, length in zip(ours.episode_starts, ours.episode_lengths)}
    rng = np.random.default_rng(args.seed)
    frames |= {int(i) for i in rng.integers(0, len(ours), size=min(args.random, len(ours)))}
    worst_image = 0.0
    for index in sorted(frames):
        theirs, mine = dataset[index], ours[index]
        where = f"frame {index} (episode {mine['episode_index']}, frame {mine['frame_index']})"
        expect(isinstance(theirs["task"], str), f"{where}: lerobot task is {type(theirs['task']).__name__}")
        expect(theirs["task"] == mine["task"], f"{where}: task {theirs['task']!r} vs ours {mine['task']!r}")
        expect(int(theirs["episode_index"]) == mine["episode_index"],
               f"{where}: lerobot episode {theirs['episode_index']}")
        expect(int(theirs["frame_index"]) == mine["frame_index"], f"{where}: lerobot frame {theirs['frame_index']}")
        state = theirs[STATE_KEY].numpy()
        action = theirs[ACTION_KEY].numpy()
        pad = theirs[f"{ACTION_KEY}_is_pad"].numpy()
        expect(state.shape == (20,) and np.array_equal(state, mine["state"]), f"{where}: state differs")
        expect(action.shape == (horizon, 20) and np.array_equal(action, mine["action"]),
               f"{where}: action chunk {action.shape} differs")
        expect(np.array_equal(pad, mine["action_is_pad"]), f"{where}: pad mask {pad} vs ours {mine['action_is_pad']}")
        for key, image in mine["images"].items():
            frame = theirs[key].numpy()
            if frame.shape != (3, *image.shape[:2]) or frame.dtype != np.float32 or frame.min() < 0 or frame.max() > 1:
                problems.append(f"{where}: {key} is {frame.dtype} {frame.shape} in [{frame.min()}, {frame.max()}]")
                continue
            difference = float(np.abs(frame.transpose(1, 2, 0) - image / 255.0).mean())
            worst_image = max(worst_image, difference)
            expect(difference < IMAGE_TOLERANCE, f"{where}: {key} mean abs difference {difference * 255:.2f}/255")

    codec = meta.features[ours.image_keys[0]].get("info", {}).get("video.codec")
    print(f"{root}: lerobot {meta.total_episodes} episodes, {meta.total_frames} frames, {meta.fps} fps, "
          f"tasks {lerobot_tasks}; codec {codec}")
    print(f"compared {len(frames)} samples (episode ends + {args.random} random) with our reader: "
          f"worst image mean abs difference {worst_image * 255:.3f}/255")
    for problem in problems:
        print(f"MISMATCH {problem}")
    print("OK" if not problems else f"FAILED: {len(problems)} mismatches")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
