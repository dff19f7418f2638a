"""Checkpoints that let a run continue bit-identically, and the checks before it does.

A checkpoint holds everything the next step depends on: the model, the optimiser, the GradScaler, the
step, every RNG state (python, numpy, torch, cuda; one per rank), the official mask head's schedule
counter, the history so far and the tensors that received gradients. The config is saved too, and a
resumed run must match it except in `RESUMABLE_CHANGES` (fields that do not alter the numbers of the
steps already taken). Files are written atomically (`page4d.records`); only rank 0 writes.

    run folder: checkpoint_<step>.pt (every `save_every` steps, at Ctrl-C and at `stop_after`),
                checkpoint.pt (the final one), history.json (rewritten with each checkpoint)
"""

from __future__ import annotations

import dataclasses
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from page4d.records import atomic_torch_save, is_finished, write_json
from page4d.train.config import TrainConfig
from page4d.train.distributed import gather
from page4d.train.state import TrainRun

# Fields a resumed run may change: they do not alter the numbers of the steps already taken.
RESUMABLE_CHANGES = ("steps", "save_every", "keep_last", "log_every", "threads", "device")
STEP_CHECKPOINT = re.compile(r"checkpoint_(\d+)\.pt")


def schedule_counters(model: nn.Module) -> dict[str, torch.Tensor]:
    """Step counters of scheduled heads (the official mask head's hold schedule)."""
    return {name: buf for name, buf in model.named_buffers() if name.endswith("schedule_step")}


def rng_state() -> dict[str, Any]:
    """This process's RNG states, in types `torch.load(weights_only=True)` reads back."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _step_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of every `checkpoint_<step>.pt`, by step."""
    found = ((STEP_CHECKPOINT.fullmatch(p.name), p) for p in run_dir.glob("checkpoint_*.pt"))
    return sorted((int(m.group(1)), p) for m, p in found if m)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint a resumed run continues from: the final one of a finished run, else the step
    checkpoint with the highest step; None when there is none."""
    run_dir = Path(run_dir)
    if is_finished(run_dir) and (run_dir / "checkpoint.pt").is_file():
        return run_dir / "checkpoint.pt"
    steps = _step_checkpoints(run_dir)
    return steps[-1][1] if steps else None


def prune_checkpoints(run_dir: Path, keep_last: int) -> list[Path]:
    """Delete all but the newest `keep_last` step checkpoints (`checkpoint.pt` is never touched)."""
    doomed = [p for _, p in _step_checkpoints(run_dir)[:-keep_last]] if keep_last else []
    for p in doomed:
        p.unlink()
    return doomed


class ResumeRefused(ValueError):
    """A checkpoint that this call cannot continue without changing the run's numbers (nothing is
    written: the run folder stays as it was)."""


def check_resumable(saved: dict[str, Any], cfg: TrainConfig) -> None:
    """Refuse to continue a run with settings that would change its numbers (a checkpoint of any
    version: `TrainConfig.from_record` reads old field names and fills fields added since)."""
    now = dataclasses.asdict(cfg)
    then = dataclasses.asdict(TrainConfig.from_record(saved))
    diff = [k for k in now if k not in RESUMABLE_CHANGES and then[k] != now[k]]
    if diff:
        detail = ", ".join(f"{k}: {then[k]!r} -> {now[k]!r}" for k in diff)
        raise ResumeRefused(f"--resume needs the run's own settings; these differ: {detail}")


def processes(world: int) -> str:
    return "one process (python -m page4d.train)" if world == 1 else f"torchrun --nproc_per_node {world}"


def check_world_size(ckpt: dict[str, Any], path: Path, world: int) -> None:
    """Refuse to continue a run with another number of processes: each rank's share of the clips and its
    RNG states belong to the world size that wrote them. Checkpoints from before `world_size` was saved
    hold one RNG state per rank, which says it."""
    saved = int(ckpt.get("world_size", len(ckpt["rng"])))
    if saved != world:
        raise ResumeRefused(
            f"{path} was written by a run of world size {saved}, and this --resume has world size "
            f"{world}: the clips each rank draws and its RNG states depend on it, so continue it with "
            f"{processes(saved)}, or start a new run in a new --out"
        )


def save_checkpoint(run: TrainRun, step: int, path: Path | None = None) -> None:
    """Write the run at `step` to `path` (default: `checkpoint_<step>.pt`) and rewrite history.json;
    with `keep_last`, prune older step checkpoints. Every rank must call it (RNG states are gathered)."""
    rngs = gather(rng_state(), run.world)
    if run.rank != 0 or run.out is None:
        return
    path = path or run.out / f"checkpoint_{step}.pt"
    state = {
        "model": run.model.state_dict(),
        "step": step,
        "config": dataclasses.asdict(run.cfg),
        "trainable": run.trainable,
        "trained_tensors": run.trained.sorted_names(),
        "optimizer": run.optimizer.state_dict(),
        "scaler": run.scaler.state_dict(),
        "schedule_counters": {k: int(v) for k, v in schedule_counters(run.model).items()},
        "rng": rngs,
        "history": run.history,
        "world_size": run.world,
    }
    atomic_torch_save(state, path)
    write_json(run.out / "history.json", run.history)
    if run.cfg.keep_last and path.name != "checkpoint.pt":
        prune_checkpoints(run.out, run.cfg.keep_last)


def restore(run: TrainRun, path: Path) -> None:
    """Continue `run` from the checkpoint at `path`: weights, optimiser, scaler, schedule counters, this
    rank's RNG states, the history and the step. Checkpoints from before `trained_tensors` was recorded
    count gradients from the resumed step on."""
    ckpt = torch.load(path, map_location=run.device, weights_only=True)
    check_resumable(ckpt["config"], run.cfg)
    check_world_size(ckpt, path, run.world)
    if ckpt["step"] > run.cfg.steps:
        raise ValueError(f"{path} is at step {ckpt['step']}, beyond --steps {run.cfg.steps}")
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scaler.load_state_dict(ckpt["scaler"])
    for name, buf in schedule_counters(run.model).items():
        buf.fill_(ckpt["schedule_counters"][name])
    set_rng_state(ckpt["rng"][run.rank])
    run.history = list(ckpt["history"])
    run.first_step = run.resumed_from = ckpt["step"]
    run.trained.names.update(ckpt.get("trained_tensors", ()))
