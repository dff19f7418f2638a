"""What a finished run records in `summary.json`, and the progress lines that say the same.

Why both "trainable" and "trained": `trainable_*` is what the config let train (`requires_grad`),
`trained_*` what actually received a non-zero gradient. They differ when a loss cannot reach part of
what may train: with mask terms only and the mask head's input detached, only the head learns whatever
`trains` says, and the summary must not claim otherwise.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import torch

from page4d.train.state import TrainRun


def summarize_history(history: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts of steps that updated the weights, that were skipped, and that trained without mask
    terms, each with its reasons (from `history.json`)."""
    skipped = Counter(r["skip_reason"] for r in history if not r.get("updated", True))
    mask_skipped = Counter(
        r["mask_skip_reason"] for r in history if r.get("updated") and r.get("mask_supervised") is False
    )
    return {
        "updated_steps": sum(1 for r in history if r.get("updated", True)),
        "skipped_steps": {"count": sum(skipped.values()), "reasons": dict(skipped)},
        "mask_skipped_steps": {"count": sum(mask_skipped.values()), "reasons": dict(mask_skipped)},
    }


def final_losses(history: list[dict[str, Any]]) -> dict[str, float]:
    """Every loss term of the last step."""
    return {k: v for k, v in history[-1].items() if k.endswith("loss") and isinstance(v, float)}


def run_summary(run: TrainRun, digests: list[str]) -> dict[str, Any]:
    """summary.json's fields besides `summarize_history`'s; `digests`: every rank's weights digest."""
    device = run.device
    return {
        "steps": run.cfg.steps,
        "world_size": run.world,  # of every call: a resume with another world size is refused
        "geometry": run.loss_cfg.geometry_enabled,
        "input": run.input_record,
        "rank_weight_digests": digests,
        "seconds": time.perf_counter() - run.t0,
        "resumed_from_step": run.resumed_from,
        "trains": run.cfg.trains,
        "trainable_parameters": sum(p.numel() for p in run.params),
        "trainable_tensors": len(run.trainable),
        "trained_parameters": run.trained.parameters(),
        "trained_tensors": len(run.trained.names),
        "trained_tensor_names": run.trained.sorted_names(),
        "precision": run.cfg.precision,
        "device": str(device),
        "feature_cache": run.cache.report(),
        "final_losses": final_losses(run.history),
        "peak_device_memory_bytes": torch.cuda.max_memory_allocated(device)
        if device.type == "cuda"
        else None,
    }


def start_line(run: TrainRun) -> str:
    cfg = run.cfg
    what = f"{cfg.trains} ({sum(p.numel() for p in run.params):,} parameters in {len(run.trainable)} tensors)"
    return (
        f"train: {cfg.preset}, arm {cfg.arm}, trains {what}, steps {run.first_step}->{cfg.steps}, "
        f"{cfg.precision} on {run.device} x{run.world}, lr {cfg.lr:g}, clips of {cfg.clip_times} time steps"
        + (f", run folder {run.out}" if run.out is not None else "")
    )


def end_line(run: TrainRun, summary: dict[str, Any]) -> str:
    losses = ", ".join(f"{k} {v:.4g}" for k, v in final_losses(run.history).items())
    skipped = summary["skipped_steps"]["count"] + summary["mask_skipped_steps"]["count"]
    trained = (
        f"gradients reached {len(run.trained.names)} of {len(run.trainable)} trainable tensors "
        f"({run.trained.parameters():,} of {sum(p.numel() for p in run.params):,} parameters)"
    )
    return (
        f"train: done at step {run.cfg.steps}: {losses}; {skipped} step(s) without mask terms; {trained}"
        + (f"; run folder {run.out}" if run.out is not None else "")
    )
