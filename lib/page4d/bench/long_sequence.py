"""Peak memory and time of one inference forward against the number of frames S (issue 12).

Two variants per S, measured in the same process: `heads_only` (the default forward: the aggregator
keeps only the layers some head reads, DPT decodes `dpt_chunk` frames at a time) and `all_layers` (every
aggregator layer kept, as `return_internals=True` does and as the model did before). Memory is the
allocator peak above what existed before the call (`page4d.profiling.peak_memory`; CPU allocator
events, or CUDA's own counters); time is the median over `repeats` interleaved calls.
`memory_exponent` is the log-log slope of peak memory against S: 1 means linear in frames.

    python -m page4d.bench long_sequence                       # tiny, CPU, seconds
    python -m page4d.bench long_sequence --device cuda          # + `run(model_name="page4d_fin10_1b",
                                                                #    dtype="bf16", frames=(50, 100, 200))`
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import torch

from page4d.model import build_model, preset
from page4d.profiling import fmt_bytes, median, peak_memory, progress, resolve_timer, table, time_interleaved

from .frames_scaling import loglog_slope

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def run(
    frames: tuple[int, ...] = (2, 4, 8, 16),
    image_size: tuple[int, int] = (112, 154),
    model_name: str = "tiny",
    dtype: str = "fp32",
    dpt_chunk: int = 8,
    repeats: int = 2,
    variants: tuple[str, ...] = ("heads_only", "all_layers"),
    device: str = "cpu",
    timer: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    if len(frames) < 2:
        raise ValueError("need at least two frame counts to fit an exponent")
    timer = resolve_timer(timer, device)
    cfg = preset(model_name).replace(track_head=None)
    if cfg.dpt is not None:
        cfg = cfg.replace(dpt=dataclasses.replace(cfg.dpt, frames_chunk_size=dpt_chunk))
    torch.manual_seed(seed)
    model = build_model(cfg).to(device).eval()
    h, w = image_size
    progress(
        f"[long_sequence] {model_name} {dtype}, S={list(frames)}, {h}x{w}, DPT chunk {dpt_chunk}, "
        f"{repeats} rounds"
    )

    def forward(x: torch.Tensor, variant: str):
        cast = DTYPES[dtype]
        ctx = torch.autocast(x.device.type, dtype=cast) if cast is not None else contextlib.nullcontext()
        with torch.no_grad(), ctx:
            return model(x, return_internals=variant == "all_layers")

    rows = []
    g = torch.Generator().manual_seed(seed)
    for s in frames:
        x = torch.rand(1, s, 3, h, w, generator=g).to(device)
        fns = {v: (lambda v=v, x=x: forward(x, v)) for v in variants}
        times = time_interleaved(fns, repeats, timer, device)
        for v in variants:
            mem = peak_memory(fns[v], device)
            rows.append(
                {"frames": s, "variant": v, "peak_bytes": mem["peak_bytes"], "time_s": median(times[v])}
            )
        progress(f"[long_sequence] S={s} done")
    exponents = {}
    for v in variants:
        pts = [(r["frames"], r["peak_bytes"]) for r in rows if r["variant"] == v]
        exponents[v] = loglog_slope([p[0] for p in pts], [p[1] for p in pts])
    return {
        "benchmark": "long_sequence",
        "model": model_name,
        "dtype": dtype,
        "image_size": list(image_size),
        "dpt_chunk": dpt_chunk,
        "timer": timer,
        "repeats": repeats,
        "kept_layers": sorted(model.head_layers()),
        "depth": cfg.depth,
        "results": rows,
        "memory_exponent": exponents,
    }


def format_result(result: dict[str, Any]) -> str:
    by_s: dict[int, dict[str, dict[str, Any]]] = {}
    for r in result["results"]:
        by_s.setdefault(r["frames"], {})[r["variant"]] = r
    variants = list(result["memory_exponent"])
    header = ["S"] + [f"{v} peak" for v in variants] + [f"{v} s" for v in variants]
    rows = [
        [s]
        + [fmt_bytes(by_s[s][v]["peak_bytes"]) for v in variants]
        + [f"{by_s[s][v]['time_s']:.3f}" for v in variants]
        for s in sorted(by_s)
    ]
    exps = ", ".join(f"{v} S^{e:.2f}" for v, e in result["memory_exponent"].items())
    h, w = result["image_size"]
    return "\n".join(
        [
            f"{result['model']} {result['dtype']} forward (eval, no grad), {h}x{w}, DPT chunk "
            f"{result['dpt_chunk']}, keeps layers {result['kept_layers']} of {result['depth']}",
            table(header, rows),
            f"peak memory ~ {exps} (log-log slope over all S)",
        ]
    )
