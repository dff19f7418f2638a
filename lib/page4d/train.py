"""Trainer for VGGT / PAGE-4D on multi-view RGB-D scenes with optional SegAnyMo mask supervision.

Seeded and deterministic on CPU; one process, or `torchrun` with DistributedDataParallel (gloo on CPU,
nccl on GPUs, one GPU per process from LOCAL_RANK). Each rank trains on its own share of one seeded
stream of clips (split across ranks like torch's DistributedSampler splits its order, see `ClipOrder`);
gradients are averaged, so every rank holds the same weights and only rank 0 writes.

A run folder is a record: every file is written atomically, a folder that already holds a run is never
written into again (continue it with --resume, or pick a new --out), and a checkpoint holds everything a
run needs to continue bit-identically (model, optimizer, grad scaler, step, RNG states, the official
mask head's schedule counter, the history).

    python -m page4d.train --scene DIR --out outputs/run1 --arm bce --steps 300
    python -m page4d.train --scene DIR --out outputs/run1 --arm bce --steps 300 --resume
    torchrun --nproc_per_node 2 -m page4d.train --scene DIR --out outputs/ddp --precision bf16
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import math
import os
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from page4d.data import Scene, load_scene, scene_to_batch
from page4d.determinism import set_determinism
from page4d.losses import LossConfig, compute_mask_supervision_loss, compute_total_loss, loss_dict_to_floats
from page4d.model import MASK_HEAD_PREFIX, build_model, load_checkpoint, preset
from page4d.model.config import ModelConfig
from page4d.records import (
    RunFolderTaken,
    atomic_torch_save,
    claim_run_folder,
    is_finished,
    mark_finished,
    remove_stale_temp_files,
    write_json,
)

__all__ = [
    "TrainConfig",
    "train",
    "build_training_model",
    "apply_freeze",
    "middle_blocks",
    "lr_at",
    "clip_for_step",
    "ClipOrder",
    "weights_digest",
    "latest_checkpoint",
    "FREEZE_STRATEGIES",
    "TRAINS",
    "PRECISIONS",
]

# What trains (the CLI's --trains / --freeze). Everything else is frozen.
TRAINS = ("mask_head", "mask_head+middle_blocks", "everything")
# Earlier names, still accepted: "all" meant "freeze nothing", which read as its opposite.
FREEZE_ALIASES = {
    "mask_head_only": "mask_head",
    "middle_blocks": "mask_head+middle_blocks",
    "all": "everything",
}
FREEZE_STRATEGIES = TRAINS + tuple(FREEZE_ALIASES)
PRECISIONS = ("fp32", "bf16", "fp16")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# Fields a resumed run may change: they do not alter the numbers of the steps already taken.
RESUMABLE_CHANGES = ("steps", "save_every", "keep_last", "log_every", "threads", "device")
STEP_CHECKPOINT = re.compile(r"checkpoint_(\d+)\.pt")


@dataclass
class TrainConfig:
    """Everything a training run depends on (written to `config.json` in the run folder).

    The defaults equal notebook 03's / `page4d.experiments.ablation.AblationParams`' (lr 0.005,
    clips of 2 time steps, 120 steps, the mask head and the middle blocks train: PAGE-4D's recipe), with
    geometry losses on as in `AblationParams`.
    """

    preset: str = "tiny"
    arm: str = "bce"
    steps: int = 120
    lr: float = 5e-3
    min_lr: float = 0.0  # the cosine ends here
    warmup_steps: int | None = None  # linear warm-up; None = 5% of `steps` (at least 1)
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    freeze: str = (
        "mask_head+middle_blocks"  # what TRAINS: one of TRAINS (older names in FREEZE_ALIASES accepted)
    )
    middle_blocks: tuple[int, ...] | None = None  # None = derived from the mask head, see `middle_blocks`
    clip_times: int = 2  # consecutive time steps per training clip (all views)
    seed: int = 0
    checkpoint: str | None = None  # initial weights: a path (state dict or {"model": ...}) or a shipped name
    checkpoint_mask_head: bool = True  # False: the mask head keeps its seeded init (backbone from checkpoint)
    detach_mask_input: bool = True  # False lets mask supervision reach the backbone
    precision: str = "fp32"  # fp32, bf16 (autocast) or fp16 (autocast + GradScaler); heads stay float32
    threads: int | None = None
    device: str = "auto"  # "auto" = cuda (cuda:LOCAL_RANK under torchrun) when available, else cpu
    gradient_checkpointing: bool = False  # recompute aggregator blocks in backward (full presets)
    deterministic: bool = True
    log_every: int = 10
    save_every: int = 0  # step checkpoints every N steps; 0 = only the final checkpoint
    keep_last: int = 0  # keep only the newest K step checkpoints; 0 = keep all
    feature_cache_mb: float = 1024.0  # host-memory limit of the mask-only feature cache; 0 = no cache
    loss_overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.freeze not in FREEZE_STRATEGIES:
            raise ValueError(f"freeze (what trains) must be one of {TRAINS}, got {self.freeze!r}")
        self.freeze = FREEZE_ALIASES.get(self.freeze, self.freeze)
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.steps < 1:
            raise ValueError(
                f"steps must be >= 1, got {self.steps}: a run of no steps would write an untrained checkpoint"
            )
        if self.clip_times < 1:
            raise ValueError(f"clip_times must be >= 1, got {self.clip_times}")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"min_lr must lie in [0, lr={self.lr}], got {self.min_lr}")
        if self.save_every < 0 or self.keep_last < 0 or self.feature_cache_mb < 0:
            raise ValueError("save_every, keep_last and feature_cache_mb must be >= 0")
        if self.middle_blocks is not None:
            self.middle_blocks = tuple(int(i) for i in self.middle_blocks)

    def loss_config(self) -> LossConfig:
        return LossConfig.for_arm(self.arm, **self.loss_overrides)

    def warmup(self) -> int:
        return max(1, self.steps // 20) if self.warmup_steps is None else self.warmup_steps


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of optimiser step `step` (0-based): linear warm-up over `warmup()` steps to `lr`,
    then a cosine from `lr` to `min_lr` at step `steps`. A pure function of the step, so a resumed run
    continues the same schedule."""
    warmup = cfg.warmup()
    if step < warmup:
        return cfg.lr * ((step + 1) / warmup)
    u = (step - warmup) / max(1, cfg.steps - warmup)
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * min(u, 1.0)))


def resolve_device(name: str) -> torch.device:
    """ "auto" = this process's GPU (LOCAL_RANK under torchrun, else cuda:0) when CUDA exists, else cpu."""
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    dev = torch.device(name)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return dev


def build_training_model(cfg: TrainConfig) -> nn.Module:
    model_cfg = preset(cfg.preset)
    if model_cfg.mask_head is not None:
        model_cfg = model_cfg.replace(
            mask_head=dataclasses.replace(model_cfg.mask_head, detach_input=cfg.detach_mask_input)
        )
    model_cfg = model_cfg.replace(track_head=None)  # tracks are not trained here
    model = build_model(model_cfg)
    if cfg.checkpoint:
        report = load_checkpoint(
            model, cfg.checkpoint, allow_missing_mask_head=True, skip_mask_head=not cfg.checkpoint_mask_head
        )
        if not report.ok:
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


def apply_freeze(model: nn.Module, strategy: str, blocks: tuple[int, ...] | None = None) -> list[str]:
    """Set requires_grad by what trains; returns the names of the trainable parameter tensors."""
    strategy = FREEZE_ALIASES.get(strategy, strategy)
    if strategy not in TRAINS:
        raise ValueError(f"what trains must be one of {TRAINS}, got {strategy!r}")
    middle = set(middle_blocks(model.cfg, blocks))

    def trainable(name: str) -> bool:
        if strategy == "everything":
            return True
        if name.startswith(MASK_HEAD_PREFIX):
            return True
        if strategy == "mask_head+middle_blocks":
            for kind in ("frame_blocks", "global_blocks"):
                prefix = f"aggregator.{kind}."
                if name.startswith(prefix) and int(name[len(prefix) :].split(".")[0]) in middle:
                    return True
        return False

    names = []
    for name, param in model.named_parameters():
        keep = trainable(name) and not name.endswith("mask_token")
        param.requires_grad_(keep)
        if keep:
            names.append(name)
    if not names:
        raise ValueError(f"{strategy!r} leaves nothing to train (no mask head?)")
    return names


def batch_targets(batch) -> dict[str, Any]:
    return {
        "extrinsics": batch.extrinsics,
        "intrinsics": batch.intrinsics,
        "depths": batch.depths,
        "masks": batch.masks,
        "mask_valid": batch.mask_valid,
    }


def clip_starts(num_times: int, clip_times: int) -> list[int]:
    if clip_times > num_times:
        raise ValueError(f"clip_times {clip_times} exceeds the {num_times} training time steps")
    return list(range(num_times - clip_times + 1))


class ClipOrder:
    """Which clip each rank trains on at each step: one seeded stream of draws (uniform, with
    replacement) shared by every rank, split like DistributedSampler splits its order: at step k, rank r
    takes draw `k * world + r`, so the ranks never share a position of the stream. A pure function of
    (seed, step, rank, world), so a resumed run continues the same order; with one process it is exactly
    the order earlier versions drew (`random.Random(seed * 1000).choice` per step)."""

    def __init__(self, num_clips: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.num_clips, self.seed, self.rank, self.world = num_clips, seed, rank, world
        self._rng = random.Random(seed * 1000)
        self._drawn = 0
        self._last = -1

    def clip(self, step: int) -> int:
        target = step * self.world + self.rank
        if target < self._drawn - 1:
            self._rng, self._drawn = random.Random(self.seed * 1000), 0
        while self._drawn <= target:
            self._last = self._rng.choice(range(self.num_clips))
            self._drawn += 1
        return self._last


def clip_for_step(num_clips: int, step: int, seed: int, rank: int = 0, world: int = 1) -> int:
    """Index of the clip rank `rank` trains on at `step` (see `ClipOrder`)."""
    return ClipOrder(num_clips, seed, rank, world).clip(step)


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def training_clips(
    scenes: list[Scene], train_times: list[int] | None, clip_times: int, loss_cfg: LossConfig
) -> list[tuple[int, list[int]]]:
    """Every training clip as (scene index, its time ids): `clip_times` consecutive steps of
    `train_times` (one scene) or of each scene's own times (a pool). Checks first that the times exist
    and that an arm with mask terms has GT somewhere (`mask_gt_check`)."""
    if not scenes:
        raise ValueError("train() needs at least one scene")
    if train_times is not None and len(scenes) > 1:
        raise ValueError(f"train_times selects time steps of one scene; got a pool of {len(scenes)} scenes")
    clips: list[tuple[int, list[int]]] = []
    errors = []
    for i, sc in enumerate(scenes):
        times = list(sc.times if train_times is None else train_times)
        missing = [t for t in times if t not in sc.times]
        if missing:
            raise ValueError(f"train_times {missing} are not in the scene (has {sc.times})")
        try:
            mask_gt_check(loss_cfg, sc, times)
        except ValueError as err:  # a pool needs GT in at least one scene, not in every one
            errors.append(err)
        clips += [(i, times[s : s + clip_times]) for s in clip_starts(len(times), clip_times)]
    if len(errors) == len(scenes):
        raise errors[0]
    return clips


def mask_gt_check(loss_cfg: LossConfig, scene: Scene, times: list[int]) -> None:
    """An arm with mask terms needs SegAnyMo GT on at least one training frame; raise before training."""
    if not (loss_cfg.use_seganymo_mask and loss_cfg.mask_terms_enabled):
        return
    if scene.masks is None:
        reason = scene.mask_missing_reason or "the scene has no SegAnyMo masks"
        raise ValueError(
            f"this arm has mask terms {loss_cfg.mask_terms_enabled} but {reason}; use arm 'none'"
        )
    rows = [scene.times.index(t) for t in times]
    if not bool(scene.mask_valid[rows].any()):
        raise ValueError(
            f"this arm has mask terms {loss_cfg.mask_terms_enabled} but no training time step {times} has a "
            "SegAnyMo mask; use arm 'none' or other train_times"
        )


def schedule_counters(model: nn.Module) -> dict[str, torch.Tensor]:
    """Step counters of scheduled heads (the official mask head's hold schedule)."""
    return {name: buf for name, buf in model.named_buffers() if name.endswith("schedule_step")}


def _rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": _plain_numpy_state(np.random.get_state()),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _plain_numpy_state(state: tuple) -> tuple:
    """numpy's RNG state with plain Python types, so checkpoints load with `weights_only=True`."""
    kind, keys, pos, has_gauss, gauss = state
    return (kind, keys.tolist(), int(pos), int(has_gauss), float(gauss))


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint a resumed run continues from: the final one of a finished run, else the step
    checkpoint with the highest step; None when there is none."""
    run_dir = Path(run_dir)
    if is_finished(run_dir) and (run_dir / "checkpoint.pt").is_file():
        return run_dir / "checkpoint.pt"
    steps = [
        (int(m.group(1)), p)
        for p in run_dir.glob("checkpoint_*.pt")
        if (m := STEP_CHECKPOINT.fullmatch(p.name))
    ]
    return max(steps)[1] if steps else None


def _check_resumable(saved: dict[str, Any], cfg: TrainConfig) -> None:
    now = dataclasses.asdict(cfg)
    saved = {**dataclasses.asdict(TrainConfig()), **saved}  # fields added since the run keep their defaults
    saved = {**saved, "middle_blocks": tuple(saved["middle_blocks"]) if saved.get("middle_blocks") else None}
    diff = [k for k in now if k not in RESUMABLE_CHANGES and saved.get(k) != now[k]]
    if diff:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in diff)
        raise ValueError(f"--resume needs the run's own settings; these differ: {detail}")


def train(
    cfg: TrainConfig,
    scene: Scene | Sequence[Scene],
    train_times: list[int] | None = None,
    output_dir: str | Path | None = None,
    model: nn.Module | None = None,
    progress: bool = True,
    resume: bool = False,
    stop_after: int | None = None,
) -> tuple[nn.Module, list[dict[str, Any]]]:
    """Train on clips of `cfg.clip_times` consecutive time steps (all views) drawn from `train_times`.

    `scene` may be a sequence of scenes (a pretraining pool, see `page4d.experiments.pretrain`): the
    clips of every scene (all of its time steps; `train_times` must then be None) form one list that the
    seeded clip order draws from, and each history record names its `scene` index. One scene gives exactly the
    clips, order and history of earlier versions.

    Returns the (unwrapped) model and the per-step history (one record per step: every loss term, the
    learning rate, the clip, whether the weights were updated and, if not, why). Into `output_dir`
    (rank 0; atomic writes): `config.json`; `checkpoint_<step>.pt` every `save_every` steps, on Ctrl-C
    and at `stop_after`; at the end `checkpoint.pt`, `history.json`, `summary.json` and
    the finish marker `DONE.json` (`page4d.records.mark_finished`).

    `resume=True` continues the newest checkpoint in `output_dir` (an empty folder starts fresh).
    `stop_after=N` stops after N steps of this call, leaving a resumable, unfinished run.
    A step whose clip has no mask GT trains without the mask terms (with geometry on), or is skipped
    (mask terms only); the run fails only when no step trained at all.
    """
    rank, world = _dist_info()
    out = Path(output_dir) if output_dir is not None else None
    if out is not None:
        claim_run_folder(out, resume=resume)  # every rank checks before rank 0 writes anything
        if world > 1:
            dist.barrier()
    set_determinism(cfg.seed, cfg.threads, cfg.deterministic)
    scenes = [scene] if isinstance(scene, Scene) else list(scene)
    loss_cfg = cfg.loss_config()
    clips = training_clips(scenes, train_times, cfg.clip_times, loss_cfg)
    if model is None:
        model = build_training_model(cfg)
    trainable = apply_freeze(model, cfg.freeze, cfg.middle_blocks)
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.cuda.reset_peak_memory_stats(device)
    model.to(device)
    model.aggregator.gradient_checkpointing = cfg.gradient_checkpointing
    model.train()
    net: nn.Module = model
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=ids, output_device=ids[0] if ids else None, find_unused_parameters=True
        )
    params = [p for p in model.parameters() if p.requires_grad]
    n_params = sum(p.numel() for p in params)
    optim = torch.optim.AdamW(params, lr=lr_at(0, cfg), weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    autocast_dtype = AUTOCAST_DTYPES.get(cfg.precision)

    history: list[dict[str, Any]] = []
    first_step = 0
    resumed_from = None
    ckpt_path = latest_checkpoint(out) if (resume and out is not None) else None
    if ckpt_path is not None:
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        _check_resumable(ckpt["config"], cfg)
        if ckpt["step"] > cfg.steps:
            raise ValueError(f"{ckpt_path} is at step {ckpt['step']}, beyond --steps {cfg.steps}")
        model.load_state_dict(ckpt["model"])
        optim.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        for name, buf in schedule_counters(model).items():
            buf.fill_(ckpt["schedule_counters"][name])
        rng = ckpt["rng"]
        _set_rng_state(rng[rank] if len(rng) == world else rng[0])
        history = list(ckpt["history"])
        first_step = resumed_from = ckpt["step"]
        if first_step == cfg.steps:
            if rank == 0 and progress:
                print(
                    f"train: {out} already finished at step {first_step}; pass a larger --steps to continue"
                )
            model.eval()
            return model, history
    elif resume and out is not None and rank == 0 and progress:
        print(f"train: no checkpoint in {out} to resume from; starting at step 0")

    mask_only = mask_only_objective(loss_cfg, model, world)
    cache = FeatureCache(cfg.feature_cache_mb if mask_only and features_are_fixed(cfg) else 0.0)
    geometry = loss_cfg.use_camera or loss_cfg.use_depth or loss_cfg.use_point
    mask_terms = bool(loss_cfg.use_seganymo_mask and loss_cfg.mask_terms_enabled)

    if out is not None and rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(out)
        write_json(out / "config.json", dataclasses.asdict(cfg))
    if rank == 0 and progress:
        what = f"{cfg.freeze} ({n_params:,} parameters in {len(trainable)} tensors)"
        print(
            f"train: {cfg.preset}, arm {cfg.arm}, trains {what}, steps {first_step}->{cfg.steps}, "
            f"{cfg.precision} on {device} x{world}, lr {cfg.lr:g}, clips of {cfg.clip_times} time steps"
            + (f", run folder {out}" if out is not None else ""),
            flush=True,
        )

    def save(step: int, path: Path) -> None:
        rngs = [_rng_state()]
        if world > 1:
            rngs = [None] * world
            dist.all_gather_object(rngs, _rng_state())
        if rank != 0:
            return
        state = {
            "model": model.state_dict(),
            "step": step,
            "config": dataclasses.asdict(cfg),
            "trainable": trainable,
            "optimizer": optim.state_dict(),
            "scaler": scaler.state_dict(),
            "schedule_counters": {k: int(v) for k, v in schedule_counters(model).items()},
            "rng": rngs,
            "history": history,
        }
        atomic_torch_save(state, path)
        write_json(out / "history.json", history)
        if cfg.keep_last and path.name != "checkpoint.pt":
            prune_checkpoints(out, cfg.keep_last)

    bar = tqdm(
        range(first_step, cfg.steps),
        desc=f"train[{cfg.arm}]",
        disable=not progress or rank != 0,
        initial=first_step,
        total=cfg.steps,
    )
    order = ClipOrder(len(clips), cfg.seed, rank, world)
    t0 = time.perf_counter()
    step = first_step
    try:
        for step in bar:
            if stop_after is not None and step - first_step >= stop_after:
                break
            index = order.clip(step)
            scene_index, clip = clips[index]
            batch = scene_to_batch(scenes[scene_index], times=clip, world_frame="first_camera").to(device)
            has_gt = batch.masks is not None and bool(batch.mask_valid.any())
            record: dict[str, Any] = {"step": step, "clip_start": clip[0], "lr": lr_at(step, cfg)}
            if len(scenes) > 1:
                record["scene"] = scene_index
            trains = geometry or (mask_terms and has_gt)
            if world > 1:
                flag = torch.tensor([int(trains)], device=device)
                dist.all_reduce(flag, op=dist.ReduceOp.MIN)
                if trains and not bool(flag):
                    record["skip_reason"] = "another rank's clip has no mask GT (mask terms only)"
                trains = bool(flag)
            if not trains:
                record.setdefault("skip_reason", "no mask GT in this clip and no geometry term")
                record.update(updated=False, seconds=time.perf_counter() - t0)
                history.append(record)
            else:
                for group in optim.param_groups:
                    group["lr"] = record["lr"]
                with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                    if mask_only:
                        tokens = cache.get(index, device)
                        if tokens is None:
                            tokens = model.aggregator(_flat(batch.images), stop_at_mask_head=True)
                            cache.put(index, tokens)
                    else:
                        preds = net(batch.images)
                if mask_only:
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
                    losses = {**mask.as_dict(), "loss": mask.loss}
                else:
                    losses = compute_total_loss(preds, batch_targets(batch), loss_cfg)
                if losses["loss"] is None:  # e.g. a GT frame the enabled mask terms cannot use
                    record.update(
                        updated=False,
                        skip_reason=f"every loss term skipped: {losses.get('mask_skip_reason')}",
                        seconds=time.perf_counter() - t0,
                    )
                    history.append(record)
                    continue
                optim.zero_grad(set_to_none=True)
                scaler.scale(losses["loss"]).backward()
                if cfg.grad_clip:
                    scaler.unscale_(optim)
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                scaler.step(optim)
                scaler.update()
                floats = loss_dict_to_floats(losses)
                record.update({k: v for k, v in floats.items() if isinstance(v, float | bool | str | None)})
                record.update(updated=True, seconds=time.perf_counter() - t0)
                history.append(record)
                if step % cfg.log_every == 0:
                    bar.set_postfix(loss=f"{record['loss']:.4f}")
            done = step + 1
            if out is not None and cfg.save_every and done % cfg.save_every == 0 and done < cfg.steps:
                save(done, out / f"checkpoint_{done}.pt")
        else:
            step = cfg.steps
        bar.close()
    except KeyboardInterrupt:
        done = len(history) and history[-1]["step"] + 1
        if out is not None and done > first_step:
            save(done, out / f"checkpoint_{done}.pt")
            if rank == 0:
                print(f"\ntrain: interrupted after step {done}; continue with --resume", file=sys.stderr)
        raise
    if step < cfg.steps:  # stopped by stop_after: leave a resumable, unfinished run
        if out is not None and step > first_step:
            save(step, out / f"checkpoint_{step}.pt")
        model.eval()
        return model, history

    summary = summarize_history(history)
    digests = [weights_digest(model)]
    if world > 1:
        # every rank must end with the same weights; record all of them so a divergence is visible
        digests = [None] * world
        dist.all_gather_object(digests, weights_digest(model))
    if summary["updated_steps"] == 0:
        if out is not None and rank == 0:
            write_json(out / "history.json", history)
        raise RuntimeError(f"trained nothing: every step was skipped ({summary['skipped_steps']['reasons']})")
    final = {k: v for k, v in history[-1].items() if k.endswith("loss") and isinstance(v, float)}
    if out is not None:
        save(cfg.steps, out / "checkpoint.pt")
        if rank == 0:
            summary.update(
                steps=cfg.steps,
                world_size=world,
                rank_weight_digests=digests,
                seconds=time.perf_counter() - t0,
                resumed_from_step=resumed_from,
                trains=cfg.freeze,
                trainable_parameters=n_params,
                trainable_tensors=len(trainable),
                precision=cfg.precision,
                device=str(device),
                feature_cache=cache.report(),
                final_losses=final,
                peak_device_memory_bytes=torch.cuda.max_memory_allocated(device)
                if device.type == "cuda"
                else None,
            )
            write_json(out / "summary.json", summary)
            mark_finished(out, "train", steps=cfg.steps)  # last: its presence marks the run finished
    if rank == 0 and progress:
        losses_txt = ", ".join(f"{k} {v:.4g}" for k, v in final.items())
        skipped = summary["skipped_steps"]["count"] + summary["mask_skipped_steps"]["count"]
        print(
            f"train: done at step {cfg.steps}: {losses_txt}; {skipped} step(s) without mask terms"
            + (f"; run folder {out}" if out is not None else ""),
            flush=True,
        )
    model.eval()
    return model, history


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


def prune_checkpoints(run_dir: Path, keep_last: int) -> list[Path]:
    """Delete all but the newest `keep_last` step checkpoints (`checkpoint.pt` is never touched)."""
    steps = sorted(
        (int(m.group(1)), p)
        for p in run_dir.glob("checkpoint_*.pt")
        if (m := STEP_CHECKPOINT.fullmatch(p.name))
    )
    doomed = [p for _, p in steps[:-keep_last]] if keep_last else []
    for p in doomed:
        p.unlink()
    return doomed


class FeatureCache:
    """Mask-head input tokens per clip start, kept in host memory up to `limit_mb`; beyond that, clips
    are recomputed (and the summary says so)."""

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
    """With mask terms alone only the mask logits matter, so the network runs up to the mask head and
    stops (no later blocks, no DPT heads). Single-process only: DDP syncs gradients in its own forward."""
    return not loss_cfg.geometry_enabled and model.aggregator.spatial_mask_head is not None and world == 1


def features_are_fixed(cfg: TrainConfig) -> bool:
    """The mask head's input cannot change when it is detached or everything before it is frozen:
    then it is computed once per clip and cached."""
    return cfg.detach_mask_input or cfg.freeze == "mask_head"


def _flat(images: torch.Tensor) -> torch.Tensor:
    """`[B, T, V, 3, H, W]` -> `[B, T*V, 3, H, W]` (time outer, view inner, as the model does)."""
    return images.reshape(images.shape[0], -1, *images.shape[3:])


def mask_logits_from_features(
    model: nn.Module, tokens: torch.Tensor, image_shape: torch.Size
) -> torch.Tensor:
    """Run only the mask head on cached tokens; returns `mask_logits` `[B, T, V, h, w]`."""
    b, t, v, _, h, w = image_shape
    p = model.cfg.patch_size
    out = model.aggregator.spatial_mask_head(tokens, model.cfg.patch_start_idx, h // p, w // p)
    return out.dynamic_logits.reshape(b, t, v, h // p, w // p)


_FINGERPRINT_CHUNK = 1 << 22
_K1, _K2 = 0x5851F42D4C957F2D, 0x14057B7EF767814F


def _tensor_fingerprint(t: torch.Tensor) -> torch.Tensor:
    """Two int64 sums over a tensor's bytes read as 32-bit words w_i, computed where the tensor lives:
    sum(w_i) and sum(w_i * c_i) with odd position-dependent c_i. Integer wrap-around makes them exact and
    order-independent (deterministic on any device); a single changed word always changes the second."""
    raw = t.detach().contiguous().reshape(-1).view(torch.uint8)
    if raw.numel() % 4:
        raw = torch.cat([raw, raw.new_zeros(4 - raw.numel() % 4)])
    words = raw.view(torch.int32)
    total = torch.zeros(2, dtype=torch.int64, device=t.device)
    for lo in range(0, words.numel(), _FINGERPRINT_CHUNK):
        w = words[lo : lo + _FINGERPRINT_CHUNK].to(torch.int64)
        idx = torch.arange(lo, lo + w.numel(), dtype=torch.int64, device=t.device)
        coef = (idx * _K1 + _K2) | 1
        total += torch.stack([w.sum(), (w * coef).sum()])
    return total


def weights_digest(model: nn.Module) -> str:
    """Digest of every state-dict tensor: equal digests mean bit-identical weights.

    Computed on the model's device (the weights are never copied to the host; one pair of integers per
    tensor is): SHA-256 over each tensor's name, dtype, shape and `_tensor_fingerprint`.
    """
    items = list(model.state_dict().items())
    prints = torch.stack([_tensor_fingerprint(t).cpu() for _, t in items]) if items else torch.zeros(0, 2)
    h = hashlib.sha256()
    for (name, t), fp in zip(items, prints.tolist(), strict=True):
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|{fp[0]}|{fp[1]}".encode())
    return h.hexdigest()


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's help ends with its default, unless the help already says what the default is."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.required or action.default is argparse.SUPPRESS:
            return text
        if isinstance(action, argparse._StoreTrueAction):
            return text + " (default: off)"
        return text + " (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    parser = argparse.ArgumentParser(
        prog="python -m page4d.train", description=__doc__, formatter_class=_HelpFormatter
    )
    run = parser.add_argument_group("run folder")
    run.add_argument("--scene", required=True, help="scene folder in the multi-view layout")
    run.add_argument("--out", required=True, help="run folder (never overwritten once it holds a run)")
    run.add_argument("--resume", action="store_true", help="continue the newest checkpoint in --out")
    run.add_argument(
        "--stop-after",
        type=int,
        default=None,
        help="stop after N steps of this call, resumably (default: run to --steps)",
    )
    run.add_argument(
        "--save-every", type=int, default=d.save_every, help="step checkpoint every N steps (0: none)"
    )
    run.add_argument(
        "--keep-last", type=int, default=d.keep_last, help="keep the newest K step checkpoints (0: all)"
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--image-size", type=int, nargs=2, default=(112, 154), metavar=("H", "W"), help="crop+resize"
    )
    data.add_argument(
        "--train-times",
        type=int,
        nargs="*",
        default=None,
        help="time ids to train on (default: all of the scene's)",
    )
    data.add_argument("--clip-times", type=int, default=d.clip_times, help="time steps per clip (all views)")
    what = parser.add_argument_group("what trains")
    what.add_argument("--preset", default=d.preset, help="model preset (tiny, page4d_fin10_1b, ...)")
    what.add_argument(
        "--checkpoint", default=None, help="initial weights (default: the preset's seeded init)"
    )
    what.add_argument(
        "--arm", default=d.arm, help="mask terms: none, bce, bce+boundary, bce+boundary+temporal"
    )
    what.add_argument("--no-geometry", action="store_true", help="drop the camera/depth/point losses")
    what.add_argument(
        "--trains",
        "--freeze",
        dest="trains",
        metavar="WHAT",
        default=d.freeze,
        choices=FREEZE_STRATEGIES,
        help=f"what trains (the rest is frozen): {', '.join(TRAINS)}; old names "
        + ", ".join(f"{k} = {v}" for k, v in FREEZE_ALIASES.items()),
    )
    what.add_argument(
        "--middle-blocks",
        type=int,
        nargs="+",
        default=None,
        help="blocks for mask_head+middle_blocks (default: the mask head's masked_global_blocks)",
    )
    what.add_argument("--no-detach", action="store_true", help="let the mask loss reach the backbone")
    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--steps", type=int, default=d.steps, help="optimiser steps (>= 1)")
    opt.add_argument("--lr", type=float, default=d.lr, help="peak AdamW learning rate")
    opt.add_argument("--min-lr", type=float, default=d.min_lr, help="learning rate at the end of the cosine")
    opt.add_argument(
        "--warmup-steps", type=int, default=None, help="linear warm-up steps (default: 5%% of --steps)"
    )
    opt.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW weight decay")
    opt.add_argument("--grad-clip", type=float, default=d.grad_clip, help="gradient-norm clip (0: off)")
    opt.add_argument("--seed", type=int, default=d.seed, help="seeds weights init, clip order, RNGs")
    hw = parser.add_argument_group("hardware")
    hw.add_argument(
        "--precision", default=d.precision, choices=PRECISIONS, help="autocast dtype; heads stay fp32"
    )
    hw.add_argument("--device", default=d.device, help="auto, cpu, cuda (cuda:LOCAL_RANK under torchrun)")
    hw.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    hw.add_argument("--gradient-checkpointing", action="store_true", help="recompute aggregator blocks")
    hw.add_argument(
        "--feature-cache-mb", type=float, default=d.feature_cache_mb, help="mask-only cache limit"
    )
    hw.add_argument("--log-every", type=int, default=d.log_every, help="progress-bar loss every N steps")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.trains in FREEZE_ALIASES:
        print(f"train: --freeze {args.trains} is the old name of --trains {FREEZE_ALIASES[args.trains]}")
    try:
        cfg = TrainConfig(
            preset=args.preset,
            arm=args.arm,
            steps=args.steps,
            lr=args.lr,
            min_lr=args.min_lr,
            warmup_steps=args.warmup_steps,
            weight_decay=args.weight_decay,
            grad_clip=args.grad_clip,
            freeze=args.trains,
            middle_blocks=tuple(args.middle_blocks) if args.middle_blocks else None,
            clip_times=args.clip_times,
            seed=args.seed,
            checkpoint=args.checkpoint,
            detach_mask_input=not args.no_detach,
            precision=args.precision,
            threads=args.threads,
            device=args.device,
            gradient_checkpointing=args.gradient_checkpointing,
            log_every=args.log_every,
            save_every=args.save_every,
            keep_last=args.keep_last,
            feature_cache_mb=args.feature_cache_mb,
            loss_overrides={"use_camera": False, "use_depth": False, "use_point": False}
            if args.no_geometry
            else {},
        )
        claim_run_folder(args.out, resume=args.resume)  # before loading anything
    except (ValueError, RunFolderTaken) as err:
        raise SystemExit(f"page4d.train: {err}") from None
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        device = resolve_device(cfg.device)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        scene = load_scene(args.scene, image_size=tuple(args.image_size))
        train(
            cfg,
            scene,
            train_times=args.train_times,
            output_dir=args.out,
            resume=args.resume,
            stop_after=args.stop_after,
        )
    finally:
        if world > 1:
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
