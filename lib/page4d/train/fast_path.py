"""The mask-only fast path: with mask terms alone, run the network only up to the mask head.

Why: the mask loss reads only the mask logits, so the blocks after the mask head and the camera / DPT
heads would run (and keep activations) for nothing. When the head's input cannot change during the run
(it is detached, or everything before it is frozen) the input tokens are computed once per clip and kept
in host memory (`FeatureCache`, bounded by `feature_cache_mb`); the cache changes the cost, never the
numbers. Single-process only: DDP synchronises gradients inside its own forward, which this skips.

Shapes: images `[B, T, V, 3, H, W]`; the aggregator takes them as `[B, T*V, 3, H, W]` (time outer, view
inner) and returns the head's input tokens `[B, T*V, P, C]`; the head gives mask logits
`[B, T, V, H/14, W/14]` (one per patch of the 14-pixel grid).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from page4d.losses import LossConfig, compute_mask_supervision_loss
from page4d.train.config import TrainConfig


class FeatureCache:
    """Mask-head input tokens per clip, kept in host memory up to `limit_mb`; beyond that, clips are
    recomputed (and the summary says how many)."""

    def __init__(self, limit_mb: float) -> None:
        self.limit = int(limit_mb * 2**20)
        self.store: dict[int, torch.Tensor] = {}
        self.bytes = 0
        self.refused = 0

    def get(self, key: int, device: torch.device) -> torch.Tensor | None:
        x = self.store.get(key)
        return None if x is None else x.to(device, non_blocking=True)

    def put(self, key: int, tokens: torch.Tensor) -> None:
        size = tokens.numel() * tokens.element_size()
        if self.bytes + size > self.limit:
            self.refused += 1
            return
        self.store[key] = tokens.detach().to("cpu")
        self.bytes += size

    def report(self) -> dict[str, Any]:
        return {
            "limit_mb": self.limit / 2**20,
            "clips": len(self.store),
            "mb": self.bytes / 2**20,
            "recomputed_for_lack_of_room": self.refused,
            "where": "host memory",
        }


def mask_only_objective(loss_cfg: LossConfig, model: nn.Module, world: int = 1) -> bool:
    """True when the run can stop at the mask head: no geometry term (nor attention forcing, which needs
    the later blocks), a mask head, one process."""
    only_mask = not loss_cfg.geometry_enabled and not loss_cfg.use_attention_forcing
    return only_mask and model.aggregator.spatial_mask_head is not None and world == 1


def features_are_fixed(cfg: TrainConfig) -> bool:
    """The mask head's input cannot change when it is detached or everything before it is frozen:
    then it is computed once per clip and cached."""
    return cfg.detach_mask_input or cfg.trains == "mask_head"


def flat_frames(images: torch.Tensor) -> torch.Tensor:
    """`[B, T, V, 3, H, W]` -> `[B, T*V, 3, H, W]` (time outer, view inner, as the model does)."""
    return images.reshape(images.shape[0], -1, *images.shape[3:])


def mask_logits_from_features(
    model: nn.Module, tokens: torch.Tensor, image_shape: torch.Size
) -> torch.Tensor:
    """Run only the mask head on (cached) tokens `[B, T*V, P, C]`; returns `mask_logits`
    `[B, T, V, H/14, W/14]` for images of `image_shape` `[B, T, V, 3, H, W]`."""
    b, t, v, _, h, w = image_shape
    p = model.cfg.patch_size
    out = model.aggregator.spatial_mask_head(tokens, model.cfg.patch_start_idx, h // p, w // p)
    return out.dynamic_logits.reshape(b, t, v, h // p, w // p)


def mask_only_losses(
    model: nn.Module, batch: Any, key: int, cache: FeatureCache, loss_cfg: LossConfig, autocast: Any
) -> dict[str, Any]:
    """The mask terms of clip `key` (a `page4d.data` batch on the model's device): the aggregator up
    to the mask head under `autocast` (skipped when the cache holds the clip), the head in float32."""
    tokens = cache.get(key, batch.images.device)
    if tokens is None:
        with autocast:
            tokens = model.aggregator(flat_frames(batch.images), stop_at_mask_head=True)
        cache.put(key, tokens)
    logits = mask_logits_from_features(model, tokens.float(), batch.images.shape)
    mask = compute_mask_supervision_loss(
        {"mask_logits": logits},
        batch.masks,
        loss_cfg,
        batch.mask_valid,
        depths=batch.depths,
        intrinsics=batch.intrinsics,
        extrinsics=batch.extrinsics,
    )
    return {**mask.as_dict(), "loss": mask.loss}
