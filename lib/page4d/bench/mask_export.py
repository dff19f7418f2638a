"""What exporting `mask_logits` costs, and what the mask head itself costs, in one forward pass.

The dynamic logits are not extra work: the fin10 head computes `dynamic = -m / tau` anyway because the
attention bias is `sigmoid(dynamic)`-based, and the official head's `-pre` is one negation of a
`[B, S, h, w]` map. So the honest "without" is the *same* model with the same weights whose mask head
drops `dynamic_logits` right after computing the bias (what the original code did with `m_logit`).

variants (all eval mode, no grad, same weights, same input)
  export     the model as it is: `predictions["mask_logits"]` returned
  no_export  the mask head's `MaskHeadOutput.dynamic_logits` replaced by None as soon as it is built
  lean       also drops `raw_logits` and `head_input` (kept by `MaskHeadOutput` for `return_internals`),
             i.e. the originals' footprint: only the bias tensors survive the head
  vggt       plain VGGT: the same config and weights without the mask head (no masked attention either)

Reported: `time_ratio` = export / no_export (paired median), `extra_memory_bytes` = peak(export) -
peak(no_export), `extra_retained_bytes` = what the returned dict keeps alive in addition (the logits),
`logits_bytes` = numel * itemsize of mask_logits; `internals_peak_bytes` = peak(export) - peak(lean);
and `mask_head` = the cost of the head itself: PAGE-4D (export) vs VGGT time ratio, extra peak and, for a
training-mode forward, extra bytes autograd saves for backward.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

import torch

from page4d.inference.extract import vggt_twin
from page4d.model import build_model, preset
from page4d.model.config import CameraHeadConfig, DPTConfig, MaskHeadConfig, ModelConfig
from page4d.profiling import (
    fmt_bytes,
    median,
    paired_ratio,
    peak_memory,
    progress,
    ratio_spread,
    resolve_timer,
    saved_tensor_bytes,
    table,
    time_interleaved,
)

VARIANTS = ("export", "no_export", "lean", "vggt")


def mid_config() -> ModelConfig:
    """`tiny` widened to 256 channels (4 heads of 64) and 12 block pairs, mask after pair 3, bias in 4..11
    (the 1B fin10 proportions: mask after 7 of 24, bias in 8..23)."""
    return preset(
        "tiny",
        embed_dim=256,
        depth=12,
        num_heads=4,
        camera_head=CameraHeadConfig(trunk_depth=2, num_heads=4),
        dpt=DPTConfig(features=64, out_channels=(64, 128, 256, 256), intermediate_layer_idx=(2, 5, 8, 11)),
        mask_head=MaskHeadConfig(
            variant="fin10", mask_after_block=3, masked_global_blocks=tuple(range(4, 12))
        ),
    )


def model_configs() -> dict[str, ModelConfig]:
    return {"tiny": preset("tiny"), "mid": mid_config()}


@contextlib.contextmanager
def drop_mask_outputs(model: torch.nn.Module, fields: tuple[str, ...]) -> Iterator[None]:
    """Temporarily make the model's mask head return None for `fields` of its `MaskHeadOutput`."""
    head = model.aggregator.spatial_mask_head
    original = head.forward

    def forward(*args, **kwargs):
        return dataclasses.replace(original(*args, **kwargs), **dict.fromkeys(fields))

    head.forward = forward
    try:
        yield
    finally:
        del head.forward


def variant_fns(model, twin, images) -> dict[str, Any]:
    def export():
        return model(images)

    def no_export():
        with drop_mask_outputs(model, ("dynamic_logits",)):
            pred = model(images)
        pred.pop("mask_logits")
        return pred

    def lean():
        with drop_mask_outputs(model, ("dynamic_logits", "raw_logits", "head_input")):
            pred = model(images)
        pred.pop("mask_logits")
        return pred

    def vggt():
        return twin(images)

    return {"export": export, "no_export": no_export, "lean": lean, "vggt": vggt}


def measure(
    name: str,
    cfg: ModelConfig,
    frames: int,
    image_size: int,
    repeats: int,
    device: str,
    timer: str,
    train_memory: bool,
    seed: int,
) -> dict[str, Any]:
    torch.manual_seed(seed)
    model = build_model(cfg).to(device).eval()
    twin = vggt_twin(model)
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(1, frames, 3, image_size, image_size, generator=g).to(device)
    fns = variant_fns(model, twin, images)
    progress(f"[mask_export] {name}: {frames} frames {image_size}x{image_size}, {repeats} rounds")
    with torch.no_grad():
        logits = fns["export"]()["mask_logits"]
        ref = fns["vggt"]()
        same = fns["no_export"]()
        # the variants must compute the same predictions (no_export only drops a tensor)
        exact = all(torch.equal(same[k], fns["export"]()[k]) for k in ("depth", "world_points", "pose_enc"))
        times = time_interleaved(fns, repeats, timer, device)
        mem = {v: peak_memory(fns[v], device) for v in VARIANTS}
    del ref, same
    logits_bytes = logits.numel() * logits.element_size()
    res: dict[str, Any] = {
        "config": {
            "embed_dim": cfg.embed_dim,
            "depth": cfg.depth,
            "num_heads": cfg.num_heads,
            "mask_head": cfg.mask_head.variant,
            "masked_global_blocks": list(cfg.mask_head.masked_global_blocks),
        },
        "frames": frames,
        "image_size": image_size,
        "repeats": repeats,
        "time_ratio": paired_ratio(times, "export", "no_export"),
        "time_ratio_spread": ratio_spread(times, "export", "no_export"),
        "extra_memory_bytes": mem["export"]["peak_bytes"] - mem["no_export"]["peak_bytes"],
        "extra_retained_bytes": mem["export"]["retained_bytes"] - mem["no_export"]["retained_bytes"],
        "logits_bytes": logits_bytes,
        "logits_shape": list(logits.shape),
        "internals_peak_bytes": mem["export"]["peak_bytes"] - mem["lean"]["peak_bytes"],
        "same_predictions": exact,
        "time_s": {v: median(times[v]) for v in VARIANTS},
        "time_ratio_vs_no_export": {v: paired_ratio(times, v, "no_export") for v in VARIANTS},
        "time_ratio_vs_no_export_spread": {v: ratio_spread(times, v, "no_export") for v in VARIANTS},
        "peak_bytes": {v: mem[v]["peak_bytes"] for v in VARIANTS},
        "retained_bytes": {v: mem[v]["retained_bytes"] for v in VARIANTS},
        "mask_head": {
            "time_ratio_vs_vggt": paired_ratio(times, "export", "vggt"),
            "time_ratio_vs_vggt_spread": ratio_spread(times, "export", "vggt"),
            "extra_peak_bytes": mem["export"]["peak_bytes"] - mem["vggt"]["peak_bytes"],
            "parameters": sum(p.numel() for p in model.aggregator.spatial_mask_head.parameters()),
        },
    }
    if train_memory:
        model.train()
        twin.train()
        saved_page4d = saved_tensor_bytes(lambda: model(images), list(model.parameters()))
        saved_vggt = saved_tensor_bytes(lambda: twin(images), list(twin.parameters()))
        model.eval()
        twin.eval()
        res["mask_head"]["train_saved_bytes"] = saved_page4d
        res["mask_head"]["train_saved_bytes_vggt"] = saved_vggt
        res["mask_head"]["extra_train_saved_bytes"] = saved_page4d - saved_vggt
    return res


def run(
    models: tuple[str, ...] = ("tiny", "mid"),
    frames: int = 8,
    image_size: int = 224,
    repeats: dict[str, int] | int | None = None,
    train_memory: bool = True,
    device: str = "cpu",
    timer: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """`{"tiny": {...}, "mid": {...}}` plus how it was measured."""
    timer = resolve_timer(timer, device)
    configs = model_configs()
    default_repeats = {"tiny": 9, "mid": 5}
    out: dict[str, Any] = {"benchmark": "mask_export", "timer": timer}
    for name in models:
        n = repeats if isinstance(repeats, int) else (repeats or default_repeats).get(name, 5)
        out[name] = measure(name, configs[name], frames, image_size, n, device, timer, train_memory, seed)
    return out


def ratio_spread_of(res: dict[str, Any], variant: str) -> dict[str, float]:
    return res["time_ratio_vs_no_export_spread"][variant]


def format_result(result: dict[str, Any]) -> str:
    lines = []
    for name, res in result.items():
        if not isinstance(res, dict) or "time_ratio" not in res:
            continue
        c = res["config"]
        lines.append(
            f"{name}: embed {c['embed_dim']}, depth {c['depth']}, heads {c['num_heads']}, "
            f"{c['mask_head']} head, "
            f"{res['frames']} frames {res['image_size']}x{res['image_size']}, {res['repeats']} rounds; "
            f"mask_logits {res['logits_shape']} = {fmt_bytes(res['logits_bytes'])}"
        )
        rows = [
            [
                v,
                f"{res['time_s'][v] * 1e3:.1f}",
                f"{res['time_ratio_vs_no_export'][v]:.3f}x",
                "{q25:.3f}-{q75:.3f}".format(**ratio_spread_of(res, v)),
                fmt_bytes(res["peak_bytes"][v]),
                fmt_bytes(res["retained_bytes"][v]),
            ]
            for v in VARIANTS
        ]
        lines.append(table(["variant", "median ms", "vs no_export", "IQR", "peak alloc", "retained"], rows))
        mh = res["mask_head"]
        lines.append(
            f"exporting mask_logits: time {res['time_ratio']:.3f}x, "
            f"extra peak {fmt_bytes(res['extra_memory_bytes'])}, "
            f"extra retained {fmt_bytes(res['extra_retained_bytes'])} "
            f"(logits {fmt_bytes(res['logits_bytes'])}); "
            f"MaskHeadOutput internals add {fmt_bytes(res['internals_peak_bytes'])} to the peak"
        )
        extra = (
            f", training forward saves {fmt_bytes(mh['extra_train_saved_bytes'])} more for backward "
            f"({fmt_bytes(mh['train_saved_bytes'])} vs {fmt_bytes(mh['train_saved_bytes_vggt'])})"
            if "extra_train_saved_bytes" in mh
            else ""
        )
        lines.append(
            f"mask head itself (PAGE-4D vs VGGT): time {mh['time_ratio_vs_vggt']:.3f}x, extra peak "
            f"{fmt_bytes(mh['extra_peak_bytes'])}, {mh['parameters']} parameters{extra}"
        )
        lines.append("")
    return "\n".join(lines).rstrip()
