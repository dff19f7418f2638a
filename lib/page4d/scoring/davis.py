"""DAVIS-protocol mask scores: J and F per frame at the GT's resolution, M / R / D per sequence.

Definitions (davis2017-evaluation, binary masks, no void region):
- J: region IoU; both masks empty -> 1 (nothing to find, nothing found).
- F: boundary F-measure of the one-pixel boundary maps (seg2bmap rule), a boundary pixel matching
  within ``ceil(0.008 * image diagonal)`` pixels, computed at the GT's resolution; a frame where
  neither mask has a boundary scores 1, where exactly one has none 0.
  (Both come from `page4d.scoring.metrics`; a test compares them with the independent `vos-benchmark`.)
- Per sequence, for J and for F: M = mean over frames, R (recall) = share of frames scoring > 0.5,
  D (decay) = mean of the first quarter of the frames minus mean of the last quarter (frames split
  into four bins as davis2017-evaluation does: bin edges ``round(linspace(1, n, 5)) - 1``, each bin
  including its right edge).
- Pooling: a sequence is one view of a clip; the reported numbers are the mean over sequences of the
  per-sequence statistics (as davis2017-evaluation and VGGT4D; Easi3R pools frames instead).
  No frame is skipped (the semi-supervised task's first/last-frame exclusion does not apply).

    s = score_sequences({"view0": [(pred0, gt0), (pred1, gt1), ...]})   # bool [H, W] pairs
    s["J_mean"], s["F_decay"], s["per_frame"]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from page4d.scoring.metrics import boundary_f_measure, mask_iou

BOUND_TH = 0.008
STAT_KEYS = ("J_mean", "J_recall", "J_decay", "F_mean", "F_recall", "F_decay", "JF_mean")


def frame_j_f(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """(J, F) of one frame; `pred` and `gt` are bool [H, W] of the same (the GT's) size."""
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape or pred.ndim != 2:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} must be the same [H, W] (the GT's resolution)")
    p, g = pred.astype(np.float32), gt.astype(np.float32)
    return float(mask_iou(p, g)), float(boundary_f_measure(p, g, bound_th=BOUND_TH))


def decay_bins(n: int) -> list[tuple[int, int]]:
    """davis2017-evaluation's four bins over n frames as (start, stop) slices (bins may overlap at edges)."""
    edges = (np.round(np.linspace(1, n, 5) + 1e-10) - 1).astype(int)
    return [(int(edges[i]), int(edges[i + 1]) + 1) for i in range(4)]


def sequence_statistics(values: Sequence[float]) -> dict[str, float]:
    """{"M", "R", "D"} of one sequence's per-frame values (NaN entries are frames without GT)."""
    v = np.asarray(values, dtype=np.float64)
    scored = v[~np.isnan(v)]
    if scored.size == 0:
        raise ValueError("a sequence without any scored frame has no statistics")
    bins = [v[a:b] for a, b in decay_bins(len(v))]
    first, last = (b[~np.isnan(b)] for b in (bins[0], bins[3]))
    decay = float(first.mean() - last.mean()) if first.size and last.size else float("nan")
    return {"M": float(scored.mean()), "R": float((scored > 0.5).mean()), "D": decay}


def score_sequences(
    sequences: Mapping[str, Iterable[tuple[str, np.ndarray, np.ndarray | None]]],
) -> dict[str, Any]:
    """DAVIS scores of several sequences.

    sequences: name -> frames in time order as `(frame name, pred bool [H, W], gt bool [H, W] or None)`;
    a frame without GT is listed (so the decay bins follow time) but not scored. See `summarize`.
    """
    rows = []
    for name, frames in sequences.items():
        for frame, pred, gt in frames:
            j, f = (None, None) if gt is None else frame_j_f(pred, gt)
            size = None if gt is None else [int(s) for s in np.shape(gt)]
            rows.append({"sequence": name, "frame": frame, "J": j, "F": f, "size": size})
    return summarize(rows)


def summarize(per_frame: list[dict[str, Any]]) -> dict[str, Any]:
    """DAVIS statistics from per-frame rows `{"sequence", "frame", "J", "F", "size"}` in time order
    (J = F = None for a frame without GT; size = the GT's [H, W]).

    Returns `J_mean`, `J_recall`, `J_decay`, `F_mean`, `F_recall`, `F_decay`, `JF_mean` (means over
    sequences), `resolution` (the GT's [H, W], or a list of them when sequences differ), `bound_th`,
    `pooling`, per-sequence statistics under `sequences` and the rows under `per_frame`.
    """
    names = list(dict.fromkeys(r["sequence"] for r in per_frame))
    per_seq = {}
    for name in names:
        rows = [r for r in per_frame if r["sequence"] == name]
        js = [np.nan if r["J"] is None else r["J"] for r in rows]
        fs = [np.nan if r["F"] is None else r["F"] for r in rows]
        if np.isnan(js).all():
            continue  # a sequence without GT has nothing to report
        sj, sf = sequence_statistics(js), sequence_statistics(fs)
        per_seq[name] = {
            "J_mean": sj["M"],
            "J_recall": sj["R"],
            "J_decay": sj["D"],
            "F_mean": sf["M"],
            "F_recall": sf["R"],
            "F_decay": sf["D"],
            "frames_scored": int((~np.isnan(js)).sum()),
        }
    if not per_seq:
        raise ValueError("no frame has a GT mask: nothing to score")
    out: dict[str, Any] = {}
    for key in STAT_KEYS[:-1]:
        out[key] = float(np.mean([s[key] for s in per_seq.values()]))
    out["JF_mean"] = (out["J_mean"] + out["F_mean"]) / 2
    sizes = sorted({tuple(r["size"]) for r in per_frame if r["size"] is not None})
    out["resolution"] = list(sizes[0]) if len(sizes) == 1 else [list(s) for s in sizes]
    out["bound_th"] = BOUND_TH
    out["pooling"] = "statistics per sequence (one view of the clip), then mean over sequences"
    out["sequences"] = per_seq
    out["per_frame"] = per_frame
    return out
