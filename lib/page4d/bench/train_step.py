"""One training step (forward + backward + Adam) of the tiny preset with and without mask supervision.

variants (same input, same random targets, one Adam optimizer per model, train mode)
  no_mask_loss  L1 on depth, world points and the pose encoding (a stand-in for the camera/depth/point
                losses; the real ones live in page4d.losses and are not what is measured here)
  mask_loss     the same plus BCE-with-logits on `mask_logits` against a random binary ground truth
  vggt          plain VGGT (mask head absent, same other weights) with the no_mask_loss objective

Reported: images/s = B * S / step seconds (median), `time_ratio` = mask_loss / no_mask_loss and
`vggt_time_ratio` = no_mask_loss / vggt (paired medians), and the extra bytes autograd saves for the
mask loss (`extra_saved_bytes`). With the default `detach_input=True` the mask loss trains only the head.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from page4d.model import build_model, preset
from page4d.profiling import (
    median,
    paired_ratio,
    progress,
    ratio_spread,
    resolve_timer,
    saved_tensor_bytes,
    table,
    time_interleaved,
)

from .mask_export import vggt_twin

VARIANTS = ("no_mask_loss", "mask_loss", "vggt")


def mask_loss_gradients(
    model: torch.nn.Module, images: torch.Tensor, mask_gt: torch.Tensor
) -> tuple[float, float]:
    """Summed |grad| the mask BCE alone puts on the mask head and on the frame blocks: the loss must
    reach the head and, with its input detached, nothing upstream of it."""
    model.zero_grad(set_to_none=True)
    F.binary_cross_entropy_with_logits(model(images)["mask_logits"], mask_gt).backward()

    def total(params) -> float:
        return sum(float(p.grad.abs().sum()) for p in params if p.grad is not None)

    head = total(model.aggregator.spatial_mask_head.parameters())
    trunk = total(model.aggregator.frame_blocks.parameters())
    model.zero_grad(set_to_none=True)
    return head, trunk


def run(
    frames: int = 4,
    image_size: int = 224,
    batch: int = 1,
    repeats: int = 7,
    lr: float = 1e-4,
    device: str = "cpu",
    timer: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    timer = resolve_timer(timer, device)
    torch.manual_seed(seed)
    model = build_model(preset("tiny")).to(device).train()
    twin = vggt_twin(model).train()
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, frames, 3, image_size, image_size, generator=g).to(device)
    with torch.no_grad():
        shapes = {k: v.shape for k, v in model(images).items() if isinstance(v, torch.Tensor)}
    targets = {
        k: torch.randn(shapes[k], generator=g).to(device) for k in ("depth", "world_points", "pose_enc")
    }
    mask_gt = (torch.rand(shapes["mask_logits"], generator=g) > 0.8).float().to(device)
    optimizers = {
        "page4d": torch.optim.Adam(model.parameters(), lr=lr),
        "vggt": torch.optim.Adam(twin.parameters(), lr=lr),
    }

    def loss_of(pred: dict, with_mask: bool) -> torch.Tensor:
        loss = sum(F.l1_loss(pred[k], t) for k, t in targets.items())
        if with_mask:
            loss = loss + F.binary_cross_entropy_with_logits(pred["mask_logits"], mask_gt)
        return loss

    def step(net, opt, with_mask: bool) -> float:
        opt.zero_grad(set_to_none=True)
        loss = loss_of(net(images), with_mask)
        loss.backward()
        opt.step()
        return float(loss.detach())

    fns = {
        "no_mask_loss": lambda: step(model, optimizers["page4d"], False),
        "mask_loss": lambda: step(model, optimizers["page4d"], True),
        "vggt": lambda: step(twin, optimizers["vggt"], False),
    }
    progress(f"[train_step] tiny, B={batch}, {frames} frames {image_size}x{image_size}, {repeats} rounds")
    times = time_interleaved(fns, repeats, timer, device)

    head_grad, trunk_grad = mask_loss_gradients(model, images, mask_gt)

    params = list(model.parameters())
    saved_plain = saved_tensor_bytes(lambda: loss_of(model(images), False), params)
    saved_mask = saved_tensor_bytes(lambda: loss_of(model(images), True), params)
    n_images = batch * frames
    return {
        "benchmark": "train_step",
        "timer": timer,
        "model": "tiny",
        "batch": batch,
        "frames": frames,
        "image_size": image_size,
        "repeats": repeats,
        "step_s": {v: median(times[v]) for v in VARIANTS},
        "images_per_s": {v: n_images / median(times[v]) for v in VARIANTS},
        "time_ratio": paired_ratio(times, "mask_loss", "no_mask_loss"),
        "time_ratio_spread": ratio_spread(times, "mask_loss", "no_mask_loss"),
        "vggt_time_ratio": paired_ratio(times, "no_mask_loss", "vggt"),
        "mask_loss_vs_vggt_time_ratio": paired_ratio(times, "mask_loss", "vggt"),
        "saved_bytes": {"no_mask_loss": saved_plain, "mask_loss": saved_mask},
        "extra_saved_bytes": saved_mask - saved_plain,
        "mask_loss_head_grad_abs_sum": head_grad,
        "mask_loss_trunk_grad_abs_sum": trunk_grad,
    }


def format_result(result: dict[str, Any]) -> str:
    rows = [[v, f"{result['step_s'][v] * 1e3:.1f}", f"{result['images_per_s'][v]:.2f}"] for v in VARIANTS]
    return "\n".join(
        [
            f"tiny preset, B={result['batch']} x {result['frames']} frames "
            f"{result['image_size']}x{result['image_size']}, Adam, {result['repeats']} interleaved rounds",
            table(["variant", "median step ms", "images/s"], rows),
            f"mask supervision: {result['time_ratio']:.3f}x step time, "
            f"+{result['extra_saved_bytes']} B saved for backward; PAGE-4D (no mask loss) vs VGGT: "
            f"{result['vggt_time_ratio']:.3f}x; with mask loss vs VGGT: "
            f"{result['mask_loss_vs_vggt_time_ratio']:.3f}x",
            "BCE gradient reaches the mask head "
            f"(|grad| sum {result['mask_loss_head_grad_abs_sum']:.3g}) and "
            f"the frame blocks get {result['mask_loss_trunk_grad_abs_sum']:.3g} (detached input)",
        ]
    )
