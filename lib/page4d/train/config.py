"""What a training run depends on: `TrainConfig`, written to the run folder's `config.json` and into every
checkpoint, so that `--resume` can check it continues the same run.

Each field is a knob defined once (`page4d.cli_args.knob`): its default and help text are also the
command line's (`python -m page4d.train --help`), and `page4d.experiments.ablation.AblationParams` takes
its defaults for the same knobs from here (`TrainConfig.lr`, ...).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from dataclasses import InitVar, dataclass
from typing import Any

from page4d.cli_args import knob
from page4d.devices import PRECISIONS, check_precision
from page4d.losses import LossConfig
from page4d.model.config import AUTO_PATCH_EMBED, TINY_PATCH_EMBEDS

# What trains (`TrainConfig.trains`, the CLI's --trains); everything else is frozen.
TRAINS = ("mask_head", "mask_head+middle_blocks", "everything")
# Earlier names, still accepted: "all" meant "freeze nothing", which read as its opposite.
TRAINS_ALIASES = {
    "mask_head_only": "mask_head",
    "middle_blocks": "mask_head+middle_blocks",
    "all": "everything",
}
TRAINS_ACCEPTED = TRAINS + tuple(TRAINS_ALIASES)
# (H, W) scenes are cropped+resized to by the CLI and the ablation (a multiple of the 14-pixel patch).
IMAGE_SIZE = (112, 154)
# The loss overrides of --no-geometry: mask terms only.
NO_GEOMETRY = {"use_camera": False, "use_depth": False, "use_point": False}

_TRAINS_HELP = f"what trains (the rest is frozen): {', '.join(TRAINS)}; old names " + ", ".join(
    f"{old} = {new}" for old, new in TRAINS_ALIASES.items()
)


CLIP_ORDERS = ("uniform", "stream")
MASK_BIASES = ("head", "off", "gt")


@dataclass
class TrainConfig:
    """Everything a training run depends on (written to `config.json` in the run folder).

    The defaults are notebook 03's / `AblationParams`' (lr 0.005, clips of 2 time steps, 120 steps, the
    mask head and the middle blocks train: PAGE-4D's recipe), with geometry losses on.

    `freeze=` is the old name of `trains=` (it always named what trains, not what is frozen): accepted,
    with a DeprecationWarning, and not stored; read `trains`. Old `config.json` files and checkpoints
    that say `freeze` are read by `from_record`.
    """

    preset: str = knob("tiny", "model preset (tiny, page4d_fin10_1b, page4d_official_1b, vggt_1b)")
    patch_embed: str = knob(
        "conv",
        "the tiny preset's patch embedding (conv_pos / conv_stem: tiny-only variants, issue 20; "
        "model.config.preset_with_patch_embed); auto: the checkpoint's own, read from its keys",
        choices=(AUTO_PATCH_EMBED, *TINY_PATCH_EMBEDS),
    )
    arm: str = knob("bce", "mask terms: none, bce, bce+boundary, bce+boundary+temporal")
    steps: int = knob(120, "optimiser steps (>= 1)")
    lr: float = knob(5e-3, "peak AdamW learning rate")
    min_lr: float = knob(0.0, "learning rate at the end of the cosine")
    warmup_steps: int | None = knob(None, "linear warm-up steps (default: 5% of steps, at least 1)")
    weight_decay: float = knob(0.0, "AdamW weight decay")
    grad_clip: float = knob(1.0, "gradient-norm clip (0: off)")
    trains: str = knob(
        "mask_head+middle_blocks",
        _TRAINS_HELP,
        aliases=("--freeze",),
        choices=TRAINS_ACCEPTED,
        metavar="WHAT",
    )
    middle_blocks: tuple[int, ...] | None = knob(
        None, "blocks mask_head+middle_blocks trains (default: the mask head's masked_global_blocks)"
    )
    clip_times: int = knob(
        2, "consecutive time steps per training clip (all views); 0: each scene whole (a stream of scenes)"
    )
    clip_order: str = knob(
        "uniform",
        "uniform: a seeded draw (with replacement) per step; stream: clip k at step k, so a stream of "
        "fresh scenes shows a new room every step",
        choices=CLIP_ORDERS,
    )
    mask_bias: str = knob(
        "head",
        "what drives the attention bias: head (PAGE-4D's mask head), off (plain VGGT attention: the "
        "no_mask control), gt (the clip's GT masks: the oracle; the head is not used)",
        choices=MASK_BIASES,
    )
    seed: int = knob(0, "seeds the weights' init, the clip order and every RNG")
    checkpoint: str | None = knob(
        None,
        "initial weights: a path (state dict or {'model': ...}) or a shipped name (default: seeded init)",
    )
    checkpoint_mask_head: bool = knob(True, "load the mask head from --checkpoint too (else its seeded init)")
    detach_mask_input: bool = knob(
        True,
        "detach the mask head's input, so the mask loss never reaches the backbone",
        aliases=("--no-detach",),
    )
    precision: str = knob(
        "fp32", "fp32, bf16 (autocast) or fp16 (+ GradScaler); heads stay fp32", choices=PRECISIONS
    )
    threads: int | None = knob(None, "torch CPU threads (default: torch's)")
    device: str = knob("auto", "auto (cuda:LOCAL_RANK when CUDA exists, else cpu), cpu, cuda, cuda:N")
    gradient_checkpointing: bool = knob(False, "recompute aggregator blocks in backward (full presets)")
    deterministic: bool = knob(True, "deterministic kernels (torch.use_deterministic_algorithms)")
    log_every: int = knob(10, "progress-bar loss every N steps")
    save_every: int = knob(0, "step checkpoint every N steps (0: only the final checkpoint)")
    keep_last: int = knob(0, "keep only the newest K step checkpoints (0: all)")
    feature_cache_mb: float = knob(1024.0, "host-memory limit of the mask-only feature cache (0: no cache)")
    loss_overrides: dict[str, Any] = knob(
        default_factory=dict, help="LossConfig fields changed from the arm's"
    )
    freeze: InitVar[str | None] = None  # deprecated alias of `trains`, see the class docstring

    def __post_init__(self, freeze: str | None) -> None:
        if freeze is not None:
            if self.trains not in (freeze, TrainConfig.trains):
                raise ValueError(
                    f"give trains ({self.trains!r}) or its old name freeze ({freeze!r}), not both"
                )
            warnings.warn(
                "TrainConfig(freeze=...) is the old name of trains=...", DeprecationWarning, stacklevel=3
            )
            self.trains = freeze
        if self.patch_embed not in (AUTO_PATCH_EMBED, *TINY_PATCH_EMBEDS):
            raise ValueError(
                f"patch_embed must be auto or one of {TINY_PATCH_EMBEDS}, got {self.patch_embed!r}"
            )
        if self.trains not in TRAINS_ACCEPTED:
            raise ValueError(f"trains must be one of {TRAINS}, got {self.trains!r}")
        self.trains = TRAINS_ALIASES.get(self.trains, self.trains)
        check_precision(self.precision)
        if self.steps < 1:
            raise ValueError(
                f"steps must be >= 1, got {self.steps}: a run of no steps would write an untrained checkpoint"
            )
        if self.clip_times < 0:
            raise ValueError(f"clip_times must be >= 1 (or 0: whole scenes), got {self.clip_times}")
        if self.clip_order not in CLIP_ORDERS or self.mask_bias not in MASK_BIASES:
            raise ValueError(
                f"clip_order must be one of {CLIP_ORDERS} and mask_bias one of {MASK_BIASES}, "
                f"got {self.clip_order!r}, {self.mask_bias!r}"
            )
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"min_lr must lie in [0, lr={self.lr}], got {self.min_lr}")
        if self.save_every < 0 or self.keep_last < 0 or self.feature_cache_mb < 0:
            raise ValueError("save_every, keep_last and feature_cache_mb must be >= 0")
        if self.middle_blocks is not None:
            self.middle_blocks = tuple(int(i) for i in self.middle_blocks)

    @classmethod
    def from_record(cls, saved: Mapping[str, Any]) -> TrainConfig:
        """The config a `config.json` or checkpoint of any version recorded: fields added since keep their
        defaults, fields since removed are ignored, and `freeze` (the old name of `trains`) is read as
        `trains`."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in saved.items() if k in known}
        if "freeze" in saved and "trains" not in saved:
            values["trains"] = saved["freeze"]
        return cls(**values)

    def loss_config(self) -> LossConfig:
        return LossConfig.for_arm(self.arm, **self.loss_overrides)

    def warmup(self) -> int:
        return max(1, self.steps // 20) if self.warmup_steps is None else self.warmup_steps
