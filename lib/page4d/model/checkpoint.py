"""Loading released checkpoints (VGGT-1B `model.pt`, PAGE-4D `checkpoint_*.pt` with weights under "model").

One visible function maps a file or dict onto the model, checks every key and shape, and fails loudly
with a report instead of loading partially by accident.
"""

from __future__ import annotations

import functools
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .config import TINY_PATCH_EMBEDS, preset_with_patch_embed
from .network import build_model

MASK_HEAD_PREFIX = "aggregator.spatial_mask_head."
PATCH_EMBED_PREFIX = "aggregator.patch_embed."
# Checkpoints shipped inside the package, loadable by name wherever a checkpoint path is accepted.
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "weights"
SHIPPED_CHECKPOINTS = {  # name -> file in SHIPPED_DIR (+ its card)
    "tiny-synthetic": "tiny-synthetic.pt",
    "tiny-stream": "tiny-stream.pt",
    "tiny-pos": "tiny-pos.pt",
}
# name -> the preset it loads into strictly (its card's "preset"); the first one of a preset is the
# preset's default weights (`shipped_checkpoint_for`)
SHIPPED_PRESETS = {"tiny-stream": "tiny", "tiny-synthetic": "tiny", "tiny-pos": "tiny"}
# What a user of a shipped checkpoint's masks must know (from its card).
SHIPPED_MASK_HEAD_NOTES = {
    "tiny-synthetic": "tiny-synthetic's mask head is at its initialisation (pretrained with the head's "
    "attention bias off, see its card tiny-synthetic.md): its mask_head masks are untrained; fine-tune the "
    "head (page4d.train) or use --method attention",
    "tiny-stream": "tiny-stream's mask head is at its initialisation (pretrained with the head's attention "
    "bias off, see its card tiny-stream.md): its mask_head masks are untrained; fine-tune the head "
    "(page4d.train) or use --method attention",
    "tiny-pos": "tiny-pos's mask head is at its initialisation (trained with the head's attention bias off, "
    "see its card tiny-pos.md): its mask_head masks are untrained; fine-tune the head (page4d.train) or use "
    "--method attention",
}


def shipped_checkpoint_for(preset_name: str) -> str | None:
    """The name of the shipped checkpoint that loads into `preset_name`, or None when none does."""
    return next((name for name, p in SHIPPED_PRESETS.items() if p == preset_name), None)


def resolve_checkpoint(source: str | Path) -> Path:
    """A shipped checkpoint's name (see `SHIPPED_CHECKPOINTS`; its card is `<name>.md` beside it) -> its
    file; anything else is a path. A name wins over a same-named file in the working directory."""
    name = str(source)
    if name in SHIPPED_CHECKPOINTS:
        path = SHIPPED_DIR / SHIPPED_CHECKPOINTS[name]
        if not path.is_file():
            raise FileNotFoundError(f"shipped checkpoint {name!r} is missing from the package: {path}")
        return path
    return Path(source)


def existing_checkpoint(source: str | Path) -> Path:
    """`resolve_checkpoint`, and a FileNotFoundError naming the path (and the shipped names) when no file
    is there: what `read_state_dict` checks first, and what a long run checks before it starts."""
    path = resolve_checkpoint(source)
    if not path.is_file():
        names = ", ".join(SHIPPED_CHECKPOINTS)
        raise FileNotFoundError(f"checkpoint not found: {path} (shipped checkpoints by name: {names})")
    return path


@dataclass
class LoadReport:
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # key, checkpoint, model

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    @property
    def only_mask_head_missing(self) -> bool:
        """True for a plain VGGT checkpoint loaded into a PAGE-4D model: the mask head starts fresh."""
        return (
            bool(self.missing)
            and not self.unexpected
            and not self.mismatched
            and all(k.startswith(MASK_HEAD_PREFIX) for k in self.missing)
        )

    def summary(self, limit: int = 10) -> str:
        if self.ok:
            return "all keys matched"
        lines = []
        if self.only_mask_head_missing:
            lines.append(
                f"checkpoint has no PAGE-4D mask head: {len(self.missing)} '{MASK_HEAD_PREFIX}*' "
                "parameters keep their fresh initialisation"
            )
        for name, items in (
            ("missing from checkpoint", self.missing),
            ("unexpected in checkpoint", self.unexpected),
        ):
            if items:
                more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
                lines.append(f"{len(items)} {name}: {', '.join(items[:limit])}{more}")
        for key, ck, md in self.mismatched[:limit]:
            lines.append(f"shape mismatch {key}: checkpoint {ck} vs model {md}")
        if any(k.startswith(PATCH_EMBED_PREFIX) for k in self.missing + self.unexpected):
            lines.append(
                f"the '{PATCH_EMBED_PREFIX}*' keys differ: the checkpoint was made with another patch "
                "embedding (the tiny preset's variants are conv, conv_stem and conv_pos: --patch-embed, "
                "or load_model(..., patch_embed=...); auto reads it from the checkpoint's keys)"
            )
        return "\n".join(lines)


class CheckpointError(RuntimeError):
    pass


def read_state_dict(source: str | Path | dict) -> dict[str, torch.Tensor]:
    """A raw state dict, or one stored under "model" (PAGE-4D training checkpoints). `source` may be a
    path, a shipped checkpoint's name (`resolve_checkpoint`) or a dict."""
    if isinstance(source, (str, Path)):
        path = existing_checkpoint(source)
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, KeyError) as err:
            raise CheckpointError(
                f"{path}: not a torch checkpoint that loads with weights_only=True ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''})"
            ) from err
        where = str(path)
    else:
        obj, where = source, "<dict>"
    if not isinstance(obj, dict):
        raise CheckpointError(f"{where}: expected a dict, got {type(obj).__name__}")
    if "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{where}: entries that are not tensors: {bad[:5]}")
    require_finite_weights(obj, where)
    # Checkpoints saved from DistributedDataParallel / torch.compile prefix every key.
    for prefix in ("module.", "_orig_mod."):
        if obj and all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix) :]: v for k, v in obj.items()}
    return obj


def require_finite_weights(state: dict[str, torch.Tensor], where: str, limit: int = 5) -> None:
    """`CheckpointError` naming the file and the tensors holding NaN or inf: one such weight turns every
    prediction into NaN (e.g. all-static masks scored J 0) while every key and shape still matches."""
    bad = []
    for key, value in state.items():
        if value.is_floating_point() or value.is_complex():
            count = int((~torch.isfinite(value)).sum())
            if count:
                bad.append(f"{key} ({count} of {value.numel()})")
    if bad:
        more = f" (+{len(bad) - limit} more)" if len(bad) > limit else ""
        raise CheckpointError(
            f"{where}: {len(bad)} tensor(s) hold NaN or inf values: {', '.join(bad[:limit])}{more}; "
            "a diverged or corrupted checkpoint, refused"
        )


def compare_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> LoadReport:
    own = model.state_dict()
    report = LoadReport(
        missing=sorted(k for k in own if k not in state),
        unexpected=sorted(k for k in state if k not in own),
    )
    report.mismatched = [
        (k, tuple(state[k].shape), tuple(own[k].shape))
        for k in sorted(own)
        if k in state and state[k].shape != own[k].shape
    ]
    return report


def load_checkpoint(
    model: nn.Module,
    source: str | Path | dict,
    strict: bool = True,
    allow_missing_mask_head: bool = False,
    skip_mask_head: bool = False,
) -> LoadReport:
    """Load weights; raise `CheckpointError` with the report unless every key and shape matches.

    `allow_missing_mask_head=True` accepts a plain VGGT checkpoint in a PAGE-4D model (only the mask head
    is missing); `strict=False` loads what matches and returns the report for the caller to print.
    `skip_mask_head=True` loads everything but the mask head, which keeps the model's own (seeded)
    initialisation: a backbone comparison where only the backbone's weights differ.
    """
    state = read_state_dict(source)
    if skip_mask_head:
        state = {k: v for k, v in state.items() if not k.startswith(MASK_HEAD_PREFIX)}
        allow_missing_mask_head = True
    report = compare_state_dict(model, state)
    acceptable = report.ok or (allow_missing_mask_head and report.only_mask_head_missing)
    if strict and not acceptable:
        raise CheckpointError(f"checkpoint does not match the model:\n{report.summary()}")
    if report.mismatched and strict:
        raise CheckpointError(report.summary())
    mismatched = {k for k, _, _ in report.mismatched}
    model.load_state_dict(
        {k: v for k, v in state.items() if k not in mismatched and k not in report.unexpected}, strict=False
    )
    return report


def patch_embed_of(state: dict[str, torch.Tensor], where: str = "checkpoint") -> str:
    """Which of the tiny preset's patch embeddings (`TINY_PATCH_EMBEDS`) the weights `state` were made
    with: the one whose `aggregator.patch_embed.*` keys they hold, exactly. Why: weights made with a
    tiny-only embedding (issue 20's `conv_pos`) load only into a model built with it, and the keys say
    which; nothing is guessed, a key set that matches none is a `CheckpointError` naming the keys."""
    keys = frozenset(k for k in state if k.startswith(PATCH_EMBED_PREFIX))
    for name, expected in _tiny_patch_embed_keys().items():
        if keys == expected:
            return name
    shown = ", ".join(sorted(keys)[:6]) or "none"
    raise CheckpointError(
        f"{where}: its {len(keys)} '{PATCH_EMBED_PREFIX}*' keys ({shown}) match none of the tiny preset's "
        f"patch embeddings {TINY_PATCH_EMBEDS}"
    )


@functools.cache
def _tiny_patch_embed_keys() -> dict[str, frozenset[str]]:
    """Each tiny embedding's `aggregator.patch_embed.*` keys (built on the meta device: no memory)."""
    keys = {}
    with torch.device("meta"):
        for name in TINY_PATCH_EMBEDS:
            state = build_model(preset_with_patch_embed("tiny", name)).state_dict()
            keys[name] = frozenset(k for k in state if k.startswith(PATCH_EMBED_PREFIX))
    return keys
