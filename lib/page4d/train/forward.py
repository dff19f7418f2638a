"""One clip's forward and its losses, as the run's config asks for them.

- The attention bias comes from the mask head (`mask_bias="head"`, PAGE-4D), from nowhere ("off": the
  no-mask control, set on the model by `apply_mask_bias`), or from the clip's GT masks ("gt": the
  oracle, the most a perfect mask could do for the cameras; the head does not run).
- With `LossConfig.use_attention_forcing` (MoRe), the masked global blocks' q and k are observed during
  the forward and the camera/register rows' attention mass on GT-dynamic patches is added to the loss.
- Every step with cameras records the rotation and centre-direction error of every frame of the clip
  (degrees, relative to frame 0, `scoring.metrics.camera_errors_per_frame`): a camera 100 degrees off
  can no longer hide in an averaged L1 loss.

Shapes: batch images `[1, T, V, 3, H, W]`, masks `[1, T, V, H, W]`; per-frame lists have S = T*V entries
in `s = t * V + v` order.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from page4d.losses import compute_total_loss
from page4d.losses.attention_forcing import attention_forcing_loss, dynamic_keys
from page4d.model.attention import observe_qk
from page4d.scoring.evaluate import oracle_logits, pose_encoding_to_extrinsics
from page4d.scoring.metrics import camera_errors_per_frame

TARGET_KEYS = ("extrinsics", "intrinsics", "depths", "masks", "mask_valid")


def apply_mask_bias(model: nn.Module, mode: str) -> None:
    """`off`: no global block applies the mask bias (the head still runs and returns its logits)."""
    if mode == "off":
        model.aggregator.masked_global_blocks = frozenset()


def clip_losses(run: Any, batch: Any, autocast: Any) -> dict[str, Any]:
    """The forward under `autocast` and every loss term (float32), plus the per-frame camera errors
    (`camera_rot_deg`, `camera_dir_deg`: lists, NaN where undefined)."""
    model = run.model
    kwargs: dict[str, Any] = {}
    if run.cfg.mask_bias == "gt":
        kwargs["given_mask_logits"] = oracle_logits(batch, model.cfg.patch_size)
    forcing = run.loss_cfg.use_attention_forcing
    blocks = sorted(model.cfg.mask_head.masked_global_blocks) if forcing else []
    qk: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    layers = {i: model.aggregator.global_blocks[i].attn for i in blocks}
    watch = observe_qk(layers, lambda i, q, k: qk.__setitem__(i, (q, k))) if forcing else nullcontext()
    with autocast, watch:
        predictions = run.net(batch.images, return_internals=forcing, **kwargs)
    losses = compute_total_loss(predictions, {k: getattr(batch, k) for k in TARGET_KEYS}, run.loss_cfg)
    if forcing:
        term = forcing_term(model, predictions, batch, qk)
        losses["attention_forcing_loss"] = term
        weighted = run.loss_cfg.w_attention_forcing * term
        losses["loss"] = weighted if losses["loss"] is None else losses["loss"] + weighted
    losses.update(frame_camera_errors(predictions, batch))
    return losses


def forcing_term(model: nn.Module, predictions: dict, batch: Any, qk: dict) -> torch.Tensor:
    """MoRe's attention mass on GT-dynamic patches, over the observed masked global blocks (frames
    without a GT mask contribute no dynamic keys)."""
    if batch.masks is None:
        raise ValueError("attention forcing needs GT masks in the training clips")
    b, t, v, h, w = batch.masks.shape
    p = model.cfg.patch_size
    valid = batch.mask_valid.reshape(b * t * v, 1, 1, 1).float()
    patches = F.avg_pool2d(batch.masks.reshape(b * t * v, 1, h, w).float() * valid, p)
    start = model.cfg.patch_start_idx
    keys = dynamic_keys(patches.reshape(b, t * v, h // p, w // p), start)
    tokens = keys.shape[1] // (t * v)
    rows = (
        torch.arange(t * v, device=keys.device)[:, None] * tokens + torch.arange(start, device=keys.device)
    ).reshape(-1)
    head = predictions.get("mask_head")
    active = model.aggregator.masked_global_blocks
    every_row = getattr(model.aggregator.spatial_mask_head, "all_rows", False)
    bias = head.attention_bias(start, tokens, every_row) if head is not None and active else None
    return attention_forcing_loss(qk, rows, keys, {i: bias for i in qk if i in active})


def frame_camera_errors(predictions: dict, batch: Any) -> dict[str, list[float]]:
    """Rotation / centre-direction error (degrees) of every frame of the clip; {} without cameras.
    A frame whose predicted quaternion is (numerically) zero encodes no rotation: NaN for that frame
    (an untrained head can output one), never a crash of the run."""
    if "pose_enc" not in predictions or batch.extrinsics is None:
        return {}
    pose = predictions["pose_enc"][0].detach().float().reshape(-1, 9).cpu()
    no_rotation = (pose[:, 3:7] ** 2).sum(-1) <= torch.finfo(pose.dtype).tiny
    if no_rotation[0]:  # frame 0 defines the frame every error is measured in
        no_rotation[:] = True
    pose[no_rotation, 3:7] = torch.tensor([0.0, 0.0, 0.0, 1.0])
    err = camera_errors_per_frame(
        pose_encoding_to_extrinsics(pose), batch.extrinsics[0].reshape(-1, 3, 4).cpu()
    )
    for values in err.values():
        values[no_rotation] = float("nan")
    return {
        key: [round(float(x), 3) for x in err[name]]
        for key, name in (("camera_rot_deg", "rot_deg"), ("camera_dir_deg", "dir_deg"))
    }
