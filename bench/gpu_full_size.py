"""Full-size PAGE-4D (fin10, 1B) vs plain VGGT-1B forward on a GPU: time and peak memory, random weights.

Run on a machine with CUDA:  PYTHONPATH=lib python bench/gpu_full_size.py --frames 8 32 100 --json OUT.json
Both models are measured in the same process, interleaved, so the mask's cost is a ratio from one run.
Also times the global-attention variants (plain SDPA, row-gated bias, augmented channel) at the
token counts of those frame counts.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
from page4d.model import build_model, preset
from page4d.model.attention import RowGatedKeyBias, augmented_channel_sdpa, masked_sdpa


def cuda_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure_model(model, images, repeats: int, aggregator_only: bool) -> dict:
    fn = (lambda: model.aggregator(images)) if aggregator_only else (lambda: model(images))
    with torch.no_grad():
        fn()  # warm-up (kernels, allocator)
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        seconds = cuda_time(fn, repeats)
        peak = torch.cuda.max_memory_allocated() - base
    return {"seconds": seconds, "peak_bytes": peak}


def attention_case(tokens_per_frame: int, frames: int, heads: int, dim: int, repeats: int) -> dict:
    n = tokens_per_frame * frames
    q, k, v = (torch.randn(1, heads, n, dim, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    rows = (
        torch.arange(frames, device="cuda")[:, None] * tokens_per_frame + torch.arange(5, device="cuda")
    ).reshape(-1)
    bias = RowGatedKeyBias(
        rows, torch.ones(1, rows.numel(), device="cuda"), -0.5 * torch.rand(1, n, device="cuda")
    )
    out = {"tokens": n}
    plain = cuda_time(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v), repeats)
    out["plain_s"] = plain
    out["row_gated_ratio"] = cuda_time(lambda: masked_sdpa(q, k, v, bias), repeats) / plain
    out["augmented_ratio"] = cuda_time(lambda: augmented_channel_sdpa(q, k, v, bias), repeats) / plain
    ref = augmented_channel_sdpa(q.float(), k.float(), v.float(), bias)
    out["max_abs_diff_row_gated_vs_augmented_fp32"] = float(
        (masked_sdpa(q.float(), k.float(), v.float(), bias) - ref).abs().max()
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, nargs="+", default=[8, 32, 100])
    parser.add_argument("--height", type=int, default=294)
    parser.add_argument("--width", type=int, default=518)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    dtype = torch.bfloat16
    torch.manual_seed(0)
    page4d = build_model(preset("page4d_fin10_1b", track_head=None)).to("cuda", dtype).eval()
    vggt = build_model(preset("vggt_1b", track_head=None)).to("cuda", dtype).eval()
    result = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "dtype": str(dtype),
        "image": [args.height, args.width],
        "models": [],
        "attention": [],
    }
    p = (args.height // 14) * (args.width // 14) + 5
    for s in args.frames:
        images = torch.rand(1, s, 3, args.height, args.width, device="cuda", dtype=dtype)
        row = {"frames": s}
        for scope in ("aggregator", "full"):
            for name, model in (("vggt", vggt), ("page4d", page4d)):
                row[f"{scope}_{name}"] = measure_model(model, images, args.repeats, scope == "aggregator")
            row[f"{scope}_time_ratio"] = row[f"{scope}_page4d"]["seconds"] / row[f"{scope}_vggt"]["seconds"]
            row[f"{scope}_memory_ratio"] = (
                row[f"{scope}_page4d"]["peak_bytes"] / row[f"{scope}_vggt"]["peak_bytes"]
            )
        result["models"].append(row)
        print(json.dumps(row), flush=True)
        result["attention"].append(attention_case(p, s, 16, 64, args.repeats))
        print(json.dumps(result["attention"][-1]), flush=True)
        del images
        torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
