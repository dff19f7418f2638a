"""With vs without mask supervision: paired arms, trained the same way minus the one thing tested.

For a given seed every arm starts from bit-identical weights (the model is built right after seeding
torch with that seed, or loaded from `checkpoint`) and trains on the same clip order (the trainer draws
clips from the seed alone); `init_digest` in metrics.json records the starting weights of every
(arm, seed), so the pairing can be checked. Arms:

- ``untrained``: the starting model, evaluated as is (the floor any training must beat).
- ``attention``: no training either: the starting model's (the checkpoint's) global attention read as
  VGGT4D's training-free motion cues (`page4d.inference.motion_cues`) instead of its mask head, scored by the
  same code. Like ``untrained`` it is not a variant of the training: it is paired only with an
  ``untrained`` baseline (same network, other read-out), never with a trained ``none``.
- ``none``: the same training as every other arm minus the mask terms. With ``geometry=True`` this
  is PAGE-4D's own recipe (the head learns only through its attention bias); with geometry off there
  is nothing to train, so ``none`` is reported as ``untrained`` (never as a trained "without" arm).
- ``bce``, ``bce+boundary``, ``bce+boundary+temporal``: mask terms (``LossConfig.for_arm``), with
  the geometry terms when ``geometry=True``; ``<arm>+backbone`` lets the mask loss reach the backbone.
- ``bce_noisy``: ``bce`` trained on SegAnyMo-like pseudo labels (`dynamic_pool.PoolRecipe.mask_noise`)
  instead of exact masks (pool mode only); it is still scored against the exact masks.
- ``no_mask``: ``none`` with the attention bias off (`TrainConfig.mask_bias="off"`): the same blocks
  fine-tuned as plain VGGT, the control PAGE-4D compares against.
- ``attention_forcing``: ``none`` plus MoRe's loss on the camera/register tokens' attention to
  GT-dynamic patches (`LossConfig.use_attention_forcing`).
- ``oracle``: the GT masks drive the attention bias in training and evaluation (`mask_bias="gt"`, no
  head): the most a perfect mask could do through this network's bias. Its masks are the GT, so it has
  no mask scores. The tiny preset's head (MV_PAGE4D's fin10) bounds that bias: at most
  ``0.693 * 0.5 = 0.35`` off a dynamic key's logit (its attention weight x 0.7), a nudge.
- ``oracle_hard``: the oracle with the bias as strong as PAGE-4D's released head can make it (``-32``
  on a fully dynamic key: the camera/register tokens then ignore the movers): whether cameras and
  depth improve at all when the camera tokens stop looking at movers.
- ``oracle_hard_all``: ``oracle_hard`` applied to every query row of the masked global blocks (patch
  tokens too), not only the camera/register rows: a variant outside PAGE-4D, the most any mask could do
  through those blocks' global attention.

Data: by default (`train_root` empty, `pool_scenes` > 0) a pool of generated dynamic videos to
fine-tune on and `eval_scenes` other ones to score on (`experiments.dynamic_pool`: disjoint seed ranges,
never drawn by pretraining), the metrics averaged over the held-out videos
(`scoring.evaluate.evaluate_scenes`); or one scene (`train_root`, or with `pool_scenes` 0 the generated
`default_synthetic_scene`) whose last `holdout` time steps are held out.
Every trained arm is paired by seed with ``none`` and, when it ran, with ``no_mask``.

Evaluation uses frames no arm trained on (the last `holdout` time steps, or `eval_root`). The decision
threshold for `mask_iou_tuned` is chosen on the *training* frames. Each finished (arm, seed) cell is
written to ``<output_dir>/cells/`` at once, so an interrupted ablation resumes where it stopped, and a
cell that fails is recorded with its error while the other cells go on.

    params = AblationParams(train_root="...", arms=("none", "bce"), seeds=(0, 1, 2), steps=100)
    metrics = run_ablation(params)      # also written to <output_dir>/metrics.json
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from page4d.data import Scene, SyntheticSceneConfig, generate_synthetic_scene, load_scene
from page4d.experiments.ablation_stats import summarize_arms
from page4d.experiments.dynamic_pool import PoolRecipe, moving_share, pool_scenes, scene_config
from page4d.inference.loading import AUTO, resolve_patch_embed
from page4d.losses import ARM_NAMES, LossConfig
from page4d.model import SHIPPED_CHECKPOINTS
from page4d.model.checkpoint import existing_checkpoint
from page4d.records import (
    ParametersChanged,
    atomic_write_bytes,
    is_finished,
    mark_finished,
    read_json,
    resolve_path,
    write_json,
)
from page4d.scoring.evaluate import (
    MASK_KEYS,
    MaskPredictions,
    choose_threshold,
    evaluate_scenes,
    mask_predictions,
    predict_scene,
    score_predictions,
)
from page4d.train import (
    IMAGE_SIZE,
    NO_GEOMETRY,
    TrainConfig,
    build_training_model,
    mask_gt_check,
    train,
    weights_digest,
)

NO_DETACH_SUFFIX = "+backbone"  # extra arm: the mask loss also reaches the backbone (no detach)
UNTRAINED = "untrained"
ATTENTION = "attention"  # training-free: VGGT4D's attention cues of the starting model
TRAINING_FREE = (UNTRAINED, ATTENTION)
NO_MASK = "no_mask"  # the attention bias off: plain VGGT fine-tuned on the same data (PAGE-4D's control)
ORACLE = "oracle"  # GT masks drive the attention bias, no head
HARD_ORACLE = "oracle_hard"  # the same with the bias as strong as PAGE-4D's released head can make it
HARD_ALL_ORACLE = "oracle_hard_all"  # ... applied to every query row of the masked blocks, patches too
HARD_REACH = 32.0  # the official head's largest bias: scale 64 x |sigmoid - 0.5| <= 0.5
FORCING = "attention_forcing"  # MoRe: the camera tokens' attention to GT-dynamic patches is penalised
NOISY = "bce_noisy"  # bce on pseudo labels with SegAnyMo-like noise (pool mode)
SPECIAL_ARMS = (NO_MASK, ORACLE, HARD_ORACLE, HARD_ALL_ORACLE, FORCING, NOISY)
ORACLES = (ORACLE, HARD_ORACLE, HARD_ALL_ORACLE)
CELLS_DIR = "cells"
PREDICTIONS_DIR = "predictions"
SYNTHETIC_DIR = "synthetic_scene"  # the generated scene, inside the run folder, when train_root is empty
DIGEST_IGNORES = ("output_dir", "arms", "seeds")  # a resumed run may add arms and seeds, nothing else
PROGRESS_PREFIX = "ablation"  # the start of every progress line (page4d.main passes them on)


def _say(line: str) -> None:
    print(line, flush=True)


def default_synthetic_scene(seed: int = 0) -> SyntheticSceneConfig:
    """The main job's built-in scene: 12 steps of 4 orbiting cameras (3 degrees per step) around a room
    with 3 large movers, rendered at the ablation's 112 x 154 so no resize is involved.

    Both real and earlier synthetic data were static rigs, where a camera metric cannot show an effect
    of suppressing movers; here the cameras move and the movers cover a sizeable share of each view.
    """
    return SyntheticSceneConfig(
        seed=seed,
        times=12,
        views=4,
        height=112,
        width=154,
        orbit_deg_per_step=3.0,
        num_movers=3,
        mover_size=(0.45, 0.6),
        mover_speed=0.2,
    )


@dataclass
class AblationParams:
    """One ablation. The defaults are issue 20's answer: PAGE-4D's recipe (mask head + middle blocks,
    geometry on) from the shipped static backbone `tiny-pos` (its cameras read the images; from
    `tiny-stream`, whose camera is the identity, no camera column could move), fine-tuned on generated
    dynamic videos and scored on other ones, every arm against `none` and `no_mask`. The knobs it shares
    with the trainer take the trainer's defaults (`TrainConfig.steps`, ...), so the two cannot drift,
    except two a fine-tuning needs: `lr` (TrainConfig's 5e-3 suits a head trained alone; 1e-3 is the
    pretraining's peak) and `clip_times` (4 frames of a monocular video per clip, for the temporal
    cameras). Notebook 03's `parameters` cell repeats them as literals (papermill needs literals) and a
    test checks that they agree."""

    train_root: str = ""  # empty = the generated pool (or, with pool_scenes 0, `default_synthetic_scene`)
    eval_root: str = ""  # empty = the held-out pool / the training scene with its last `holdout` steps
    train_times: list[int] | None = None
    eval_times: list[int] | None = None
    holdout: int = 4
    arms: tuple[str, ...] = (UNTRAINED, ATTENTION, NO_MASK, "none", "bce", NOISY, FORCING, ORACLE)
    seeds: tuple[int, ...] = (0, 1, 2)
    steps: int = TrainConfig.steps
    preset: str = TrainConfig.preset
    image_size: tuple[int, int] = IMAGE_SIZE
    checkpoint: str = "tiny-pos"  # a path or a shipped name; empty = seeded random init
    patch_embed: str = AUTO  # the checkpoint's, read from its keys (conv_pos: issue 20's tiny-only one)
    seeded_mask_head: bool = True  # with a checkpoint: the mask head starts from each seed's init
    trains: str = TrainConfig.trains  # what trains: mask_head, mask_head+middle_blocks, everything
    geometry: bool = True
    clip_times: int = 4
    lr: float = 1e-3
    pos_weight: str = LossConfig.pos_weight  # "auto", "none" (unweighted BCE) or a number
    output_dir: str = ""
    synthetic_seed: int = 0
    pool_scenes: int = 16  # with train_root empty: fine-tune on this many generated dynamic videos
    eval_scenes: int = 8  # pool mode: held-out dynamic videos scored (metrics averaged over them)
    pool_times: int = 8  # pool mode: time steps per video (each held-out video is scored as one clip)

    @property
    def pool_mode(self) -> bool:
        """Whether the data is the generated dynamic pool (`dynamic_pool`), not one scene."""
        return not self.train_root and self.pool_scenes > 0


@dataclass(frozen=True)
class ArmSetup:
    """What one arm changes: the loss arm, the detach, what drives the attention bias, MoRe's term,
    whether it trains on noisy pseudo labels."""

    loss_arm: str
    detach: bool = True
    mask_bias: str = "head"
    forcing: bool = False
    noisy_masks: bool = False
    bias_reach: float | None = None  # set the head's largest bias on a dynamic key (None: the preset's)
    all_rows: bool = False  # the bias on every query row, not only the camera/register ones


def arm_setup(arm: str) -> ArmSetup:
    """The `ArmSetup` of an arm name (raises for an unknown one, listing the valid names)."""
    special = {
        NO_MASK: ArmSetup("none", mask_bias="off"),
        ORACLE: ArmSetup("none", mask_bias="gt"),
        HARD_ORACLE: ArmSetup("none", mask_bias="gt", bias_reach=HARD_REACH),
        HARD_ALL_ORACLE: ArmSetup("none", mask_bias="gt", bias_reach=HARD_REACH, all_rows=True),
        FORCING: ArmSetup("none", forcing=True),
        NOISY: ArmSetup("bce", noisy_masks=True),
    }
    if arm in special:
        return special[arm]
    return ArmSetup(*arm_config(arm))


def arm_config(arm: str) -> tuple[str, bool]:
    """(loss arm, detach) for an arm name; `<arm>+backbone` = the same losses without the detach. The
    training-free arms get `none`'s configuration: it only decides the starting model, never a run."""
    if arm in TRAINING_FREE:
        return "none", True
    base, detach = (arm[: -len(NO_DETACH_SUFFIX)], False) if arm.endswith(NO_DETACH_SUFFIX) else (arm, True)
    if base not in ARM_NAMES:
        raise ValueError(
            f"unknown arm {arm!r}; valid: {list(TRAINING_FREE)}, {list(SPECIAL_ARMS)}, {list(ARM_NAMES)} "
            "(the last each optionally +backbone)"
        )
    return base, detach


def mask_method(arm: str) -> str:
    """Where an arm's masks come from (`evaluate.predict_scene`'s `method`)."""
    return "attention" if arm == ATTENTION else "gt" if arm in ORACLES else "mask_head"


def checkpoint_param(text: str) -> str:
    """Notebook 03's `checkpoint` parameter as the ablation loads it: "" (random init) and a shipped
    checkpoint's name stay as they are; a path is made absolute from the repository root, as `train_root`
    is, because the notebook runs in its own folder, where a path relative to the caller's is not found."""
    if not text or text in SHIPPED_CHECKPOINTS:
        return text
    return str(resolve_path(text))


def check_checkpoint(params: AblationParams) -> AblationParams:
    """A missing starting checkpoint stops the run before its first cell, instead of failing every one.
    Returns `params` with the patch embedding the checkpoint was made with in place of "auto", so that
    the record, its digest and every cell's `TrainConfig` name the one built."""
    if params.checkpoint:
        existing_checkpoint(params.checkpoint)
    return dataclasses.replace(
        params, patch_embed=resolve_patch_embed(params.preset, params.checkpoint, params.patch_embed)
    )


def parse_pos_weight(text: str | float | None) -> str | float | None:
    """`LossConfig.pos_weight` from the ablation parameter: "auto", "none" -> None, or a number > 0."""
    if text is None or (isinstance(text, str) and text.strip().lower() == "none"):
        return None
    if isinstance(text, str) and text.strip().lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError as err:
        raise ValueError(f"pos_weight must be 'auto', 'none' or a number > 0, got {text!r}") from err
    if not value > 0:
        raise ValueError(f"pos_weight must be > 0, got {value}")
    return value


def resolve_arms(params: AblationParams) -> tuple[list[str], list[str]]:
    """The arms as they will be reported, and notes on renamings (`none` without geometry)."""
    arms, notes = [], []
    for arm in params.arms:
        arm_setup(arm)  # validates the name
        if arm == NOISY and not params.pool_mode:
            raise ValueError(
                f"arm {NOISY!r} needs the generated pool (train_root empty, pool_scenes > 0): its noise is "
                "generated"
            )
        if arm == "none" and not params.geometry:
            notes.append(
                "'none' with geometry=False trains nothing (no mask terms, no geometry terms): "
                f"reported as {UNTRAINED!r}"
            )
            arm = UNTRAINED
        if arm in arms:
            raise ValueError(f"arm {arm!r} given twice in {list(params.arms)}")
        arms.append(arm)
    return arms, notes


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


def train_config(params: AblationParams, arm: str, seed: int) -> TrainConfig:
    """The training configuration of one (arm, seed): identical across arms except the mask terms
    (and the detach for `+backbone` arms)."""
    setup = arm_setup(arm)
    overrides: dict[str, Any] = {"pos_weight": parse_pos_weight(params.pos_weight)}
    if not params.geometry:
        overrides.update(NO_GEOMETRY)
    if setup.forcing:
        overrides["use_attention_forcing"] = True
    return TrainConfig(
        preset=params.preset,
        arm=setup.loss_arm,
        mask_bias=setup.mask_bias,
        steps=params.steps,
        trains=params.trains,
        seed=seed,
        checkpoint=params.checkpoint or None,
        patch_embed=params.patch_embed,
        checkpoint_mask_head=not params.seeded_mask_head,
        detach_mask_input=setup.detach,
        clip_times=params.clip_times,
        lr=params.lr,
        loss_overrides=overrides,
    )


def initial_model(cfg: TrainConfig, setup: ArmSetup | None = None) -> torch.nn.Module:
    """The starting model of a seed: torch is seeded with `cfg.seed` right before the build, so every
    arm of one seed starts from the same weights whatever ran before it. `setup`: an oracle's bias
    settings (`set_bias_reach`, every query row)."""
    torch.manual_seed(cfg.seed)
    model = build_training_model(cfg)
    if setup is not None:
        apply_bias_settings(model, setup)
    return model


def apply_bias_settings(model: torch.nn.Module, setup: ArmSetup) -> None:
    """An arm's bias settings on `model`'s mask head: its reach (`set_bias_reach`, when the arm sets
    one) and whether the bias applies on every query row."""
    if setup.bias_reach is not None:
        set_bias_reach(model, setup.bias_reach)
        model.aggregator.spatial_mask_head.all_rows = setup.all_rows


@contextmanager
def bias_settings(model: torch.nn.Module, setup: ArmSetup) -> Iterator[torch.nn.Module]:
    """`apply_bias_settings` for the block's duration, the head's own settings restored after (an
    analysis that runs several oracle arms through one model, e.g. `phenomenon.mover_influence`)."""
    head = model.aggregator.spatial_mask_head
    saved = (getattr(head, "soft_mask_bias", None), head.all_rows)
    try:
        apply_bias_settings(model, setup)
        yield model
    finally:
        if saved[0] is not None:
            head.soft_mask_bias = saved[0]
        head.all_rows = saved[1]


def set_bias_reach(model: torch.nn.Module, reach: float) -> None:
    """Make the fin10 head's key bias reach `-reach` on a fully dynamic key (`Fin10MaskHead.set_reach`),
    instead of the preset's -0.35. The arm sets it on every model it builds (checkpoints do not carry it)."""
    head = getattr(model.aggregator, "spatial_mask_head", None)
    if not hasattr(head, "set_reach"):
        raise ValueError(f"{HARD_ORACLE!r} needs the fin10 mask head (set_reach); this model has {head!r}")
    head.set_reach(reach)


def pool_recipe(params: AblationParams) -> PoolRecipe:
    """The generated dynamic pool of pool mode."""
    return PoolRecipe(
        train_scenes=params.pool_scenes,
        eval_scenes=params.eval_scenes,
        times=params.pool_times,
        image_size=tuple(params.image_size),
    )


def baseline_arm(arms: list[str]) -> str:
    """What every arm is paired against: `none` (the same training minus the mask terms) when it ran;
    with geometry off `none` trains nothing, so the untrained model is the honest "without"."""
    return "none" if "none" in arms else UNTRAINED


def has_any_term(loss_cfg: LossConfig, has_masks: bool) -> bool:
    """False when an arm has nothing to learn from (e.g. `none` with geometry off)."""
    mask = loss_cfg.use_seganymo_mask and bool(loss_cfg.mask_terms_enabled) and has_masks
    return loss_cfg.geometry_enabled or mask


def safe(name: str) -> str:
    return name.replace("+", "_")


def _params_record(params: AblationParams, train_root: str) -> dict[str, Any]:
    return json.loads(json.dumps({**dataclasses.asdict(params), "train_root": str(train_root)}))


def _params_digest(record: dict[str, Any]) -> str:
    keep = {k: v for k, v in record.items() if k not in DIGEST_IGNORES}
    if keep.get("patch_embed") == "conv":  # added later: runs recorded before it keep their digest
        del keep["patch_embed"]
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


def run_ablation(
    params: AblationParams, progress: bool = True, log: Callable[[str], Any] | None = _say
) -> dict[str, Any]:
    """Train/evaluate every (arm, seed); writes and returns the metrics.json structure.

    Resumes: cells already in ``<output_dir>/cells/`` (same parameters) are read, not rerun. Refuses an
    output folder that holds a finished run (`DONE.json`; runs are records), and one whose cells were
    computed with other parameters (`ParametersChanged`, before anything is read or written there).
    `log` gets one line when each (arm, seed) starts and one when it ends, with its time and headline
    scores (`PROGRESS_PREFIX` ...; with `progress` they go through the progress bar); None: silent.
    """
    params = check_checkpoint(params)
    out_dir = _open_output_dir(params)
    arms, notes = resolve_arms(params)
    parse_pos_weight(params.pos_weight)
    t_start = time.perf_counter()
    record = _params_record(params, _train_root(params, out_dir))
    digest = _params_digest(record)
    _check_cells(out_dir, digest, record)
    data = _load_data(params, out_dir)
    _check_mask_gt(params, arms, data.train_scene, data.train_times)
    cells = _run_cells(params, arms, data, (digest, record), out_dir, progress, log)
    metrics = _metrics(params, arms, cells, notes, record, data)
    metrics["wall_seconds"] = time.perf_counter() - t_start
    write_json(out_dir / "metrics.json", metrics)
    # Notebook 03 runs this inside a notebook execution, whose runner later replaces the marker with
    # the notebook's own closing record (kind "notebook"); either way the folder is a finished record.
    mark_finished(out_dir, "ablation", cells=len(cells), failed=len(metrics["failed"]))
    return metrics


@dataclass
class _Data:
    """The scenes and time steps of one ablation (`_load_data`). One-scene mode: `train_scene` with
    `train_times`, `eval_scene` with `eval_times`. Pool mode: `train_pool` (and its `noisy_pool` twin
    with pseudo-label noise, when an arm needs it) and `eval_pool`; `train_scene` / `eval_scene` are
    their first scenes (the threshold is tuned on the first training video, the overlays show the
    first held-out one)."""

    train_root: str
    train_scene: Scene
    eval_scene: Scene
    train_times: list[int]
    eval_times: list[int]
    eval_clip: int
    train_pool: list[Scene] | None = None
    noisy_pool: list[Scene] | None = None
    eval_pool: list[Scene] | None = None


def _open_output_dir(params: AblationParams) -> Path:
    if not params.output_dir:
        raise ValueError("AblationParams.output_dir is required (the run folder)")
    out_dir = Path(params.output_dir)
    if is_finished(out_dir):
        raise FileExistsError(
            f"{out_dir} already holds a finished run (DONE.json); a finished run is never "
            "overwritten: choose a new output_dir"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def _train_root(params: AblationParams, out_dir: Path) -> str:
    """`train_root`, the generated pool's description, or the run folder's generated scene."""
    if params.pool_mode:
        return f"generated dynamic pool: {pool_recipe(params)}"
    return params.train_root or str(out_dir / SYNTHETIC_DIR)


def _check_cells(out_dir: Path, digest: str, record: dict[str, Any]) -> None:
    """Refuse, before anything is read or written, an unfinished run whose finished cells were computed
    with other parameters (say which, when the cells recorded theirs): resuming it would mix two
    experiments in one table."""
    cells_dir = out_dir / CELLS_DIR
    found = sorted(cells_dir.glob("*.json")) if cells_dir.is_dir() else []
    stale = {p.name: read_json(p) for p in found}
    stale = {name: cell for name, cell in stale.items() if cell.get("params_digest") != digest}
    if not stale:
        return
    before = next((c["params"] for c in stale.values() if isinstance(c.get("params"), dict)), None)
    changed = ""
    if before is not None:
        keys = [k for k in record if k not in DIGEST_IGNORES and before.get(k) != record[k]]
        changed = ": " + ", ".join(f"{k} {before.get(k)!r} -> {record[k]!r}" for k in keys)
    raise ParametersChanged(
        f"{out_dir} holds an unfinished ablation whose cells {', '.join(stale)} were computed with other "
        f"parameters{changed}; resume it with its own parameters, or use a new output_dir for these "
        "(nothing was written)"
    )


def _load_data(params: AblationParams, out_dir: Path) -> _Data:
    """The training scene (generated into the run folder when `train_root` is empty), the evaluation
    scene and the time split."""
    if params.pool_mode:
        return _load_pool(params, out_dir)
    train_root = _train_root(params, out_dir)
    if not params.train_root and not Path(train_root).exists():
        generate_synthetic_scene(Path(train_root), default_synthetic_scene(params.synthetic_seed))
    size = tuple(params.image_size)
    train_scene = load_scene(train_root, image_size=size)
    same = not params.eval_root or Path(params.eval_root).resolve() == Path(train_root).resolve()
    eval_scene = train_scene if same else load_scene(params.eval_root, image_size=size)
    train_times, eval_times = split_times(params, train_scene.times, same, eval_scene.times)
    return _Data(train_root, train_scene, eval_scene, train_times, eval_times, max(params.clip_times, 2))


def _load_pool(params: AblationParams, out_dir: Path) -> _Data:
    """Pool mode: the generated dynamic videos, rendered in memory (the noisy twin only when an arm
    trains on it). Each held-out video is scored whole, as one clip."""
    if params.eval_root or params.train_times or params.eval_times:
        raise ValueError(
            "the generated pool (train_root empty, pool_scenes > 0) holds out its own videos: leave "
            "eval_root, train_times and eval_times empty, or set pool_scenes 0"
        )
    recipe = pool_recipe(params)
    train_pool = pool_scenes(recipe)
    eval_pool = pool_scenes(recipe, heldout=True)
    noisy = pool_scenes(recipe, noisy=True) if NOISY in params.arms else None
    times = list(train_pool[0].times)
    return _Data(
        _train_root(params, out_dir),
        train_pool[0],
        eval_pool[0],
        times,
        list(eval_pool[0].times),
        recipe.times,
        train_pool,
        noisy,
        eval_pool,
    )


def pool_record(params: AblationParams, data: _Data) -> dict[str, Any]:
    """What metrics.json says about the pool: generator seeds and moving shares (none in one-scene mode)."""
    if data.train_pool is None or data.eval_pool is None:
        return {}
    recipe = pool_recipe(params)
    return {
        "pool": {
            "recipe": dataclasses.asdict(recipe),
            "train_seeds": [scene_config(recipe, i).seed for i in range(recipe.train_scenes)],
            "eval_seeds": [scene_config(recipe, j, heldout=True).seed for j in range(recipe.eval_scenes)],
            "train_moving_share": moving_share(data.train_pool),
            "eval_moving_share": moving_share(data.eval_pool),
            "noisy_moving_share": moving_share(data.noisy_pool) if data.noisy_pool else None,
        }
    }


def _run_cells(
    params: AblationParams,
    arms: list[str],
    data: _Data,
    stamp: tuple[str, dict[str, Any]],
    out_dir: Path,
    progress: bool,
    log: Callable[[str], Any] | None,
) -> dict[tuple[str, int], dict[str, Any]]:
    """Every (arm, seed) cell: read from ``cells/`` when it finished before (with the same parameters,
    `_check_cells`), else run and written there at once, stamped with the parameters' digest and record
    (`stamp`), with a line to `log` as it starts and ends."""
    cells_dir = out_dir / CELLS_DIR
    cells_dir.mkdir(exist_ok=True)
    cells: dict[tuple[str, int], dict[str, Any]] = {}
    todo = [(seed, arm) for seed in params.seeds for arm in arms]
    bar = tqdm(todo, desc="ablation", disable=not progress)
    say = (bar.write if progress else log) if log is not None else (lambda line: None)
    shape = f"{len(todo)} cells ({len(arms)} arms x {len(params.seeds)} seeds)"
    say(f"{PROGRESS_PREFIX}: {shape}; each trained arm takes {params.steps} steps")
    t0 = time.perf_counter()
    for i, (seed, arm) in enumerate(bar, 1):
        bar.set_postfix_str(f"{arm} seed {seed}")
        where = f"{PROGRESS_PREFIX} [{i}/{len(todo)}] {arm} seed {seed}"
        path = cells_dir / f"{safe(arm)}_seed{seed}.json"
        if path.is_file():
            cell = read_json(path)
            say(f"{where}: finished before, read from {CELLS_DIR}/{path.name}")
        else:
            say(f"{where}: {'evaluating (training-free)' if arm in TRAINING_FREE else 'training'} ...")
            cell = _run_cell(params, arm, seed, data, out_dir, progress)
            cell["params_digest"], cell["params"] = stamp
            write_json(path, cell)
            say(f"{where}: {_cell_outcome(cell)} ({time.perf_counter() - t0:.0f} s so far)")
        cells[(arm, seed)] = cell
    return cells


def _cell_outcome(cell: dict[str, Any]) -> str:
    """A finished cell in a few words: its time and headline held-out scores, or its error."""
    if cell["status"] != "ok":
        return f"FAILED after {cell['seconds']:.0f} s: {cell['error']}"
    result = cell["result"]
    scores = ", ".join(
        f"{label} {result[key]:.3f}"
        for key, label in (("mask_ap", "AP"), ("mask_iou", "IoU@0.5"), ("ate", "ATE"))
        if isinstance(result.get(key), float) and math.isfinite(result[key])
    )
    return f"done in {cell['seconds']:.0f} s" + (f", held-out {scores}" if scores else "")


def _metrics(
    params: AblationParams,
    arms: list[str],
    cells: dict[tuple[str, int], dict[str, Any]],
    notes: list[str],
    record: dict[str, Any],
    data: _Data,
) -> dict[str, Any]:
    """metrics.json (without its wall time): per-arm statistics, floors, failures, notes, parameters."""
    baselines = [baseline_arm(arms)]
    if NO_MASK in arms and baselines[0] != NO_MASK:
        baselines.append(NO_MASK)  # the same fine-tuning with the bias off: every arm is paired with it too
    summary = summarize_arms(
        arms, params.seeds, cells, baseline=baselines[0], unpaired=TRAINING_FREE, controls=baselines[1:]
    )
    finished = [c["result"] for c in cells.values() if c["status"] == "ok"]  # all scored on the same frames
    return {
        "arms": summary,
        "baseline": baselines[0],
        "baselines": baselines,
        "floors": next((r.get("floors") for r in finished), None),
        "camera_floor": next((r.get("camera_floor") for r in finished), None),
        "failed": [
            {"arm": a, "seed": s, "error": c["error"]} for (a, s), c in cells.items() if c["status"] != "ok"
        ],
        "notes": notes,
        "params": {
            **record,
            "arms_reported": arms,
            "train_times_used": data.train_times,
            "eval_times_used": data.eval_times,
            "eval_clip_times": data.eval_clip,
            "torch_threads": torch.get_num_threads(),  # results are reproducible for a fixed count
            **pool_record(params, data),
        },
    }


def _check_mask_gt(params: AblationParams, arms: list[str], scene: Scene, times: list[int]) -> None:
    """The trainer's own check (`train.mask_gt_check`) for every trained arm, before any cell runs: an
    arm with mask terms on training frames without any GT mask would fail only after the others ran."""
    for arm in arms:
        if arm in TRAINING_FREE:
            continue
        try:
            mask_gt_check(train_config(params, arm, params.seeds[0]).loss_config(), scene, times)
        except ValueError as err:  # re-raised with the arm and scene named
            raise ValueError(f"arm {arm!r} on {scene.root}: {err}") from err


def _run_cell(
    params: AblationParams, arm: str, seed: int, data: _Data, out_dir: Path, progress: bool
) -> dict[str, Any]:
    """Train and evaluate one (arm, seed); the training-free arms evaluate the starting model (with its
    masks from `mask_method(arm)`). A failure is returned as a record (status "failed", the error and
    its traceback), so the cells that finished before it and after it are kept."""
    t0 = time.perf_counter()
    cfg = train_config(params, arm, seed)
    cell: dict[str, Any] = {"arm": arm, "seed": seed, "status": "ok"}
    try:
        model = initial_model(cfg, arm_setup(arm))
        cell["init_digest"] = weights_digest(model)
        trained_steps = 0
        if arm not in TRAINING_FREE and has_any_term(cfg.loss_config(), data.train_scene.masks is not None):
            model, history = _train_cell(params, arm, seed, cfg, model, data, out_dir, progress)
            trained_steps = params.steps
            cell["clip_order_digest"] = hashlib.sha256(
                json.dumps(
                    [
                        (h.get("scene"), h.get("clip_start")) if data.train_pool else h.get("clip_start")
                        for h in history
                    ]
                ).encode()
            ).hexdigest()[:16]
        result, shown = _score_cell(model, arm, data)
        cell.update(result=result, trained_steps=trained_steps, final_digest=weights_digest(model))
        if seed == params.seeds[0]:
            _save_cell_predictions(model, arm, data, out_dir, shown)
    except Exception as exc:  # recorded, not swallowed: metrics.json lists it and the run reports failure
        cell.update(status="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
    cell["seconds"] = time.perf_counter() - t0
    return cell


def _train_cell(
    params: AblationParams,
    arm: str,
    seed: int,
    cfg: TrainConfig,
    model: torch.nn.Module,
    data: _Data,
    out_dir: Path,
    progress: bool,
) -> tuple[torch.nn.Module, list[dict[str, Any]]]:
    """One arm's training run in `train/<arm>_seed<seed>` (an interrupted attempt there is set aside):
    on the pool (its noisy twin for `bce_noisy`), or on the training time steps of the one scene."""
    train_dir = out_dir / "train" / f"{safe(arm)}_seed{seed}"
    _set_aside_incomplete(train_dir)
    if data.train_pool is not None:
        scenes = data.noisy_pool if arm_setup(arm).noisy_masks else data.train_pool
        return train(cfg, scenes, output_dir=train_dir, model=model, progress=progress)
    return train(
        cfg,
        data.train_scene,
        train_times=data.train_times,
        output_dir=train_dir,
        model=model,
        progress=progress,
    )


ORACLE_MASK_NOTE = "oracle: its masks are the GT it was given, not a prediction (no mask scores)"


def _score_cell(
    model: torch.nn.Module, arm: str, data: _Data
) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
    """Held-out scores of a (trained) model: the one scene's held-out steps, or the mean over the
    held-out videos. The threshold for `mask_iou_tuned` is chosen on training frames (none for the
    oracle, whose masks are not predicted; its mask metrics are NaN with a note). Also returns the
    one scene's predicted clips, so the overlays reuse them (None in pool mode)."""
    method = mask_method(arm)
    oracle = method == "gt"
    tuned, why = (
        (None, ORACLE_MASK_NOTE)
        if oracle
        else choose_threshold(model, data.train_scene, data.train_times, data.eval_clip, method)
    )
    clips = None
    if data.eval_pool is not None:
        scores = evaluate_scenes(model, data.eval_pool, 0, method, tuned_threshold=tuned, with_floors=True)
    else:
        clips = predict_scene(model, data.eval_scene, data.eval_times, data.eval_clip, method)
        scores = score_predictions(clips, data.eval_scene, tuned_threshold=tuned, with_floors=True)
    if oracle:
        scores.update({k: float("nan") for k in MASK_KEYS})
        scores["mask_missing_reason"] = ORACLE_MASK_NOTE
    result = {
        "times": data.eval_times,
        "clip_times": data.eval_clip,
        "mask_method": method,
        **scores,
        "tuned_threshold_note": why,
    }
    return result, clips


def _save_cell_predictions(
    model: torch.nn.Module, arm: str, data: _Data, out_dir: Path, clips: list[dict[str, Any]] | None
) -> None:
    """The first seed's P(dynamic) on the (first) held-out scene, for the notebook's overlays: the
    scored `clips` when there are (one scene), else that scene predicted again (one video of the pool)."""
    if mask_method(arm) == "gt":
        return
    if clips is None:
        clips = predict_scene(model, data.eval_scene, data.eval_times, data.eval_clip, mask_method(arm))
    masks = mask_predictions(clips, data.eval_scene)
    if masks is not None:
        _save_predictions(masks, data.eval_scene, data.eval_times, out_dir / PREDICTIONS_DIR, arm)


def _set_aside_incomplete(train_dir: Path) -> None:
    """A training folder without a cell record is an interrupted attempt: keep it, under a new name."""
    if train_dir.exists():
        n = 1
        while (target := train_dir.with_name(f"{train_dir.name}.incomplete-{n}")).exists():
            n += 1
        train_dir.rename(target)


def _save_predictions(masks: MaskPredictions, scene: Scene, times: list[int], folder: Path, arm: str) -> None:
    """P(dynamic) on the held-out frames (float16) for the notebook's overlay figures; the images and GT
    once per run (`eval_frames.npz`)."""
    folder.mkdir(parents=True, exist_ok=True)
    _atomic_npz(folder / f"{safe(arm)}.npz", prob=masks.prob.numpy().astype(np.float16))
    frames = folder / "eval_frames.npz"
    if not frames.exists():
        pos = [scene.times.index(t) for t in times]
        images = (scene.images[pos].permute(0, 1, 3, 4, 2).numpy() * 255).round().astype(np.uint8)
        _atomic_npz(
            frames,
            images=images,
            gt=(masks.gt.numpy() >= 0.5).astype(np.uint8),
            valid=masks.valid.numpy(),
            times=np.asarray(times),
            views=np.asarray(scene.views),
        )


def _atomic_npz(path: Path, **arrays: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())
