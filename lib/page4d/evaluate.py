"""Evaluation of a model on a scene: mask J / F / J&F, depth AbsRel / delta<1.25, camera ATE / RPE.

Frames are evaluated in clips of consecutive time steps (all views), exactly as they are fed in
training. Masks are scored where SegAnyMo GT exists (`mask_valid`); depth per clip after median
scaling (the prediction's scale is arbitrary); cameras per clip after a Sim(3) Umeyama alignment of
all T*V camera centres (order s = t*V + v, so RPE steps between consecutive frames of that order).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from page4d.data import Scene, scene_to_batch
from page4d.geometry import quaternion_to_rotation_matrix, trajectory_is_degenerate
from page4d.metrics import depth_metrics, jf_metrics, trajectory_metrics
from page4d.model import upsample_mask_logits


def eval_clips(times: list[int], clip_times: int) -> list[list[int]]:
    """Consecutive, non-overlapping clips; the last one may be shorter."""
    if clip_times < 1:
        raise ValueError(f"clip_times must be >= 1, got {clip_times}")
    return [times[i : i + clip_times] for i in range(0, len(times), clip_times)]


@torch.no_grad()
def predict_scene(
    model: nn.Module, scene: Scene, times: list[int], clip_times: int = 4
) -> list[dict[str, Any]]:
    """Run the model clip by clip; each entry holds the batch and the predictions (CPU tensors)."""
    model.eval()
    device = next(model.parameters(), torch.empty(0)).device
    out = []
    for clip in eval_clips(times, clip_times):
        batch = scene_to_batch(scene, times=clip, world_frame="first_camera")
        pred = model(batch.images.to(device))
        pred = {k: (v.float().cpu() if isinstance(v, torch.Tensor) else v) for k, v in pred.items()}
        out.append({"times": clip, "batch": batch, "pred": pred})
    return out


def evaluate(
    model: nn.Module,
    scene: Scene,
    times: list[int] | None = None,
    clip_times: int = 4,
    threshold: float = 0.5,
) -> dict[str, Any]:
    """Metrics on `times` (default: all of the scene). Keys (floats; NaN where not measurable):

    mask_iou, mask_f, mask_jf, mask_iou_per_view {view: J}, mask_frames (scored), mask_missing_reason;
    depth_abs_rel, depth_delta1 (median-scaled, mean over clips); ate, rpe_trans, rpe_rot (degrees), NaN
    with `trajectory_note` saying why when no clip has a trajectory Sim(3) alignment can use.
    """
    times = list(scene.times if times is None else times)
    clips = predict_scene(model, scene, times, clip_times)
    views = list(scene.views)
    j_rows, f_rows, valid_rows = [], [], []
    depth_rows, traj_rows = [], []
    traj_notes: set[str] = set()
    for c in clips:
        batch, pred = c["batch"], c["pred"]
        if batch.masks is not None and "mask_logits" in pred:
            prob = torch.sigmoid(upsample_mask_logits(pred["mask_logits"], batch.masks.shape[-2:]))
            jf = jf_metrics(prob[0], batch.masks[0], threshold=threshold, valid=batch.mask_valid[0])
            j_rows.append(jf["J"])
            f_rows.append(jf["F"])
            valid_rows.append(batch.mask_valid[0])
        if "depth" in pred:
            depth_rows.append(depth_metrics(pred["depth"][0, ..., 0], batch.depths[0], alignment="median"))
        if "pose_enc" in pred:
            e_pred = pose_encoding_to_extrinsics(pred["pose_enc"][0].reshape(-1, 9))
            e_gt = batch.extrinsics[0].reshape(-1, 3, 4)
            if trajectory_is_degenerate(e_gt):
                traj_notes.add("GT camera centres of a clip are coincident or collinear: Sim(3) undetermined")
            else:
                traj_rows.append(trajectory_metrics(e_pred, e_gt, align="sim3"))
    result: dict[str, Any] = {"times": times, "clip_times": clip_times, "threshold": threshold}
    if j_rows:
        j = torch.cat(j_rows)
        f = torch.cat(f_rows)
        valid = torch.cat(valid_rows)
        result.update(
            mask_iou=_masked_mean(j, valid),
            mask_f=_masked_mean(f, valid),
            mask_jf=_masked_mean((j + f) / 2, valid),
            mask_iou_per_view={v: _masked_mean(j[:, i], valid[:, i]) for i, v in enumerate(views)},
            mask_frames=int(valid.sum()),
            mask_missing_reason=scene.mask_missing_reason,
        )
    else:
        reason = scene.mask_missing_reason or "model has no mask head"
        result.update(
            mask_iou=float("nan"),
            mask_f=float("nan"),
            mask_jf=float("nan"),
            mask_iou_per_view={},
            mask_frames=0,
            mask_missing_reason=reason,
        )
    result["depth_abs_rel"] = (
        float(np.mean([d["abs_rel"] for d in depth_rows])) if depth_rows else float("nan")
    )
    result["depth_delta1"] = (
        float(np.mean([d["delta_1_25"] for d in depth_rows])) if depth_rows else float("nan")
    )
    result["trajectory_note"] = "; ".join(sorted(traj_notes)) or None
    for key, src in (("ate", "ate"), ("rpe_trans", "rpe_trans"), ("rpe_rot", "rpe_rot_deg")):
        result[key] = float(np.mean([t[src] for t in traj_rows])) if traj_rows else float("nan")
    return result


def pose_encoding_to_extrinsics(pose_enc: torch.Tensor) -> torch.Tensor:
    """World-to-camera `[..., 3, 4]` from `absT_quaR_FoV` encodings `[..., 9]`, ignoring the field of view.

    Trajectory metrics need only R and t; an untrained model's FoV may be 0, which intrinsics reject.
    """
    rot = quaternion_to_rotation_matrix(pose_enc[..., 3:7])
    return torch.cat([rot, pose_enc[..., :3, None]], dim=-1)


def _masked_mean(values: torch.Tensor, valid: torch.Tensor) -> float:
    if not bool(valid.any()):
        return float("nan")
    return float(values[valid].mean())
