"""Per-frame scores of thresholded P(dynamic) against GT masks on the model's grid, and their tables.

The numbers the overlay notebook shows next to its pictures: region IoU (J) and boundary F per frame
(`page4d.scoring.metrics.jf_metrics`), means per time step, per view and overall. (The DAVIS protocol at the
GT's own resolution, with recall and decay, is `page4d.scoring.davis`.)

    scores = frame_scores(prob, scene.masks, scene.mask_valid, threshold=0.5)
    print(format_table(score_rows(scores, scene.times, scene.views)))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from page4d.scoring.metrics import jf_metrics

BOUND_TH = 0.008  # DAVIS boundary tolerance: fraction of the image diagonal


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


@dataclass
class MaskScores:
    """Per-frame region IoU (J) and boundary F of thresholded P(dynamic) against SegAnyMo masks.

    iou, f: float `[T, V]`, NaN where the frame has no mask. The means are over frames with a mask
    (`page4d.scoring.metrics.jf_metrics`); `jf` = (J + F) / 2.
    """

    iou: np.ndarray
    f: np.ndarray
    valid: np.ndarray
    threshold: float
    mean_iou: float
    mean_f: float
    mean_jf: float

    def per_time(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean IoU and F over views per time step (NaN where no view has a mask)."""
        return _nanmean(self.iou, axis=1), _nanmean(self.f, axis=1)

    def per_view(self) -> tuple[np.ndarray, np.ndarray]:
        return _nanmean(self.iou, axis=0), _nanmean(self.f, axis=0)


def _nanmean(a: np.ndarray, axis: int) -> np.ndarray:
    counts = (~np.isnan(a)).sum(axis=axis)
    sums = np.nansum(a, axis=axis)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def frame_scores(
    prob: Any, gt: Any, valid: Any, threshold: float = 0.5, bound_th: float = BOUND_TH
) -> MaskScores:
    """Score `prob [T, V, H, W]` (P(dynamic)) against `gt [T, V, H, W]` where `valid [T, V]` is True."""
    if gt is None:
        raise ValueError("no SegAnyMo masks to score against (scene.masks is None; see mask_missing_reason)")
    prob_t = torch.as_tensor(_np(prob), dtype=torch.float32)
    gt_t = torch.as_tensor(_np(gt), dtype=torch.float32)
    valid_t = torch.as_tensor(_np(valid), dtype=torch.bool)
    if prob_t.ndim != 4 or prob_t.shape != gt_t.shape or tuple(valid_t.shape) != tuple(prob_t.shape[:2]):
        raise ValueError(
            f"prob and gt must be [T, V, H, W] and valid [T, V]; got {tuple(prob_t.shape)}, "
            f"{tuple(gt_t.shape)}, {tuple(valid_t.shape)}"
        )
    r = jf_metrics(prob_t, gt_t, threshold=threshold, valid=valid_t, bound_th=bound_th)
    v = valid_t.numpy()
    iou = np.where(v, r["J"].numpy(), np.nan)
    f = np.where(v, r["F"].numpy(), np.nan)
    return MaskScores(iou, f, v, float(threshold), r["J_mean"], r["F_mean"], r["JF_mean"])


def score_rows(scores: MaskScores, times: Sequence[int], views: Sequence[int]) -> list[dict[str, Any]]:
    """One row per frame: time, view, IoU, F (None where the frame has no mask)."""
    rows = []
    for ti, t in enumerate(times):
        for vi, v in enumerate(views):
            ok = bool(scores.valid[ti, vi])
            rows.append(
                {
                    "time": t,
                    "view": v,
                    "IoU": float(scores.iou[ti, vi]) if ok else None,
                    "F": float(scores.f[ti, vi]) if ok else None,
                }
            )
    return rows


def mean_rows(scores: MaskScores, times: Sequence[int], views: Sequence[int]) -> list[dict[str, Any]]:
    """Means per time step, per view and over all frames with a mask."""

    def val(x: float) -> float | None:
        return None if math.isnan(x) else float(x)

    ti, tf = scores.per_time()
    vi, vf = scores.per_view()
    rows = [{"over": f"time {t}", "IoU": val(a), "F": val(b)} for t, a, b in zip(times, ti, tf, strict=True)]
    rows += [{"over": f"view {v}", "IoU": val(a), "F": val(b)} for v, a, b in zip(views, vi, vf, strict=True)]
    rows.append({"over": "all", "IoU": scores.mean_iou, "F": scores.mean_f})
    return rows
