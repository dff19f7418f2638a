"""`TrainRun`: what one call of `train` works with, in one record the loop's small functions share.

Why a record: set-up, one step, a checkpoint and the finish each need a different part of the same
run (the model and its optimiser, the clips, the device and rank, the history so far); passing one
`TrainRun` keeps each of them short without a dozen arguments. A checkpoint (`checkpoint.py`) saves the
parts a run needs to continue bit-identically; the rest is rebuilt from the config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from page4d.data import Scene
from page4d.losses import LossConfig
from page4d.train.config import TrainConfig
from page4d.train.fast_path import FeatureCache
from page4d.train.interrupts import StopRequests
from page4d.train.trainables import TrainedTensors


@dataclass
class TrainRun:
    cfg: TrainConfig
    loss_cfg: LossConfig
    scenes: list[Scene]
    clips: list[tuple[int, list[int]]]  # (scene index, its time ids) of every training clip
    model: nn.Module  # unwrapped: checkpoints, the digest and the fast path use it
    net: nn.Module  # runs the full forward: the model, or DDP around it
    trainable: list[str]  # names of the tensors configured to train (`set_trainable`)
    params: list[nn.Parameter]  # those tensors, in the optimiser's order
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler  # enabled for fp16 only
    trained: TrainedTensors  # the trainable tensors that received a gradient
    device: torch.device
    rank: int
    world: int
    out: Path | None  # the run folder (None: nothing is written)
    mask_only: bool  # the fast path (`fast_path.mask_only_objective`)
    cache: FeatureCache
    stop: StopRequests  # SIGTERM and a dead torchrun launcher, checked before every step
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per step taken
    first_step: int = 0  # the step this call starts at (a resumed checkpoint's)
    resumed_from: int | None = None
    t0: float = 0.0  # perf_counter() when the run's first step began (a resumed run: as if it ran on)
    input_record: dict[str, Any] | None = None  # what the caller recorded about the data (summary.json)

    @property
    def mask_terms(self) -> bool:
        return bool(self.loss_cfg.use_seganymo_mask and self.loss_cfg.mask_terms_enabled)
