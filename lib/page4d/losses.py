"""Training losses: supervision of the dynamic-mask logits and VGGT-style geometry terms.

Two families, one switchboard (:class:`LossConfig`):

- **Mask terms** on ``predictions["mask_logits"]`` (the *dynamic* logit: ``sigmoid`` = probability
  that a patch moves, 1 = dynamic, the same sign as the SegAnyMo GT):
  ``mask_bce`` (class-balanced BCE), ``mask_boundary`` (the same BCE restricted to a band around GT
  edges) and ``mask_temporal`` (agreement of the predicted probability between consecutive time
  steps of a view, after warping with depth and pose). They run only where GT masks exist;
  otherwise :func:`compute_mask_supervision_loss` reports *why* it skipped and returns ``None``.
- **Geometry terms** against GT cameras and depth, in VGGT's spirit: ``camera`` (pose encoding,
  per refinement iteration), ``depth`` and ``point`` (confidence-weighted regression plus a
  finite-difference gradient term). GT is first expressed in frame 0's camera coordinates and
  divided by the scene scale (:func:`normalize_scene_scale`).

Layouts: per-frame tensors come as ``[B, S, ...]`` or multi-view ``[B, T, V, ...]`` with
``s = t * V + v``; frame 0 (t = 0, v = 0) defines the world. Nothing is reshaped by guessing: a
shape that matches neither form raises ``ValueError`` naming the argument, and so do NaN/inf.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from page4d.geometry import (
    camera_centers,
    closed_form_inverse_se3,
    depth_to_world_points,
    extrinsics_intrinsics_to_pose_encoding,
    pose_encoding_to_extrinsics_intrinsics,
    project_points,
)

__all__ = [
    "ARM_NAMES",
    "LossConfig",
    "SceneNormalization",
    "camera_loss",
    "compute_auto_pos_weight",
    "compute_mask_supervision_loss",
    "compute_total_loss",
    "depth_loss",
    "loss_dict_to_floats",
    "mask_boundary_band",
    "normalize_scene_scale",
    "point_loss",
    "temporal_consistency_loss",
]

ARM_NAMES: tuple[str, ...] = ("none", "bce", "bce+boundary", "bce+boundary+temporal")
_MASK_TERMS = ("mask_bce", "mask_boundary", "mask_temporal")
_GEOMETRY_TERMS = ("camera", "depth", "point")
_ALIGNMENTS = ("upsample_logits", "pool_gt")
_TEMPORAL_WARPS = ("auto", "identity", "depth")


# --------------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------------
@dataclass
class LossConfig:
    """Which loss terms run and how much each weighs. Presets: :meth:`for_arm`.

    Mask supervision:
        use_seganymo_mask: supervise ``mask_logits`` with SegAnyMo masks when the batch has them.
        use_mask_bce / w_mask_bce: class-balanced BCE-with-logits against the GT mask.
        use_mask_boundary / w_mask_boundary: BCE on a band of +-``boundary_width_px`` image pixels
            around GT edges, normalised by the band's pixel count (edges are where a patch-resolution
            logit is most wrong, and they are a small share of the plain mean). With ``pos_weight=
            "auto"`` the band gets its own negatives/positives weight (both classes are common there).
        use_mask_temporal / w_mask_temporal: L1 between the predicted dynamic probabilities of
            consecutive time steps of one view at corresponding pixels. Unsupervised (it compares
            predictions with predictions) and only a smoothness prior -- moving objects do change
            their masks over time -- so keep its weight small.
        pos_weight: BCE weight of dynamic pixels. ``"auto"`` = negatives / positives over the
            batch's valid pixels at loss resolution (soft counts for soft targets), clamped to
            ``[pos_weight_min, pos_weight_max]``: the floor 1 means we only ever counter the rarity
            of dynamic pixels (unweighted BCE with ~13% positives learned little more than the
            prior); the ceiling 50 stops a batch with a handful of dynamic pixels from scaling the
            gradient by thousands (with no positive pixel at all the value is irrelevant and the
            ceiling is used). A float is used as is; ``None`` = unweighted BCE.
        mask_alignment: how the patch-grid logits ``[h, w]`` meet the image-size GT ``[H, W]``.
            ``"upsample_logits"`` (the seed's choice): logits upsampled bilinearly to ``[H, W]``,
            per-pixel BCE. ``"pool_gt"``: GT area-averaged over each patch into soft targets on the
            patch grid (what one logit per patch can represent exactly).
        boundary_width_px: half-width ``k`` of the edge band, in image pixels.
        temporal_warp: correspondence between t and t+1. ``"identity"``: same pixel (static
            camera). ``"depth"``: backward warp of t+1 into t with depth and relative pose.
            ``"auto"``: identity for view pairs whose cameras did not change (within
            ``temporal_static_atol``), depth warp otherwise.
        temporal_depth_rel_tol: occlusion test of the warp -- the reprojected depth must agree with
            the depth seen at t+1 within this relative tolerance.
        The temporal term always works on probabilities upsampled to the GT/depth resolution (the
        warp needs per-pixel depth), whichever ``mask_alignment`` the BCE terms use.
    Geometry:
        use_camera / w_camera, camera_loss_type ("l1" | "huber"), huber_delta, camera_gamma (weight
        ``gamma^(N-1-i)`` of refinement iteration i of N), cam_w_translation / cam_w_rotation /
        cam_w_fov (VGGT's 1 / 1 / 0.5).
        use_depth / w_depth, use_point / w_point, conf_alpha (the ``-alpha log(conf)`` term that
        keeps confidences from collapsing), grad_weight (finite-difference gradient term).
    """

    use_seganymo_mask: bool = True
    use_mask_bce: bool = True
    w_mask_bce: float = 1.0
    use_mask_boundary: bool = False
    w_mask_boundary: float = 0.5
    use_mask_temporal: bool = False
    w_mask_temporal: float = 0.05
    pos_weight: str | float | None = "auto"
    pos_weight_min: float = 1.0
    pos_weight_max: float = 50.0
    mask_alignment: str = "upsample_logits"
    boundary_width_px: int = 3
    temporal_warp: str = "auto"
    temporal_depth_rel_tol: float = 0.05
    temporal_static_atol: float = 1e-6

    use_camera: bool = True
    w_camera: float = 1.0
    camera_loss_type: str = "l1"
    huber_delta: float = 0.1
    camera_gamma: float = 0.6
    cam_w_translation: float = 1.0
    cam_w_rotation: float = 1.0
    cam_w_fov: float = 0.5

    use_depth: bool = True
    w_depth: float = 1.0
    use_point: bool = True
    w_point: float = 1.0
    conf_alpha: float = 0.2
    grad_weight: float = 1.0

    def __post_init__(self) -> None:
        weights = [f.name for f in dataclasses.fields(self) if f.name.startswith(("w_", "cam_w_"))]
        weights += [
            "conf_alpha",
            "grad_weight",
            "huber_delta",
            "temporal_depth_rel_tol",
            "temporal_static_atol",
        ]
        for name in weights:
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"LossConfig.{name} must be a finite number >= 0, got {value!r}")
        if isinstance(self.pos_weight, str):
            if self.pos_weight != "auto":
                raise ValueError(
                    f"LossConfig.pos_weight must be 'auto', a float > 0 or None, got {self.pos_weight!r}"
                )
        elif self.pos_weight is not None and (
            not isinstance(self.pos_weight, int | float)
            or not math.isfinite(self.pos_weight)
            or self.pos_weight <= 0
        ):
            raise ValueError(
                f"LossConfig.pos_weight must be 'auto', a float > 0 or None, got {self.pos_weight!r}"
            )
        if not 0 < self.pos_weight_min <= self.pos_weight_max:
            raise ValueError(
                f"LossConfig needs 0 < pos_weight_min <= pos_weight_max, got "
                f"{self.pos_weight_min!r}, {self.pos_weight_max!r}"
            )
        if self.mask_alignment not in _ALIGNMENTS:
            raise ValueError(
                f"LossConfig.mask_alignment must be one of {_ALIGNMENTS}, got {self.mask_alignment!r}"
            )
        if self.temporal_warp not in _TEMPORAL_WARPS:
            raise ValueError(
                f"LossConfig.temporal_warp must be one of {_TEMPORAL_WARPS}, got {self.temporal_warp!r}"
            )
        if self.camera_loss_type not in ("l1", "huber"):
            raise ValueError(
                f"LossConfig.camera_loss_type must be 'l1' or 'huber', got {self.camera_loss_type!r}"
            )
        if not isinstance(self.boundary_width_px, int) or self.boundary_width_px < 1:
            raise ValueError(
                f"LossConfig.boundary_width_px must be an int >= 1, got {self.boundary_width_px!r}"
            )
        if self.camera_gamma <= 0:
            raise ValueError(f"LossConfig.camera_gamma must be > 0, got {self.camera_gamma!r}")

    @property
    def mask_terms_enabled(self) -> tuple[str, ...]:
        """Names of the mask terms switched on (regardless of GT availability)."""
        return tuple(t for t in _MASK_TERMS if getattr(self, f"use_{t}"))

    @classmethod
    def for_arm(cls, name: str, **overrides: Any) -> LossConfig:
        """Preset for one ablation arm; geometry terms are on in every arm.

        ``"none"``: no mask terms (the mask head learns only through the attention bias);
        ``"bce"``; ``"bce+boundary"``; ``"bce+boundary+temporal"``. ``overrides`` replace fields.
        """
        if name not in ARM_NAMES:
            raise ValueError(f"unknown ablation arm {name!r}; valid names: {', '.join(ARM_NAMES)}")
        terms = set(name.split("+")) if name != "none" else set()
        base = cls(
            use_seganymo_mask=name != "none",
            use_mask_bce="bce" in terms,
            use_mask_boundary="boundary" in terms,
            use_mask_temporal="temporal" in terms,
        )
        return dataclasses.replace(base, **overrides)


# --------------------------------------------------------------------------------------------------
# small checks and layout helpers
# --------------------------------------------------------------------------------------------------
def _require_tensor(x: object, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def _require_finite(x: torch.Tensor, name: str) -> None:
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} (shape {tuple(x.shape)}) contains {bad} non-finite values (NaN/inf)")


def _require_bool(x: torch.Tensor, name: str) -> None:
    if x.dtype != torch.bool:
        raise ValueError(f"{name} must be a bool tensor, got dtype {x.dtype} (shape {tuple(x.shape)})")


def _to_layout(x: torch.Tensor, lead: tuple[int, ...], trailing: tuple[int, ...], name: str) -> torch.Tensor:
    """Bring ``x`` to ``[*lead, *trailing]`` where lead is (B, S) or (B, T, V).

    Accepted: exactly that shape or, when lead is (B, T, V), the flat ``[B, T*V, *trailing]``, which
    is unflattened with ``s = t * V + v``. (A flat lead cannot be split without knowing T and V.)
    """
    want = lead + trailing
    if tuple(x.shape) == want:
        return x
    if len(lead) == 3:
        b, t, v = lead
        if tuple(x.shape) == (b, t * v) + trailing:
            return x.reshape(want)
    raise ValueError(
        f"{name} has shape {tuple(x.shape)}; expected {list(want)}"
        + (f" or {[lead[0], lead[1] * lead[2], *trailing]}" if len(lead) == 3 else "")
    )


def _frame_lead(extrinsics: torch.Tensor, name: str = "extrinsics") -> tuple[int, ...]:
    if extrinsics.ndim not in (4, 5) or tuple(extrinsics.shape[-2:]) != (3, 4):
        raise ValueError(f"{name} must be [B, S, 3, 4] or [B, T, V, 3, 4], got {tuple(extrinsics.shape)}")
    return tuple(extrinsics.shape[:-2])


# --------------------------------------------------------------------------------------------------
# mask supervision
# --------------------------------------------------------------------------------------------------
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
    m = _require_tensor(mask, "mask")
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
    lg = _require_tensor(logits, 'predictions["mask_logits"]')
    gt = _require_tensor(segmask_gt, "segmask_gt")
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
    _require_finite(lg, 'predictions["mask_logits"]')
    _require_finite(gt, "segmask_gt")
    if (gt < 0).any() or (gt > 1).any():
        raise ValueError(f"segmask_gt (shape {tuple(gt.shape)}) must lie in [0, 1] (1 = dynamic)")
    if valid is None:
        pixel_valid = torch.ones(gt5.shape, dtype=torch.bool, device=gt.device)
    else:
        vd = _require_tensor(valid, "valid")
        _require_bool(vd, "valid")
        if tuple(vd.shape) == lead_g:
            vd5 = vd if gt.ndim == 5 else vd[:, :, None]
            pixel_valid = vd5[..., None, None].expand(gt5.shape)
        elif tuple(vd.shape) == tuple(gt.shape):
            pixel_valid = vd if gt.ndim == 5 else vd[:, :, None]
        else:
            raise ValueError(
                f"valid must be per frame {list(lead_g)} or per pixel {list(gt.shape)}, got {tuple(vd.shape)}"
            )
    return _MaskInputs(lg5, gt5.to(lg5.dtype), pixel_valid)


def _mask_result(**kwargs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "mask_loss": None,
        "mask_bce_loss": None,
        "mask_boundary_loss": None,
        "mask_temporal_loss": None,
        "mask_supervised": False,
        "mask_skip_reason": None,
        "mask_pos_weight": None,
        "mask_valid_frames": 0,
        "mask_boundary_pixels": None,
        "mask_boundary_pos_weight": None,
        "mask_temporal_pixels": None,
    }
    out.update(kwargs)
    return out


def compute_mask_supervision_loss(
    predictions: Mapping[str, Any],
    segmask_gt: torch.Tensor | None,
    config: LossConfig,
    valid: torch.Tensor | None = None,
    *,
    depths: torch.Tensor | None = None,
    intrinsics: torch.Tensor | None = None,
    extrinsics: torch.Tensor | None = None,
) -> dict[str, Any]:
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

    Returns a dict: ``mask_loss`` (weighted sum of the enabled terms, 0-d tensor) and the raw terms
    ``mask_bce_loss`` / ``mask_boundary_loss`` / ``mask_temporal_loss`` (0-d tensors, ``None`` when
    off); ``mask_supervised`` (bool); ``mask_skip_reason`` (str or None); diagnostics
    ``mask_pos_weight`` (float), ``mask_valid_frames`` (int), ``mask_boundary_pixels`` and
    ``mask_temporal_pixels`` (int, how many pixels those terms averaged over; a term with 0 pixels
    is an exact 0, e.g. a GT without any edge). When skipped -- no GT, ``use_seganymo_mask=False``,
    no mask term enabled, or no valid frame -- every loss is ``None`` and the reason is given, so the
    trainer only needs ``if out["mask_loss"] is not None``. Missing ``mask_logits`` while GT is
    present, mismatched shapes and non-finite logits raise ``ValueError``.
    """
    if not config.use_seganymo_mask:
        return _mask_result(mask_skip_reason="LossConfig.use_seganymo_mask is False")
    if not config.mask_terms_enabled:
        return _mask_result(mask_skip_reason="no mask term enabled in LossConfig")
    if segmask_gt is None:
        return _mask_result(mask_skip_reason="no ground-truth masks in this batch (segmask_gt is None)")
    logits = predictions.get("mask_logits")
    if logits is None:
        raise ValueError(
            'predictions has no "mask_logits" but GT masks were given and mask supervision is on; '
            "the model must return its dynamic logits (or set use_seganymo_mask=False)"
        )
    inp = _canonical_mask_inputs(logits, segmask_gt, valid)
    frame_valid = inp.pixel_valid.flatten(-2).any(-1)  # [B, T, V]
    n_frames = int(frame_valid.sum())
    if n_frames == 0:
        return _mask_result(mask_skip_reason="no valid frame with a ground-truth mask in this batch")

    b, t, v, h, w = inp.logits.shape
    big_h, big_w = inp.gt.shape[-2:]
    factor = big_h // h
    n = b * t * v
    pix_valid = inp.pixel_valid.reshape(n, 1, big_h, big_w).to(inp.logits.dtype)
    gt_img = inp.gt.reshape(n, 1, big_h, big_w)
    if config.mask_alignment == "upsample_logits":
        lg = _upsample_logits(inp.logits.reshape(n, 1, h, w), (big_h, big_w))
        target, weight = gt_img, pix_valid
    else:  # pool_gt: soft targets = valid-pixel average of the GT inside each patch
        lg = inp.logits.reshape(n, 1, h, w)
        weight = F.avg_pool2d(pix_valid, factor)
        masked_sum = F.avg_pool2d(gt_img * pix_valid, factor)
        target = torch.where(weight > 0, masked_sum / weight.clamp_min(1e-12), torch.zeros_like(weight))
        target = target.clamp(0.0, 1.0)

    if config.pos_weight == "auto":
        pos_weight = compute_auto_pos_weight(target, weight, config.pos_weight_min, config.pos_weight_max)
    elif config.pos_weight is None:
        pos_weight = None
    else:
        pos_weight = torch.tensor(float(config.pos_weight), dtype=lg.dtype, device=lg.device)
    per_pixel = F.binary_cross_entropy_with_logits(
        lg, target, pos_weight=None if pos_weight is None else pos_weight.reshape(1), reduction="none"
    )

    terms: dict[str, torch.Tensor | None] = {t_: None for t_ in _MASK_TERMS}
    extra: dict[str, Any] = {}
    if config.use_mask_bce:
        terms["mask_bce"] = (per_pixel * weight).sum() / weight.sum()
    if config.use_mask_boundary:
        band = mask_boundary_band(gt_img, config.boundary_width_px).to(lg.dtype) * pix_valid
        if config.mask_alignment == "pool_gt":
            band = F.max_pool2d(band, factor) * (weight > 0)  # patch is in the band if any pixel is
        band_count = band.sum()
        extra["mask_boundary_pixels"] = int(band_count)
        band_bce = per_pixel
        if config.pos_weight == "auto":
            # Both classes are common inside the band: the frame-level weight (dynamic pixels are rare
            # overall) would push every band pixel towards "dynamic", so balance within the band.
            band_pw = compute_auto_pos_weight(target, band, config.pos_weight_min, config.pos_weight_max)
            extra["mask_boundary_pos_weight"] = float(band_pw)
            band_bce = F.binary_cross_entropy_with_logits(
                lg, target, pos_weight=band_pw.reshape(1), reduction="none"
            )
        terms["mask_boundary"] = (band_bce * band).sum() / band_count.clamp_min(1.0)
    if config.use_mask_temporal:
        prob = torch.sigmoid(_upsample_logits(inp.logits, (big_h, big_w)))
        geo = _temporal_geometry(predictions, inp, config, depths, intrinsics, extrinsics)
        loss_t, count = _temporal_terms(prob, inp.pixel_valid, *geo, config=config)
        extra["mask_temporal_pixels"] = count
        terms["mask_temporal"] = loss_t

    total = sum(getattr(config, f"w_{name}") * term for name, term in terms.items() if term is not None)
    return _mask_result(
        mask_loss=total,
        mask_bce_loss=terms["mask_bce"],
        mask_boundary_loss=terms["mask_boundary"],
        mask_temporal_loss=terms["mask_temporal"],
        mask_supervised=True,
        mask_pos_weight=None if pos_weight is None else float(pos_weight),
        mask_valid_frames=n_frames,
        **extra,
    )


def _temporal_geometry(
    predictions: Mapping[str, Any],
    inp: _MaskInputs,
    config: LossConfig,
    depths: torch.Tensor | None,
    intrinsics: torch.Tensor | None,
    extrinsics: torch.Tensor | None,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """GT geometry if given, else the detached predicted depth/cameras, in ``[B, T, V, ...]``."""
    if config.temporal_warp == "identity":
        return None, None, None
    b, t, v = inp.gt.shape[:3]
    big_h, big_w = inp.gt.shape[-2:]
    lead = (b, t, v)
    given = [x is not None for x in (depths, intrinsics, extrinsics)]
    if any(given) and not all(given):
        raise ValueError(
            "temporal warp needs depths, intrinsics and extrinsics together (got only some of them)"
        )
    if all(given):
        d = _to_layout(_require_tensor(depths, "depths"), lead, (big_h, big_w), "depths")
        k = _to_layout(_require_tensor(intrinsics, "intrinsics"), lead, (3, 3), "intrinsics")
        e = _to_layout(_require_tensor(extrinsics, "extrinsics"), lead, (3, 4), "extrinsics")
        return d.detach(), k.detach(), e.detach()
    if predictions.get("depth") is None or predictions.get("pose_enc") is None:
        raise ValueError(
            f"LossConfig.temporal_warp={config.temporal_warp!r} needs geometry: pass depths/intrinsics/"
            f'extrinsics, or predictions with "depth" and "pose_enc", or use temporal_warp="identity" '
            f"for a static camera"
        )
    d_pred = _require_tensor(predictions["depth"], 'predictions["depth"]')
    d = _to_layout(d_pred, lead, (big_h, big_w, 1), 'predictions["depth"]')[..., 0]
    pose = _to_layout(
        _require_tensor(predictions["pose_enc"], 'predictions["pose_enc"]'), lead, (9,), "pose_enc"
    )
    e, k = pose_encoding_to_extrinsics_intrinsics(pose.detach(), (big_h, big_w))
    return d.detach(), k, e


def _temporal_terms(
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
    _require_finite(depths, "depths")
    depths, intrinsics, extrinsics = (x.to(prob.dtype) for x in (depths, intrinsics, extrinsics))
    e0, e1 = extrinsics[:, :-1].reshape(m, 3, 4), extrinsics[:, 1:].reshape(m, 3, 4)
    k0, k1 = intrinsics[:, :-1].reshape(m, 3, 3), intrinsics[:, 1:].reshape(m, 3, 3)
    d0, d1 = depths[:, :-1].reshape(m, h, w), depths[:, 1:].reshape(m, 1, h, w)
    if mode == "auto":
        atol = config.temporal_static_atol
        e_tol = atol * (1.0 + e0.abs().flatten(1).amax(1))
        k_tol = atol * (1.0 + k0.abs().flatten(1).amax(1))
        static = ((e1 - e0).abs().flatten(1).amax(1) <= e_tol) & ((k1 - k0).abs().flatten(1).amax(1) <= k_tol)
    else:
        static = torch.zeros(m, dtype=torch.bool, device=prob.device)

    pts = depth_to_world_points(d0, k0, e0)  # [m, h, w, 3]
    uv, z = project_points(pts, k1, e1)  # [m, h, w, 2], [m, h, w]
    u, vv = uv.unbind(-1)
    # Inside the image = within the pixel footprints (half a pixel beyond the outer centres), so that
    # round-off at the border does not drop pixels; the samplers clamp to the border there.
    in_view = (d0 > 0) & (z > 1e-6) & (u >= -0.5) & (u <= w - 0.5) & (vv >= -0.5) & (vv <= h - 0.5)
    # align_corners=True: normalised -1 / +1 are the centres of the first / last pixel.
    grid = torch.stack((2.0 * u / max(w - 1, 1) - 1.0, 2.0 * vv / max(h - 1, 1) - 1.0), dim=-1)
    grid = torch.where(in_view[..., None], grid, torch.zeros_like(grid)).to(prob.dtype)
    d1_seen = F.grid_sample(d1, grid, mode="nearest", padding_mode="border", align_corners=True)[:, 0]
    visible = (d1_seen > 0) & ((z - d1_seen).abs() <= config.temporal_depth_rel_tol * z)
    val1_w = (
        F.grid_sample(val1.to(prob.dtype), grid, mode="nearest", padding_mode="border", align_corners=True)[
            :, 0
        ]
        > 0.5
    )
    p1_w = F.grid_sample(p1, grid, mode="bilinear", padding_mode="border", align_corners=True)[:, 0]
    warped_corr = in_view & visible & val0 & val1_w

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
    p = _require_tensor(prob, "prob")
    if p.ndim != 5:
        raise ValueError(f"prob must be [B, T, V, H, W], got {tuple(p.shape)}")
    _require_finite(p, "prob")
    if valid is None:
        pixel_valid = torch.ones(p.shape, dtype=torch.bool, device=p.device)
    else:
        _require_bool(_require_tensor(valid, "valid"), "valid")
        if tuple(valid.shape) == tuple(p.shape[:3]):
            pixel_valid = valid[..., None, None].expand(p.shape)
        elif tuple(valid.shape) == tuple(p.shape):
            pixel_valid = valid
        else:
            raise ValueError(
                f"valid must be [B, T, V] or [B, T, V, H, W] of prob {tuple(p.shape)}, "
                f"got {tuple(valid.shape)}"
            )
    given = [x is not None for x in (depths, intrinsics, extrinsics)]
    if any(given) and not all(given):
        raise ValueError("temporal_consistency_loss needs depths, intrinsics and extrinsics together")
    if cfg.temporal_warp != "identity" and not all(given):
        raise ValueError(
            f"temporal_warp={cfg.temporal_warp!r} needs depths/intrinsics/extrinsics; "
            f'use LossConfig(temporal_warp="identity") for a static camera'
        )
    if all(given):
        lead = tuple(p.shape[:3])
        depths = _to_layout(_require_tensor(depths, "depths"), lead, tuple(p.shape[-2:]), "depths").detach()
        intrinsics = _to_layout(
            _require_tensor(intrinsics, "intrinsics"), lead, (3, 3), "intrinsics"
        ).detach()
        extrinsics = _to_layout(
            _require_tensor(extrinsics, "extrinsics"), lead, (3, 4), "extrinsics"
        ).detach()
    loss, _ = _temporal_terms(p, pixel_valid, depths, intrinsics, extrinsics, config=cfg)
    return loss


# --------------------------------------------------------------------------------------------------
# scene normalisation and geometry losses
# --------------------------------------------------------------------------------------------------
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


def _relative_to_frame0(extrinsics: torch.Tensor) -> torch.Tensor:
    """``E_s @ inv(E_0)`` on ``[B, S, 3, 4]``: the same cameras with frame 0's camera as world."""
    e0_inv = closed_form_inverse_se3(extrinsics[:, :1])  # [B, 1, 3, 4] camera-0 -> world
    rot = extrinsics[..., :3, :3] @ e0_inv[..., :3, :3]
    trans = extrinsics[..., :3, :3] @ e0_inv[..., :3, 3:] + extrinsics[..., :3, 3:]
    return torch.cat((rot, trans), dim=-1)


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
    e = _require_tensor(extrinsics, "extrinsics")
    lead = _frame_lead(e)
    k = _to_layout(_require_tensor(intrinsics, "intrinsics"), lead, (3, 3), "intrinsics")
    _require_finite(e, "extrinsics")
    _require_finite(k, "intrinsics")
    b = lead[0]
    s = math.prod(lead[1:])
    rel = _relative_to_frame0(e.reshape(b, s, 3, 4))
    if depths is None:
        scale = _camera_centre_scale(rel)
        rel = torch.cat((rel[..., :3], rel[..., 3:] / scale[:, None, None, None]), dim=-1)
        return SceneNormalization(rel.reshape(e.shape), None, None, None, scale)
    d = _require_tensor(depths, "depths")
    if d.ndim != len(lead) + 2 or tuple(d.shape[: len(lead)]) != lead:
        raise ValueError(f"depths must be [{', '.join(map(str, lead))}, H, W], got {tuple(d.shape)}")
    _require_finite(d, "depths")
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
    world); ``R`` -- quaternion, sign-invariant (``min`` over ``q`` and ``-q``; the prediction is not
    normalised, as in VGGT); ``fov`` -- vertical/horizontal FoV in radians. L1 or Huber per
    ``config.camera_loss_type``. Returns ``camera_loss`` (``w_T T + w_R R + w_fov fov``) and
    ``camera_T_loss``, ``camera_R_loss``, ``camera_fov_loss``.
    """
    cfg = config or LossConfig()
    e = _require_tensor(extrinsics_gt, "extrinsics_gt")
    lead = _frame_lead(e, "extrinsics_gt")
    k = _to_layout(_require_tensor(intrinsics_gt, "intrinsics_gt"), lead, (3, 3), "intrinsics_gt")
    preds = [pose_enc_pred] if isinstance(pose_enc_pred, torch.Tensor) else list(pose_enc_pred)
    if not preds:
        raise ValueError("pose_enc_pred is an empty list")
    b = lead[0]
    s = math.prod(lead[1:])
    _require_finite(e, "extrinsics_gt")
    rel = _relative_to_frame0(e.reshape(b, s, 3, 4))
    scale = _camera_centre_scale(rel) if scene_scale is None else _require_tensor(scene_scale, "scene_scale")
    if tuple(scale.shape) != (b,):
        raise ValueError(f"scene_scale must be [B] = [{b}], got {tuple(scale.shape)}")
    rel = torch.cat((rel[..., :3], rel[..., 3:] / scale[:, None, None, None]), dim=-1)
    gt = extrinsics_intrinsics_to_pose_encoding(rel, k.reshape(b, s, 3, 3), image_hw)
    if valid is None:
        fw = torch.ones(b, s, dtype=gt.dtype, device=gt.device)
    else:
        fv = _to_layout(_require_tensor(valid, "valid"), lead, (), "valid")
        _require_bool(fv, "valid")
        fw = fv.reshape(b, s).to(gt.dtype)
    if fw.sum() == 0:
        raise ValueError("camera_loss: valid marks no frame as valid")

    n_it = len(preds)
    it_weights = [cfg.camera_gamma ** (n_it - 1 - i) for i in range(n_it)]
    totals = {"T": 0.0, "R": 0.0, "fov": 0.0}
    for i, pred in enumerate(preds):
        p = _to_layout(_require_tensor(pred, f"pose_enc_pred[{i}]"), lead, (9,), f"pose_enc_pred[{i}]")
        _require_finite(p, f"pose_enc_pred[{i}]")
        p = p.reshape(b, s, 9)
        t_err = _elementwise(p[..., :3] - gt[..., :3], cfg).mean(-1)
        r_err = torch.minimum(
            _elementwise(p[..., 3:7] - gt[..., 3:7], cfg).mean(-1),
            _elementwise(p[..., 3:7] + gt[..., 3:7], cfg).mean(-1),
        )
        f_err = _elementwise(p[..., 7:9] - gt[..., 7:9], cfg).mean(-1)
        for key, err in (("T", t_err), ("R", r_err), ("fov", f_err)):
            totals[key] = totals[key] + it_weights[i] * (err * fw).sum() / fw.sum()
    norm = sum(it_weights)
    t_loss, r_loss, f_loss = (totals[key] / norm for key in ("T", "R", "fov"))
    total = cfg.cam_w_translation * t_loss + cfg.cam_w_rotation * r_loss + cfg.cam_w_fov * f_loss
    return {"camera_loss": total, "camera_T_loss": t_loss, "camera_R_loss": r_loss, "camera_fov_loss": f_loss}


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
    _require_finite(conf, name)
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
    gt = _require_tensor(depth_gt, "depth_gt")
    pred = _require_tensor(depth_pred, "depth_pred")
    conf = _require_tensor(depth_conf, "depth_conf")
    if gt.ndim not in (4, 5):
        raise ValueError(f"depth_gt must be [B, S, H, W] or [B, T, V, H, W], got {tuple(gt.shape)}")
    if tuple(pred.shape) == tuple(gt.shape) + (1,):
        pred = pred[..., 0]
    elif tuple(pred.shape) != tuple(gt.shape):
        raise ValueError(
            f"depth_pred must be {list(gt.shape) + [1]} or {list(gt.shape)}, got {tuple(pred.shape)}"
        )
    _check_conf(conf, "depth_conf", tuple(gt.shape))
    _require_finite(gt, "depth_gt")
    _require_finite(pred, "depth_pred")
    vmask = gt > 0
    if valid is not None:
        _require_bool(_require_tensor(valid, "valid"), "valid")
        if tuple(valid.shape) != tuple(gt.shape):
            raise ValueError(f"valid must have depth_gt's shape {list(gt.shape)}, got {tuple(valid.shape)}")
        vmask = vmask & valid
    if scene_scale is not None:
        sc = _require_tensor(scene_scale, "scene_scale")
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
    gt = _require_tensor(points_gt, "points_gt")
    pred = _require_tensor(points_pred, "points_pred")
    conf = _require_tensor(points_conf, "points_conf")
    vmask = _require_tensor(valid, "valid")
    if gt.ndim not in (5, 6) or gt.shape[-1] != 3:
        raise ValueError(f"points_gt must be [B, S, H, W, 3] or [B, T, V, H, W, 3], got {tuple(gt.shape)}")
    if tuple(pred.shape) != tuple(gt.shape):
        raise ValueError(f"points_pred must have shape {list(gt.shape)}, got {tuple(pred.shape)}")
    _check_conf(conf, "points_conf", tuple(gt.shape[:-1]))
    _require_bool(vmask, "valid")
    if tuple(vmask.shape) != tuple(gt.shape[:-1]):
        raise ValueError(f"valid must have shape {list(gt.shape[:-1])}, got {tuple(vmask.shape)}")
    _require_finite(gt, "points_gt")
    _require_finite(pred, "points_pred")
    diff = pred - gt
    reg, grad = _conf_regression(diff.norm(dim=-1), diff, conf, vmask, cfg.conf_alpha)
    return {"point_loss": reg + cfg.grad_weight * grad, "point_reg_loss": reg, "point_grad_loss": grad}


# --------------------------------------------------------------------------------------------------
# everything together
# --------------------------------------------------------------------------------------------------
def compute_total_loss(
    predictions: Mapping[str, Any], batch_targets: Mapping[str, Any], config: LossConfig
) -> dict[str, Any]:
    """Sum the enabled terms: ``loss = sum(w_term * term)``; every component is returned too.

    predictions: the model's dict (``pose_enc`` / ``pose_enc_list``, ``depth``, ``depth_conf``,
    ``world_points``, ``world_points_conf``, ``mask_logits``) in ``[B, S, ...]`` or ``[B, T, V, ...]``.
    batch_targets: the loader's dict -- ``extrinsics`` (world-to-camera) ``[B, T, V, 3, 4]`` (or
    ``[B, S, 3, 4]``), ``intrinsics`` ``[..., 3, 3]``, ``depths`` ``[..., H, W]`` (0 = invalid),
    ``masks`` ``[..., H, W]`` or None, ``mask_valid`` ``[B, T, V]`` bool or None, optional
    ``frame_valid`` ``[B, T, V]`` bool (padding; ANDed into everything). Predictions are brought to
    the targets' layout (``s = t * V + v``). Geometry GT is normalised once by
    :func:`normalize_scene_scale` and the same scale is used for cameras, depth and points.

    Returns ``loss`` (0-d tensor; None only if every enabled term was skipped), ``scene_scale``
    ``[B]``, the geometry dicts of :func:`camera_loss` / :func:`depth_loss` / :func:`point_loss`
    (``None`` for a disabled term) and everything :func:`compute_mask_supervision_loss` returns. Use
    :func:`loss_dict_to_floats` for logging.
    """
    e = _require_tensor(batch_targets.get("extrinsics"), 'batch_targets["extrinsics"]')
    lead = _frame_lead(e, 'batch_targets["extrinsics"]')
    k = _require_tensor(batch_targets.get("intrinsics"), 'batch_targets["intrinsics"]')
    d = _require_tensor(batch_targets.get("depths"), 'batch_targets["depths"]')
    if d.ndim != len(lead) + 2 or tuple(d.shape[: len(lead)]) != lead:
        raise ValueError(
            f'batch_targets["depths"] must be [{", ".join(map(str, lead))}, H, W], got {tuple(d.shape)}'
        )
    h, w = d.shape[-2:]
    frame_valid = batch_targets.get("frame_valid")
    if frame_valid is not None:
        frame_valid = _to_layout(
            _require_tensor(frame_valid, 'batch_targets["frame_valid"]'), lead, (), "frame_valid"
        )
        _require_bool(frame_valid, 'batch_targets["frame_valid"]')

    out: dict[str, Any] = {
        key: None
        for key in (
            "camera_loss", "camera_T_loss", "camera_R_loss", "camera_fov_loss",
            "depth_loss", "depth_reg_loss", "depth_grad_loss",
            "point_loss", "point_reg_loss", "point_grad_loss",
        )
    }  # fmt: skip
    weighted: list[torch.Tensor] = []
    scene = normalize_scene_scale(e, k, d)
    out["scene_scale"] = scene.scale
    pixel_valid = scene.point_valid
    if frame_valid is not None:
        pixel_valid = pixel_valid & frame_valid[..., None, None]

    if config.use_camera:
        pose_list = predictions.get("pose_enc_list")
        poses = list(pose_list) if pose_list is not None else [predictions.get("pose_enc")]
        if not poses or any(p is None for p in poses):
            raise ValueError('use_camera is on but predictions has no "pose_enc" / "pose_enc_list"')
        poses = [_to_layout(p, lead, (9,), "pose_enc") for p in poses]
        out.update(camera_loss(poses, e, k, (h, w), frame_valid, scene_scale=scene.scale, config=config))
        weighted.append(config.w_camera * out["camera_loss"])
    if config.use_depth:
        pred, conf = _dense_prediction(predictions, "depth", lead, (h, w, 1))
        out.update(depth_loss(pred, conf, scene.depths, pixel_valid, config=config))
        weighted.append(config.w_depth * out["depth_loss"])
    if config.use_point:
        pred, conf = _dense_prediction(predictions, "world_points", lead, (h, w, 3))
        out.update(point_loss(pred, conf, scene.world_points, pixel_valid, config=config))
        weighted.append(config.w_point * out["point_loss"])

    masks = batch_targets.get("masks")
    mask_valid = batch_targets.get("mask_valid")
    if masks is not None:
        masks = _to_layout(_require_tensor(masks, 'batch_targets["masks"]'), lead, (h, w), "masks")
        if mask_valid is not None:
            mask_valid = _to_layout(_require_tensor(mask_valid, "mask_valid"), lead, (), "mask_valid")
        if frame_valid is not None:
            mask_valid = frame_valid if mask_valid is None else (mask_valid & frame_valid)
    out.update(
        compute_mask_supervision_loss(
            predictions, masks, config, mask_valid, depths=d, intrinsics=k, extrinsics=e
        )
    )
    if out["mask_loss"] is not None:
        weighted.append(out["mask_loss"])
    out["loss"] = torch.stack(weighted).sum() if weighted else None
    return out


def _dense_prediction(
    predictions: Mapping[str, Any], key: str, lead: tuple[int, ...], trailing: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """`predictions[key]` and `predictions[key + "_conf"]` in the targets' layout; loud when absent."""
    for name in (key, f"{key}_conf"):
        if predictions.get(name) is None:
            raise ValueError(f'the {key} loss is on but predictions has no "{name}"')
    pred = _to_layout(predictions[key], lead, trailing, f'predictions["{key}"]')
    conf = _to_layout(predictions[f"{key}_conf"], lead, trailing[:-1], f'predictions["{key}_conf"]')
    return pred, conf


def loss_dict_to_floats(losses: Mapping[str, Any]) -> dict[str, Any]:
    """Detach a loss dict for logging: 0-d tensors -> float, others -> list, rest unchanged."""
    result: dict[str, Any] = {}
    for key, value in losses.items():
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            result[key] = float(value) if value.ndim == 0 else value.tolist()
        else:
            result[key] = value
    return result
