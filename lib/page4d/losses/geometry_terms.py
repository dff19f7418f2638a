"""Geometry terms against GT cameras and depth, in VGGT's spirit, and the scene normalisation they share.

``camera`` (pose encoding, per refinement iteration), ``depth`` and ``point`` (confidence-weighted
regression plus a finite-difference gradient term). GT is first expressed in frame 0's camera
coordinates and divided by the scene scale (:func:`normalize_scene_scale`), so the terms do not depend
on the world frame or unit a dataset happened to use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from page4d.checks import require_finite, require_tensor
from page4d.geometry import (
    camera_centers,
    depth_to_world_points,
    extrinsics_intrinsics_to_pose_encoding,
    quaternion_to_rotation_matrix,
    relative_to_first_camera,
)
from page4d.losses.config import LossConfig
from page4d.losses.layout import frame_lead, require_bool, to_layout

__all__ = ["SceneNormalization", "camera_loss", "depth_loss", "normalize_scene_scale", "point_loss"]


@dataclass
class SceneNormalization:
    """GT re-expressed in frame 0's camera coordinates and divided by the scene scale.

    extrinsics: world-to-camera ``[*L, 3, 4]`` with frame 0 = identity, translations / scale.
    depths: ``[*L, H, W]`` / scale (0 stays invalid) or None. world_points: ``[*L, H, W, 3]`` in
    frame-0 coordinates / scale, or None. point_valid: ``[*L, H, W]`` bool (depth > 0) or None.
    scale: ``[B]``, the mean distance of valid GT points from frame 0's camera centre (VGGT's
    choice), or of the camera centres from it when no depth is given.
    """

    extrinsics: torch.Tensor
    depths: torch.Tensor | None
    world_points: torch.Tensor | None
    point_valid: torch.Tensor | None
    scale: torch.Tensor


def _camera_centre_scale(rel_extrinsics: torch.Tensor) -> torch.Tensor:
    centres = camera_centers(rel_extrinsics)  # [B, S, 3], frame 0 at the origin
    dist = centres.norm(dim=-1).mean(dim=1)
    # All cameras at one place: the GT translations are ~0 at any scale, so 1 changes nothing.
    return torch.where(dist > 1e-8, dist, torch.ones_like(dist))


def normalize_scene_scale(
    extrinsics: torch.Tensor, intrinsics: torch.Tensor, depths: torch.Tensor | None = None
) -> SceneNormalization:
    """Make GT invariant to the world frame and unit the dataset happened to use.

    extrinsics: world-to-camera ``[B, S, 3, 4]`` or ``[B, T, V, 3, 4]``; intrinsics the same leading
    dims ``[..., 3, 3]``; depths ``[..., H, W]`` (z-depth, 0 = invalid) or None. Frame 0 (s = 0,
    i.e. t = 0, v = 0) becomes the world; lengths are divided by the mean distance of the valid GT
    points from that camera (camera centres if no depth). A batch element with depths but no valid
    pixel raises ``ValueError``. Outputs keep the input layout.
    """
    e = require_tensor(extrinsics, "extrinsics")
    lead = frame_lead(e)
    k = to_layout(require_tensor(intrinsics, "intrinsics"), lead, (3, 3), "intrinsics")
    require_finite(e, "extrinsics")
    require_finite(k, "intrinsics")
    b = lead[0]
    s = math.prod(lead[1:])
    rel = relative_to_first_camera(e.reshape(b, s, 3, 4))
    if depths is None:
        scale = _camera_centre_scale(rel)
        rel = torch.cat((rel[..., :3], rel[..., 3:] / scale[:, None, None, None]), dim=-1)
        return SceneNormalization(rel.reshape(e.shape), None, None, None, scale)
    d = require_tensor(depths, "depths")
    if d.ndim != len(lead) + 2 or tuple(d.shape[: len(lead)]) != lead:
        raise ValueError(f"depths must be [{', '.join(map(str, lead))}, H, W], got {tuple(d.shape)}")
    require_finite(d, "depths")
    h, w = d.shape[-2:]
    d_flat = d.reshape(b, s, h, w)
    point_valid = d_flat > 0
    pts = depth_to_world_points(d_flat, k.reshape(b, s, 3, 3), rel)
    n_valid = point_valid.flatten(1).sum(1)
    if (n_valid == 0).any():
        empty = torch.nonzero(n_valid == 0).flatten().tolist()
        raise ValueError(f"depths {tuple(d.shape)}: batch elements {empty} have no valid (> 0) depth pixel")
    dist_sum = (pts.norm(dim=-1) * point_valid).flatten(1).sum(1)
    scale = (dist_sum / n_valid).clamp_min(1e-12)
    inv = 1.0 / scale
    rel = torch.cat((rel[..., :3], rel[..., 3:] * inv[:, None, None, None]), dim=-1)
    return SceneNormalization(
        extrinsics=rel.reshape(e.shape),
        depths=(d_flat * inv[:, None, None, None]).reshape(d.shape),
        world_points=(pts * inv[:, None, None, None, None] * point_valid[..., None]).reshape(d.shape + (3,)),
        point_valid=point_valid.reshape(d.shape),
        scale=scale,
    )


def _elementwise(diff: torch.Tensor, config: LossConfig) -> torch.Tensor:
    if config.camera_loss_type == "l1":
        return diff.abs()
    return F.huber_loss(diff, torch.zeros_like(diff), reduction="none", delta=config.huber_delta)


def camera_loss(
    pose_enc_pred: torch.Tensor | Sequence[torch.Tensor],
    extrinsics_gt: torch.Tensor,
    intrinsics_gt: torch.Tensor,
    image_hw: Sequence[int],
    valid: torch.Tensor | None = None,
    *,
    scene_scale: torch.Tensor | None = None,
    config: LossConfig | None = None,
) -> dict[str, torch.Tensor]:
    """Pose-encoding regression against GT cameras expressed relative to frame 0.

    pose_enc_pred: ``[B, S, 9]`` / ``[B, T, V, 9]`` or a list of them (``pose_enc_list``, one per
    refinement iteration, weighted ``gamma^(N-1-i)`` and normalised by the weights' sum so one
    iteration equals the plain tensor). extrinsics_gt: world-to-camera ``[..., 3, 4]``;
    intrinsics_gt ``[..., 3, 3]`` for an image of ``image_hw``. valid: bool per frame or None.
    scene_scale: ``[B]`` divisor of GT translations (pass the depth-based one from
    :func:`normalize_scene_scale`); None = mean camera-centre distance from frame 0.

    Terms (mean over valid frames): ``T`` -- translation of the world-to-camera transform (frame 0's
    world); ``R`` -- quaternion per ``config.rotation_target`` (sign-invariant, or
    VGGT's canonical ``w >= 0`` with the rig fix; the prediction is not normalised, as in VGGT; or,
    for the tiny preset, the chordal distance of the rotation matrices);
    ``fov`` -- vertical/horizontal FoV in radians. L1 or Huber per ``config.camera_loss_type``.
    Returns ``camera_loss`` (``w_T T + w_R R + w_fov fov``) and
    ``camera_T_loss``, ``camera_R_loss``, ``camera_fov_loss``.
    """
    cfg = config or LossConfig()
    e = require_tensor(extrinsics_gt, "extrinsics_gt")
    lead = frame_lead(e, "extrinsics_gt")
    k = to_layout(require_tensor(intrinsics_gt, "intrinsics_gt"), lead, (3, 3), "intrinsics_gt")
    preds = [pose_enc_pred] if isinstance(pose_enc_pred, torch.Tensor) else list(pose_enc_pred)
    if not preds:
        raise ValueError("pose_enc_pred is an empty list")
    b = lead[0]
    s = math.prod(lead[1:])
    require_finite(e, "extrinsics_gt")
    rel = relative_to_first_camera(e.reshape(b, s, 3, 4))
    scale = _camera_centre_scale(rel) if scene_scale is None else require_tensor(scene_scale, "scene_scale")
    if tuple(scale.shape) != (b,):
        raise ValueError(f"scene_scale must be [B] = [{b}], got {tuple(scale.shape)}")
    rel = torch.cat((rel[..., :3], rel[..., 3:] / scale[:, None, None, None]), dim=-1)
    gt = extrinsics_intrinsics_to_pose_encoding(rel, k.reshape(b, s, 3, 3), image_hw)
    if valid is None:
        fw = torch.ones(b, s, dtype=gt.dtype, device=gt.device)
    else:
        fv = to_layout(require_tensor(valid, "valid"), lead, (), "valid")
        require_bool(fv, "valid")
        fw = fv.reshape(b, s).to(gt.dtype)
    if fw.sum() == 0:
        raise ValueError("camera_loss: valid marks no frame as valid")

    n_it = len(preds)
    it_weights = [cfg.camera_gamma ** (n_it - 1 - i) for i in range(n_it)]
    totals = {"T": 0.0, "R": 0.0, "fov": 0.0}
    for i, pred in enumerate(preds):
        p = to_layout(require_tensor(pred, f"pose_enc_pred[{i}]"), lead, (9,), f"pose_enc_pred[{i}]")
        require_finite(p, f"pose_enc_pred[{i}]")
        p = p.reshape(b, s, 9)
        t_err = _elementwise(p[..., :3] - gt[..., :3], cfg).mean(-1)
        r_err = _rotation_error(p[..., 3:7], gt[..., 3:7], cfg)
        f_err = _elementwise(p[..., 7:9] - gt[..., 7:9], cfg).mean(-1)
        for key, err in (("T", t_err), ("R", r_err), ("fov", f_err)):
            totals[key] = totals[key] + it_weights[i] * (err * fw).sum() / fw.sum()
    norm = sum(it_weights)
    t_loss, r_loss, f_loss = (totals[key] / norm for key in ("T", "R", "fov"))
    total = cfg.cam_w_translation * t_loss + cfg.cam_w_rotation * r_loss + cfg.cam_w_fov * f_loss
    return {"camera_loss": total, "camera_T_loss": t_loss, "camera_R_loss": r_loss, "camera_fov_loss": f_loss}


def _rotation_error(q_pred: torch.Tensor, q_gt: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    """Per-frame quaternion error ``[...]`` (see `LossConfig.rotation_target`); q_gt has ``w >= 0``."""
    if cfg.rotation_target == "chordal":  # R(q) = R(-q): no double cover, no cut
        chord = _elementwise(quaternion_to_rotation_matrix(q_pred) - quaternion_to_rotation_matrix(q_gt), cfg)
        return chord.flatten(-2).mean(-1) + _elementwise(q_pred.norm(dim=-1) - 1.0, cfg)
    same = _elementwise(q_pred - q_gt, cfg).mean(-1)
    flipped = _elementwise(q_pred + q_gt, cfg).mean(-1)
    if cfg.rotation_target == "sign_invariant":
        return torch.minimum(same, flipped)
    near_cut = q_gt[..., 3].abs() < cfg.rig_cut_w
    return torch.where(near_cut, torch.minimum(same, flipped), same)


def _conf_regression(
    err: torch.Tensor, diff_vec: torch.Tensor, conf: torch.Tensor, valid: torch.Tensor, alpha: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shared by depth and point losses on ``[..., H, W]`` maps (diff_vec ``[..., H, W, C]``).

    reg = mean over valid of ``conf * err - alpha * log(conf)``; grad = conf-weighted mean of
    ``|| diff(x+1) - diff(x) ||`` over horizontally/vertically adjacent valid pairs (penalises wrong
    local shape, i.e. surface normals, independently of a constant offset). An exact 0 for no pair.
    """
    vf = valid.to(err.dtype)
    n = vf.sum()
    if n == 0:
        raise ValueError(f"no valid pixel in the map of shape {tuple(valid.shape)}")
    reg = ((conf * err - alpha * torch.log(conf)) * vf).sum() / n
    grad_sum = err.new_zeros(())
    pair_count = err.new_zeros(())
    for dim in (-3, -2):  # rows (H) and columns (W) of diff_vec [..., H, W, C]
        length = diff_vec.shape[dim]
        if length < 2:
            continue
        d_next = diff_vec.narrow(dim, 1, length - 1)
        d_prev = diff_vec.narrow(dim, 0, length - 1)
        vdim = dim + 1  # the same axis in the [..., H, W] maps
        pair_valid = valid.narrow(vdim, 1, length - 1) & valid.narrow(vdim, 0, length - 1)
        pair_conf = 0.5 * (conf.narrow(vdim, 1, length - 1) + conf.narrow(vdim, 0, length - 1))
        step = (d_next - d_prev).norm(dim=-1)
        grad_sum = grad_sum + (pair_conf * step * pair_valid).sum()
        pair_count = pair_count + pair_valid.sum()
    grad = grad_sum / pair_count.clamp_min(1)
    return reg, grad


def _check_conf(conf: torch.Tensor, name: str, shape: tuple[int, ...]) -> None:
    if tuple(conf.shape) != shape:
        raise ValueError(f"{name} must have shape {list(shape)}, got {tuple(conf.shape)}")
    require_finite(conf, name)
    if (conf <= 0).any():
        raise ValueError(f"{name} (shape {tuple(conf.shape)}) must be > 0 (the heads output 1 + exp)")


def depth_loss(
    depth_pred: torch.Tensor,
    depth_conf: torch.Tensor,
    depth_gt: torch.Tensor,
    valid: torch.Tensor | None = None,
    *,
    scene_scale: torch.Tensor | None = None,
    config: LossConfig | None = None,
) -> dict[str, torch.Tensor]:
    """Confidence-weighted depth regression plus a gradient (local shape) term.

    depth_gt: ``[*L, H, W]`` z-depth, 0 = invalid, L = (B, S) or (B, T, V). depth_pred: ``[*L, H, W,
    1]`` (the head's layout) or ``[*L, H, W]``; depth_conf: ``[*L, H, W]``, > 0. valid: bool ``[*L,
    H, W]`` combined with ``depth_gt > 0``, or None. scene_scale: ``[B]``; GT is divided by it (the
    model predicts in the normalised scene of :func:`normalize_scene_scale`); None = GT already
    normalised. Returns ``depth_loss = reg + grad_weight * grad`` with ``reg`` = mean over valid
    pixels of ``conf |d - d_gt| - alpha log conf`` (large conf sharpens the error, the log keeps conf
    from shrinking to nothing) and ``grad`` the conf-weighted finite-difference error
    (``depth_reg_loss``, ``depth_grad_loss``).
    """
    cfg = config or LossConfig()
    gt = require_tensor(depth_gt, "depth_gt")
    pred = require_tensor(depth_pred, "depth_pred")
    conf = require_tensor(depth_conf, "depth_conf")
    if gt.ndim not in (4, 5):
        raise ValueError(f"depth_gt must be [B, S, H, W] or [B, T, V, H, W], got {tuple(gt.shape)}")
    if tuple(pred.shape) == tuple(gt.shape) + (1,):
        pred = pred[..., 0]
    elif tuple(pred.shape) != tuple(gt.shape):
        raise ValueError(
            f"depth_pred must be {list(gt.shape) + [1]} or {list(gt.shape)}, got {tuple(pred.shape)}"
        )
    _check_conf(conf, "depth_conf", tuple(gt.shape))
    require_finite(gt, "depth_gt")
    require_finite(pred, "depth_pred")
    vmask = gt > 0
    if valid is not None:
        require_bool(require_tensor(valid, "valid"), "valid")
        if tuple(valid.shape) != tuple(gt.shape):
            raise ValueError(f"valid must have depth_gt's shape {list(gt.shape)}, got {tuple(valid.shape)}")
        vmask = vmask & valid
    if scene_scale is not None:
        sc = require_tensor(scene_scale, "scene_scale")
        if tuple(sc.shape) != (gt.shape[0],):
            raise ValueError(f"scene_scale must be [B] = [{gt.shape[0]}], got {tuple(sc.shape)}")
        gt = gt / sc.reshape((-1,) + (1,) * (gt.ndim - 1))
    diff = pred - gt
    reg, grad = _conf_regression(diff.abs(), diff[..., None], conf, vmask, cfg.conf_alpha)
    return {"depth_loss": reg + cfg.grad_weight * grad, "depth_reg_loss": reg, "depth_grad_loss": grad}


def point_loss(
    points_pred: torch.Tensor,
    points_conf: torch.Tensor,
    points_gt: torch.Tensor,
    valid: torch.Tensor,
    *,
    config: LossConfig | None = None,
) -> dict[str, torch.Tensor]:
    """Confidence-weighted world-point regression plus a gradient term, in frame-0 coordinates.

    points_gt: ``[*L, H, W, 3]`` GT points in frame 0's camera coordinates divided by the scene scale
    (``normalize_scene_scale(...).world_points``); points_pred / points_conf: ``[*L, H, W, 3]`` /
    ``[*L, H, W]`` (conf > 0); valid: bool ``[*L, H, W]`` (GT depth > 0). The error is the Euclidean
    distance; the terms are those of :func:`depth_loss`. Returns ``point_loss``, ``point_reg_loss``,
    ``point_grad_loss``.
    """
    cfg = config or LossConfig()
    gt = require_tensor(points_gt, "points_gt")
    pred = require_tensor(points_pred, "points_pred")
    conf = require_tensor(points_conf, "points_conf")
    vmask = require_tensor(valid, "valid")
    if gt.ndim not in (5, 6) or gt.shape[-1] != 3:
        raise ValueError(f"points_gt must be [B, S, H, W, 3] or [B, T, V, H, W, 3], got {tuple(gt.shape)}")
    if tuple(pred.shape) != tuple(gt.shape):
        raise ValueError(f"points_pred must have shape {list(gt.shape)}, got {tuple(pred.shape)}")
    _check_conf(conf, "points_conf", tuple(gt.shape[:-1]))
    require_bool(vmask, "valid")
    if tuple(vmask.shape) != tuple(gt.shape[:-1]):
        raise ValueError(f"valid must have shape {list(gt.shape[:-1])}, got {tuple(vmask.shape)}")
    require_finite(gt, "points_gt")
    require_finite(pred, "points_pred")
    diff = pred - gt
    reg, grad = _conf_regression(diff.norm(dim=-1), diff, conf, vmask, cfg.conf_alpha)
    return {"point_loss": reg + cfg.grad_weight * grad, "point_reg_loss": reg, "point_grad_loss": grad}
