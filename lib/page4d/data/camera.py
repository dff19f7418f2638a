"""The cross-view depth check (projection itself is `page4d.geometry`, re-exported here).

The depth check is how the conventions of a new scene folder are verified (and how the README of
``mv_scene`` established them): unproject view i's depth, project into view j, compare z with view j's
depth at the nearest pixel. Wrong extrinsic direction, depth unit or intrinsics scaling all show up as
a large median relative error.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from page4d.geometry import depth_to_world_points as unproject_depth
from page4d.geometry import project_points


def sample_nearest(image: torch.Tensor, xy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Values of ``image`` [..., H, W] at the nearest pixel of points [..., N, 2] (x = column, y = row).

    Leading dims broadcast (e.g. depths [V, H, W] with points [V, N, 2]). Returns values [..., N] and a
    bool [..., N] that is False for points outside the image (their value is from the clamped pixel).
    """
    H, W = image.shape[-2:]
    ix = torch.floor(xy[..., 0] + 0.5).long()
    iy = torch.floor(xy[..., 1] + 0.5).long()
    inside = (ix >= 0) & (ix < W) & (iy >= 0) & (iy < H)
    index = iy.clamp(0, H - 1) * W + ix.clamp(0, W - 1)
    lead = torch.broadcast_shapes(image.shape[:-2], index.shape[:-1])
    flat = image.flatten(-2).expand(*lead, H * W)
    values = flat.gather(-1, index.expand(*lead, index.shape[-1]))
    return values, inside.expand(*lead, index.shape[-1])


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
    """Compare view i's depth, moved into view j, with view j's depth (both [H, W], 0 = invalid)."""
    world = unproject_depth(depth_i.double(), K_i.double(), E_i.double())[depth_i > 0]
    xy, z = project_points(world, K_j.double(), E_j.double())
    observed, inside = sample_nearest(depth_j.double(), xy)
    keep = inside & (z > 0) & (observed > 0)
    rel = (z[keep] - observed[keep]).abs() / observed[keep]
    if rel.numel() == 0:
        return DepthAgreement(median_rel_err=float("nan"), within_5pct=0.0, num_points=0)
    return DepthAgreement(
        median_rel_err=float(rel.median()),
        within_5pct=float((rel < 0.05).double().mean()),
        num_points=int(rel.numel()),
    )
