"""The training loop: `train` sets a run up, takes one step per clip drawn, and finishes it.

Read `train` first; every other function here is one part of it: `start` (everything before the first
step, in the order that keeps runs reproducible), `train_step` (one clip: skip it or update the
weights, and return the step's history record) and `finish` (checkpoint.pt, summary.json, DONE.json).

Shapes: a clip's batch (`page4d.data.scene_to_batch`) holds images `[B=1, T, V, 3, H, W]`, extrinsics
`[B, T, V, 3, 4]`, intrinsics `[B, T, V, 3, 3]`, depths and masks `[B, T, V, H, W]`, mask_valid
`[B, T, V]`; the model's predictions and the losses are those of `page4d.losses.compute_total_loss`.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from page4d.data import Scene, scene_to_batch
from page4d.determinism import set_determinism
from page4d.devices import autocast
from page4d.losses import loss_dict_to_floats
from page4d.records import claim_run_folder, mark_finished, remove_stale_temp_files, write_json
from page4d.train.checkpoint import latest_checkpoint, restore, save_checkpoint
from page4d.train.clips import ClipOrder, training_clips
from page4d.train.config import TrainConfig
from page4d.train.digest import weights_digest
from page4d.train.distributed import (
    barrier,
    every_rank,
    gather,
    rank_and_world,
    resolve_device,
    use_device,
    wrap_for_ddp,
)
from page4d.train.fast_path import FeatureCache, features_are_fixed, mask_only_losses, mask_only_objective
from page4d.train.forward import apply_mask_bias, clip_losses
from page4d.train.interrupts import Stopped, StopRequests, launcher_pid
from page4d.train.schedule import lr_at
from page4d.train.state import TrainRun
from page4d.train.summary import end_line, run_summary, start_line, summarize_history
from page4d.train.trainables import TrainedTensors, build_training_model, set_trainable


def train(
    cfg: TrainConfig,
    scene: Scene | Sequence[Scene],
    train_times: list[int] | None = None,
    output_dir: str | Path | None = None,
    model: nn.Module | None = None,
    progress: bool = True,
    resume: bool = False,
    stop_after: int | None = None,
    input_record: dict[str, Any] | None = None,
) -> tuple[nn.Module, list[dict[str, Any]]]:
    """Train on clips of `cfg.clip_times` consecutive time steps (all views) drawn from `train_times`.

    `scene` may be a sequence of scenes (a pretraining pool, see `page4d.experiments.pretrain`): the
    clips of every scene (all of its time steps; `train_times` must then be None) form one list that the
    seeded clip order draws from, and each history record names its `scene` index.

    Returns the (unwrapped) model and the per-step history (one record per step: every loss term, the
    learning rate, the clip, whether the weights were updated and, if not, why). Into `output_dir`
    (rank 0; atomic writes): `config.json` (with `input_record`, what the caller says about the data,
    under "input"); `checkpoint_<step>.pt` every `save_every` steps, when the run is stopped (Ctrl-C,
    SIGTERM, a dead torchrun launcher: `interrupts`) and at `stop_after`; at the end `checkpoint.pt`,
    `history.json`, `summary.json` and the finish marker `DONE.json` (`page4d.records.mark_finished`).
    `resume=True` continues the newest checkpoint in `output_dir`; `stop_after=N` stops after N steps
    of this call, leaving a resumable, unfinished run. A step whose clip has no mask GT trains without
    the mask terms (with geometry on), or is skipped (mask terms only); the run fails only when no step
    trained at all.
    """
    run = start(cfg, scene, train_times, output_dir, model, resume, progress)
    run.input_record = input_record
    say = progress and run.rank == 0
    if run.first_step == cfg.steps:  # resumed a finished run: nothing to do
        if say:
            print(f"train: {run.out} already finished at step {cfg.steps}; pass a larger --steps to continue")
        return run.model.eval(), run.history
    if run.out is not None and run.rank == 0:
        run.out.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(run.out)
        config = dataclasses.asdict(cfg)
        write_json(
            run.out / "config.json", config if input_record is None else {**config, "input": input_record}
        )
    if say:
        print(start_line(run), flush=True)

    last = cfg.steps if stop_after is None else min(cfg.steps, run.first_step + stop_after)
    steps = range(run.first_step, last)
    bar = tqdm(steps, desc=f"train[{cfg.arm}]", disable=not say, initial=run.first_step, total=cfg.steps)
    # a resumed run's clock goes on from its last step's: history and summary time the whole run
    run.t0 = time.perf_counter() - (run.history[-1].get("seconds", 0.0) if run.history else 0.0)
    run.stop.install()  # SIGTERM stops at the next step boundary, like Ctrl-C (`interrupts`)
    try:
        take_steps(run, bar)
    except KeyboardInterrupt as stop:  # Ctrl-C, SIGTERM or a dead torchrun launcher: save, then stop
        save_interrupted(run, stop)
        raise
    finally:
        run.stop.restore()
    bar.close()

    if last < cfg.steps:  # stopped by stop_after: leave a resumable, unfinished run
        if run.out is not None and last > run.first_step:
            save_checkpoint(run, last)
    else:
        finish(run, say)
    return run.model.eval(), run.history


def take_steps(run: TrainRun, bar: Any) -> None:
    """One step per position of `bar` (this call's steps), with step checkpoints when they are due. Every
    rank checks before each step whether the run was asked to stop (`StopRequests.check`)."""
    cfg = run.cfg
    order = ClipOrder(len(run.clips), cfg.seed, run.rank, run.world, stream=cfg.clip_order == "stream")
    for step in bar:
        run.stop.check(run.device, run.world)
        record = train_step(run, step, order.clip(step))
        run.history.append(record)
        if record["updated"] and step % cfg.log_every == 0:
            bar.set_postfix(loss=f"{record['loss']:.4f}")
        if checkpoint_due(run, step + 1):
            save_checkpoint(run, step + 1)


def save_interrupted(run: TrainRun, stop: KeyboardInterrupt) -> None:
    """A checkpoint at the last step the history lists (with any `save_every`, 0 included), and one line
    saying why the run stopped and how to continue it. Every rank must call it (saving gathers)."""
    done = run.history[-1]["step"] + 1 if run.history else run.first_step
    why = stop.reason if isinstance(stop, Stopped) else "interrupted"
    saved = run.out is not None and done > run.first_step
    if saved:
        save_checkpoint(run, done)
    if run.rank == 0 and run.out is not None:
        what = (
            f"checkpoint_{done}.pt saved; continue with --resume" if saved else "no step of this call to save"
        )
        print(f"\ntrain: {why} after step {done}; {what}", file=sys.stderr, flush=True)


def start(
    cfg: TrainConfig,
    scene: Scene | Sequence[Scene],
    train_times: list[int] | None,
    output_dir: str | Path | None,
    model: nn.Module | None,
    resume: bool,
    progress: bool,
) -> TrainRun:
    """Everything before the first step, in the order that keeps runs reproducible: claim the run
    folder, seed, list the clips, build the model (its init draws from the seeded RNG), choose what
    trains, move to the device (DDP broadcasts rank 0's weights), build the optimiser, and only then
    restore a checkpoint (weights, optimiser, RNG states, history)."""
    rank, world = rank_and_world()
    out = Path(output_dir) if output_dir is not None else None
    if out is not None:
        claim_run_folder(out, resume=resume)  # every rank checks before rank 0 writes anything
        barrier(world)
    set_determinism(cfg.seed, cfg.threads, cfg.deterministic)
    scenes = [scene] if isinstance(scene, Scene) else list(scene)
    loss_cfg = cfg.loss_config()
    clips = training_clips(scenes, train_times, cfg.clip_times, loss_cfg)
    model = build_training_model(cfg) if model is None else model
    trainable = set_trainable(model, cfg.trains, cfg.middle_blocks)
    apply_mask_bias(model, cfg.mask_bias)
    device = resolve_device(cfg.device)
    use_device(device)
    model.to(device)
    model.aggregator.gradient_checkpointing = cfg.gradient_checkpointing
    model.train()
    net = wrap_for_ddp(model, device, world)
    params = [p for p in model.parameters() if p.requires_grad]
    mask_only = mask_only_objective(loss_cfg, model, world)
    run = TrainRun(
        cfg=cfg,
        loss_cfg=loss_cfg,
        scenes=scenes,
        clips=clips,
        model=model,
        net=net,
        trainable=trainable,
        params=params,
        optimizer=torch.optim.AdamW(params, lr=lr_at(0, cfg), weight_decay=cfg.weight_decay),
        scaler=torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16"),
        trained=TrainedTensors(model),
        device=device,
        rank=rank,
        world=world,
        out=out,
        mask_only=mask_only,
        cache=FeatureCache(cfg.feature_cache_mb if mask_only and features_are_fixed(cfg) else 0.0),
        stop=StopRequests(launcher_pid()),
    )
    checkpoint = latest_checkpoint(out) if resume and out is not None else None
    if checkpoint is not None:
        restore(run, checkpoint)
    elif resume and out is not None and rank == 0 and progress:
        print(f"train: no checkpoint in {out} to resume from; starting at step 0")
    return run


def train_step(run: TrainRun, step: int, index: int) -> dict[str, Any]:
    """One optimiser step on clip `index`, or a skip that says why; returns the step's history record."""
    scene_index, clip = run.clips[index]
    batch = scene_to_batch(run.scenes[scene_index], times=clip, world_frame="first_camera").to(run.device)
    record: dict[str, Any] = {"step": step, "clip_start": clip[0], "lr": lr_at(step, run.cfg)}
    if len(run.scenes) > 1:
        record["scene"] = scene_index
    skip = skip_reason(run, batch)
    losses = None if skip else compute_losses(run, batch, index)
    if losses is not None and losses["loss"] is None:  # e.g. a GT frame the enabled mask terms cannot use
        skip = f"every loss term skipped: {losses.get('mask_skip_reason')}"
    if skip:
        record.update(skip_reason=skip, updated=False)
    else:
        update_weights(run, losses["loss"], record["lr"])
        floats = loss_dict_to_floats(losses)
        record.update({k: v for k, v in floats.items() if isinstance(v, float | bool | str | None)})
        record.update({k: losses[k] for k in ("camera_rot_deg", "camera_dir_deg") if k in losses})
        record["updated"] = True
    record["seconds"] = time.perf_counter() - run.t0
    return record


def skip_reason(run: TrainRun, batch: Any) -> str | None:
    """Why this step cannot train (None: it can). A geometry term trains on every clip; with mask terms
    only, a clip without mask GT has no loss. Under DDP a step trains on every rank or on none (the
    gradient average is a collective)."""
    has_gt = batch.masks is not None and bool(batch.mask_valid.any())
    mine = run.loss_cfg.geometry_enabled or (run.mask_terms and has_gt)
    if every_rank(mine, run.device, run.world):
        return None
    if mine:
        return "another rank's clip has no mask GT (mask terms only)"
    return "no mask GT in this clip and no geometry term"


def compute_losses(run: TrainRun, batch: Any, index: int) -> dict[str, Any]:
    """Every loss term of the clip (`loss` is their weighted sum, or None when every term skipped); the
    network runs under autocast for bf16 / fp16, the losses in float32."""
    context = autocast(run.device, run.cfg.precision)
    if run.mask_only:
        return mask_only_losses(run.model, batch, index, run.cache, run.loss_cfg, context)
    return clip_losses(run, batch, context)


def update_weights(run: TrainRun, loss: torch.Tensor, lr: float) -> None:
    """Backward (scaled for fp16), note which tensors got gradients, clip, and step the optimiser."""
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    run.trained.update()
    if run.cfg.grad_clip:
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(run.params, run.cfg.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()


def checkpoint_due(run: TrainRun, done: int) -> bool:
    """A step checkpoint every `save_every` steps (the last step writes checkpoint.pt instead)."""
    return (
        run.out is not None
        and run.cfg.save_every > 0
        and done % run.cfg.save_every == 0
        and done < run.cfg.steps
    )


def finish(run: TrainRun, say: bool) -> None:
    """After the last step: fail if no step trained; else write checkpoint.pt, summary.json and, last,
    the finish marker DONE.json (its presence marks the run finished)."""
    summary = summarize_history(run.history)
    digests = gather(weights_digest(run.model), run.world)  # every rank's: a divergence is visible
    if summary["updated_steps"] == 0:
        if run.out is not None and run.rank == 0:
            write_json(run.out / "history.json", run.history)
        raise RuntimeError(f"trained nothing: every step was skipped ({summary['skipped_steps']['reasons']})")
    if run.out is not None:
        save_checkpoint(run, run.cfg.steps, run.out / "checkpoint.pt")
        if run.rank == 0:
            summary.update(run_summary(run, digests))
            write_json(run.out / "summary.json", summary)
            mark_finished(run.out, "train", steps=run.cfg.steps)
    if say:
        print(end_line(run, summary), flush=True)
