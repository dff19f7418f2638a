"""Trainer for VGGT / PAGE-4D on multi-view RGB-D scenes with optional SegAnyMo mask supervision.

Seeded and deterministic on CPU; tqdm progress; freeze strategies; checkpoints and a JSON history in an
output folder. Runs on one process, or under `torchrun` with DistributedDataParallel (gloo on CPU, nccl
on GPUs): each rank draws its own clips, gradients are averaged, so every rank holds the same weights.

    python -m page4d.train --scene DIR --out outputs/run1 --arm bce --steps 200
    torchrun --nproc_per_node 2 -m page4d.train --scene DIR --out outputs/ddp --steps 50
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from page4d.data import Scene, load_scene, scene_to_batch
from page4d.evaluate import evaluate
from page4d.losses import LossConfig, compute_mask_supervision_loss, compute_total_loss, loss_dict_to_floats
from page4d.model import MASK_HEAD_PREFIX, build_model, load_checkpoint, preset

__all__ = ["TrainConfig", "train", "evaluate", "build_training_model", "apply_freeze", "FREEZE_STRATEGIES"]

Freeze = Literal["mask_head_only", "middle_blocks", "all"]
FREEZE_STRATEGIES = ("mask_head_only", "middle_blocks", "all")


@dataclass
class TrainConfig:
    """Everything a training run depends on (written to `config.json` in the run folder)."""

    preset: str = "tiny"
    arm: str = "bce"
    steps: int = 200
    lr: float = 2e-3
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    freeze: Freeze = "all"
    clip_times: int = 4  # consecutive time steps per training clip (all views)
    seed: int = 0
    checkpoint: str | None = None  # initial weights (raw state dict or {"model": ...})
    detach_mask_input: bool = True  # False lets mask supervision reach the backbone
    threads: int | None = None
    device: str = "auto"  # "auto" = cuda when available, else cpu
    gradient_checkpointing: bool = False  # recompute aggregator blocks in backward (full presets)
    deterministic: bool = True
    log_every: int = 10
    save_every: int = 0  # 0 = only the final checkpoint
    loss_overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.freeze not in FREEZE_STRATEGIES:
            raise ValueError(f"freeze must be one of {FREEZE_STRATEGIES}, got {self.freeze!r}")
        if self.steps < 0 or self.clip_times < 1:
            raise ValueError(f"steps must be >= 0 and clip_times >= 1, got {self.steps}, {self.clip_times}")

    def loss_config(self) -> LossConfig:
        return LossConfig.for_arm(self.arm, **self.loss_overrides)


def set_determinism(seed: int, threads: int | None = None, deterministic: bool = True) -> None:
    """Seeds + deterministic kernels + a fixed thread count give identical runs on CPU."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)
    if torch.cuda.is_available():
        # cuBLAS needs a fixed workspace to be deterministic; a few CUDA kernels (e.g. upsampling
        # backward) have no deterministic version, so CUDA runs warn instead of failing.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=torch.cuda.is_available())


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_training_model(cfg: TrainConfig) -> nn.Module:
    model_cfg = preset(cfg.preset)
    if model_cfg.mask_head is not None:
        model_cfg = model_cfg.replace(
            mask_head=dataclasses.replace(model_cfg.mask_head, detach_input=cfg.detach_mask_input)
        )
    model_cfg = model_cfg.replace(track_head=None)  # tracks are not trained here
    model = build_model(model_cfg)
    if cfg.checkpoint:
        report = load_checkpoint(model, cfg.checkpoint, allow_missing_mask_head=True)
        if not report.ok:
            print(report.summary())
    return model


def middle_block_range(depth: int) -> range:
    """PAGE-4D fine-tunes frame/global blocks 10..19 of 24; the same fraction of a shallower model."""
    return range(round(depth * 10 / 24), round(depth * 20 / 24))


def apply_freeze(model: nn.Module, strategy: Freeze) -> list[str]:
    """Set requires_grad by strategy; returns the names of the trainable parameters."""
    depth = model.cfg.depth
    middle = middle_block_range(depth)

    def trainable(name: str) -> bool:
        if strategy == "all":
            return True
        if name.startswith(MASK_HEAD_PREFIX):
            return True
        if strategy == "middle_blocks":
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
        raise ValueError(f"freeze strategy {strategy!r} leaves nothing to train (no mask head?)")
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


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def train(
    cfg: TrainConfig,
    scene: Scene,
    train_times: list[int] | None = None,
    output_dir: str | Path | None = None,
    model: nn.Module | None = None,
    progress: bool = True,
) -> tuple[nn.Module, list[dict[str, Any]]]:
    """Train on clips of `cfg.clip_times` consecutive time steps (all views) drawn from `train_times`.

    Returns the (unwrapped) model and the per-step history. Writes `config.json`, `history.json` and
    `checkpoint.pt` (`{"model": state_dict, "step": n, "config": ...}`) into `output_dir` (rank 0).
    """
    rank, world = _dist_info()
    set_determinism(cfg.seed, cfg.threads, cfg.deterministic)
    times = list(scene.times if train_times is None else train_times)
    missing = [t for t in times if t not in scene.times]
    if missing:
        raise ValueError(f"train_times {missing} are not in the scene (has {scene.times})")
    loss_cfg = cfg.loss_config()
    if model is None:
        model = build_training_model(cfg)
    trainable = apply_freeze(model, cfg.freeze)
    device = resolve_device(cfg.device)
    model.to(device)
    model.aggregator.gradient_checkpointing = cfg.gradient_checkpointing
    model.train()
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = max(1, cfg.steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, cfg.steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(optim, lr_at)
    starts = clip_starts(len(times), cfg.clip_times)
    rng = random.Random(cfg.seed * 1000 + rank)
    out = Path(output_dir) if output_dir is not None else None
    if out is not None and rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
    history: list[dict[str, Any]] = []
    mask_only = mask_only_objective(loss_cfg, model, world)
    cache_features = mask_only and features_are_fixed(cfg)
    feature_cache: dict[int, torch.Tensor] = {}
    bar = tqdm(range(cfg.steps), desc=f"train[{cfg.arm}]", disable=not progress or rank != 0)
    t0 = time.perf_counter()
    for step in bar:
        start = rng.choice(starts)
        batch = scene_to_batch(scene, times=times[start : start + cfg.clip_times], world_frame="first_camera")
        batch = batch.to(device)
        if mask_only:
            if not cache_features:
                tokens = model.aggregator(_flat(batch.images), stop_at_mask_head=True)
            elif start in feature_cache:
                tokens = feature_cache[start]
            else:
                with torch.no_grad():
                    tokens = feature_cache[start] = model.aggregator(
                        _flat(batch.images), stop_at_mask_head=True
                    )
            mask = compute_mask_supervision_loss(
                {"mask_logits": mask_logits_from_features(model, tokens, batch.images.shape)},
                batch.masks,
                loss_cfg,
                batch.mask_valid,
                depths=batch.depths,
                intrinsics=batch.intrinsics,
                extrinsics=batch.extrinsics,
            )
            losses = {**mask.as_dict(), "loss": mask.loss}
        else:
            preds = net(batch.images)
            losses = compute_total_loss(preds, batch_targets(batch), loss_cfg)
        if losses["loss"] is None:
            raise RuntimeError("every loss term was skipped: nothing to train on (check LossConfig and GT)")
        optim.zero_grad(set_to_none=True)
        losses["loss"].backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optim.step()
        sched.step()
        record = {k: v for k, v in loss_dict_to_floats(losses).items() if isinstance(v, float | bool | None)}
        record.update(
            step=step, lr=sched.get_last_lr()[0], clip_start=times[start], seconds=time.perf_counter() - t0
        )
        history.append(record)
        if step % cfg.log_every == 0:
            bar.set_postfix(loss=f"{record['loss']:.4f}")
        if out is not None and rank == 0 and cfg.save_every and (step + 1) % cfg.save_every == 0:
            save_checkpoint(model, out / f"checkpoint_{step + 1}.pt", step + 1, cfg, trainable)
    digests = [weights_digest(model)]
    if world > 1:
        # every rank must end with the same weights; record all of them so a divergence is visible
        digests = [None] * world
        dist.all_gather_object(digests, weights_digest(model))
    if out is not None and rank == 0:
        save_checkpoint(model, out / "checkpoint.pt", cfg.steps, cfg, trainable)
        (out / "history.json").write_text(json.dumps(history, indent=1))
        summary = {
            "steps": cfg.steps,
            "world_size": world,
            "rank_weight_digests": digests,
            "seconds": time.perf_counter() - t0,
            "trainable_parameters": len(trainable),
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
    model.eval()
    return model, history


def mask_only_objective(loss_cfg: LossConfig, model: nn.Module, world: int = 1) -> bool:
    """With mask terms alone only the mask logits matter, so the network runs up to the mask head and
    stops (no later blocks, no DPT heads). Single-process only: DDP syncs gradients in its own forward."""
    return not loss_cfg.geometry_enabled and model.aggregator.spatial_mask_head is not None and world == 1


def features_are_fixed(cfg: TrainConfig) -> bool:
    """The mask head's input cannot change when it is detached or everything before it is frozen:
    then it is computed once per clip and cached."""
    return cfg.detach_mask_input or cfg.freeze == "mask_head_only"


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


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of every state-dict tensor's bytes: equal digests mean bit-identical weights."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(model: nn.Module, path: Path, step: int, cfg: TrainConfig, trainable: list[str]) -> None:
    torch.save(
        {
            "model": model.state_dict(),
            "step": step,
            "config": dataclasses.asdict(cfg),
            "trainable": trainable,
        },
        path,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scene", required=True, help="scene folder in the multi-view layout")
    parser.add_argument("--out", required=True, help="output folder (config, history, checkpoint)")
    parser.add_argument("--image-size", type=int, nargs=2, default=(112, 154), metavar=("H", "W"))
    parser.add_argument("--train-times", type=int, nargs="*", default=None)
    d = TrainConfig()
    parser.add_argument("--preset", default=d.preset)
    parser.add_argument("--arm", default=d.arm, help="none, bce, bce+boundary, bce+boundary+temporal")
    parser.add_argument("--steps", type=int, default=d.steps)
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--freeze", default=d.freeze, choices=FREEZE_STRATEGIES)
    parser.add_argument("--clip-times", type=int, default=d.clip_times)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--no-detach", action="store_true", help="let the mask loss reach the backbone")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default=d.device)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--save-every", type=int, default=d.save_every)
    args = parser.parse_args(argv)
    cfg = TrainConfig(
        preset=args.preset,
        arm=args.arm,
        steps=args.steps,
        lr=args.lr,
        freeze=args.freeze,
        clip_times=args.clip_times,
        seed=args.seed,
        checkpoint=args.checkpoint,
        detach_mask_input=not args.no_detach,
        threads=args.threads,
        save_every=args.save_every,
        device=args.device,
        gradient_checkpointing=args.gradient_checkpointing,
    )
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    try:
        scene = load_scene(args.scene, image_size=tuple(args.image_size))
        train(cfg, scene, train_times=args.train_times, output_dir=args.out)
    finally:
        if world > 1:
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
