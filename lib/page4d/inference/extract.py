"""Running a model on a clip and checking what it exports (notebook 01; `page4d.predict` for files).

    pred = run_model(model, scene_to_batch(scene).images)
    prediction_shape_rows(pred)        # key / shape / dtype of every output (meanings: PAGE4DModel.forward)
    sign_check(model, pred)            # sigmoid(mask_logits) vs the suppression the attention applied
    mask_probabilities(pred["mask_logits"], scene.image_size)   # [T, V, H, W] P(dynamic)
    export_cost(model, images)         # time and memory with vs without exporting mask logits

Loading models and clips is `page4d.inference.loading`; memory is measured with the benchmark's instrument
(`page4d.profiling.peak_memory`), the same one `python -m page4d.bench mask_export` uses.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from page4d.data import Scene
from page4d.devices import autocast, check_precision, require_device
from page4d.model import MASK_HEAD_PREFIX, MaskHeadOutput, build_model, upsample_mask_logits
from page4d.model.network import PAGE4DModel
from page4d.profiling import median, paired_ratio, peak_memory, time_interleaved


def vggt_twin(model: torch.nn.Module) -> torch.nn.Module:
    """The same network and weights without the mask head (plain VGGT): what exporting the mask costs
    is measured against it (`export_cost`, `page4d.bench mask_export`)."""
    twin = build_model(model.cfg.replace(mask_head=None))
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(MASK_HEAD_PREFIX)}
    twin.load_state_dict(state, strict=True)
    return twin.to(next(model.parameters()).device).eval()


def run_model(
    model: PAGE4DModel,
    images: torch.Tensor,
    return_internals: bool = True,
    device: str = "cpu",
    precision: str = "fp32",
) -> dict[str, Any]:
    """One inference forward pass (no gradients) on `[B, T, V, 3, H, W]` images in [0, 1].

    `device` (cpu, cuda, cuda:N; checked by `page4d.devices.require_device`) runs the forward there, with
    autocast for `precision` bf16 / fp16, and brings every output back to the CPU in float32, so the
    notebooks' pictures and scores work the same for a 1B preset on a GPU node; the model goes back to
    the device it came from (a notebook keeps it on the CPU)."""
    check_precision(precision)
    dev = require_device(device)
    home = next(model.parameters()).device
    model.to(dev)
    with torch.no_grad(), autocast(dev, precision):
        out = model(images.to(dev), return_internals=return_internals)
    model.to(home)
    return {k: _to_cpu(v) for k, v in out.items()}


def _to_cpu(x: Any) -> Any:
    """Tensors (also inside lists and a MaskHeadOutput) on the CPU in float32; the rest unchanged."""
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu() if x.is_floating_point() else x.cpu()
    if isinstance(x, list):
        return [_to_cpu(v) for v in x]
    if isinstance(x, MaskHeadOutput):
        return dataclasses.replace(x, **{f.name: _to_cpu(getattr(x, f.name)) for f in dataclasses.fields(x)})
    return x


def _describe(x: Any) -> tuple[str, str]:
    if isinstance(x, torch.Tensor):
        return str(list(x.shape)), str(x.dtype).removeprefix("torch.")
    if isinstance(x, (list, tuple)) and x and all(isinstance(t, torch.Tensor) for t in x):
        shapes = {tuple(t.shape) for t in x}
        inner = str(list(next(iter(shapes)))) if len(shapes) == 1 else "mixed shapes"
        return f"{len(x)} x {inner}", str(x[0].dtype).removeprefix("torch.")
    return repr(x) if isinstance(x, (int, float)) else type(x).__name__, type(x).__name__


def prediction_shape_rows(pred: dict[str, Any]) -> list[dict[str, str]]:
    """One row per exported key (MaskHeadOutput fields as `mask_head.<field>`): key, shape, dtype.
    What each key means is documented once, in `PAGE4DModel.forward`'s docstring."""
    rows = []
    for key, value in pred.items():
        if isinstance(value, MaskHeadOutput):
            for f in dataclasses.fields(value):
                shape, dtype = _describe(getattr(value, f.name))
                rows.append({"key": f"{key}.{f.name}", "shape": shape, "dtype": dtype})
            continue
        shape, dtype = _describe(value)
        rows.append({"key": key, "shape": shape, "dtype": dtype})
    return rows


def applied_suppression(model: PAGE4DModel, mask_head: MaskHeadOutput) -> torch.Tensor:
    """The per-patch suppression the global attention actually applied, read back from the key bias.

    fin10: `c_j = soft_mask_bias * clamp(alpha * s_j, 0, 1)`, so `s_applied = c_j / soft_mask_bias`
    (= `clamp(alpha * s_j, 0, 1)`). official: `c_j = sigmoid(pre_j) - 0.5 = 0.5 - s_j`. Returns `[B, S, h*w]`.
    """
    head = model.aggregator.spatial_mask_head
    if head is None:
        raise ValueError("the model has no mask head (a VGGT preset); nothing to check")
    b, s = mask_head.dynamic_logits.shape[:2]
    start = model.cfg.patch_start_idx
    key_bias = mask_head.key_bias.reshape(b, s, -1)[:, :, start:]
    variant = model.cfg.mask_head.variant
    if variant == "fin10":
        return key_bias / head.soft_mask_bias
    if variant == "official":
        return 0.5 - key_bias
    raise ValueError(f"unknown mask head variant {variant!r}")


def sign_check(model: PAGE4DModel, pred: dict[str, Any]) -> dict[str, Any]:
    """Is `sigmoid(mask_logits)` the suppression the attention applied? (Needs `return_internals=True`.)

    Compares the suppression read back from the key bias with what `mask_logits` predicts for it:
    fin10 `clamp(alpha * sigmoid(mask_logits), 0, 1)` (alpha = softplus(log alpha_init), 0.693 at the
    default initialisation), official `sigmoid(mask_logits)`. Also checks the direction: the patch
    with the largest dynamic logit gets the most negative key bias (it is attended least).
    """
    if "mask_head" not in pred or "mask_logits" not in pred:
        raise ValueError("sign_check needs pred from model(..., return_internals=True) with a mask head")
    mh: MaskHeadOutput = pred["mask_head"]
    b, s = mh.dynamic_logits.shape[:2]
    logits = pred["mask_logits"].reshape(b, s, -1)
    applied = applied_suppression(model, mh)
    head = model.aggregator.spatial_mask_head
    variant = model.cfg.mask_head.variant
    alpha = float(head.alpha().detach()) if variant == "fin10" else 1.0
    expected = torch.clamp(alpha * torch.sigmoid(logits), 0.0, 1.0)
    start = model.cfg.patch_start_idx
    key_bias = mh.key_bias.reshape(b, s, -1)[:, :, start:]
    most_dynamic = logits.flatten().argmax()
    return {
        "variant": variant,
        "alpha": alpha,
        "max_abs_diff": float((applied - expected).abs().max()),
        "most_dynamic_patch_gets_lowest_bias": bool(
            key_bias.flatten()[most_dynamic] <= key_bias.min() + 1e-7
        ),
        "num_patches": int(logits.numel()),
    }


def mask_probabilities(mask_logits: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """`[1, T, V, h, w]` (or `[T, V, h, w]`) logits -> `[T, V, H, W]` P(dynamic) at image resolution
    (logits are upsampled bilinearly, then squashed, so p = 0.5 stays where the logit is 0)."""
    if mask_logits.ndim == 5:
        if mask_logits.shape[0] != 1:
            raise ValueError(f"expected batch size 1, got mask_logits {tuple(mask_logits.shape)}")
        mask_logits = mask_logits[0]
    if mask_logits.ndim != 4:
        raise ValueError(
            f"mask_logits must be [1, T, V, h, w] or [T, V, h, w], got {tuple(mask_logits.shape)}"
        )
    return torch.sigmoid(upsample_mask_logits(mask_logits.float(), tuple(image_hw)))


def save_mask_logits(path: str | Path, pred: dict[str, Any], scene: Scene, preset_name: str) -> Path:
    """Write the exported logits with what is needed to read them back: `{"mask_logits" [T, V, h, w],
    "times", "views", "image_size", "preset", "scene_root"}` (torch.save; load with weights_only=True)."""
    path = Path(path)
    torch.save(
        {
            "mask_logits": pred["mask_logits"][0].detach().cpu().contiguous(),
            "times": list(scene.times),
            "views": list(scene.views),
            "image_size": list(scene.image_size),
            "preset": preset_name,
            "scene_root": str(scene.root),
        },
        path,
    )
    return path


# --------------------------------------------------------------------------------------------------
# what exporting costs
# --------------------------------------------------------------------------------------------------
EXPORT_VARIANTS = ("no mask head", "mask_logits", "+ internals")


def export_cost(model: PAGE4DModel, images: torch.Tensor, repeats: int = 3) -> list[dict[str, Any]]:
    """Time and memory of one forward pass, with vs without exporting the mask logits.

    Three variants of the same weights: `no mask head` (VGGT: no bias, nothing to export; the
    benchmark's `vggt_twin`), `mask_logits` (PAGE-4D's default forward: the logit it computes anyway is
    returned) and `+ internals` (`return_internals=True`: also the per-layer tokens and the head's
    tensors). Per variant: median seconds over `repeats` interleaved rounds (the benchmark's CPU-time
    clock; machine-dependent) and the time ratio to `no mask head`; `peak_bytes` (the most bytes the
    forward held at once through PyTorch's allocator above what existed before; allocator-dependent)
    and `retained_bytes` (what the returned dict keeps alive: a pure function of the shapes), both from
    `page4d.profiling.peak_memory`; `mask_logits_bytes` (numel x itemsize).
    """
    device = str(images.device)
    twin = vggt_twin(model)

    def call(net: torch.nn.Module, internals: bool):
        return lambda: run_model(net, images, return_internals=internals)

    fns = dict(zip(EXPORT_VARIANTS, (call(twin, False), call(model, False), call(model, True)), strict=True))
    times = time_interleaved(fns, repeats, device=device)
    rows = []
    for name, fn in fns.items():
        with torch.no_grad():
            mem = peak_memory(fn, device)
            logits = fn().get("mask_logits")
        rows.append(
            {
                "variant": name,
                "seconds": median(times[name]),
                "time_ratio": paired_ratio(times, name, EXPORT_VARIANTS[0]),
                "peak_bytes": mem["peak_bytes"],
                "retained_bytes": mem["retained_bytes"],
                "mask_logits_bytes": 0 if logits is None else logits.numel() * logits.element_size(),
            }
        )
    for row in rows:
        row["peak_ratio"] = row["peak_bytes"] / rows[0]["peak_bytes"]
    return rows
