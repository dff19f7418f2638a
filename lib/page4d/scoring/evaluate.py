"""Evaluation of a model on a scene: mask scores (threshold-free and at a threshold), depth, cameras.

Frames are evaluated in clips of consecutive time steps (all views), exactly as they are fed in
training. What is measured, and why:

- Masks come from the model's mask head (``method="mask_head"``) or, training-free, from its global
  attention (``method="attention"``: VGGT4D's cues, :mod:`page4d.inference.motion_cues`, in place of
  ``mask_logits``); both are scored by the same code below.
- Masks, where SegAnyMo GT exists (`mask_valid`): average precision of P(dynamic) (no threshold),
  J / F / J&F at 0.5, IoU at a threshold chosen on *training* frames (:func:`choose_threshold`),
  the mean P(dynamic) on GT-static and GT-dynamic pixels (``sigmoid(mask_logits)`` is the
  suppression the attention applies, so this is how much each class is suppressed) and the
  expected calibration error. :func:`mask_floors` scores the constant answers "all dynamic" and
  "all static" with the same code, so a table always shows what a trivial predictor gets.
- Depth per clip after median scaling (the prediction's scale is arbitrary).
- Cameras per clip after one Sim(3) Umeyama alignment of all T*V camera centres. ATE over every
  frame; RPE along time within each view ((t, v) -> (t+1, v), the usual temporal RPE), and a
  separate inter-view RPE ((t, 0) -> (t, v)) -- never along the flattened s = t*V + v order, which
  would mix baselines and the (t, V-1) -> (t+1, 0) wrap. Errors are pooled over clips before the RMSE,
  so clips count by their frames.

Nothing here raises for a clip it cannot score: a clip without GT masks, depth or cameras, or with
predicted cameras that collapsed to a point, is skipped for that metric and the reason is recorded
(NaN plus a note), so one bad clip never discards the others (or the other arms of an ablation).
``coverage`` says over how many clips (and, for masks, frames) each family of metrics is, and which
clips were dropped and why (:func:`coverage_entry`), so a table can show its counts and footnotes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from page4d.data import Scene, scene_to_batch
from page4d.geometry import quaternion_to_rotation_matrix, trajectory_is_degenerate
from page4d.inference.motion_cues import MotionCueConfig, predict_with_attention_masks
from page4d.model import logits_from_masks, upsample_mask_logits
from page4d.scoring.metrics import (
    best_iou_threshold,
    camera_errors_per_frame,
    depth_metrics,
    expected_calibration_error,
    jf_metrics,
    mask_average_precision,
    mask_iou,
    mean_probability_by_class,
    rmse,
    trajectory_errors,
)

NAN = float("nan")
METHODS = ("mask_head", "attention", "gt")  # where mask_logits (and so the attention bias) come from
MASK_KEYS = (
    "mask_ap",
    "mask_iou",
    "mask_f",
    "mask_jf",
    "mask_iou_tuned",
    "mask_p_static",
    "mask_p_dynamic",
    "mask_ece",
)
GEOMETRY_KEYS = (
    "depth_abs_rel",
    "depth_delta1",
    "ate",
    "rpe_trans",
    "rpe_rot",
    "rpe_view_trans",
    "rpe_view_rot",
)


COVERAGE_FAMILIES = ("mask", "depth", "camera")  # mask_*; depth_*; ate and rpe_*


def coverage_entry(clips_total: int, dropped: list[dict[str, Any]], **extra: int) -> dict[str, Any]:
    """One family's coverage: ``{"clips": scored, "of": total, "dropped": [{"times", "reason"}], **extra}``
    (masks add ``frames`` / ``frames_of``: frames with GT among the evaluated ones)."""
    return {"clips": clips_total - len(dropped), "of": clips_total, "dropped": dropped, **extra}


def eval_clips(times: list[int], clip_times: int) -> list[list[int]]:
    """Consecutive, non-overlapping clips; the last one may be shorter."""
    if clip_times < 1:
        raise ValueError(f"clip_times must be >= 1, got {clip_times}")
    return [times[i : i + clip_times] for i in range(0, len(times), clip_times)]


@torch.no_grad()
def predict_scene(
    model: nn.Module,
    scene: Scene,
    times: list[int],
    clip_times: int = 4,
    method: str = "mask_head",
    cue_config: MotionCueConfig | None = None,
) -> list[dict[str, Any]]:
    """Run the model clip by clip; each entry holds the batch and the predictions (CPU tensors).

    `method="attention"`: the same forward with the global blocks observed, ``mask_logits`` replaced by
    VGGT4D's attention cues (`page4d.inference.motion_cues.predict_with_attention_masks`, `cue_config` or the
    defaults for the model's depth); they compare time steps, so every clip needs two or more.
    `method="gt"`: the oracle; the clip's GT masks drive the attention bias (`given_mask_logits`), so its
    ``mask_logits`` are the GT itself (score its cameras and depth, never its masks).
    """
    check_method(method)
    clips = eval_clips(times, clip_times)
    if method == "attention":
        short = [c for c in clips if len(c) < 2]
        if short:
            raise ValueError(
                f"method='attention' needs >= 2 time steps per clip; clip_times={clip_times} over times "
                f"{times} leaves {short}: choose clip_times so that no clip has a single step"
            )
    model.eval()
    device = next(model.parameters(), torch.empty(0)).device
    out = []
    for clip in clips:
        batch = scene_to_batch(scene, times=clip, world_frame="first_camera")
        if method == "attention":
            pred = predict_with_attention_masks(model, batch.images.to(device), cue_config)
        elif method == "gt":
            pred = model(
                batch.images.to(device),
                given_mask_logits=oracle_logits(batch, model.cfg.patch_size).to(device),
            )
        else:
            pred = model(batch.images.to(device))
        pred = {k: (v.float().cpu() if isinstance(v, torch.Tensor) else v) for k, v in pred.items()}
        out.append({"times": clip, "batch": batch, "pred": pred})
    return out


def oracle_logits(batch: Any, patch_size: int) -> torch.Tensor:
    """Dynamic logits `[1, T, V, h, w]` from a clip's GT masks (the oracle's attention bias, in training
    and evaluation alike); every frame must have one."""
    if batch.masks is None or not bool(batch.mask_valid.all()):
        raise ValueError(
            "the oracle (GT masks as the attention bias) needs a GT mask on every frame of every clip"
        )
    return logits_from_masks(batch.masks, patch_size)


def check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown mask method {method!r}; choose one of {METHODS}")


@dataclass
class MaskPredictions:
    """P(dynamic) at image resolution next to the GT of the frames that have it.

    prob:  [T, V, H, W] float32 in [0, 1] for every evaluated frame
    gt:    [T, V, H, W] float32 (1 = dynamic); 0 where a frame has no GT
    valid: [T, V] bool, True where GT exists
    reason: why some or all frames have no GT (None when all do)
    """

    prob: torch.Tensor
    gt: torch.Tensor
    valid: torch.Tensor
    reason: str | None


def mask_predictions(clips: list[dict[str, Any]], scene: Scene) -> MaskPredictions | None:
    """Collect the mask predictions of `predict_scene`'s clips; None when the model has no mask head."""
    if not clips or "mask_logits" not in clips[0]["pred"]:
        return None
    probs, gts, valids = [], [], []
    for c in clips:
        batch, logits = c["batch"], c["pred"]["mask_logits"]
        prob = torch.sigmoid(upsample_mask_logits(logits, batch.images.shape[-2:]))[0]
        probs.append(prob)
        if batch.masks is None:
            gts.append(torch.zeros_like(prob))
            valids.append(torch.zeros(prob.shape[:2], dtype=torch.bool))
        else:
            gts.append(batch.masks[0].float())
            valids.append(batch.mask_valid[0].bool())
    valid = torch.cat(valids)
    reason = None if bool(valid.all()) else (scene.mask_missing_reason or "some frames have no GT mask")
    return MaskPredictions(torch.cat(probs), torch.cat(gts), valid, reason)


def mask_scores(
    prob: torch.Tensor,
    gt: torch.Tensor,
    valid: torch.Tensor,
    views: list[int],
    threshold: float = 0.5,
    tuned_threshold: float | None = None,
) -> dict[str, Any]:
    """Every mask metric of `prob` `[T, V, H, W]` against `gt` on the `valid` `[T, V]` frames.

    Keys: ``mask_ap``, ``mask_iou`` / ``mask_f`` / ``mask_jf`` (mean over frames at `threshold`),
    ``mask_iou_tuned`` (at `tuned_threshold`, NaN without one), ``mask_p_static``,
    ``mask_p_dynamic``, ``mask_ece``, ``gt_dynamic_share``, ``mask_iou_per_view`` {view: J},
    ``mask_frames``. All NaN (and ``mask_frames`` 0) when no frame is valid.
    """
    n = int(valid.sum())
    if n == 0:
        return {
            **{k: NAN for k in MASK_KEYS},
            "gt_dynamic_share": NAN,
            "mask_iou_per_view": {},
            "mask_frames": 0,
        }
    jf = jf_metrics(prob, gt, threshold=threshold, valid=valid)
    j = jf["J"]
    by_class = mean_probability_by_class(prob, gt, valid)
    tuned = NAN
    if tuned_threshold is not None:
        tuned = float(mask_iou(prob, gt, threshold=tuned_threshold)[valid].mean())
    return {
        "mask_ap": mask_average_precision(prob, gt, valid),
        "mask_iou": jf["J_mean"],
        "mask_f": jf["F_mean"],
        "mask_jf": jf["JF_mean"],
        "mask_iou_tuned": tuned,
        "mask_p_static": by_class["static"],
        "mask_p_dynamic": by_class["dynamic"],
        "mask_ece": expected_calibration_error(prob, gt, valid),
        "gt_dynamic_share": by_class["dynamic_share"],
        "mask_iou_per_view": {
            v: float(j[:, i][valid[:, i]].mean()) if bool(valid[:, i].any()) else NAN
            for i, v in enumerate(views)
        },
        "mask_frames": n,
    }


def mask_floors(gt: torch.Tensor, valid: torch.Tensor, views: list[int]) -> dict[str, dict[str, Any]]:
    """The constant predictors "all dynamic" (P = 1) and "all static" (P = 0), scored like an arm.

    A threshold tuned on training frames cannot help a constant, so their tuned IoU is the IoU at 0.5.
    """
    out = {}
    for name, value in (("all_dynamic", 1.0), ("all_static", 0.0)):
        scores = mask_scores(torch.full_like(gt, value), gt, valid, views, tuned_threshold=0.5)
        out[name] = scores
    return out


@torch.no_grad()
def choose_threshold(
    model: nn.Module,
    scene: Scene,
    times: list[int],
    clip_times: int = 4,
    method: str = "mask_head",
    cue_config: MotionCueConfig | None = None,
) -> tuple[float | None, str | None]:
    """The threshold with the best mean IoU on `times` (training frames), for the masks of `method`
    (see :func:`predict_scene`); (None, reason) without GT."""
    clips = predict_scene(model, scene, times, clip_times, method, cue_config)
    masks = mask_predictions(clips, scene)
    if masks is None:
        return None, "model has no mask head"
    if not bool(masks.valid.any()):
        return None, masks.reason or "no training frame has a GT mask"
    thr, _ = best_iou_threshold(masks.prob, masks.gt, masks.valid)
    return thr, None


def evaluate(
    model: nn.Module,
    scene: Scene,
    times: list[int] | None = None,
    clip_times: int = 4,
    threshold: float = 0.5,
    tuned_threshold: float | None = None,
    with_floors: bool = False,
    method: str = "mask_head",
) -> dict[str, Any]:
    """Metrics on `times` (default: all of the scene): :func:`predict_scene` (masks from `method`), then
    :func:`score_predictions` (whose docstring lists the keys)."""
    times = list(scene.times if times is None else times)
    clips = predict_scene(model, scene, times, clip_times, method)
    return {
        "times": times,
        "clip_times": clip_times,
        "mask_method": method,
        **score_predictions(clips, scene, threshold, tuned_threshold, with_floors),
    }


SCENE_KEYS = (*MASK_KEYS, *GEOMETRY_KEYS, "camera_rot_deg_median", "camera_rot_deg_max", "gt_dynamic_share")


def evaluate_scenes(
    model: nn.Module,
    scenes: list[Scene],
    clip_times: int = 0,
    method: str = "mask_head",
    tuned_threshold: float | None = None,
    with_floors: bool = False,
) -> dict[str, Any]:
    """Metrics over several scenes (a held-out pool of videos): each scene scored by :func:`evaluate` on
    all its time steps (clips of `clip_times`; 0: the whole scene as one clip), then every `SCENE_KEYS`
    metric averaged over the scenes where it is defined -- a per-video mean, as DAVIS and the camera
    benchmarks average their sequences, so a long video does not outweigh the others.

    Also: ``floors`` averaged the same way, ``mask_iou_per_view`` per view, ``coverage`` summed over the
    scenes (each dropped clip names its scene), ``scenes`` (how many) and ``per_scene`` (each scene's
    metrics, its moving share and every frame's camera errors, `camera_frames`)."""
    if not scenes:
        raise ValueError("evaluate_scenes needs at least one scene")
    per_scene = []
    for i, scene in enumerate(scenes):
        result = evaluate(
            model,
            scene,
            clip_times=clip_times or scene.num_times,
            tuned_threshold=tuned_threshold,
            with_floors=with_floors,
            method=method,
        )
        per_scene.append({"scene": i, "root": str(scene.root), "views": scene.num_views, **result})
    out: dict[str, Any] = {k: _mean_defined([r[k] for r in per_scene]) for k in SCENE_KEYS}
    views = sorted({v for r in per_scene for v in r["mask_iou_per_view"]})
    out["mask_iou_per_view"] = {
        v: _mean_defined([r["mask_iou_per_view"].get(v, NAN) for r in per_scene]) for v in views
    }
    if with_floors and all("floors" in r for r in per_scene):
        names = per_scene[0]["floors"]
        out["floors"] = {
            name: {
                **{
                    k: _mean_defined([r["floors"][name][k] for r in per_scene])
                    for k in (*MASK_KEYS, "gt_dynamic_share")
                },
                "mask_frames": sum(r["floors"][name]["mask_frames"] for r in per_scene),
            }
            for name in names
        }
    out["camera_floor"] = {
        k: _mean_defined([r["camera_floor"][k] for r in per_scene]) for k in per_scene[0]["camera_floor"]
    }
    out["coverage"] = _summed_coverage(per_scene)
    out["scenes"] = len(scenes)
    keep = (*SCENE_KEYS, "camera_frames", "trajectory_note", "depth_note", "mask_missing_reason")
    out["per_scene"] = [
        {"scene": r["scene"], "root": r["root"], **{k: r.get(k) for k in keep}} for r in per_scene
    ]
    return out


def _mean_defined(values: list[float]) -> float:
    finite = [float(v) for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else NAN


def _summed_coverage(per_scene: list[dict[str, Any]]) -> dict[str, Any]:
    """Each family's coverage summed over scenes; a dropped clip's reason is prefixed with its scene."""
    out = {}
    for family in COVERAGE_FAMILIES:
        entries = [(r["scene"], r["coverage"][family]) for r in per_scene]
        dropped = [{**d, "reason": f"scene {i}: {d['reason']}"} for i, e in entries for d in e["dropped"]]
        extra = {k: sum(e[k] for _, e in entries) for k in ("frames", "frames_of") if k in entries[0][1]}
        out[family] = coverage_entry(sum(e["of"] for _, e in entries), dropped, **extra)
    return out


def score_predictions(
    clips: list[dict[str, Any]],
    scene: Scene,
    threshold: float = 0.5,
    tuned_threshold: float | None = None,
    with_floors: bool = False,
) -> dict[str, Any]:
    """Scores of `predict_scene`'s clips. Keys (floats; NaN where not measurable):

    masks (see :func:`mask_scores`) plus ``mask_missing_reason``, ``mask_method_notes`` (why an
    attention clip has no GT-free threshold) and, with `with_floors`, ``floors``
    {"all_dynamic": scores, "all_static": scores}; ``depth_abs_rel``, ``depth_delta1``
    (median-scaled; pixels pooled per clip, clips averaged by frame count); ``ate``, ``rpe_trans``,
    ``rpe_rot`` (degrees; temporal, per view), ``rpe_view_trans``, ``rpe_view_rot`` (inter-view)
    with ``trajectory_note`` / ``depth_note`` saying why a value is NaN or which clips were skipped;
    ``coverage`` {"mask" | "depth" | "camera": :func:`coverage_entry`}: clips scored of clips evaluated
    per family (masks also frames with GT), each dropped clip with its reason.
    """
    views = list(scene.views)
    result: dict[str, Any] = {
        "threshold": threshold,
        "tuned_threshold": tuned_threshold,
    }
    masks = mask_predictions(clips, scene)
    if masks is None:
        empty = torch.zeros(0, len(views), 1, 1)
        result.update(mask_scores(empty, empty, torch.zeros(0, len(views), dtype=torch.bool), views))
        result["mask_missing_reason"] = "model has no mask head"
    else:
        result.update(mask_scores(masks.prob, masks.gt, masks.valid, views, threshold, tuned_threshold))
        result["mask_missing_reason"] = masks.reason
        result["mask_method_notes"] = [  # e.g. an attention clip without a GT-free threshold
            f"clip {c['times']}: {note}" for c in clips for note in c["pred"].get("attention_notes", ())
        ]
        if with_floors:
            result["floors"] = mask_floors(masks.gt, masks.valid, views)
    depth, depth_coverage = _depth_scores(clips)
    camera, camera_coverage = _camera_scores(clips, len(views))
    result.update(depth)
    result.update(camera)
    result["coverage"] = {
        "mask": _mask_coverage(clips, masks, len(views)),
        "depth": depth_coverage,
        "camera": camera_coverage,
    }
    return result


def _mask_coverage(clips: list[dict[str, Any]], masks: MaskPredictions | None, num_views: int) -> dict:
    """Clips with at least one GT frame count as scored; the mask metrics pool the GT frames."""
    frames_of = sum(len(c["times"]) for c in clips) * num_views
    if masks is None:
        dropped = [{"times": c["times"], "reason": "model has no mask head"} for c in clips]
        return coverage_entry(len(clips), dropped, frames=0, frames_of=frames_of)
    dropped, start = [], 0
    for c in clips:
        valid = masks.valid[start : start + len(c["times"])]
        start += len(c["times"])
        if not bool(valid.any()):
            dropped.append({"times": c["times"], "reason": masks.reason or "no GT mask"})
    return coverage_entry(len(clips), dropped, frames=int(masks.valid.sum()), frames_of=frames_of)


def _depth_scores(clips: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The depth metrics and their coverage (which clips were scored, which dropped and why)."""
    rows, dropped = [], []
    for c in clips:
        batch, pred = c["batch"], c["pred"]
        reason = None
        if "depth" not in pred:
            reason = "model has no depth head"
        elif batch.depths is None:
            reason = "scene has no depth"
        elif not bool((batch.depths > 0).any()):
            reason = "no valid GT depth"
        else:
            d = depth_metrics(pred["depth"][0, ..., 0], batch.depths[0], alignment="median")
            rows.append((d, int(batch.depths.shape[1] * batch.depths.shape[2])))
        if reason is not None:
            dropped.append({"times": c["times"], "reason": reason})
    total = sum(n for _, n in rows)

    def pooled(key: str) -> float:
        return sum(d[key] * n for d, n in rows) / total if rows else NAN

    scores = {
        "depth_abs_rel": pooled("abs_rel"),
        "depth_delta1": pooled("delta_1_25"),
        "depth_note": _drop_note(dropped, len(clips)),
    }
    return scores, coverage_entry(len(clips), dropped)


def _drop_note(dropped: list[dict[str, Any]], clips_total: int) -> str | None:
    """The dropped clips as one note, grouped by reason ("every clip" when none was scored)."""
    by_reason: dict[str, list[list[int]]] = {}
    for d in dropped:
        by_reason.setdefault(d["reason"], []).append(d["times"])
    parts = []
    for reason, times in by_reason.items():
        which = "every clip" if len(times) == clips_total else "clips " + ", ".join(map(str, times))
        parts.append(f"{which}: {reason}")
    return "; ".join(parts) or None


def camera_pairs(num_times: int, num_views: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Frame index pairs (s = t * V + v) for the temporal RPE ((t, v) -> (t+1, v)) and the
    inter-view RPE ((t, 0) -> (t, v), v > 0)."""
    temporal = [
        (t * num_views + v, (t + 1) * num_views + v) for t in range(num_times - 1) for v in range(num_views)
    ]
    inter_view = [(t * num_views, t * num_views + v) for t in range(num_times) for v in range(1, num_views)]
    return temporal, inter_view


def _camera_scores(clips: list[dict[str, Any]], num_views: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """ATE / RPE pooled over the clips whose cameras can be aligned, and their coverage; rotation errors
    (RPE-r, view-RPE-r and every frame's rotation error) also where the centres cannot be aligned (a
    relative rotation does not depend on the alignment), so a panning camera or a 2-camera rig is
    still scored for what it can be scored on."""
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("centre", "rpe_t", "rpe_r", "view_t", "view_r")}
    floor: dict[str, list[torch.Tensor]] = {k: [] for k in ("rpe_r", "view_r", "rot")}
    dropped: list[dict[str, Any]] = []
    frames: list[dict[str, Any]] = []
    for c in clips:
        reason = _camera_drop_reason(c["batch"], c["pred"])
        if reason is not None and not reason.startswith(_COLLINEAR):
            dropped.append({"times": c["times"], "reason": reason})
            continue
        e_pred = pose_encoding_to_extrinsics(c["pred"]["pose_enc"][0].reshape(-1, 9))
        e_gt = c["batch"].extrinsics[0].reshape(-1, 3, 4)
        per_frame = camera_errors_per_frame(e_pred, e_gt)
        frames.append(
            {"times": c["times"], **{k: [round(float(x), 3) for x in v] for k, v in per_frame.items()}}
        )
        temporal, inter_view = camera_pairs(len(c["times"]), num_views)
        align = "none" if reason is not None else "sim3"
        err = trajectory_errors(e_pred, e_gt, align=align, pairs=temporal + inter_view)
        k = len(temporal)
        _identity_floor(e_gt, temporal + inter_view, k, floor)
        parts["rpe_r"].append(err["rpe_rot_deg"][:k])
        parts["view_r"].append(err["rpe_rot_deg"][k:])
        if reason is not None:  # rotations only: translations need the alignment
            dropped.append({"times": c["times"], "reason": reason + "; rotation errors kept"})
            continue
        parts["centre"].append(err["centre_error"])
        parts["rpe_t"].append(err["rpe_trans"][:k])
        parts["view_t"].append(err["rpe_trans"][k:])

    def pooled(key: str) -> float:
        return rmse(torch.cat(parts[key])) if parts[key] else NAN

    rot = [x for f in frames for x in f["rot_deg"][1:]]
    scores = {
        "ate": pooled("centre"),
        "rpe_trans": pooled("rpe_t"),
        "rpe_rot": pooled("rpe_r"),
        "rpe_view_trans": pooled("view_t"),
        "rpe_view_rot": pooled("view_r"),
        "camera_rot_deg_median": float(np.median(rot)) if rot else NAN,
        "camera_rot_deg_max": float(np.max(rot)) if rot else NAN,
        "camera_frames": frames,
        "trajectory_note": _drop_note(dropped, len(clips)),
        "camera_floor": {
            "rpe_rot": rmse(torch.cat(floor["rpe_r"])) if floor["rpe_r"] else NAN,
            "rpe_view_rot": rmse(torch.cat(floor["view_r"])) if floor["view_r"] else NAN,
            "camera_rot_deg_median": float(torch.cat(floor["rot"]).median()) if floor["rot"] else NAN,
        },
    }
    return scores, coverage_entry(len(clips), dropped)


def _identity_floor(e_gt: torch.Tensor, pairs: list[tuple[int, int]], k: int, floor: dict) -> None:
    """The rotation errors of the trivial answer "every camera is the first one" (identity rotations)
    on one clip, appended to `floor`: a camera head must beat it before its rotations mean anything (a
    head that collapsed to a constant scores exactly this, and small motions make it look good)."""
    same = torch.eye(3, 4, dtype=e_gt.dtype).expand_as(e_gt)
    err = trajectory_errors(same, e_gt, align="none", pairs=pairs)
    floor["rpe_r"].append(err["rpe_rot_deg"][:k])
    floor["view_r"].append(err["rpe_rot_deg"][k:])
    floor["rot"].append(camera_errors_per_frame(same, e_gt)["rot_deg"][1:])


_COLLINEAR = ("GT camera centres are coincident", "predicted camera centres collapsed")


def _camera_drop_reason(batch: Any, pred: dict[str, Any]) -> str | None:
    """Why a clip's cameras cannot be scored (None when they can): no camera head or GT cameras, or
    camera centres that span less than a plane, where the Sim(3) alignment is undetermined."""
    if "pose_enc" not in pred:
        return "model has no camera head"
    if batch.extrinsics is None:
        return "scene has no cameras"
    if batch.extrinsics[0].reshape(-1, 3, 4).shape[0] < 2:
        return "a clip of one frame has no relative pose"
    if trajectory_is_degenerate(batch.extrinsics[0].reshape(-1, 3, 4)):
        return "GT camera centres are coincident or collinear: Sim(3) undetermined"
    if trajectory_is_degenerate(pose_encoding_to_extrinsics(pred["pose_enc"][0].reshape(-1, 9))):
        return "predicted camera centres collapsed (coincident or collinear)"
    return None


def pose_encoding_to_extrinsics(pose_enc: torch.Tensor) -> torch.Tensor:
    """World-to-camera `[..., 3, 4]` from `absT_quaR_FoV` encodings `[..., 9]`, ignoring the field of view.

    Trajectory metrics need only R and t; an untrained model's FoV may be 0, which intrinsics reject.
    """
    rot = quaternion_to_rotation_matrix(pose_enc[..., 3:7])
    return torch.cat([rot, pose_enc[..., :3, None]], dim=-1)
