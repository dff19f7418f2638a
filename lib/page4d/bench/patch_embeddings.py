"""What each tiny patch embedding costs per training step (issue 20's capacity variants).

variants (`model.config.with_tiny_patch_embed`; the same seed, input and random targets; one Adam
optimizer per model; train mode)
  conv       the `tiny` preset's one 14x14 patchify
  conv_stem  two 3x3 convolutions in front of it
  conv_pos   DINOv2's embedding without blocks: the patchify, a learned position table, a LayerNorm

One step is forward + backward + Adam with an L1 stand-in on depth, world points and the pose
encoding (the recipe's real losses live in `page4d.losses`; what is measured here is the network).
The default size is a `tiny-stream` step: one clip of 2 time steps x 4 views at 112x154.

Reported: median step seconds per variant, `time_ratio` = variant / conv (paired medians, with the
spread over rounds) and each variant's parameter count.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from page4d.model import build_model, preset
from page4d.model.config import TINY_PATCH_EMBEDS, with_tiny_patch_embed
from page4d.profiling import (
    median,
    paired_ratio,
    progress,
    ratio_spread,
    resolve_timer,
    table,
    time_interleaved,
)


def run(
    frames: int = 8,
    image_size: tuple[int, int] = (112, 154),
    repeats: int = 7,
    lr: float = 1e-3,
    device: str = "cpu",
    timer: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    timer = resolve_timer(timer, device)
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(1, frames, 3, *image_size, generator=g).to(device)
    models, optimizers = {}, {}
    for name in TINY_PATCH_EMBEDS:
        torch.manual_seed(seed)
        models[name] = build_model(with_tiny_patch_embed(preset("tiny"), name)).to(device).train()
        optimizers[name] = torch.optim.Adam(models[name].parameters(), lr=lr)
    with torch.no_grad():
        shapes = {k: v.shape for k, v in models["conv"](images).items() if isinstance(v, torch.Tensor)}
    targets = {
        k: torch.randn(shapes[k], generator=g).to(device) for k in ("depth", "world_points", "pose_enc")
    }

    def step(name: str) -> float:
        optimizers[name].zero_grad(set_to_none=True)
        pred = models[name](images)
        loss = sum(F.l1_loss(pred[k], t) for k, t in targets.items())
        loss.backward()
        optimizers[name].step()
        return float(loss.detach())

    progress(f"[patch_embeddings] tiny, {frames} frames {image_size[0]}x{image_size[1]}, {repeats} rounds")
    times = time_interleaved({n: (lambda n=n: step(n)) for n in TINY_PATCH_EMBEDS}, repeats, timer, device)
    return {
        "benchmark": "patch_embeddings",
        "timer": timer,
        "frames": frames,
        "image_size": list(image_size),
        "repeats": repeats,
        "step_s": {n: median(times[n]) for n in TINY_PATCH_EMBEDS},
        "time_ratio": {n: paired_ratio(times, n, "conv") for n in TINY_PATCH_EMBEDS},
        "time_ratio_spread": {n: ratio_spread(times, n, "conv") for n in TINY_PATCH_EMBEDS if n != "conv"},
        "parameters": {n: sum(p.numel() for p in m.parameters()) for n, m in models.items()},
    }


def format_result(result: dict[str, Any]) -> str:
    rows = [
        [
            n,
            f"{result['step_s'][n] * 1e3:.1f}",
            f"{result['time_ratio'][n]:.3f}",
            f"{result['parameters'][n]:,}",
        ]
        for n in result["step_s"]
    ]
    h, w = result["image_size"]
    return "\n".join(
        [
            f"tiny preset, one training step (Adam) of {result['frames']} frames {h}x{w}, "
            f"{result['repeats']} interleaved rounds",
            table(["patch embedding", "median step ms", "x conv (paired)", "parameters"], rows),
        ]
    )
