"""`SceneBatch`: a `Scene` as model input ``[B, T, V, 3, H, W]`` plus the targets aligned with it.

The model flattens ``[B, T, V]`` to ``S = T * V`` frames (time outer, view inner) and frame 0 (t = 0,
v = 0) defines its world. ``world_frame="first_camera"`` moves the target extrinsics into that frame so
predicted and true poses are comparable without an alignment step; "scene" keeps them as stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from page4d.data.resize import check_patch_multiple
from page4d.data.scene import Scene
from page4d.geometry import relative_to_first_camera

WorldFrame = Literal["scene", "first_camera"]


@dataclass
class SceneBatch:
    """Model input and targets with a leading batch dimension B.

    images:      [B, T, V, 3, H, W] float32 in [0, 1]
    depths:      [B, T, V, H, W] float32, 0 = invalid;   depth_valid: [B, T, V, H, W] bool
    intrinsics:  [B, T, V, 3, 3] float32;   extrinsics: [B, T, V, 3, 4] float32 world-to-camera
                 (depths, depth_valid, intrinsics, extrinsics are None for a scene without geometry;
                 geometry_missing_reason says why)
    masks:       [B, T, V, H, W] float32 (1 = dynamic) or None when the scene has no masks
    mask_valid:  [B, T, V] bool; a loss must ignore frames where it is False (their mask slot is 0)
    """

    images: torch.Tensor
    depths: torch.Tensor | None
    depth_valid: torch.Tensor | None
    intrinsics: torch.Tensor | None
    extrinsics: torch.Tensor | None
    masks: torch.Tensor | None
    mask_valid: torch.Tensor
    mask_missing_reason: str | None
    times: list[int]
    views: list[int]
    world_frame: WorldFrame
    geometry_missing_reason: str | None = None

    def to(self, device: torch.device | str) -> SceneBatch:
        """Copy of the batch with every tensor on ``device``."""
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in vars(self).items()}
        return SceneBatch(**moved)


def to_first_camera_frame(extrinsics: torch.Tensor) -> torch.Tensor:
    """World-to-camera [..., T, V, 3, 4] -> the same cameras with camera (t=0, v=0) as the world frame.

    E_i' = E_i @ inv(E_0) (:func:`page4d.geometry.relative_to_first_camera` over the ``s = t * V + v``
    frames), so E_0' = [I | 0]. Depth is unchanged (a rigid move).
    """
    lead = extrinsics.shape[:-4]
    flat = extrinsics.double().reshape(*lead, -1, 3, 4)  # composing in float32 costs ~1e-6 per step
    return relative_to_first_camera(flat).reshape(extrinsics.shape).to(extrinsics.dtype)


def scene_to_batch(
    scene: Scene,
    times: list[int] | None = None,
    views: list[int] | None = None,
    world_frame: WorldFrame = "scene",
) -> SceneBatch:
    """Select time / view ids (default all, in the scene's order) and add B = 1.

    Raises when H or W is not a multiple of 14: the model cannot take it, and resizing here would hide
    a transform the targets must share; load the scene with ``image_size=...`` instead.
    """
    check_patch_multiple(scene.image_size)
    ti = _positions(scene.times, times, "time")
    vi = _positions(scene.views, views, "view")

    def pick(x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else x[ti][:, vi].unsqueeze(0)

    if world_frame not in ("scene", "first_camera"):
        raise ValueError(f"world_frame {world_frame!r}; expected 'scene' or 'first_camera'")
    extrinsics = pick(scene.extrinsics)
    if world_frame == "first_camera" and extrinsics is not None:
        extrinsics = to_first_camera_frame(extrinsics)
    depths = pick(scene.depths)
    mask_valid = pick(scene.mask_valid)
    return SceneBatch(
        images=pick(scene.images),
        depths=depths,
        depth_valid=None if depths is None else depths > 0,
        intrinsics=pick(scene.intrinsics),
        extrinsics=extrinsics,
        masks=None if scene.masks is None else pick(scene.masks),
        mask_valid=mask_valid,
        # The scene's reason may be about frames this selection left out.
        mask_missing_reason=None if bool(mask_valid.all()) else scene.mask_missing_reason,
        times=[scene.times[i] for i in ti],
        views=[scene.views[i] for i in vi],
        world_frame=world_frame,
        geometry_missing_reason=scene.geometry_missing_reason,
    )


def _positions(available: list[int], wanted: list[int] | None, what: str) -> list[int]:
    if wanted is None:
        return list(range(len(available)))
    absent = [x for x in wanted if x not in available]
    if absent:
        raise ValueError(f"{what} ids {absent} are not in the scene (it has {available})")
    return [available.index(x) for x in wanted]
