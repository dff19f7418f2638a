"""With vs without mask supervision: train each arm for each seed, evaluate on held-out frames.

Every arm starts from the same weights for a given seed (the preset's random initialisation, or a
checkpoint) and trains with `LossConfig.for_arm(arm)`; geometry terms are shared by all arms when
`geometry=True`. Evaluation uses frames no arm trained on: by default the last `holdout` time steps of
the training scene, or every time step of another scene (`eval_root`).

    params = AblationParams(train_root="...", arms=("none", "bce"), seeds=(0, 1), steps=100)
    metrics = run_ablation(params)      # also written to <output_dir>/metrics.json
    print(runs.format_table(summary_rows(metrics)))
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from page4d.data import SyntheticSceneConfig, generate_synthetic_scene, load_scene
from page4d.evaluate import evaluate
from page4d.losses import ARM_NAMES, LossConfig
from page4d.runs import write_json
from page4d.train import TrainConfig, build_training_model, train

METRIC_KEYS = (
    "mask_iou",
    "mask_f",
    "mask_jf",
    "depth_abs_rel",
    "depth_delta1",
    "ate",
    "rpe_trans",
    "rpe_rot",
)
NO_DETACH_SUFFIX = "+backbone"  # extra arm: the mask loss also reaches the backbone (no detach)


@dataclass
class AblationParams:
    train_root: str = ""  # empty = generate a synthetic scene into <output_dir>/synthetic_scene
    eval_root: str = ""  # empty = the training scene, its last `holdout` time steps held out
    train_times: list[int] | None = None
    eval_times: list[int] | None = None
    holdout: int = 4
    arms: tuple[str, ...] = ("none", "bce", "bce+boundary", "bce+boundary+temporal")
    seeds: tuple[int, ...] = (0, 1)
    steps: int = 300
    preset: str = "tiny"
    image_size: tuple[int, int] = (112, 154)
    checkpoint: str = ""
    freeze: str = "mask_head_only"
    geometry: bool = True
    clip_times: int = 2
    lr: float = 5e-3
    output_dir: str = ""
    synthetic_seed: int = 0


def arm_config(arm: str) -> tuple[str, bool]:
    """(loss arm, detach) for an arm name; `<arm>+backbone` = the same losses without the detach."""
    base, detach = (arm[: -len(NO_DETACH_SUFFIX)], False) if arm.endswith(NO_DETACH_SUFFIX) else (arm, True)
    if base not in ARM_NAMES:
        raise ValueError(f"unknown arm {arm!r}; valid: {list(ARM_NAMES)} (each optionally +backbone)")
    return base, detach


def split_times(
    params: AblationParams, train_times_all: list[int], eval_scene_is_train: bool, eval_times_all: list[int]
) -> tuple[list[int], list[int]]:
    """Default split: hold out the last `holdout` steps when evaluating on the training scene."""
    if eval_scene_is_train:
        held = params.eval_times or train_times_all[-params.holdout :]
        train_times = params.train_times or [t for t in train_times_all if t not in held]
        overlap = sorted(set(train_times) & set(held))
        if overlap:
            raise ValueError(f"train_times and eval_times overlap at {overlap}: evaluation must be held out")
        return list(train_times), list(held)
    return list(params.train_times or train_times_all), list(params.eval_times or eval_times_all)


def mean_ci95(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of a t-distribution 95% interval over seeds (NaN half-width for n < 2)."""
    arr = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if arr.size == 0:
        return float("nan"), float("nan")
    if arr.size < 2:
        return float(arr.mean()), float("nan")
    half = stats.t.ppf(0.975, arr.size - 1) * arr.std(ddof=1) / math.sqrt(arr.size)
    return float(arr.mean()), float(half)


def summarize_arm(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in METRIC_KEYS:
        mean, half = mean_ci95([r[key] for r in per_seed])
        out[key] = mean
        out[f"{key}_ci95"] = half
    return out


def run_ablation(params: AblationParams, progress: bool = True) -> dict[str, Any]:
    """Train/evaluate every (arm, seed); writes and returns the metrics.json structure."""
    out_dir = Path(params.output_dir) if params.output_dir else None
    if out_dir is None:
        raise ValueError("AblationParams.output_dir is required (the run folder)")
    out_dir.mkdir(parents=True, exist_ok=True)
    train_root = params.train_root
    if not train_root:
        train_root = str(
            generate_synthetic_scene(
                out_dir / "synthetic_scene", SyntheticSceneConfig(seed=params.synthetic_seed)
            )
        )
    size = tuple(params.image_size)
    train_scene = load_scene(train_root, image_size=size)
    same = not params.eval_root or Path(params.eval_root).resolve() == Path(train_root).resolve()
    eval_scene = train_scene if same else load_scene(params.eval_root, image_size=size)
    train_times, eval_times = split_times(params, train_scene.times, same, eval_scene.times)
    arms = {}
    for arm in params.arms:
        loss_arm, detach = arm_config(arm)
        per_seed = []
        for seed in params.seeds:
            cfg = TrainConfig(
                preset=params.preset,
                arm=loss_arm,
                steps=params.steps,
                freeze=params.freeze,
                seed=seed,
                checkpoint=params.checkpoint or None,
                detach_mask_input=detach,
                clip_times=params.clip_times,
                lr=params.lr,
                loss_overrides={}
                if params.geometry
                else {"use_camera": False, "use_depth": False, "use_point": False},
            )
            t0 = time.perf_counter()
            model = build_training_model(cfg)
            trained_steps = 0
            if has_any_term(cfg.loss_config(), train_scene.masks is not None):
                model, _ = train(
                    cfg,
                    train_scene,
                    train_times=train_times,
                    output_dir=out_dir / "train" / f"{safe(arm)}_seed{seed}",
                    model=model,
                    progress=progress,
                )
                trained_steps = params.steps
            result = evaluate(model, eval_scene, times=eval_times, clip_times=max(params.clip_times, 2))
            result.update(seed=seed, trained_steps=trained_steps, train_seconds=time.perf_counter() - t0)
            per_seed.append(result)
        arms[arm] = {**summarize_arm(per_seed), "per_seed": per_seed}
    metrics = {
        "arms": arms,
        "params": {
            **dataclasses.asdict(params),
            "train_root": str(train_root),
            "train_times_used": train_times,
            "eval_times_used": eval_times,
        },
    }
    write_json(out_dir / "metrics.json", metrics)
    return metrics


def has_any_term(loss_cfg: LossConfig, has_masks: bool) -> bool:
    """False when an arm has nothing to learn from (e.g. `none` with geometry off): it is evaluated as is."""
    mask = loss_cfg.use_seganymo_mask and bool(loss_cfg.mask_terms_enabled) and has_masks
    return loss_cfg.geometry_enabled or mask


def safe(name: str) -> str:
    return name.replace("+", "_")


def summary_rows(metrics: dict[str, Any], digits: int = 3) -> list[dict[str, Any]]:
    """One row per arm: mean (+-95% CI half-width) of each metric, rounded for display."""
    rows = []
    for arm, m in metrics["arms"].items():
        row: dict[str, Any] = {"arm": arm}
        for key in METRIC_KEYS:
            mean, half = m[key], m[f"{key}_ci95"]
            row[key] = f"{mean:.{digits}f}" + ("" if math.isnan(half) else f" ±{half:.{digits}f}")
        rows.append(row)
    return rows


def ablation_figure(
    metrics: dict[str, Any], keys: tuple[str, ...] = ("mask_iou", "mask_jf", "depth_abs_rel", "ate")
):
    """Bar chart per metric: arm means with 95% CI error bars (over seeds) and the per-seed points."""
    from matplotlib.figure import Figure

    arms = list(metrics["arms"])
    fig = Figure(figsize=(3.2 * len(keys), 3.2), dpi=100)
    axes = fig.subplots(1, len(keys))
    for ax, key in zip(np.atleast_1d(axes), keys, strict=True):
        means = [metrics["arms"][a][key] for a in arms]
        halves = [metrics["arms"][a][f"{key}_ci95"] for a in arms]
        errs = [0.0 if math.isnan(h) else h for h in halves]
        ax.bar(range(len(arms)), means, yerr=errs, capsize=4, color="#4c72b0", alpha=0.8)
        for i, a in enumerate(arms):
            ys = [r[key] for r in metrics["arms"][a]["per_seed"]]
            ax.plot([i] * len(ys), ys, "k.", ms=5)
        ax.set_xticks(range(len(arms)), [a.replace("+", "+\n") for a in arms], fontsize=7)
        ax.set_title(key)
    fig.tight_layout()
    return fig


def per_view_rows(metrics: dict[str, Any], digits: int = 3) -> list[dict[str, Any]]:
    """Held-out mask IoU per view, averaged over seeds, one row per arm."""
    rows = []
    for arm, m in metrics["arms"].items():
        views = sorted({int(v) for r in m["per_seed"] for v in r["mask_iou_per_view"]})
        row: dict[str, Any] = {"arm": arm}
        for v in views:
            vals = [r["mask_iou_per_view"].get(v, r["mask_iou_per_view"].get(str(v))) for r in m["per_seed"]]
            row[f"view{v}"] = f"{float(np.mean(vals)):.{digits}f}"
        rows.append(row)
    return rows


def loss_curve_figure(run_dir: str | Path):
    """Training loss per step of every (arm, seed) run under `<run_dir>/train/`."""
    import json

    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.2), dpi=100)
    ax = fig.subplots()
    for hist in sorted(Path(run_dir, "train").glob("*/history.json")):
        steps = json.loads(hist.read_text())
        ax.plot([s["step"] for s in steps], [s["loss"] for s in steps], label=hist.parent.name, lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    if ax.lines:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
