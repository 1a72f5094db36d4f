"""TwinVLA model benchmark: prints one `name=value` per line (first line: the machine).

    python bench/model.py            # tiny figures + the 1.5 B Eagle2-1B model (fp32, ~7 GB RAM, minutes)
    python bench/model.py --no-eagle # tiny figures only

eagle2_1b_gflops_per_chunk counts the FLOPs of one predict call (vision x3, twin LLM, 10 CFG
flow steps) with torch's FlopCounterMode; the Eagle model has random weights and uses the tiny
tokenizer (the Eagle2 tokenizer cannot be downloaded here), so its prompt is a few tokens longer.
eagle2_1b_cpu_predict_s is one predict (encode + sample) after the FLOP-counted warm-up call.
vlm_reuse_speedup compares our path (VLM once per chunk, head per flow step) with a sampler that
re-runs the VLM at every flow step: (steps * encode + sample) / (encode + sample), from the
measured Eagle encode and sample times.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import numpy as np
import torch
from common import machine_line
from torch.utils.flop_counter import FlopCounterMode

from twinvla_ros.model import Observation, TwinVLA, TwinVLAConfig, TwinVLAPolicy, build_tiny_tokenizer, default_statistics
from twinvla_ros.model.configuration_twinvla import TINY_BASE_VOCAB, TINY_SPECIAL_TOKENS


def observation(seed: int = 0) -> Observation:
    rng = np.random.default_rng(seed)
    imgs = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(3)]
    arm = [0.1, 0.05, 0.3, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.5]
    return Observation("pick up the red cube and hand it over", *imgs, np.asarray(arm + arm))


def p50_ms(fn, n: int = 20, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-eagle", action="store_true", help="skip the 1.5 B model")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(machine_line(torch=torch.__version__, torch_threads=str(torch.get_num_threads())))

    obs = observation()
    tiny = TwinVLAPolicy.tiny(seed=0)
    print(f"tiny_predict_ms={p50_ms(lambda: tiny.predict(obs, seed=0)):.1f}")
    ctx = tiny.encode(obs)
    print(f"head_step_ms_tiny={p50_ms(lambda: tiny.sample(ctx, seed=0)) / tiny.num_flow_steps:.2f}")

    cfg = TwinVLAConfig.preset("eagle2-1b")
    with torch.device("meta"):
        params = sum(p.numel() for p in TwinVLA(cfg).parameters())
    print(f"eagle2_1b_params={params}")
    if args.no_eagle:
        return

    # The tiny tokenizer stands in for Eagle2's: point the image markers at its ids.
    cfg = dataclasses.replace(
        cfg,
        image_start_token_id=TINY_BASE_VOCAB + TINY_SPECIAL_TOKENS.index("<img>"),
        image_end_token_id=TINY_BASE_VOCAB + TINY_SPECIAL_TOKENS.index("</img>"),
    )
    model = TwinVLA.random(cfg, seed=0).set_dtype(torch.float32)
    policy = TwinVLAPolicy(model, build_tiny_tokenizer(), {"k": default_statistics()})
    with FlopCounterMode(display=False) as counter:
        policy.predict(obs, seed=0)
    print(f"eagle2_1b_gflops_per_chunk={counter.get_total_flops() / 1e9:.0f}")
    t0 = time.perf_counter()
    ctx = policy.encode(obs)
    t1 = time.perf_counter()
    policy.sample(ctx, seed=0)
    t2 = time.perf_counter()
    encode_s, sample_s = t1 - t0, t2 - t1
    print(f"eagle2_1b_cpu_predict_s={encode_s + sample_s:.1f}")
    steps = policy.num_flow_steps
    print(f"vlm_reuse_speedup={(steps * encode_s + sample_s) / (encode_s + sample_s):.2f}")


if __name__ == "__main__":
    main()
