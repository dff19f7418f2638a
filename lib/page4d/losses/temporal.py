"""The temporal mask term: predicted dynamic probabilities should agree between consecutive time steps.

Unsupervised (it compares predictions with predictions) and only a smoothness prior: moving objects do
change their masks over time. Correspondences between t and t+1 of one view are the same pixel for an
unchanged camera, else :func:`page4d.geometry.depth_backward_warp` with depth and relative pose.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from page4d.checks import require_finite, require_tensor
from page4d.geometry import depth_backward_warp, pose_encoding_to_extrinsics_intrinsics
from page4d.losses.config import LossConfig
from page4d.losses.layout import require_bool, to_layout

__all__ = ["temporal_consistency_loss"]


def temporal_geometry(
    predictions: Mapping[str, Any],
    gt_shape: tuple[int, ...],
    config: LossConfig,
    depths: torch.Tensor | None,
    intrinsics: torch.Tensor | None,
    extrinsics: torch.Tensor | None,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """GT geometry if given, else the detached predicted depth/cameras, in ``[B, T, V, ...]``.

    gt_shape: ``(B, T, V, H, W)`` of the GT masks (the resolution the temporal term works at).
    """
    if config.temporal_warp == "identity":
        return None, None, None
    given = _given_geometry(gt_shape, depths, intrinsics, extrinsics, "temporal warp")
    if given is not None:
        return given
    lead = tuple(gt_shape[:3])
    big_h, big_w = gt_shape[-2:]
    if predictions.get("depth") is None or predictions.get("pose_enc") is None:
        raise ValueError(
            f"LossConfig.temporal_warp={config.temporal_warp!r} needs geometry: pass depths/intrinsics/"
            f'extrinsics, or predictions with "depth" and "pose_enc", or use temporal_warp="identity" '
            f"for a static camera"
        )
    d_pred = require_tensor(predictions["depth"], 'predictions["depth"]')
    d = to_layout(d_pred, lead, (big_h, big_w, 1), 'predictions["depth"]')[..., 0]
    pose = to_layout(
        require_tensor(predictions["pose_enc"], 'predictions["pose_enc"]'), lead, (9,), "pose_enc"
    )
    e, k = pose_encoding_to_extrinsics_intrinsics(pose.detach(), (big_h, big_w))
    return d.detach(), k, e


def _given_geometry(
    shape: tuple[int, ...],
    depths: torch.Tensor | None,
    intrinsics: torch.Tensor | None,
    extrinsics: torch.Tensor | None,
    who: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """The caller's depths / intrinsics / extrinsics for ``shape = (B, T, V, H, W)``, detached, in
    ``[B, T, V, ...]``; None when none is given, ``ValueError`` when only some are."""
    given = [x is not None for x in (depths, intrinsics, extrinsics)]
    if any(given) and not all(given):
        raise ValueError(f"{who} needs depths, intrinsics and extrinsics together (got only some of them)")
    if not all(given):
        return None
    lead = tuple(shape[:3])
    d = to_layout(require_tensor(depths, "depths"), lead, tuple(shape[-2:]), "depths")
    k = to_layout(require_tensor(intrinsics, "intrinsics"), lead, (3, 3), "intrinsics")
    e = to_layout(require_tensor(extrinsics, "extrinsics"), lead, (3, 4), "extrinsics")
    return d.detach(), k.detach(), e.detach()


def temporal_agreement(
    prob: torch.Tensor,
    pixel_valid: torch.Tensor,
    depths: torch.Tensor | None,
    intrinsics: torch.Tensor | None,
    extrinsics: torch.Tensor | None,
    *,
    config: LossConfig,
) -> tuple[torch.Tensor, int]:
    """Mean ``|p_t(x) - p_{t+1}(warp(x))|`` over valid corresponding pixels, and their count."""
    b, t, v, h, w = prob.shape
    if t < 2:
        return prob.sum() * 0.0, 0
    m = b * (t - 1) * v
    p0 = prob[:, :-1].reshape(m, h, w)
    p1 = prob[:, 1:].reshape(m, 1, h, w)
    val0 = pixel_valid[:, :-1].reshape(m, h, w)
    val1 = pixel_valid[:, 1:].reshape(m, 1, h, w)
    identity_corr = val0 & val1[:, 0]
    mode = config.temporal_warp
    if mode == "identity" or extrinsics is None:
        diff = (p0 - p1[:, 0]).abs()
        count = identity_corr.sum()
        return (diff * identity_corr).sum() / count.clamp_min(1), int(count)

    assert depths is not None and intrinsics is not None
    require_finite(depths, "depths")
    depths, intrinsics, extrinsics = (x.to(prob.dtype) for x in (depths, intrinsics, extrinsics))
    e0, e1 = extrinsics[:, :-1].reshape(m, 3, 4), extrinsics[:, 1:].reshape(m, 3, 4)
    k0, k1 = intrinsics[:, :-1].reshape(m, 3, 3), intrinsics[:, 1:].reshape(m, 3, 3)
    d0, d1 = depths[:, :-1].reshape(m, h, w), depths[:, 1:].reshape(m, h, w)
    if mode == "auto":
        atol = config.temporal_static_atol
        e_tol = atol * (1.0 + e0.abs().flatten(1).amax(1))
        k_tol = atol * (1.0 + k0.abs().flatten(1).amax(1))
        static = ((e1 - e0).abs().flatten(1).amax(1) <= e_tol) & ((k1 - k0).abs().flatten(1).amax(1) <= k_tol)
    else:
        static = torch.zeros(m, dtype=torch.bool, device=prob.device)

    warp = depth_backward_warp(d0, k0, e0, d1, k1, e1)
    val1_w = warp.sample(val1.to(prob.dtype), mode="nearest")[:, 0] > 0.5
    p1_w = warp.sample(p1)[:, 0]
    warped_corr = warp.visible(config.temporal_depth_rel_tol) & val0 & val1_w

    s = static[:, None, None]
    corr = torch.where(s, identity_corr, warped_corr)
    p1_corr = torch.where(s, p1[:, 0], p1_w)
    count = corr.sum()
    return ((p0 - p1_corr).abs() * corr).sum() / count.clamp_min(1), int(count)


def temporal_consistency_loss(
    prob: torch.Tensor,
    valid: torch.Tensor | None = None,
    depths: torch.Tensor | None = None,
    intrinsics: torch.Tensor | None = None,
    extrinsics: torch.Tensor | None = None,
    config: LossConfig | None = None,
) -> torch.Tensor:
    """Temporal agreement of dynamic probabilities: ``mean |p_t(x) - p_{t+1}(x')|``.

    prob: ``[B, T, V, H, W]`` in [0, 1] (e.g. sigmoid of the upsampled logits). ``x'`` is where the
    surface seen at pixel x of frame (t, v) appears in frame (t+1, v): the same pixel for an
    unchanged camera, else found by unprojecting with ``depths[t]`` and projecting with the camera of
    t+1 (backward warp of t+1 into t, bilinear). A correspondence counts only if it lands inside the
    image in front of the camera, both depths are valid, the reprojected depth matches the depth
    seen at t+1 within ``config.temporal_depth_rel_tol`` (occlusion test), and both pixels are valid.
    valid: bool ``[B, T, V]`` or ``[B, T, V, H, W]``. depths ``[B, T, V, H, W]`` (0 = invalid),
    intrinsics ``[B, T, V, 3, 3]``, world-to-camera extrinsics ``[B, T, V, 3, 4]`` (all three or
    none; geometry is detached). Zero for identical probabilities under a static camera; an exact 0
    when no pixel corresponds (e.g. T = 1). Unsupervised: it compares predictions with predictions.
    """
    cfg = config or LossConfig()
    p = require_tensor(prob, "prob")
    if p.ndim != 5:
        raise ValueError(f"prob must be [B, T, V, H, W], got {tuple(p.shape)}")
    require_finite(p, "prob")
    if valid is None:
        pixel_valid = torch.ones(p.shape, dtype=torch.bool, device=p.device)
    else:
        require_bool(require_tensor(valid, "valid"), "valid")
        if tuple(valid.shape) == tuple(p.shape[:3]):
            pixel_valid = valid[..., None, None].expand(p.shape)
        elif tuple(valid.shape) == tuple(p.shape):
            pixel_valid = valid
        else:
            raise ValueError(
                f"valid must be [B, T, V] or [B, T, V, H, W] of prob {tuple(p.shape)}, "
                f"got {tuple(valid.shape)}"
            )
    given = _given_geometry(tuple(p.shape), depths, intrinsics, extrinsics, "temporal_consistency_loss")
    if cfg.temporal_warp != "identity" and given is None:
        raise ValueError(
            f"temporal_warp={cfg.temporal_warp!r} needs depths/intrinsics/extrinsics; "
            f'use LossConfig(temporal_warp="identity") for a static camera'
        )
    loss, _ = temporal_agreement(p, pixel_valid, *(given or (None, None, None)), config=cfg)
    return loss
