"""Training losses: supervision of the dynamic-mask logits and VGGT-style geometry terms.

Two families, one switchboard (:class:`LossConfig`, in ``config``):

- **Mask terms** (``mask``, ``temporal``) on ``predictions["mask_logits"]`` (the *dynamic* logit:
  ``sigmoid`` = probability that a patch moves, 1 = dynamic, the same sign as the SegAnyMo GT):
  ``mask_bce`` (class-balanced BCE), ``mask_boundary`` (the same BCE restricted to a band around GT
  edges) and ``mask_temporal`` (agreement of the predicted probability between consecutive time
  steps of a view, after warping with depth and pose). They run only where GT masks exist;
  otherwise :func:`compute_mask_supervision_loss` reports *why* it skipped.
- **Geometry terms** (``geometry_terms``) against GT cameras and depth, in VGGT's spirit: ``camera``
  (pose encoding, per refinement iteration), ``depth`` and ``point`` (confidence-weighted regression
  plus a finite-difference gradient term). GT is first expressed in frame 0's camera coordinates and
  divided by the scene scale (:func:`normalize_scene_scale`).

:func:`compute_total_loss` (``total``) weighs and sums them. Layouts (``layout``): per-frame tensors
come as ``[B, S, ...]`` or multi-view ``[B, T, V, ...]`` with ``s = t * V + v``; frame 0 (t = 0,
v = 0) defines the world. Nothing is reshaped by guessing: a shape that matches neither form raises
``ValueError`` naming the argument, and so do NaN/inf.
"""

from page4d.losses.config import ARM_NAMES, LossConfig
from page4d.losses.geometry_terms import (
    SceneNormalization,
    camera_loss,
    depth_loss,
    normalize_scene_scale,
    point_loss,
)
from page4d.losses.mask import (
    MaskLossResult,
    compute_auto_pos_weight,
    compute_mask_supervision_loss,
    mask_boundary_band,
)
from page4d.losses.temporal import temporal_consistency_loss
from page4d.losses.total import compute_total_loss, loss_dict_to_floats

__all__ = [
    "ARM_NAMES",
    "LossConfig",
    "MaskLossResult",
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
