"""The learning-rate schedule: linear warm-up, then a cosine to `min_lr` (as VGGT's and nanoGPT's).

A pure function of the step, so a resumed run continues the same schedule without saving any scheduler
state, and `--resume` with a larger `--steps` stretches the cosine to the new length.
"""

from __future__ import annotations

import math

from page4d.train.config import TrainConfig


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of optimiser step `step` (0-based): linear warm-up over `cfg.warmup()` steps to `lr`,
    then a cosine from `lr` to `min_lr` at step `steps`."""
    warmup = cfg.warmup()
    if step < warmup:
        return cfg.lr * ((step + 1) / warmup)
    u = (step - warmup) / max(1, cfg.steps - warmup)
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * min(u, 1.0)))
