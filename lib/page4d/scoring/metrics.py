"""Evaluation metrics: dynamic-mask J / F (DAVIS), depth AbsRel / delta, camera ATE / RPE.

All functions take torch tensors (numpy arrays are converted) and never modify their inputs.
Conventions are spelled out next to each metric so that numbers in notebooks can be compared with
the papers': DAVIS 2016/2017 for J and F, the usual monocular-depth protocol for AbsRel and
delta < 1.25, and the TUM RGB-D / ``evo`` definitions for ATE and RPE (``evo`` pulls in pandas,
seaborn and rosbags, so it is a dev dependency only: tests cross-check these functions against it).
Threshold-free mask scores (AP, calibration, mean P per GT class) sit beside J and F because
``sigmoid(mask_logits)`` is the suppression the attention applies, not only a score to threshold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from page4d.checks import require_finite
from page4d.geometry import camera_centers, relative_to_first_camera, rotation_angle, umeyama_alignment

__all__ = [
    "boundary_f_measure",
    "camera_errors_per_frame",
    "best_iou_threshold",
    "depth_metrics",
    "expected_calibration_error",
    "jf_metrics",
    "mask_average_precision",
    "mask_boundaries",
    "mask_iou",
    "mean_probability_by_class",
    "pooled_iou",
    "rmse",
    "trajectory_errors",
    "trajectory_metrics",
]


def _as_tensor(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    return x


# --------------------------------------------------------------------------------------------------
# masks: J and F
# --------------------------------------------------------------------------------------------------
def _checked_masks(pred: Any, gt: Any, pred_name: str = "pred") -> tuple[torch.Tensor, torch.Tensor]:
    """`pred` and `gt` as tensors of one shape ``[..., H, W]``, finite, each bool or in [0, 1]."""
    p = _as_tensor(pred, pred_name)
    g = _as_tensor(gt, "gt")
    if p.shape != g.shape or p.ndim < 2:
        raise ValueError(
            f"{pred_name} and gt must both be [..., H, W] of one shape, "
            f"got {tuple(p.shape)} and {tuple(g.shape)}"
        )
    for x, name in ((p, pred_name), (g, "gt")):
        require_finite(x, name)
        if x.dtype != torch.bool and ((x < 0).any() or (x > 1).any()):
            raise ValueError(
                f"{name} (shape {tuple(x.shape)}) must be a probability or binary mask in [0, 1] "
                f"(pass sigmoid(logits), not logits)"
            )
    return p, g


def _checked_valid(valid: Any, shape: tuple[int, ...]) -> torch.Tensor:
    """A bool frame mask of exactly `shape` (the leading dims of the masks it selects)."""
    v = _as_tensor(valid, "valid")
    if v.dtype != torch.bool or tuple(v.shape) != tuple(shape):
        raise ValueError(
            f"valid must be a bool tensor of shape {tuple(shape)}, got {v.dtype} {tuple(v.shape)}"
        )
    return v


def _binary_pair(pred: Any, gt: Any, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``pred >= threshold`` and ``gt >= 0.5`` as bool ``[..., H, W]``; both must be in [0, 1]."""
    p, g = _checked_masks(pred, gt)
    pb = p if p.dtype == torch.bool else p >= threshold
    gb = g if g.dtype == torch.bool else g >= 0.5
    return pb, gb


def mask_iou(pred: Any, gt: Any, threshold: float = 0.5) -> torch.Tensor:
    """Region similarity J = |P & G| / |P | G| per frame.

    pred: probabilities (or bool) ``[..., H, W]``, dynamic where ``>= threshold``; gt: ``[..., H, W]``
    in [0, 1], dynamic where ``>= 0.5``. Returns float64 ``[...]``. Both empty -> 1.0 (DAVIS: nothing
    to find, nothing found); one empty -> 0.0.
    """
    pb, gb = _binary_pair(pred, gt, threshold)
    inter = (pb & gb).flatten(-2).sum(-1).double()
    union = (pb | gb).flatten(-2).sum(-1).double()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def mask_boundaries(mask: torch.Tensor) -> torch.Tensor:
    """One-pixel boundary map (DAVIS ``seg2bmap`` rule) of bool masks ``[..., H, W]``.

    A pixel is a boundary pixel if it differs from its right, bottom or bottom-right neighbour
    (neighbours outside the image do not count), so each edge is marked once, on its top/left side.
    """
    m = _as_tensor(mask, "mask")
    if m.dtype != torch.bool or m.ndim < 2:
        raise ValueError(f"mask must be a bool tensor [..., H, W], got {m.dtype} {tuple(m.shape)}")
    b = torch.zeros_like(m)
    b[..., :, :-1] |= m[..., :, :-1] != m[..., :, 1:]
    b[..., :-1, :] |= m[..., :-1, :] != m[..., 1:, :]
    b[..., :-1, :-1] |= m[..., :-1, :-1] != m[..., 1:, 1:]
    return b


def _dilate_disk(b: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation of ``[..., H, W]`` by the disk ``x^2 + y^2 <= r^2`` (skimage's ``disk(r)``)."""
    h, w = b.shape[-2:]
    r = torch.arange(-radius, radius + 1, dtype=torch.float32, device=b.device)
    disk = ((r[:, None] ** 2 + r[None, :] ** 2) <= radius**2).to(torch.float32)
    flat = b.reshape(-1, 1, h, w).to(torch.float32)
    out = F.conv2d(flat, disk[None, None], padding=radius) > 0.5
    return out.reshape(b.shape)


def _boundary_precision_recall(
    pb: torch.Tensor, gb: torch.Tensor, bound_th: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    h, w = pb.shape[-2:]
    radius = int(bound_th) if bound_th >= 1 else int(math.ceil(bound_th * math.hypot(h, w)))
    pred_b = mask_boundaries(pb)
    gt_b = mask_boundaries(gb)
    n_pred = pred_b.flatten(-2).sum(-1).double()
    n_gt = gt_b.flatten(-2).sum(-1).double()
    matched_pred = (pred_b & _dilate_disk(gt_b, radius)).flatten(-2).sum(-1).double()
    matched_gt = (gt_b & _dilate_disk(pred_b, radius)).flatten(-2).sum(-1).double()
    one, zero = torch.ones_like(n_pred), torch.zeros_like(n_pred)
    # DAVIS: no predicted boundary -> precision 1; no GT boundary -> recall 1.
    precision = torch.where(n_pred > 0, matched_pred / n_pred.clamp_min(1), one)
    recall = torch.where(n_gt > 0, matched_gt / n_gt.clamp_min(1), one)
    precision = torch.where((n_pred > 0) & (n_gt == 0), zero, precision)
    recall = torch.where((n_pred == 0) & (n_gt > 0), zero, recall)
    denom = precision + recall
    f = torch.where(denom > 0, 2 * precision * recall / denom.clamp_min(1e-300), zero)
    return f, precision, recall


def boundary_f_measure(pred: Any, gt: Any, threshold: float = 0.5, bound_th: float = 0.008) -> torch.Tensor:
    """Contour accuracy F per frame (DAVIS).

    pred / gt as in :func:`mask_iou`. Boundaries are 1-pixel maps (:func:`mask_boundaries`); a
    predicted boundary pixel is correct if a GT boundary pixel lies within the tolerance, and vice
    versa for recall. Tolerance: ``bound_th`` pixels if ``>= 1``, else ``ceil(bound_th * image
    diagonal)`` (0.008 -> 4 px at 320x240), matched with a disk. F = 2PR / (P + R). Conventions:
    both without boundary -> 1.0; exactly one without -> 0.0. Returns float64 ``[...]``.
    """
    pb, gb = _binary_pair(pred, gt, threshold)
    return _boundary_precision_recall(pb, gb, bound_th)[0]


def jf_metrics(
    pred: Any, gt: Any, threshold: float = 0.5, valid: Any = None, bound_th: float = 0.008
) -> dict[str, Any]:
    """J, F and J&F per frame and aggregated over valid frames.

    pred / gt ``[..., H, W]`` as in :func:`mask_iou`; valid: bool ``[...]`` (frames with GT) or None.
    Returns per-frame float64 tensors ``J``, ``F``, ``JF`` (= (J + F) / 2) of shape ``[...]`` and
    floats ``J_mean``, ``F_mean``, ``JF_mean`` (means over valid frames; DAVIS averages per
    sequence first -- call this once per sequence for that), ``J_recall`` / ``F_recall`` (share of
    valid frames above 0.5) and ``num_frames``.
    """
    pb, gb = _binary_pair(pred, gt, threshold)
    j = mask_iou(pb, gb)
    f = _boundary_precision_recall(pb, gb, bound_th)[0]
    v = (
        torch.ones(j.shape, dtype=torch.bool, device=j.device)
        if valid is None
        else _checked_valid(valid, j.shape)
    )
    n = int(v.sum())
    if n == 0:
        raise ValueError("jf_metrics: no valid frame")
    jv, fv = j[v], f[v]
    return {
        "J": j,
        "F": f,
        "JF": (j + f) / 2,
        "J_mean": float(jv.mean()),
        "F_mean": float(fv.mean()),
        "JF_mean": float((jv.mean() + fv.mean()) / 2),
        "J_recall": float((jv > 0.5).double().mean()),
        "F_recall": float((fv > 0.5).double().mean()),
        "num_frames": n,
    }


# --------------------------------------------------------------------------------------------------
# masks: threshold-free scores and calibration
# --------------------------------------------------------------------------------------------------
# sigmoid(mask_logits) is the suppression the attention applies, not only a score: a reader needs to
# see its ranking quality (AP), its calibration (ECE) and how much each GT class is suppressed
# (mean P on static / dynamic pixels), none of which depends on the 0.5 threshold.
def _prob_gt_pixels(prob: Any, gt: Any, valid: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Flattened float64 probabilities and bool GT of the valid frames of ``[..., H, W]`` inputs."""
    p, g = _checked_masks(prob, gt, "prob")
    if valid is not None:
        v = _checked_valid(valid, p.shape[:-2])
        p, g = p[v], g[v]
    return p.reshape(-1).double(), (g.reshape(-1) >= 0.5)


def mask_average_precision(prob: Any, gt: Any, valid: Any = None) -> float:
    """Average precision of P(dynamic) against GT pixels, pooled over all valid frames.

    prob ``[..., H, W]`` in [0, 1]; gt ``[..., H, W]`` (dynamic where ``>= 0.5``); valid: bool ``[...]``
    or None. AP = sum_n (R_n - R_{n-1}) P_n over the distinct score thresholds, from high to low
    (the step-wise definition of scikit-learn's ``average_precision_score``; tied scores form one
    threshold). A constant prediction scores the GT dynamic share. NaN when no pixel is dynamic.
    """
    p, g = _prob_gt_pixels(prob, gt, valid)
    n_pos = int(g.sum())
    if n_pos == 0:
        return float("nan")
    order = torch.argsort(p, descending=True, stable=True)
    p_sorted, g_sorted = p[order], g[order].double()
    tp = torch.cumsum(g_sorted, 0)
    # the last index of each run of tied scores is where that threshold's counts are complete
    last = torch.ones_like(p_sorted, dtype=torch.bool)
    last[:-1] = p_sorted[1:] != p_sorted[:-1]
    tp_at = tp[last]
    seen = torch.nonzero(last)[:, 0].double() + 1
    precision = tp_at / seen
    recall = tp_at / n_pos
    recall_prev = torch.cat([torch.zeros(1, dtype=recall.dtype), recall[:-1]])
    return float(((recall - recall_prev) * precision).sum())


def expected_calibration_error(prob: Any, gt: Any, valid: Any = None, bins: int = 15) -> float:
    """Expected calibration error of P(dynamic): sum_b (n_b / N) |mean P_b - share dynamic_b|.

    ``bins`` equal-width bins on [0, 1] (the last one closed); pixels pooled over valid frames.
    0 = the probabilities are frequencies; a model that suppresses every static patch by 0.5 has a
    large ECE however good its ranking. NaN when there is no valid pixel.
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    p, g = _prob_gt_pixels(prob, gt, valid)
    if p.numel() == 0:
        return float("nan")
    idx = torch.clamp((p * bins).long(), max=bins - 1)
    sum_p = torch.bincount(idx, weights=p, minlength=bins)
    sum_g = torch.bincount(idx, weights=g.double(), minlength=bins)
    return float((sum_p - sum_g).abs().sum() / p.numel())


def mean_probability_by_class(prob: Any, gt: Any, valid: Any = None) -> dict[str, float]:
    """Mean P(dynamic) on GT-static and on GT-dynamic pixels (the suppression each class receives).

    Returns ``{"static": ..., "dynamic": ..., "dynamic_share": ...}``; a class with no pixel is NaN.
    """
    p, g = _prob_gt_pixels(prob, gt, valid)
    nan = float("nan")
    return {
        "static": float(p[~g].mean()) if bool((~g).any()) else nan,
        "dynamic": float(p[g].mean()) if bool(g.any()) else nan,
        "dynamic_share": float(g.double().mean()) if p.numel() else nan,
    }


def pooled_iou(prob: Any, gt: Any, threshold: float, valid: Any = None) -> float:
    """IoU of ``prob >= threshold`` with the GT over all valid pixels pooled (one number per set)."""
    p, g = _prob_gt_pixels(prob, gt, valid)
    pb = p >= threshold
    union = int((pb | g).sum())
    return float(int((pb & g).sum()) / union) if union else 1.0


def best_iou_threshold(prob: Any, gt: Any, valid: Any = None, candidates: Any = None) -> tuple[float, float]:
    """The threshold with the highest mean per-frame IoU (J) among ``candidates`` (default 0.05..0.95
    in steps of 0.05), and that mean. Choose it on *training* frames and apply it to held-out ones,
    so the held-out score measures ranking without being tuned on the frames it reports."""
    grid = (
        [round(0.05 * k, 2) for k in range(1, 20)] if candidates is None else [float(c) for c in candidates]
    )
    best = (float("nan"), -1.0)
    for thr in grid:
        j = mask_iou(prob, gt, threshold=thr)
        if valid is not None:
            j = j[_as_tensor(valid, "valid")]
        score = float(j.mean()) if j.numel() else float("nan")
        if score > best[1]:
            best = (thr, score)
    return best


# --------------------------------------------------------------------------------------------------
# depth
# --------------------------------------------------------------------------------------------------
def depth_metrics(pred: Any, gt: Any, valid: Any = None, alignment: str = "median") -> dict[str, float]:
    """AbsRel and delta < 1.25 of one sequence after per-sequence alignment.

    pred, gt: ``[..., H, W]`` z-depth of **one sequence** (all given pixels share one alignment);
    gt 0 (or non-finite) = invalid; valid: optional bool of the same shape, ANDed in. pred must be
    finite. alignment: ``"median"`` -- ``pred * median(gt) / median(pred)`` (for scale-ambiguous
    predictions); ``"scale_shift"`` -- least-squares ``s * pred + b`` in depth (not disparity) space;
    ``"none"``. Metrics over valid pixels: ``abs_rel = mean(|a - g| / g)``, ``delta_1_25 = share of
    max(a / g, g / a) < 1.25`` (an aligned depth <= 0 counts as a miss), ``rmse``. Also returns
    ``scale``, ``shift`` and ``num_valid``.
    """
    p = _as_tensor(pred, "pred").double()
    g = _as_tensor(gt, "gt").double()
    if p.shape != g.shape or p.ndim < 2:
        raise ValueError(
            f"pred and gt must both be [..., H, W] of one shape, got {tuple(p.shape)} and {tuple(g.shape)}"
        )
    require_finite(p, "pred")
    mask = torch.isfinite(g) & (g > 0)
    if valid is not None:
        mask &= _checked_valid(valid, g.shape)
    n = int(mask.sum())
    if n == 0:
        raise ValueError(f"depth_metrics: gt {tuple(g.shape)} has no valid pixel")
    pv, gv = p[mask], g[mask]
    if alignment == "median":
        med_p = float(np.median(pv.numpy(force=True)))
        if med_p <= 0:
            raise ValueError(
                f"depth_metrics: median of pred over valid pixels is {med_p}; cannot median-scale"
            )
        scale, shift = float(np.median(gv.numpy(force=True))) / med_p, 0.0
    elif alignment == "scale_shift":
        a = torch.stack((pv, torch.ones_like(pv)), dim=-1)
        ata = a.T @ a
        if float(torch.linalg.det(ata)) <= 1e-12 * float(ata[0, 0]) * n:
            raise ValueError(
                "depth_metrics: pred is constant over valid pixels; scale and shift are undetermined"
            )
        sol = torch.linalg.solve(ata, a.T @ gv)
        scale, shift = float(sol[0]), float(sol[1])
    elif alignment == "none":
        scale, shift = 1.0, 0.0
    else:
        raise ValueError(f"alignment must be 'median', 'scale_shift' or 'none', got {alignment!r}")
    aligned = scale * pv + shift
    abs_rel = ((aligned - gv).abs() / gv).mean()
    ratio = torch.where(aligned > 0, torch.maximum(aligned / gv, gv / aligned.clamp_min(1e-300)), torch.inf)
    return {
        "abs_rel": float(abs_rel),
        "delta_1_25": float((ratio < 1.25).double().mean()),
        "rmse": float(((aligned - gv) ** 2).mean().sqrt()),
        "scale": scale,
        "shift": shift,
        "num_valid": n,
    }


# --------------------------------------------------------------------------------------------------
# trajectories
# --------------------------------------------------------------------------------------------------
def trajectory_errors(
    pred_extrinsics: Any,
    gt_extrinsics: Any,
    align: str = "sim3",
    pairs: Sequence[tuple[int, int]] | None = None,
) -> dict[str, Any]:
    """Per-frame and per-pair errors of a camera trajectory after aligning the prediction to the GT.

    pred_extrinsics, gt_extrinsics: world-to-camera ``[N, 3, 4]`` of the same N frames.
    align: ``"sim3"`` (Umeyama with scale on the camera centres; for scale-free predictions),
    ``"se3"`` (no scale) or ``"none"``; the alignment moves the whole predicted trajectory (centres
    ``s R C + t``, camera-to-world rotations ``R R_c2w``). ``"sim3"`` / ``"se3"`` need >= 3 centres
    not all on one line (``ValueError`` otherwise, as in evo).
    pairs: frame index pairs ``(i, j)`` for the relative pose error (default: consecutive frames).
    For each pair ``E = (Q_i^-1 Q_j)^-1 (P_i^-1 P_j)`` with Q / P the GT / aligned predicted
    camera-to-world poses (evo's RPE); its translation norm and rotation angle are the errors.
    Returns float64 tensors ``centre_error [N]`` (GT units), ``rpe_trans [K]``, ``rpe_rot_deg [K]``
    and the float ``scale``. Pool these over clips and take RMSEs to weight clips by their frames.
    """
    p = _as_tensor(pred_extrinsics, "pred_extrinsics").double()
    g = _as_tensor(gt_extrinsics, "gt_extrinsics").double()
    if p.ndim != 3 or tuple(p.shape[1:]) != (3, 4) or p.shape != g.shape:
        raise ValueError(
            f"pred_extrinsics and gt_extrinsics must both be [N, 3, 4], "
            f"got {tuple(p.shape)} and {tuple(g.shape)}"
        )
    n = p.shape[0]
    if n < 2:
        raise ValueError(f"trajectory metrics need at least 2 frames, got {n}")
    require_finite(p, "pred_extrinsics")
    require_finite(g, "gt_extrinsics")
    if pairs is None:
        pairs = [(i, i + 1) for i in range(n - 1)]
    idx = torch.as_tensor(list(pairs), dtype=torch.long, device=p.device).reshape(-1, 2)
    if idx.numel() and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(f"pairs index frames outside [0, {n})")
    c_pred, c_gt = camera_centers(p), camera_centers(g)
    r_pred, r_gt = p[:, :3, :3].transpose(-1, -2), g[:, :3, :3].transpose(-1, -2)  # camera-to-world
    if align in ("sim3", "se3"):
        s, rot, t = umeyama_alignment(c_pred, c_gt, with_scale=align == "sim3")
    elif align == "none":
        s = torch.ones((), dtype=p.dtype, device=p.device)
        rot = torch.eye(3, dtype=p.dtype, device=p.device)
        t = torch.zeros(3, dtype=p.dtype, device=p.device)
    else:
        raise ValueError(f"align must be 'sim3', 'se3' or 'none', got {align!r}")
    c_al = s * c_pred @ rot.T + t
    r_al = rot @ r_pred

    def relative(r: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r_i, r_j = r[idx[:, 0]], r[idx[:, 1]]
        rel_r = r_i.transpose(-1, -2) @ r_j
        rel_t = (r_i.transpose(-1, -2) @ (c[idx[:, 1]] - c[idx[:, 0]])[..., None])[..., 0]
        return rel_r, rel_t

    q_r, q_t = relative(r_gt, c_gt)
    p_r, p_t = relative(r_al, c_al)
    e_r = q_r.transpose(-1, -2) @ p_r
    e_t = (q_r.transpose(-1, -2) @ (p_t - q_t)[..., None])[..., 0]
    return {
        "centre_error": (c_al - c_gt).norm(dim=-1),
        "rpe_trans": e_t.norm(dim=-1),
        "rpe_rot_deg": torch.rad2deg(rotation_angle(e_r)),
        "scale": float(s),
    }


def rmse(values: torch.Tensor) -> float:
    """Root mean square of a 1-D tensor (NaN when empty)."""
    return float((values.double() ** 2).mean().sqrt()) if values.numel() else float("nan")


def trajectory_metrics(
    pred_extrinsics: Any,
    gt_extrinsics: Any,
    align: str = "sim3",
    pairs: Sequence[tuple[int, int]] | None = None,
) -> dict[str, float]:
    """ATE and RPE of a camera trajectory, after aligning the prediction to the GT.

    Inputs as in :func:`trajectory_errors`. Returned (GT units, degrees):
      ``ate``: RMSE of camera-centre distances after alignment.
      ``rpe_trans`` / ``rpe_rot_deg``: RMSE over ``pairs`` (default consecutive frames, evo's ``rpe``
      with delta 1 frame) of the translation norm / rotation angle of the relative-pose error.
      ``scale``: the alignment scale. ``num_frames``.
    """
    err = trajectory_errors(pred_extrinsics, gt_extrinsics, align=align, pairs=pairs)
    return {
        "ate": rmse(err["centre_error"]),
        "rpe_trans": rmse(err["rpe_trans"]),
        "rpe_rot_deg": rmse(err["rpe_rot_deg"]),
        "scale": err["scale"],
        "num_frames": int(err["centre_error"].numel()),
    }


def camera_errors_per_frame(pred_extrinsics: Any, gt_extrinsics: Any) -> dict[str, torch.Tensor]:
    """What the camera head got wrong, frame by frame, in the frame it predicts in (frame 0's camera).

    pred_extrinsics, gt_extrinsics: world-to-camera ``[S, 3, 4]`` of one clip (``s = t * V + v``).
    Both are first expressed relative to frame 0 (the prediction's own world), so no alignment is
    involved and a wrong frame cannot be averaged away:
      ``rot_deg [S]``: angle of ``R_pred_s R_gt_s^T`` (frame 0 is 0 by construction);
      ``dir_deg [S]``: angle between the predicted and GT directions of camera s's centre from camera
      0's (scale-free); NaN for frame 0 and wherever the GT or the prediction has no baseline
      (a camera at frame 0's position, e.g. a static rig's reference one step later).
    Float64 tensors. A camera 100 degrees off shows as 100 here, whatever the clip's averaged loss says.
    """
    p = _as_tensor(pred_extrinsics, "pred_extrinsics").double()
    g = _as_tensor(gt_extrinsics, "gt_extrinsics").double()
    if p.ndim != 3 or tuple(p.shape[1:]) != (3, 4) or p.shape != g.shape:
        raise ValueError(
            "pred_extrinsics and gt_extrinsics must both be [S, 3, 4], "
            f"got {tuple(p.shape)} and {tuple(g.shape)}"
        )
    require_finite(p, "pred_extrinsics")
    require_finite(g, "gt_extrinsics")
    p, g = relative_to_first_camera(p), relative_to_first_camera(g)
    rot = torch.rad2deg(rotation_angle(p[:, :3, :3] @ g[:, :3, :3].transpose(-1, -2)))
    c_p, c_g = camera_centers(p), camera_centers(g)
    n_p, n_g = c_p.norm(dim=-1), c_g.norm(dim=-1)
    baseline = 1e-6 * torch.maximum(n_g.max(), torch.ones((), dtype=g.dtype))
    has = (n_p > baseline) & (n_g > baseline)
    cos = (c_p * c_g).sum(-1) / (n_p * n_g).clamp_min(1e-300)
    direction = torch.rad2deg(torch.acos(cos.clamp(-1.0, 1.0)))
    return {"rot_deg": rot, "dir_deg": torch.where(has, direction, torch.full_like(direction, float("nan")))}
