"""How the tiny model's forward time (eval, no grad) grows with the number of frames S.

Global attention is quadratic in S * P tokens and everything else is linear in S, so the log-log slope
of time vs S lies between 1 and 2 and rises with S. Frame counts are timed interleaved (one call per S per
round); `exponent` is the least-squares slope of log(median time) vs log(S) over all S, `local_exponents`
the slopes between neighbouring S.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from page4d.model import build_model, preset
from page4d.profiling import median, progress, resolve_timer, table, time_interleaved


def loglog_slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log(y) against log(x)."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / sum((a - mx) ** 2 for a in lx)


def run(
    frames: tuple[int, ...] = (2, 4, 8, 16, 32),
    image_size: int = 224,
    repeats: int = 3,
    model_name: str = "tiny",
    device: str = "cpu",
    timer: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    if len(frames) < 2:
        raise ValueError("need at least two frame counts to fit an exponent")
    timer = resolve_timer(timer, device)
    torch.manual_seed(seed)
    model = build_model(preset(model_name)).to(device).eval()
    g = torch.Generator().manual_seed(seed)
    inputs = {s: torch.rand(1, s, 3, image_size, image_size, generator=g).to(device) for s in frames}
    fns = {f"S={s}": (lambda x=inputs[s]: model(x)) for s in frames}
    progress(f"[frames_scaling] {model_name}, S={list(frames)}, {image_size}x{image_size}, {repeats} rounds")
    with torch.no_grad():
        times = time_interleaved(fns, repeats, timer, device)
    med = [median(times[f"S={s}"]) for s in frames]
    tokens_per_frame = (image_size // model.cfg.patch_size) ** 2 + model.cfg.patch_start_idx
    return {
        "benchmark": "frames_scaling",
        "timer": timer,
        "model": model_name,
        "image_size": image_size,
        "tokens_per_frame": tokens_per_frame,
        "repeats": repeats,
        "results": [
            {"frames": s, "global_tokens": s * tokens_per_frame, "time_s": t, "time_per_frame_s": t / s}
            for s, t in zip(frames, med, strict=True)
        ],
        "exponent": loglog_slope(list(frames), med),
        "local_exponents": [
            {"from": a, "to": b, "exponent": loglog_slope([a, b], [ta, tb])}
            for a, b, ta, tb in zip(frames[:-1], frames[1:], med[:-1], med[1:], strict=True)
        ],
    }


def format_result(result: dict[str, Any]) -> str:
    rows = [
        [r["frames"], r["global_tokens"], f"{r['time_s'] * 1e3:.1f}", f"{r['time_per_frame_s'] * 1e3:.1f}"]
        for r in result["results"]
    ]
    local = ", ".join(f"{e['from']}->{e['to']}: {e['exponent']:.2f}" for e in result["local_exponents"])
    return "\n".join(
        [
            f"{result['model']} forward (eval, no grad), {result['image_size']}x{result['image_size']}, "
            f"{result['repeats']} interleaved rounds",
            table(["S", "global tokens", "median ms", "ms / frame"], rows),
            f"time ~ S^{result['exponent']:.2f} (least squares over all S); local exponents {local}",
        ]
    )
