"""The cross-view depth check: do two views' depths, intrinsics and extrinsics describe one scene?

It is how the conventions of a new scene folder are verified (and how the README of ``mv_scene``
established them): view i's depth is warped into view j with :func:`page4d.geometry.depth_backward_warp`
and the reprojected z is compared with view j's own depth at the nearest pixel. A wrong extrinsic
direction, depth unit or intrinsics scaling all show up as a large median relative error.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from page4d.geometry import depth_backward_warp


@dataclass
class DepthAgreement:
    """Relative z error of view i's valid depth reprojected into view j, over points landing on valid
    pixels of view j in front of it."""

    median_rel_err: float
    within_5pct: float
    num_points: int


def cross_view_depth_agreement(
    depth_i: torch.Tensor,
    K_i: torch.Tensor,
    E_i: torch.Tensor,
    depth_j: torch.Tensor,
    K_j: torch.Tensor,
    E_j: torch.Tensor,
) -> DepthAgreement:
    """Compare view i's depth, moved into view j, with view j's depth (both [H, W], 0 = invalid).

    K: ``[3, 3]``, E: world-to-camera ``[3, 4]``; computed in float64.
    """
    warp = depth_backward_warp(*(x.double()[None] for x in (depth_i, K_i, E_i, depth_j, K_j, E_j)))
    keep = warp.in_view & (warp.target_depth > 0)
    observed = warp.target_depth[keep]
    rel = (warp.depth[keep] - observed).abs() / observed
    if rel.numel() == 0:
        return DepthAgreement(median_rel_err=float("nan"), within_5pct=0.0, num_points=0)
    return DepthAgreement(
        median_rel_err=float(rel.median()),
        within_5pct=float((rel < 0.05).double().mean()),
        num_points=int(rel.numel()),
    )
