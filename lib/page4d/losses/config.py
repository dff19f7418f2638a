"""`LossConfig`: which loss terms run, how much each weighs, and the checks on those numbers."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["ARM_NAMES", "MASK_TERMS", "LossConfig"]

ARM_NAMES: tuple[str, ...] = ("none", "bce", "bce+boundary", "bce+boundary+temporal")
MASK_TERMS = ("mask_bce", "mask_boundary", "mask_temporal")
_ALIGNMENTS = ("upsample_logits", "pool_gt")
_TEMPORAL_WARPS = ("auto", "identity", "depth")


ROTATION_TARGETS = ("sign_invariant", "canonical", "chordal")


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
        cam_w_fov (VGGT's 1 / 1 / 0.5). rotation_target: how the quaternion is compared.
        ``"sign_invariant"``: ``min`` over ``q`` and ``-q`` (this workspace's earlier choice; it leaves
        the head free to put the double-cover cut anywhere, and the tiny head put it at the identity,
        so a camera that looks like the reference came out 110-180 degrees off). ``"canonical"``:
        VGGT's plain L1 against the GT quaternion with ``w >= 0`` (the cut at 180 degrees, far from the
        small relative rotations of a video), sign-invariant only where ``|w_gt| < rig_cut_w``: the
        GT of a rig camera facing away from the reference (~180 degrees) flips sign between nearly
        equal rotations, so there either sign is right ("the rig fix"). ``"chordal"`` (for the tiny
        preset; no 1B recipe uses it, they keep VGGT's): the elementwise distance between the rotation
        matrices of the normalised prediction and the GT, plus ``| ||q|| - 1 |`` so the raw quaternion
        stays usable. ``R(q) = R(-q)``, so it has no cut at all: a head unsure whether a wide view pair
        turned +150 or -150 degrees is pulled towards 180 (30 degrees off either way), where the
        quaternion L1 is as low at the two w >= 0 targets' midpoint -- the identity once normalised,
        150 degrees off -- as at either answer (README: on the card's mix it made no difference).
        use_attention_forcing / w_attention_forcing: MoRe's term, the attention mass the camera/register
        rows of the masked global blocks put on GT-dynamic patches (`losses.attention_forcing`; the
        trainer computes it from the blocks' own q/k).
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
    rotation_target: str = "sign_invariant"
    rig_cut_w: float = 0.2

    use_attention_forcing: bool = False
    w_attention_forcing: float = 1.0

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
        if self.rotation_target not in ROTATION_TARGETS:
            raise ValueError(
                f"LossConfig.rotation_target must be one of {ROTATION_TARGETS}, got {self.rotation_target!r}"
            )
        if not 0.0 <= self.rig_cut_w < 1.0:
            raise ValueError(f"LossConfig.rig_cut_w must lie in [0, 1), got {self.rig_cut_w!r}")
        if self.camera_gamma <= 0:
            raise ValueError(f"LossConfig.camera_gamma must be > 0, got {self.camera_gamma!r}")

    @property
    def mask_terms_enabled(self) -> tuple[str, ...]:
        """Names of the mask terms switched on (regardless of GT availability)."""
        return tuple(t for t in MASK_TERMS if getattr(self, f"use_{t}"))

    @property
    def geometry_enabled(self) -> bool:
        """True when any geometry term (camera, depth, point) is switched on."""
        return self.use_camera or self.use_depth or self.use_point

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
