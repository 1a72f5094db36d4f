"""TwinVLA model benchmark: prints one `name=value` per line (first line: the machine).

    python bench/model.py            # everything, the 1.5 B Eagle2-1B model included (fp32, ~8 GB RAM, minutes)
    python bench/model.py --no-eagle # the tiny and reference-sized figures only

refcfg_*: the "tiny-reference" preset, the smallest configuration the authors' code builds (LLM
24 layers of width 64, 4 query / 2 KV heads, MLP 128; SigLIP 2 layers of width 32 at 448 px,
256 tokens per camera; DiT-S; 20 x 10 actions per arm), one observation (480x640 ego, 240x320
wrists, a short instruction), CFG 1.5, 10 flow steps, 2 torch threads. Fast (default) and exact
predict are timed interleaved in one run, median of --repeats after a warm-up call each.
refcfg_fast_vs_exact_max_abs_diff is the largest action difference (robot units) over both
readout variants x CFG 1.5 / 1.0. refcfg_sample_ms_fast_plain_linears: the fast sampler with the
action head on torch's nn.Linear (MKL) instead of oneDNN-packed weights, timed in the same rounds.

*_peak_rss_mb: the resident set's peak during one warm predict above its level just before
(freed heap returned to the OS first, /proc/self/clear_refs resets the peak): the memory a
predict needs on top of the loaded model. Linux only.

eagle2_1b_*: the published size (Eagle2-1B twin, DiT-L) with random weights, built from its config
(nothing downloaded), fp32 on the CPU, the tiny tokenizer standing in for Eagle2's (its prompt is a
few tokens longer). eagle2_1b_gflops_per_chunk counts one fused predict with FlopCounterMode
(vision x3, twin LLM, 10 CFG flow steps; attention as dense sdpa FLOPs, masked entries included);
eagle2_1b_cpu_predict_s is one predict after it.
vlm_reuse_speedup: (steps * encode + sample) / (encode + sample) from the measured Eagle times,
what running the VLM once per chunk instead of once per flow step saves. On a CUDA device the
same model runs in bfloat16 (head float32): eagle2_1b_gpu_predict_ms (median of 20) and
eagle2_1b_gpu_mfu = FLOPs per chunk / (time * --gpu-peak-tflops).
"""
from __future__ import annotations

import argparse
import ctypes
import dataclasses
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from common import machine_line, median_ms
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula, sdpa_flop_count

from twinvla_ros.model import Observation, TwinVLA, TwinVLAConfig, TwinVLAPolicy, build_tiny_tokenizer, default_statistics
from twinvla_ros.model.configuration_twinvla import TINY_BASE_VOCAB, TINY_SPECIAL_TOKENS

EAGLE_MAX_GIB = 12.0  # skip the CPU Eagle figures above this estimated need


@register_flop_formula(torch.ops.aten._scaled_dot_product_flash_attention_for_cpu)
def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FlopCounterMode counts the CUDA attention kernels, not the CPU one: give it torch's dense
    count (masked and causal positions included, as for the CUDA kernels)."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


@register_flop_formula(torch.ops.mkldnn._linear_pointwise)
def _onednn_linear_flop(input_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    """The action head's packed CPU linears (twinvla_ros.model.packed_linear): 2 M K N."""
    return 2 * math.prod(input_shape[:-1]) * weight_shape[0] * weight_shape[1]


def observation(seed: int = 0) -> Observation:
    rng = np.random.default_rng(seed)
    ego = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    wrists = [rng.integers(0, 256, (240, 320, 3), dtype=np.uint8) for _ in range(2)]
    arm = [0.1, 0.05, 0.3, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.5]
    return Observation("pick up the red cube", ego, *wrists, np.asarray(arm + arm))


def interleaved_ms(fns: dict, n: int) -> dict[str, float]:
    """Median ms of each function, timed in turn n times after one warm-up call each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(n):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: 1000 * statistics.median(t) for name, t in times.items()}


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def peak_rss_mb(fn) -> float | None:
    """Peak RSS during fn() above the RSS just before it, MB; None where Linux's counters are missing."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        before = _status_kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        fn()
        return (_status_kib("VmHWM") - before) / 1024
    except (OSError, KeyError):
        return None


def fmt_mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def tiny_tokenizer_config(cfg: TwinVLAConfig) -> TwinVLAConfig:
    """The image markers at the tiny tokenizer's ids (it stands in for Eagle2's)."""
    return dataclasses.replace(
        cfg,
        image_start_token_id=TINY_BASE_VOCAB + TINY_SPECIAL_TOKENS.index("<img>"),
        image_end_token_id=TINY_BASE_VOCAB + TINY_SPECIAL_TOKENS.index("</img>"),
    )


def reference_size(obs: Observation, tokenizer, repeats: int) -> None:
    stats = {"k": default_statistics()}
    base = TwinVLAConfig.preset("tiny-reference")
    diff = 0.0
    for as_eos in (True, False):
        model = TwinVLA.random(dataclasses.replace(base, readout_token_as_eos=as_eos), seed=0)
        for cfg_scale in (1.5, 1.0):
            fast = TwinVLAPolicy(model, tokenizer, stats, cfg_scale=cfg_scale)
            exact = TwinVLAPolicy(model, tokenizer, stats, cfg_scale=cfg_scale, exact=True)
            diff = max(diff, float(np.abs(fast.predict(obs, seed=0) - exact.predict(obs, seed=0)).max()))
    model = TwinVLA.random(base, seed=0)
    fast = TwinVLAPolicy(model, tokenizer, stats)
    exact = TwinVLAPolicy(model, tokenizer, stats, exact=True)
    ctx = fast.encode(obs)
    net = model.decoder_c.net

    def sample_on_plain_linears():
        net.packed_weights = lambda x: None  # forward_tokens falls back to the nn.Linear modules
        try:
            fast.sample(ctx, seed=0)
        finally:
            del net.packed_weights

    ms = interleaved_ms({
        "fast": lambda: fast.predict(obs, seed=0),
        "exact": lambda: exact.predict(obs, seed=0),
        "fast_encode": lambda: fast.encode(obs),
        "fast_sample": lambda: fast.sample(ctx, seed=0),
        "fast_sample_plain_linears": sample_on_plain_linears,
    }, repeats)
    print(f"refcfg_predict_ms_fast={ms['fast']:.1f}")
    print(f"refcfg_predict_ms_exact={ms['exact']:.1f}")
    print(f"refcfg_fast_speedup={ms['exact'] / ms['fast']:.2f}")
    print(f"refcfg_encode_ms_fast={ms['fast_encode']:.1f}")
    print(f"refcfg_sample_ms_fast={ms['fast_sample']:.1f}")
    print(f"refcfg_sample_ms_fast_plain_linears={ms['fast_sample_plain_linears']:.1f}")
    print(f"refcfg_fast_vs_exact_max_abs_diff={diff:.2e}")
    print(f"refcfg_predict_peak_rss_mb_fast={fmt_mb(peak_rss_mb(lambda: fast.predict(obs, seed=0)))}")
    print(f"refcfg_predict_peak_rss_mb_exact={fmt_mb(peak_rss_mb(lambda: exact.predict(obs, seed=0)))}")


def eagle_cpu(obs: Observation, tokenizer, cfg: TwinVLAConfig, params: int) -> float | None:
    """The CPU figures; returns the FLOPs of one chunk, or None when skipped."""
    need_gib = params * 4 * 1.25 / 2**30  # fp32 weights, the fused-weight cache and activations
    avail_gib = _meminfo_kib("MemAvailable") / 2**20
    if need_gib > min(EAGLE_MAX_GIB, avail_gib):
        print(f"eagle2_1b_cpu_predict_s=skipped (needs ~{need_gib:.1f} GiB, limit {EAGLE_MAX_GIB:.0f}, available {avail_gib:.1f})")
        return None
    policy = TwinVLAPolicy(TwinVLA.random(cfg, seed=0), tokenizer, {"k": default_statistics()})
    with FlopCounterMode(display=False) as counter:
        policy.predict(obs, seed=0)
    flops = counter.get_total_flops()
    print(f"eagle2_1b_gflops_per_chunk={flops / 1e9:.0f}")
    t0 = time.perf_counter()
    ctx = policy.encode(obs)
    t1 = time.perf_counter()
    policy.sample(ctx, seed=0)
    t2 = time.perf_counter()
    encode_s, sample_s = t1 - t0, t2 - t1
    print(f"eagle2_1b_cpu_predict_s={encode_s + sample_s:.1f}")
    print(f"eagle2_1b_cpu_encode_s={encode_s:.1f}")
    print(f"eagle2_1b_cpu_sample_s={sample_s:.1f}")
    print(f"eagle2_1b_cpu_predict_peak_rss_mb={fmt_mb(peak_rss_mb(lambda: policy.predict(obs, seed=0)))}")
    print(f"eagle2_1b_cpu_rss_mb={_status_kib('VmRSS') / 1024:.0f}")
    steps = policy.num_flow_steps
    print(f"vlm_reuse_speedup={(steps * encode_s + sample_s) / (encode_s + sample_s):.2f}")
    return flops


def _meminfo_kib(field: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def eagle_gpu(obs: Observation, tokenizer, cfg: TwinVLAConfig, flops: float | None, peak_tflops: float) -> None:
    if not torch.cuda.is_available():
        print("eagle2_1b_gpu_predict_ms=not measured (no GPU)")
        print("eagle2_1b_gpu_mfu=not measured (no GPU)")
        return
    model = TwinVLA.random(cfg, seed=0).to("cuda").set_dtype(torch.bfloat16)
    policy = TwinVLAPolicy(model, tokenizer, {"k": default_statistics()})
    torch.cuda.reset_peak_memory_stats()
    ms = median_ms(lambda: policy.predict(obs, seed=0), repeats=20, warmup=3)  # predict ends in .cpu(): synchronised
    print(f"eagle2_1b_gpu_predict_ms={ms:.1f}")
    print(f"eagle2_1b_gpu_max_memory_allocated_mb={torch.cuda.max_memory_allocated() / 2**20:.0f}")
    print(f"eagle2_1b_gpu_name={torch.cuda.get_device_name()}")
    if flops is None:
        with FlopCounterMode(display=False) as counter:
            policy.predict(obs, seed=0)
        flops = counter.get_total_flops()
    print(f"eagle2_1b_gpu_mfu={flops / (ms / 1000) / (peak_tflops * 1e12):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-eagle", action="store_true", help="skip the 1.5 B model")
    parser.add_argument("--repeats", type=int, default=9, help="timed runs per refcfg figure (>= 7)")
    parser.add_argument("--gpu-peak-tflops", type=float, default=989.0, help="dense bf16 peak of the GPU (H100/H200 SXM: 989)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    print(machine_line(torch=torch.__version__, torch_threads=str(torch.get_num_threads())))

    obs = observation()
    tokenizer = build_tiny_tokenizer()
    tiny = TwinVLAPolicy.tiny(seed=0)
    print(f"tiny_predict_ms={median_ms(lambda: tiny.predict(obs, seed=0), warmup=3):.1f}")
    ctx = tiny.encode(obs)
    print(f"head_step_ms_tiny={median_ms(lambda: tiny.sample(ctx, seed=0), warmup=3) / tiny.num_flow_steps:.2f}")
    reference_size(obs, tokenizer, max(7, args.repeats))

    cfg = tiny_tokenizer_config(TwinVLAConfig.preset("eagle2-1b"))
    with torch.device("meta"):
        params = sum(p.numel() for p in TwinVLA(cfg).parameters())
    print(f"eagle2_1b_params={params}")
    if args.no_eagle:
        return
    flops = eagle_cpu(obs, tokenizer, cfg, params)
    eagle_gpu(obs, tokenizer, cfg, flops, args.gpu_peak_tflops)


if __name__ == "__main__":
    main()
