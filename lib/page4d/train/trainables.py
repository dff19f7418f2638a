"""What trains: the model a run builds, which of its tensors may change, and which actually did.

PAGE-4D fine-tunes the mask head and the "middle" frame/global blocks, the ones its mask bias acts on;
`TrainConfig.trains` names that choice (`mask_head`, `mask_head+middle_blocks`, `everything`) and
`set_trainable` turns it into `requires_grad` flags. What is *configured* to train can differ from what
*receives gradients*: with mask terms only and the mask head's input detached, nothing before the head
gets a gradient whatever `trains` says. `TrainedTensors` records the latter, for `summary.json`.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from page4d.inference.loading import resolve_patch_embed
from page4d.model import MASK_HEAD_PREFIX, build_model, load_checkpoint
from page4d.model.config import ModelConfig, preset_with_patch_embed
from page4d.train.config import TRAINS, TRAINS_ALIASES, TrainConfig


def build_training_model(cfg: TrainConfig) -> nn.Module:
    """The preset (with `cfg.patch_embed`; "auto": the checkpoint's own) with the configured detach before
    the mask head and no track head (tracks are not trained here), loaded from `cfg.checkpoint` when given
    (the mask head too unless `checkpoint_mask_head` is False). Seed torch first for a reproducible
    initialisation."""
    patch_embed = resolve_patch_embed(cfg.preset, cfg.checkpoint or "", cfg.patch_embed)
    model_cfg = preset_with_patch_embed(cfg.preset, patch_embed)
    if model_cfg.mask_head is not None:
        model_cfg = model_cfg.replace(
            mask_head=dataclasses.replace(model_cfg.mask_head, detach_input=cfg.detach_mask_input)
        )
    model = build_model(model_cfg.replace(track_head=None))
    if cfg.checkpoint:
        report = load_checkpoint(
            model, cfg.checkpoint, allow_missing_mask_head=True, skip_mask_head=not cfg.checkpoint_mask_head
        )
        if not cfg.checkpoint_mask_head and report.only_mask_head_missing:
            print(f"{cfg.checkpoint}: backbone loaded; the mask head starts from seed {cfg.seed}'s own init")
        elif not report.ok:
            print(report.summary())
    return model


def middle_blocks(model_cfg: ModelConfig, override: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """Frame/global block indices that `mask_head+middle_blocks` trains (with the mask head).

    Formula: the mask head's `masked_global_blocks`, the blocks whose attention the mask bias acts on.
    For `page4d_official_1b` that is 10..19, exactly the blocks PAGE-4D fine-tunes; fin10: 8..23; tiny:
    3..5. Without a mask head: PAGE-4D's share of the depth, round(depth*10/24)..round(depth*20/24)-1.
    """
    if override is not None:
        bad = [i for i in override if not 0 <= i < model_cfg.depth]
        if bad:
            raise ValueError(f"middle_blocks {bad} outside 0..{model_cfg.depth - 1}")
        return tuple(sorted(set(override)))
    if model_cfg.mask_head is not None:
        return tuple(sorted(model_cfg.mask_head.masked_global_blocks))
    depth = model_cfg.depth
    return tuple(range(round(depth * 10 / 24), round(depth * 20 / 24)))


def _block_index(name: str) -> int | None:
    """The block index of a frame/global block's parameter name, else None."""
    for kind in ("frame_blocks", "global_blocks"):
        prefix = f"aggregator.{kind}."
        if name.startswith(prefix):
            return int(name[len(prefix) :].split(".")[0])
    return None


def set_trainable(model: nn.Module, trains: str, blocks: tuple[int, ...] | None = None) -> list[str]:
    """Set `requires_grad` by what trains (one of `TRAINS`, or an old name); returns the names of the
    trainable parameter tensors. The aggregator's `mask_token` never trains."""
    trains = TRAINS_ALIASES.get(trains, trains)
    if trains not in TRAINS:
        raise ValueError(f"what trains must be one of {TRAINS}, got {trains!r}")
    middle = set(middle_blocks(model.cfg, blocks))

    def trainable(name: str) -> bool:
        if trains == "everything" or name.startswith(MASK_HEAD_PREFIX):
            return True
        return trains == "mask_head+middle_blocks" and _block_index(name) in middle

    names = []
    for name, param in model.named_parameters():
        keep = trainable(name) and not name.endswith("mask_token")
        param.requires_grad_(keep)
        if keep:
            names.append(name)
    if not names:
        raise ValueError(f"{trains!r} leaves nothing to train (no mask head?)")
    return names


class TrainedTensors:
    """The trainable tensors that ever received a non-zero gradient in a run (`update` after each
    backward). Cheap: only tensors not yet seen are checked, with one device sync per step, and none
    once every tensor has been seen. Saved in checkpoints, so a resumed run keeps counting."""

    def __init__(self, model: nn.Module, names: list[str] | None = None) -> None:
        self.params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.names: set[str] = set(names or ())

    def update(self) -> None:
        pending = [(n, p.grad) for n, p in self.params if n not in self.names and p.grad is not None]
        if pending:
            hits = torch.stack([g.ne(0).any() for _, g in pending]).tolist()
            self.names.update(n for (n, _), hit in zip(pending, hits, strict=True) if hit)

    def parameters(self) -> int:
        return sum(p.numel() for n, p in self.params if n in self.names)

    def sorted_names(self) -> list[str]:
        return sorted(self.names)
