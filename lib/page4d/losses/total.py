"""The total training loss: every enabled term of :class:`LossConfig` on one batch, weighted and summed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from page4d.checks import require_tensor
from page4d.losses.config import LossConfig
from page4d.losses.geometry_terms import camera_loss, depth_loss, normalize_scene_scale, point_loss
from page4d.losses.layout import frame_lead, require_bool, to_layout
from page4d.losses.mask import compute_mask_supervision_loss

__all__ = ["compute_total_loss", "loss_dict_to_floats"]


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
    (``None`` for a disabled term) and :meth:`MaskLossResult.as_dict` of the mask terms. Use
    :func:`loss_dict_to_floats` for logging.
    """
    e = require_tensor(batch_targets.get("extrinsics"), 'batch_targets["extrinsics"]')
    lead = frame_lead(e, 'batch_targets["extrinsics"]')
    k = require_tensor(batch_targets.get("intrinsics"), 'batch_targets["intrinsics"]')
    d = require_tensor(batch_targets.get("depths"), 'batch_targets["depths"]')
    if d.ndim != len(lead) + 2 or tuple(d.shape[: len(lead)]) != lead:
        raise ValueError(
            f'batch_targets["depths"] must be [{", ".join(map(str, lead))}, H, W], got {tuple(d.shape)}'
        )
    h, w = d.shape[-2:]
    frame_valid = _frame_valid(batch_targets, lead)

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
        poses = [to_layout(p, lead, (9,), "pose_enc") for p in poses]
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

    masks, mask_valid = _mask_targets(batch_targets, lead, (h, w), frame_valid)
    mask = compute_mask_supervision_loss(
        predictions, masks, config, mask_valid, depths=d, intrinsics=k, extrinsics=e
    )
    out.update(mask.as_dict())
    if mask.loss is not None:
        weighted.append(mask.loss)
    out["loss"] = torch.stack(weighted).sum() if weighted else None
    return out


def _frame_valid(batch_targets: Mapping[str, Any], lead: tuple[int, ...]) -> torch.Tensor | None:
    """The optional padding mask `frame_valid` `[*lead]` (bool) in the targets' layout."""
    frame_valid = batch_targets.get("frame_valid")
    if frame_valid is None:
        return None
    frame_valid = to_layout(
        require_tensor(frame_valid, 'batch_targets["frame_valid"]'), lead, (), "frame_valid"
    )
    require_bool(frame_valid, 'batch_targets["frame_valid"]')
    return frame_valid


def _mask_targets(
    batch_targets: Mapping[str, Any],
    lead: tuple[int, ...],
    hw: tuple[int, int],
    frame_valid: torch.Tensor | None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """`masks` `[*lead, H, W]` and `mask_valid` `[*lead]` in the targets' layout, padding ANDed in."""
    masks, mask_valid = batch_targets.get("masks"), batch_targets.get("mask_valid")
    if masks is None:
        return None, mask_valid
    masks = to_layout(require_tensor(masks, 'batch_targets["masks"]'), lead, hw, "masks")
    if mask_valid is not None:
        mask_valid = to_layout(require_tensor(mask_valid, "mask_valid"), lead, (), "mask_valid")
    if frame_valid is not None:
        mask_valid = frame_valid if mask_valid is None else (mask_valid & frame_valid)
    return masks, mask_valid


def _dense_prediction(
    predictions: Mapping[str, Any], key: str, lead: tuple[int, ...], trailing: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """`predictions[key]` and `predictions[key + "_conf"]` in the targets' layout; loud when absent."""
    for name in (key, f"{key}_conf"):
        if predictions.get(name) is None:
            raise ValueError(f'the {key} loss is on but predictions has no "{name}"')
    pred = to_layout(predictions[key], lead, trailing, f'predictions["{key}"]')
    conf = to_layout(predictions[f"{key}_conf"], lead, trailing[:-1], f'predictions["{key}_conf"]')
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
