"""Mask terms: class-balanced BCE and boundary BCE of the dynamic logits against SegAnyMo masks.

``predictions["mask_logits"]`` is the *dynamic* logit (``sigmoid`` = probability that a patch moves,
1 = dynamic, the same sign as the SegAnyMo GT). :func:`compute_mask_supervision_loss` brings logits,
GT and validity to one ``[B, T, V, ...]`` layout, runs the terms switched on in :class:`LossConfig`
(the temporal one lives in :mod:`page4d.losses.temporal`) and returns a :class:`MaskLossResult`;
without GT it says why it skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from page4d.checks import require_finite, require_tensor
from page4d.losses.config import LossConfig
from page4d.losses.layout import require_bool
from page4d.losses.temporal import temporal_agreement, temporal_geometry

__all__ = ["MaskLossResult", "compute_auto_pos_weight", "compute_mask_supervision_loss", "mask_boundary_band"]


def compute_auto_pos_weight(
    target: torch.Tensor, weight: torch.Tensor, min_value: float = 1.0, max_value: float = 50.0
) -> torch.Tensor:
    """Class-balance weight ``clamp(negatives / positives, min, max)`` over weighted pixels.

    target: soft or hard GT in [0, 1]; weight: same shape, per-pixel validity (0/1 or a fraction).
    Positives are ``sum(w * y)`` and negatives ``sum(w * (1 - y))``. Returns a 0-d tensor. With no
    positive pixel the ratio is infinite and the ceiling is returned (it then multiplies nothing).
    """
    with torch.no_grad():
        pos = (weight * target).sum()
        neg = (weight * (1.0 - target)).sum()
        ratio = torch.where(
            pos > 0, neg / pos.clamp_min(torch.finfo(pos.dtype).tiny), torch.full_like(pos, max_value)
        )
        return ratio.clamp(min_value, max_value)


def mask_boundary_band(mask: torch.Tensor, width_px: int) -> torch.Tensor:
    """Pixels within ``width_px`` (chessboard distance) of a GT edge, as a bool map.

    mask: ``[..., H, W]`` in [0, 1], binarised at 0.5. The band is ``dilate XOR erode`` with a
    ``(2k+1)^2`` square, both by max-pooling: a pixel is in the band iff its neighbourhood holds both
    classes, i.e. the band is ``k`` pixels deep on each side of the edge. The image border is not an
    edge (pooling pads with -inf). Returns a bool tensor of mask's shape.
    """
    m = require_tensor(mask, "mask")
    if m.ndim < 2:
        raise ValueError(f"mask must be [..., H, W], got {tuple(m.shape)}")
    if not isinstance(width_px, int) or width_px < 1:
        raise ValueError(f"width_px must be an int >= 1, got {width_px!r}")
    h, w = m.shape[-2:]
    fg = (m >= 0.5).to(torch.float32).reshape(-1, 1, h, w)
    k = 2 * width_px + 1
    dilated = F.max_pool2d(fg, k, stride=1, padding=width_px)
    eroded = 1.0 - F.max_pool2d(1.0 - fg, k, stride=1, padding=width_px)
    return (dilated > eroded).reshape(m.shape)


def _upsample_logits(logits: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """``[..., h, w]`` -> ``[..., H, W]`` bilinear (align_corners=False: patch centres stay put)."""
    h, w = logits.shape[-2:]
    flat = logits.reshape(-1, 1, h, w)
    up = F.interpolate(flat, size=image_hw, mode="bilinear", align_corners=False)
    return up.reshape(logits.shape[:-2] + tuple(image_hw))


@dataclass
class _MaskInputs:
    logits: torch.Tensor  # [B, T, V, h, w]
    gt: torch.Tensor  # [B, T, V, H, W]
    pixel_valid: torch.Tensor  # [B, T, V, H, W] bool


def _canonical_mask_inputs(
    logits: torch.Tensor, segmask_gt: torch.Tensor, valid: torch.Tensor | None
) -> _MaskInputs:
    lg = require_tensor(logits, 'predictions["mask_logits"]')
    gt = require_tensor(segmask_gt, "segmask_gt")
    accepted = "[B, T, h, w], [B, T, V, h, w] or [B, S, 1, h, w]"
    if lg.ndim not in (4, 5):
        raise ValueError(f'predictions["mask_logits"] must be {accepted}, got {tuple(lg.shape)}')
    if gt.ndim not in (4, 5):
        raise ValueError(f"segmask_gt must be [B, T, H, W] or [B, T, V, H, W], got {tuple(gt.shape)}")
    lead_l, lead_g = tuple(lg.shape[:-2]), tuple(gt.shape[:-2])
    gt5 = gt if gt.ndim == 5 else gt[:, :, None]
    if lead_l == lead_g:
        lg5 = lg if lg.ndim == 5 else lg[:, :, None]
    elif lg.ndim == 5 and lg.shape[2] == 1 and gt.ndim == 4 and lead_l[:2] == lead_g:
        lg5 = lg  # [B, S, 1, h, w] with GT [B, S, H, W]: channel dim dropped, S read as time
    elif (
        lg.ndim == 5
        and lg.shape[2] == 1
        and gt.ndim == 5
        and lead_l[:2] == (lead_g[0], lead_g[1] * lead_g[2])
    ):
        lg5 = lg.reshape(lead_g + tuple(lg.shape[-2:]))  # [B, T*V, 1, h, w] -> [B, T, V, h, w]
    else:
        raise ValueError(
            f'predictions["mask_logits"] {tuple(lg.shape)} does not match segmask_gt {tuple(gt.shape)}: '
            f"accepted logits {accepted} with GT [same leading dims, H, W]"
        )
    h, w = lg5.shape[-2:]
    big_h, big_w = gt5.shape[-2:]
    if big_h % h or big_w % w or big_h // h != big_w // w:
        raise ValueError(
            f"segmask_gt size {(big_h, big_w)} must be the same integer multiple of the logit grid "
            f"{(h, w)} on both axes (the image size the model saw, e.g. 14x); a different size means "
            f"the masks were resized differently from the images"
        )
    require_finite(lg, 'predictions["mask_logits"]')
    require_finite(gt, "segmask_gt")
    if (gt < 0).any() or (gt > 1).any():
        raise ValueError(f"segmask_gt (shape {tuple(gt.shape)}) must lie in [0, 1] (1 = dynamic)")
    return _MaskInputs(lg5, gt5.to(lg5.dtype), _pixel_valid(valid, gt))


def _pixel_valid(valid: torch.Tensor | None, gt: torch.Tensor) -> torch.Tensor:
    """Per-frame (GT's leading dims) or per-pixel (GT's shape) validity as bool ``[B, T, V, H, W]``."""
    gt5_shape = gt.shape if gt.ndim == 5 else gt[:, :, None].shape
    if valid is None:
        return torch.ones(gt5_shape, dtype=torch.bool, device=gt.device)
    vd = require_tensor(valid, "valid")
    require_bool(vd, "valid")
    lead_g = tuple(gt.shape[:-2])
    if tuple(vd.shape) == lead_g:
        vd5 = vd if gt.ndim == 5 else vd[:, :, None]
        return vd5[..., None, None].expand(gt5_shape)
    if tuple(vd.shape) == tuple(gt.shape):
        return vd if gt.ndim == 5 else vd[:, :, None]
    raise ValueError(
        f"valid must be per frame {list(lead_g)} or per pixel {list(gt.shape)}, got {tuple(vd.shape)}"
    )


@dataclass
class MaskLossResult:
    """What :func:`compute_mask_supervision_loss` computed, or why it did not.

    loss: weighted sum of the enabled terms (0-d tensor), ``None`` when skipped.
    bce / boundary / temporal: the raw terms (0-d tensors), ``None`` when off or skipped.
    skip_reason: why nothing was computed (no GT, ``use_seganymo_mask=False``, no mask term enabled,
        no valid frame), else ``None``.
    pos_weight: the BCE weight of dynamic pixels that was used (``None`` = unweighted or skipped).
    valid_frames: frames with GT that were supervised.
    boundary_pixels / temporal_pixels: how many pixels those terms averaged over (a term with 0
        pixels is an exact 0, e.g. a GT without any edge); ``None`` when the term is off.
    boundary_pos_weight: the band's own class weight with ``pos_weight="auto"``, else ``None``.
    """

    loss: torch.Tensor | None = None
    bce: torch.Tensor | None = None
    boundary: torch.Tensor | None = None
    temporal: torch.Tensor | None = None
    skip_reason: str | None = None
    pos_weight: float | None = None
    valid_frames: int = 0
    boundary_pixels: int | None = None
    boundary_pos_weight: float | None = None
    temporal_pixels: int | None = None

    @property
    def supervised(self) -> bool:
        """True when the mask terms ran (``loss`` is a tensor)."""
        return self.loss is not None

    def as_dict(self) -> dict[str, Any]:
        """The flat ``mask_*`` form that training histories and :func:`compute_total_loss` record."""
        return {
            "mask_loss": self.loss,
            "mask_bce_loss": self.bce,
            "mask_boundary_loss": self.boundary,
            "mask_temporal_loss": self.temporal,
            "mask_supervised": self.supervised,
            "mask_skip_reason": self.skip_reason,
            "mask_pos_weight": self.pos_weight,
            "mask_valid_frames": self.valid_frames,
            "mask_boundary_pixels": self.boundary_pixels,
            "mask_boundary_pos_weight": self.boundary_pos_weight,
            "mask_temporal_pixels": self.temporal_pixels,
        }


def compute_mask_supervision_loss(
    predictions: Mapping[str, Any],
    segmask_gt: torch.Tensor | None,
    config: LossConfig,
    valid: torch.Tensor | None = None,
    *,
    depths: torch.Tensor | None = None,
    intrinsics: torch.Tensor | None = None,
    extrinsics: torch.Tensor | None = None,
) -> MaskLossResult:
    """Supervise the dynamic logits with SegAnyMo masks, where GT exists.

    predictions["mask_logits"]: ``[B, T, h, w]``, ``[B, T, V, h, w]`` or ``[B, S, 1, h, w]``
        (patch grid; ``sigmoid`` = P(dynamic)). A flat ``[B, S, 1, h, w]`` with GT ``[B, T, V, H, W]``
        is unflattened with ``s = t * V + v``; with GT ``[B, S, H, W]`` S is read as time (V = 1).
    segmask_gt: ``[leading dims of the logits, H, W]`` in [0, 1], 1 = dynamic; ``H, W`` the same
        integer multiple of ``h, w`` (strict on purpose: a mask resized differently from its image
        is the misalignment bug this project exists to avoid), or ``None``.
    valid: bool, per frame (GT's leading dims, e.g. the loader's ``mask_valid [B, T, V]``) or per
        pixel (GT's shape); False = padding or no GT for that frame/pixel.
    depths / intrinsics / extrinsics: geometry of the same frames (``[B, T, V, H, W]``, ``[..., 3,
        3]``, world-to-camera ``[..., 3, 4]``), used only by the temporal warp. Without them the warp
        falls back to the (detached) predicted depth and cameras when ``temporal_warp`` needs them.

    Returns a :class:`MaskLossResult`: ``loss`` (weighted sum of the enabled terms), the raw terms
    and diagnostics. When skipped -- no GT, ``use_seganymo_mask=False``, no mask term enabled, or no
    valid frame -- every loss is ``None`` and ``skip_reason`` says why, so the trainer only needs
    ``if result.loss is not None``. Missing ``mask_logits`` while GT is present, mismatched shapes
    and non-finite logits raise ``ValueError``.
    """
    reason = _skip_reason(config, segmask_gt)
    if reason is not None:
        return MaskLossResult(skip_reason=reason)
    inp = _canonical_mask_inputs(_require_logits(predictions), segmask_gt, valid)
    n_frames = int(inp.pixel_valid.flatten(-2).any(-1).sum())
    if n_frames == 0:
        return MaskLossResult(skip_reason="no valid frame with a ground-truth mask in this batch")

    grid = _loss_grid(inp, config.mask_alignment)
    pos_weight = _pos_weight(config, grid)
    per_pixel = _weighted_bce(grid, pos_weight)
    result = MaskLossResult(pos_weight=_as_float(pos_weight), valid_frames=n_frames)
    if config.use_mask_bce:
        result.bce = (per_pixel * grid.weight).sum() / grid.weight.sum()
    if config.use_mask_boundary:
        result.boundary, result.boundary_pixels, result.boundary_pos_weight = _boundary_term(
            grid, per_pixel, config
        )
    if config.use_mask_temporal:
        prob = torch.sigmoid(_upsample_logits(inp.logits, tuple(inp.gt.shape[-2:])))
        geometry = temporal_geometry(predictions, tuple(inp.gt.shape), config, depths, intrinsics, extrinsics)
        result.temporal, result.temporal_pixels = temporal_agreement(
            prob, inp.pixel_valid, *geometry, config=config
        )
    terms = {"mask_bce": result.bce, "mask_boundary": result.boundary, "mask_temporal": result.temporal}
    result.loss = sum(getattr(config, f"w_{name}") * term for name, term in terms.items() if term is not None)
    return result


def _skip_reason(config: LossConfig, segmask_gt: torch.Tensor | None) -> str | None:
    if not config.use_seganymo_mask:
        return "LossConfig.use_seganymo_mask is False"
    if not config.mask_terms_enabled:
        return "no mask term enabled in LossConfig"
    if segmask_gt is None:
        return "no ground-truth masks in this batch (segmask_gt is None)"
    return None


def _require_logits(predictions: Mapping[str, Any]) -> torch.Tensor:
    logits = predictions.get("mask_logits")
    if logits is None:
        raise ValueError(
            'predictions has no "mask_logits" but GT masks were given and mask supervision is on; '
            "the model must return its dynamic logits (or set use_seganymo_mask=False)"
        )
    return logits


@dataclass
class _LossGrid:
    """Logits, targets and weights at the resolution the BCE terms compare them, ``[N, 1, ., .]``."""

    logits: torch.Tensor
    target: torch.Tensor
    weight: torch.Tensor
    gt: torch.Tensor  # image-size GT [N, 1, H, W]
    pixel_valid: torch.Tensor  # image-size validity [N, 1, H, W] as 0/1 of the logits' dtype
    factor: int  # image pixels per patch side


def _loss_grid(inp: _MaskInputs, alignment: str) -> _LossGrid:
    b, t, v, h, w = inp.logits.shape
    big_h, big_w = inp.gt.shape[-2:]
    factor = big_h // h
    n = b * t * v
    pix_valid = inp.pixel_valid.reshape(n, 1, big_h, big_w).to(inp.logits.dtype)
    gt_img = inp.gt.reshape(n, 1, big_h, big_w)
    if alignment == "upsample_logits":
        lg = _upsample_logits(inp.logits.reshape(n, 1, h, w), (big_h, big_w))
        return _LossGrid(lg, gt_img, pix_valid, gt_img, pix_valid, factor)
    # pool_gt: soft targets = valid-pixel average of the GT inside each patch
    weight = F.avg_pool2d(pix_valid, factor)
    masked_sum = F.avg_pool2d(gt_img * pix_valid, factor)
    target = torch.where(weight > 0, masked_sum / weight.clamp_min(1e-12), torch.zeros_like(weight))
    lg = inp.logits.reshape(n, 1, h, w)
    return _LossGrid(lg, target.clamp(0.0, 1.0), weight, gt_img, pix_valid, factor)


def _pos_weight(config: LossConfig, grid: _LossGrid) -> torch.Tensor | None:
    if config.pos_weight == "auto":
        return compute_auto_pos_weight(grid.target, grid.weight, config.pos_weight_min, config.pos_weight_max)
    if config.pos_weight is None:
        return None
    return torch.tensor(float(config.pos_weight), dtype=grid.logits.dtype, device=grid.logits.device)


def _weighted_bce(grid: _LossGrid, pos_weight: torch.Tensor | None) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(
        grid.logits,
        grid.target,
        pos_weight=None if pos_weight is None else pos_weight.reshape(1),
        reduction="none",
    )


def _as_float(x: torch.Tensor | None) -> float | None:
    return None if x is None else float(x)


def _boundary_term(
    grid: _LossGrid, per_pixel: torch.Tensor, config: LossConfig
) -> tuple[torch.Tensor, int, float | None]:
    """BCE over the band around GT edges, its pixel count and (with ``"auto"``) the band's own weight."""
    band = mask_boundary_band(grid.gt, config.boundary_width_px).to(grid.logits.dtype) * grid.pixel_valid
    if config.mask_alignment == "pool_gt":
        band = F.max_pool2d(band, grid.factor) * (grid.weight > 0)  # patch is in the band if any pixel is
    band_count = band.sum()
    band_pw = None
    if config.pos_weight == "auto":
        # Both classes are common inside the band: the frame-level weight (dynamic pixels are rare
        # overall) would push every band pixel towards "dynamic", so balance within the band.
        band_pw = compute_auto_pos_weight(grid.target, band, config.pos_weight_min, config.pos_weight_max)
        per_pixel = _weighted_bce(grid, band_pw)
    term = (per_pixel * band).sum() / band_count.clamp_min(1.0)
    return term, int(band_count), _as_float(band_pw)
