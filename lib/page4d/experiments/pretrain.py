"""Pretrain the tiny preset on generated synthetic scenes: a backbone that knows some geometry, on a laptop.

Every CPU experiment used to start from a randomly initialised backbone, while PAGE-4D fine-tunes a
pretrained VGGT. No released weights fit the `tiny` preset, so this trains one the way VGGT trains
(camera, depth and point losses on multi-view clips), on a pool of rendered scenes with orbiting cameras
and moving objects. The mask head is present with its attention bias off (`masked_global_blocks=()`),
as in PAGE-4D's `checkpoint_nomask`: it gets no gradient, so the checkpoint holds a geometry backbone plus
an untouched head, and it loads strictly into the `tiny` preset (whose bias is on) for fine-tuning.

    python -m page4d.experiments.pretrain --out outputs/pretrain           # the shipped recipe
    python -m page4d.experiments.pretrain --out outputs/pretrain --resume  # continue an interrupted run
    python -m page4d.experiments.pretrain --recipe tiny-stream --out outputs/phase --init W.pt --lr 3e-4 \
        --seed 7 --rotation-weight 10   # a later phase: the stream again, from an earlier phase's weights

Run folder (`--out`): `scenes/pool_NNN`, `scenes/heldout_NNN` (rendered once; the same recipe renders
the same bytes), `train/` (a `page4d.train` run: checkpoints, history, resumable), and once finished
the shipped files `tiny-synthetic.pt` (float16 weights), `tiny-synthetic.json` (the card's numbers),
`tiny-synthetic.md` (the card) and `tiny-synthetic_loss.png`. Held-out scenes (never trained on) give
the zero-shot depth AbsRel / delta<1.25 and ATE / RPE of the pretrained model next to a random
initialisation's. Copy the four files into `lib/page4d/weights/` to ship a new version.

A card is written by its run, never by hand: `tiny-synthetic.md` is `card_markdown` of the JSON (a test
checks the shipped pair). A fact that had to be fixed after the run goes into the JSON's
``corrections`` ([{"field", "was", "now", "when", "why"}]), which the card shows as such.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import platform
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from page4d.cli_args import DefaultsHelpFormatter, add_options, changed_options, from_args, knob
from page4d.data import Scene, SyntheticSceneConfig, generate_synthetic_scene, load_scene
from page4d.experiments.scene_stream import LazyScene, SceneStream, StreamRecipe, draw_scene_config
from page4d.model import build_model, load_checkpoint
from page4d.model.config import TINY_PATCH_EMBEDS, ModelConfig, preset_with_patch_embed
from page4d.model.network import PAGE4DModel
from page4d.records import (
    atomic_torch_save,
    atomic_write_text,
    claim_run_folder,
    is_finished,
    mark_finished,
    write_json,
)
from page4d.scoring.evaluate import GEOMETRY_KEYS, evaluate
from page4d.train import TrainConfig, train, weights_digest

NAME = "tiny-synthetic"
POOL_SEED_OFFSET = 1000  # pool scene i renders with seed offset + i; held-out scenes come after the pool
FIRST_LOSSES = 20  # how many first logged losses the card keeps (the reproduction test replays a few)


@dataclass
class PretrainConfig:
    """The recipe; `tiny-synthetic.json` records it, and the same recipe gives the same first losses.

    Scenes: `pool_scenes` training scenes and `heldout_scenes` evaluation scenes, each `times` x `views`
    frames at `image_size` (H, W), drawn by `scene_config` from `seed`. Optimisation: AdamW on every
    parameter, linear warm-up over `warmup_steps` (explicit, so the first steps do not depend on
    `steps`), cosine to `min_lr`; clips of `clip_times` time steps (all views).

    The values are the recipe's own, written out rather than taken from `TrainConfig`'s defaults: the
    shipped card records them, and tuning the fine-tuning defaults must not change the pretraining recipe.
    Each field is also an option of `python -m page4d.experiments.pretrain` (`page4d.cli_args`).
    """

    name: str = knob(NAME, "the shipped files' name: NAME.pt (weights), NAME.json / NAME.md (card)")
    scenes: str = knob(
        "pool",
        "pool: a fixed set of pool_scenes generated scenes (tiny-synthetic's recipe); stream: a new "
        "scene every step, VGGT-style (experiments.scene_stream)",
        choices=("pool", "stream"),
    )
    seed: int = knob(0, "seeds the scenes, the weights' initialisation and the clip order")
    pool_scenes: int = knob(48, "generated training scenes")
    heldout_scenes: int = knob(4, "generated scenes never trained on (the card's zero-shot numbers)")
    times: int = knob(8, "time steps per scene")
    views: int = knob(4, "cameras per scene")
    image_size: tuple[int, int] = knob((112, 154), "rendered image size", metavar=("H", "W"))
    steps: int = knob(5000, "optimiser steps")
    lr: float = knob(1e-3, "peak AdamW learning rate")
    min_lr: float = knob(2e-5, "learning rate at the end of the cosine")
    warmup_steps: int = knob(100, "linear warm-up steps")
    weight_decay: float = knob(0.01, "AdamW weight decay")
    clip_times: int = knob(2, "time steps per training clip (all views)")
    threads: int = knob(1, "torch CPU threads (results are reproducible for a fixed thread count)")
    save_every: int = knob(250, "step checkpoint every N steps")
    eval_clip_times: int = knob(2, "time steps per clip when scoring the held-out scenes")
    device: str = knob("cpu", "cpu, or cuda (fast; the first losses are then not bit-identical)")
    rotation_target: str = knob(
        "sign_invariant",
        "camera rotation loss: sign_invariant, or canonical (VGGT's plain L1 on w >= 0 with the rig fix)",
        choices=("sign_invariant", "canonical"),
    )
    rotation_weight: float = knob(
        1.0, "weight of the camera loss's rotation term (VGGT: 1); a camera-dominated phase raises it"
    )
    static_share: float = knob(0.75, "stream: share of scenes without movers")
    monocular_share: float = knob(0.4, "stream: share of scenes with one moving camera (the rest: rigs)")
    max_views: int = knob(4, "stream: most cameras of a rig")
    train_eval_scenes: int = knob(0, "training scenes the card scores beside the held-out ones")
    patch_embed: str = knob(
        "conv",
        "the tiny network's patch embedding: conv (the preset's one 14x14 patchify), conv_stem (two 3x3 "
        "convolutions in front of it) or conv_pos (with a learned position table, as DINOv2's): "
        "tiny-only variants, issue 20 (model.config.with_tiny_patch_embed)",
        choices=TINY_PATCH_EMBEDS,
    )
    init: str = knob(
        "random",
        "random (the seeded initialisation), or weights to continue from (a packaged name or a .pt): a "
        "later phase of a recipe; the card's random-init column stays the seeded initialisation",
    )

    def __post_init__(self) -> None:
        self.image_size = tuple(int(x) for x in self.image_size)
        if self.pool_scenes < 1 or self.heldout_scenes < 1:
            raise ValueError(
                f"need >= 1 pool and held-out scene, got {self.pool_scenes}, {self.heldout_scenes}"
            )
        if self.scenes == "pool" and self.clip_times > self.times:
            raise ValueError(f"clip_times {self.clip_times} exceeds the scenes' {self.times} time steps")

    def train_config(self) -> TrainConfig:
        """What `page4d.train` runs: geometry terms only (arm `none`), everything trains."""
        return TrainConfig(
            preset="tiny",
            arm="none",
            steps=self.steps,
            lr=self.lr,
            min_lr=self.min_lr,
            warmup_steps=self.warmup_steps,
            weight_decay=self.weight_decay,
            trains="everything",
            clip_times=0 if self.scenes == "stream" else self.clip_times,
            clip_order="stream" if self.scenes == "stream" else "uniform",
            loss_overrides=self.loss_overrides(),
            seed=self.seed,
            threads=self.threads,
            device=self.device,
            save_every=self.save_every,
            keep_last=2,
            log_every=25,
        )

    def loss_overrides(self) -> dict[str, Any]:
        """The loss settings that differ from `LossConfig`'s (only those, so older cards read back)."""
        overrides: dict[str, Any] = {}
        if self.rotation_target != "sign_invariant":
            overrides["rotation_target"] = self.rotation_target
        if self.rotation_weight != 1.0:
            overrides["cam_w_rotation"] = self.rotation_weight
        return overrides


# The named recipes. PretrainConfig's field defaults are tiny-synthetic's (so its card's recipe still
# reads back as it ran); tiny-stream is VGGT-style: a fresh scene every step, mostly static, rigs and
# monocular moving cameras, VGGT's canonical rotation target (issue 20).
RECIPES: dict[str, PretrainConfig] = {
    NAME: PretrainConfig(),
    "tiny-stream": PretrainConfig(
        name="tiny-stream",
        scenes="stream",
        steps=6000,
        threads=1,
        rotation_target="canonical",
        heldout_scenes=16,
        train_eval_scenes=16,
        eval_clip_times=0,
        save_every=250,
    ),
}
DEFAULT_RECIPE = "tiny-stream"


def model_config(patch_embed: str = "conv") -> ModelConfig:
    """The tiny preset with the mask head's attention bias off (PAGE-4D's `checkpoint_nomask`), with one
    of the tiny-only patch embeddings (`model.config.preset_with_patch_embed`; "conv" is the preset's)."""
    cfg = preset_with_patch_embed("tiny", patch_embed).replace(track_head=None)
    return cfg.replace(mask_head=dataclasses.replace(cfg.mask_head, masked_global_blocks=()))


def initial_model(seed: int, patch_embed: str = "conv") -> PAGE4DModel:
    """The seeded random initialisation pretraining starts from (and the held-out comparison uses)."""
    torch.manual_seed(seed)
    return build_model(model_config(patch_embed))


def starting_model(seed: int, init: str = "random", patch_embed: str = "conv") -> PAGE4DModel:
    """What a phase starts from (a pretraining recipe or a camera probe): the seeded initialisation,
    or unless `init` is "random" that checkpoint's weights (a packaged name or a path) loaded into it.
    A checkpoint of the other patch embedding does not load: its missing keys are named."""
    model = initial_model(seed, patch_embed)
    if init != "random":
        load_checkpoint(model, init)
    return model


def scene_config(cfg: PretrainConfig, index: int) -> SyntheticSceneConfig:
    """Scene `index` of the recipe: indices below `pool_scenes` train, the next `heldout_scenes` are held
    out. Camera orbit speed (a quarter of the scenes are static rigs), field of view, camera distance and
    height, number / size / speed of movers and the static clutter vary per scene."""
    rng = np.random.default_rng([cfg.seed, index])
    h, w = cfg.image_size
    size_low = float(rng.uniform(0.25, 0.5))
    return SyntheticSceneConfig(
        seed=POOL_SEED_OFFSET * (cfg.seed + 1) + index,
        times=cfg.times,
        views=cfg.views,
        height=h,
        width=w,
        fov_deg=float(rng.uniform(55.0, 75.0)),
        camera_radius=float(rng.uniform(3.0, 3.8)),
        camera_height=float(rng.uniform(1.3, 2.4)),
        orbit_deg_per_step=0.0 if rng.random() < 0.25 else float(rng.uniform(1.0, 6.0)),
        num_movers=int(rng.integers(1, 4)),
        mover_speed=float(rng.uniform(0.1, 0.3)),
        mover_size=(size_low, size_low + float(rng.uniform(0.05, 0.2))),
        num_static_boxes=int(rng.integers(2, 5)),
        num_static_spheres=int(rng.integers(0, 2)),
    )


class SceneOnDisk(LazyScene):
    """Scene `index` of the recipe, rendered into its folder and loaded the first time anything but its
    time ids (or its geometry, which a generated scene always has) is read. The trainer only needs
    every scene's `times` to build its clip list, so a run (or a 3-step replay) renders just the scenes
    its steps draw, not the whole pool up front."""

    def __init__(self, folder: Path, config: SyntheticSceneConfig, image_size: tuple[int, int]) -> None:
        super().__init__(config)
        self.folder, self.image_size = folder, image_size

    def make(self) -> Scene:
        if not self.folder.is_dir():
            generate_synthetic_scene(self.folder, self.config)
        scene = load_scene(self.folder, image_size=self.image_size, load_tracks=False)
        if scene.times != self.times:
            raise ValueError(f"{self.folder}: time ids {scene.times}, expected {self.times}")
        return scene


# What a resumed pretraining run may change: nothing that decides which scenes it trains or is scored on.
RESUMABLE = ("steps", "save_every", "device", "threads")


def check_resumable(cfg: PretrainConfig, saved_path: Path) -> None:
    """Refuse to resume with a recipe that changes the scenes or the optimisation: with another
    `pool_scenes`, a training scene could be rendered from the held-out scenes' seeds, and the card's
    "held-out" numbers would come from a scene it trained on."""
    if not saved_path.is_file():
        return
    saved = {**dataclasses.asdict(PretrainConfig()), **json.loads(saved_path.read_text())}
    now = dataclasses.asdict(cfg)
    diff = {k: (saved[k], now[k]) for k in now if k not in RESUMABLE and _plain(saved[k]) != _plain(now[k])}
    if diff:
        detail = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"--resume needs the run's own recipe ({saved_path}); these differ: {detail}")


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple | list) else value


def stream_recipe(cfg: PretrainConfig, heldout: bool = False) -> StreamRecipe:
    """What a stream recipe draws; held-out scenes are static (no movers), from seeds no stream draws."""
    return StreamRecipe(
        seed_base=POOL_SEED_OFFSET * (cfg.seed + 1),
        image_size=cfg.image_size,
        static_share=1.0 if heldout else cfg.static_share,
        monocular_share=cfg.monocular_share,
        max_views=cfg.max_views,
    )


def render_scenes(cfg: PretrainConfig, root: Path) -> tuple[Sequence[Any], Sequence[Any]]:
    """(training, held-out) scenes, each rendered on first use: a fixed pool under `root/scenes`
    (`SceneOnDisk`), or a stream of one new scene per step, in memory (`SceneStream`)."""
    if cfg.scenes == "stream":
        heldout = SceneStream(stream_recipe(cfg, heldout=True), cfg.heldout_scenes, heldout=True)
        return SceneStream(stream_recipe(cfg), cfg.steps), heldout
    names = [f"pool_{i:03d}" for i in range(cfg.pool_scenes)]
    names += [f"heldout_{j:03d}" for j in range(cfg.heldout_scenes)]
    scenes = [
        SceneOnDisk(root / "scenes" / name, scene_config(cfg, index), cfg.image_size)
        for index, name in enumerate(names)
    ]
    return scenes[: cfg.pool_scenes], scenes[cfg.pool_scenes :]


CAMERA_KEYS = ("camera_rot_deg_median", "camera_rot_deg_max")


def heldout_metrics(model: torch.nn.Module, scenes: Sequence[Any], clip_times: int) -> dict[str, Any]:
    """Geometry of `model` on `scenes`: each `GEOMETRY_KEYS` / `CAMERA_KEYS` metric averaged over the
    scenes where it is defined (NaN-aware: a panning camera has no ATE), plus the per-scene values with
    every frame's camera errors. Each scene is evaluated on all its frames in clips of `clip_times`
    (0: the whole scene as one clip)."""
    per_scene = []
    for scene in scenes:
        scene = scene.load() if hasattr(scene, "load") else scene
        result = evaluate(model, scene, clip_times=clip_times or scene.num_times)
        keys = (*GEOMETRY_KEYS, *CAMERA_KEYS, "camera_frames", "coverage", "camera_floor")
        per_scene.append({**{k: result[k] for k in keys}, "views": scene.num_views})
    mean = {k: _nanmean([s[k] for s in per_scene]) for k in (*GEOMETRY_KEYS, *CAMERA_KEYS)}
    floor = {k: _nanmean([s["camera_floor"][k] for s in per_scene]) for k in per_scene[0]["camera_floor"]}
    return {"mean": mean, "per_scene": per_scene, "camera_floor": floor}


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if v == v]
    return float(np.mean(finite)) if finite else float("nan")


def recipe_command(cfg: PretrainConfig) -> str:
    """The command that runs `cfg`: the module with its named recipe (when it is not the field defaults,
    tiny-synthetic's) and the options that differ from that recipe."""
    default = RECIPES.get(cfg.name, PretrainConfig())
    named = f" --recipe {cfg.name}" if cfg.name in RECIPES and cfg.name != NAME else ""
    return "python -m page4d.experiments.pretrain --out DIR" + named + changed_options(cfg, default)


def first_losses(history: list[dict[str, Any]], n: int = FIRST_LOSSES) -> list[dict[str, Any]]:
    """The first `n` logged steps: step, clip (scene, first time) and every loss term."""
    keep = ("step", "scene", "clip_start", "lr")
    return [{k: v for k, v in r.items() if k in keep or k.endswith("loss")} for r in history[:n]]


def git_commit() -> str:
    """The commit the code ran from (with "+dirty" when the package's code differs from it), or
    "unknown" outside a git checkout."""
    here = Path(__file__).resolve().parent
    run = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True)
    if run.returncode != 0:
        return "unknown"
    status = ["git", "status", "--porcelain", "--", ".", ":!weights"]  # the package, not its shipped weights
    dirty = subprocess.run(status, cwd=here, capture_output=True, text=True)
    return run.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def pretrain(
    cfg: PretrainConfig,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict[str, Any] | None:
    """Render the scenes, train (resumably, in `out_dir/train`), evaluate the held-out scenes and write
    the shipped files. Returns the card's numbers, or None when `stop_after` stopped the run early."""
    out = Path(out_dir)
    if is_finished(out):
        raise FileExistsError(f"{out} already holds a finished pretraining run; choose a new --out")
    claim_run_folder(out / "train", resume=resume)  # before anything is written (train re-checks)
    if resume:
        check_resumable(cfg, out / "pretrain_config.json")
    commit = git_commit()  # the code that runs now; HEAD may move during a long run
    pool, heldout = render_scenes(cfg, out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "pretrain_config.json", dataclasses.asdict(cfg))
    model = starting_model(cfg.seed, cfg.init, cfg.patch_embed)
    init_digest = weights_digest(model)
    t0 = time.perf_counter()
    model, history = train(
        cfg.train_config(),
        pool,
        output_dir=out / "train",
        model=model,
        progress=progress,
        resume=resume,
        stop_after=stop_after,
    )
    if not is_finished(out / "train"):
        return None
    summary = json.loads((out / "train" / "summary.json").read_text())
    name = cfg.name
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    weights_path = atomic_torch_save({"model": state}, out / f"{name}.pt")
    # the card scores exactly the float16 weights it ships
    shipped = build_model(model_config(cfg.patch_embed)).eval()
    load_checkpoint(shipped, weights_path)
    pretrained = heldout_metrics(shipped, heldout, cfg.eval_clip_times)
    random_init = heldout_metrics(initial_model(cfg.seed, cfg.patch_embed), heldout, cfg.eval_clip_times)
    trained_on = [pool[i] for i in range(min(cfg.train_eval_scenes, len(pool)))]
    card = {
        "name": name,
        "preset": "tiny",
        "model_config_changes": model_config_changes(cfg),
        "recipe": dataclasses.asdict(cfg),
        "train_config": dataclasses.asdict(cfg.train_config()),
        "command": recipe_command(cfg),
        "commit": commit,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": cfg.threads,
        "train_seconds": summary["seconds"],
        "wall_seconds_this_call": time.perf_counter() - t0,
        "init_digest": init_digest,
        "weights_sha256": hashlib.sha256(weights_path.read_bytes()).hexdigest(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "first_losses": first_losses(history),
        "final_losses": summary["final_losses"],
        "heldout": {"pretrained": pretrained, "random_init": random_init},
        "heldout_scenes": [dataclasses.asdict(c) for c in heldout_configs(cfg)],
        "training_scenes": heldout_metrics(shipped, trained_on, cfg.eval_clip_times) if trained_on else None,
        "camera_errors_in_training": training_camera_errors(history),
    }
    card["targets"] = target_check(card)
    _write_loss_curve(history, out / f"{name}_loss.png", name)
    atomic_write_text(out / f"{name}.md", card_markdown(card))
    write_json(out / f"{name}.json", card)
    mark_finished(out, "pretrain", card=f"{name}.json")  # last: its presence marks the run finished
    return card


def model_config_changes(cfg: PretrainConfig) -> dict[str, Any]:
    """How the card's network differs from the `tiny` preset (the patch embedding only when changed)."""
    changes: dict[str, Any] = {"mask_head.masked_global_blocks": [], "track_head": None}
    if cfg.patch_embed != "conv":
        changes["patch_embed"] = cfg.patch_embed
    return changes


# Issue 20's bar for a backbone whose cameras generalise (held-out static scenes).
TARGETS = {
    "rpe_rot": ("<=", 5.0),
    "rpe_view_rot": ("<=", 10.0),
    "depth_abs_rel": ("<=", 0.10),
    "depth_delta1": (">=", 0.90),
}


def target_check(card: dict[str, Any]) -> dict[str, Any]:
    """Each target with the held-out value and whether it is met."""
    mean = card["heldout"]["pretrained"]["mean"]
    out = {}
    for key, (op, bound) in TARGETS.items():
        value = mean[key]
        met = value == value and (value <= bound if op == "<=" else value >= bound)
        out[key] = {"target": f"{op} {bound:g}", "value": value, "met": bool(met)}
    return out


def heldout_configs(cfg: PretrainConfig) -> list[SyntheticSceneConfig]:
    """The held-out scenes' generator configs (the card records them; a test re-renders one)."""
    if cfg.scenes == "stream":
        recipe = stream_recipe(cfg, heldout=True)
        return [draw_scene_config(recipe, j, heldout=True) for j in range(cfg.heldout_scenes)]
    return [scene_config(cfg, cfg.pool_scenes + j) for j in range(cfg.heldout_scenes)]


def training_camera_errors(history: list[dict[str, Any]], last: int = 500) -> dict[str, float] | None:
    """Every frame's rotation error over the last `last` logged steps (frame 0 excluded: 0 by
    definition): what the logged camera loss averages away."""
    errors = [x for r in history[-last:] for x in r.get("camera_rot_deg", [])[1:] if x == x]
    if not errors:
        return None
    return {
        "steps": min(last, len(history)),
        "frames": len(errors),
        "median_deg": float(np.median(errors)),
        "p90_deg": float(np.percentile(errors, 90)),
        "max_deg": float(np.max(errors)),
    }


def _write_loss_curve(history: list[dict[str, Any]], path: Path, name: str = NAME) -> None:
    from page4d.report.viz import new_figure, save_figure

    fig = new_figure((7.0, 3.2))
    ax = fig.add_subplot(1, 1, 1)
    steps = np.array([r["step"] for r in history if r.get("updated", True)])
    for key in ("loss", "camera_loss", "depth_loss", "point_loss"):
        values = np.array([r.get(key, np.nan) for r in history if r.get("updated", True)], dtype=float)
        if np.isfinite(values).any():
            window = min(50, len(values))
            smooth = np.convolve(values, np.ones(window) / window, mode="valid")
            ax.plot(steps[window - 1 :], smooth, label=key)
    ax.axhline(0.0, color="0.6", lw=0.5)  # the confidence-weighted depth/point terms may go below 0
    ax.set_xlabel("step")
    ax.set_ylabel(f"loss (running mean of {min(50, len(history))} steps)")
    ax.legend(fontsize=8)
    ax.set_title(f"{name} pretraining")
    fig.tight_layout()
    save_figure(fig, path)


def card_markdown(card: dict[str, Any]) -> str:
    """The human-readable card: what the weights are, how they were made, what they score, and every
    correction made after the run (``corrections``), so the card never claims to be untouched when it
    is not."""
    r = card["recipe"]
    pre, rnd = card["heldout"]["pretrained"]["mean"], card["heldout"]["random_init"]["mean"]
    rows = "\n".join(f"| {k} | {rnd[k]:.3f} | {pre[k]:.3f} |" for k in GEOMETRY_KEYS)
    minutes = card["train_seconds"] / 60
    n_heldout, digest = len(card["heldout_scenes"]), card["weights_sha256"][:16]
    return f"""# {card["name"]}: the tiny preset pretrained on synthetic scenes

Weights: `{card["name"]}.pt` (float16, {card["parameters"]:,} parameters, sha256 {digest}...).
Load with `--checkpoint {card["name"]}` (CLI) or `load_model("tiny", "{card["name"]}")`; it loads strictly
into the `tiny` preset. Pretrained with the mask head's attention bias off (as PAGE-4D's
`checkpoint_nomask`), so the head is at its initialisation; fine-tuning turns the bias on.

## Recipe
`{card["command"]}` at commit `{card["commit"]}`,
torch {card["torch"]}, {card["threads"]} CPU thread(s) ({card["cpu_capability"]}):
{_scenes_text(r)};
camera + depth + point losses (VGGT's{_rotation_text(r)}), everything trains, AdamW lr {r["lr"]:g}
(warm-up {r["warmup_steps"]} steps, cosine to {r["min_lr"]:g}), weight decay {r["weight_decay"]:g},
{r["steps"]} steps, seed {r["seed"]}{_start_text(r)}: {minutes:.0f} minutes.

![loss curve]({card["name"]}_loss.png)

## Held-out scenes (never trained on; {n_heldout} scenes, all frames, {_clips_text(r)})
| metric | random init (seed {r["seed"]}) | pretrained |
|---|---|---|
{rows}
{targets_text(card)}{training_text(card)}
Depth after median scaling; ATE / RPE after a Sim(3) alignment per clip (`page4d.scoring.evaluate`).
{heldout_coverage(card["heldout"])}{corrections_text(card.get("corrections", []))}"""


def _scenes_text(r: dict[str, Any]) -> str:
    size = f"{r['image_size'][0]}x{r['image_size'][1]}"
    if r.get("scenes", "pool") == "stream":
        static, mono = f"{r['static_share']:.0%}", f"{r['monocular_share']:.0%}"
        return (
            f"a new generated scene every step ({r['steps']} scenes, {size}): {static} without\n"
            f"movers; {mono} one camera orbiting, panning or dollying with hand-held jitter\n"
            f"over 4-8 steps, the rest rigs of 2-{r['max_views']} cameras at random azimuth gaps and\n"
            "heights in random order over 2 steps"
        )
    scenes = f"{r['pool_scenes']} generated scenes of {r['times']} time steps x {r['views']}"
    return (
        f"{scenes} orbiting or static cameras\nwith 1-3 movers, {size}, clips of {r['clip_times']} time steps"
    )


def _rotation_text(r: dict[str, Any]) -> str:
    target = r.get("rotation_target", "sign_invariant")
    return "" if target == "sign_invariant" else f"; rotation target {target}"


def _clips_text(r: dict[str, Any]) -> str:
    return "each scene as one clip" if not r["eval_clip_times"] else f"clips of {r['eval_clip_times']}"


def targets_text(card: dict[str, Any]) -> str:
    if "targets" not in card:
        return ""
    floor = card["heldout"]["pretrained"].get("camera_floor") or {}

    def floor_text(key: str) -> str:
        value = floor.get(key)
        return "-" if value is None else f"{value:.3f}"

    rows = "\n".join(
        f"| {k} | {t['target']} | {t['value']:.3f} | {'met' if t['met'] else 'NOT met'} | {floor_text(k)} |"
        for k, t in card["targets"].items()
    )
    note = ""
    if floor:
        note = (
            '\nIdentity floor: the errors of the trivial answer "every camera is the first one" on the same '
            "scenes. A camera target that this floor meets too says nothing about the cameras.\n"
        )
    return f"""
Targets (issue 20, held-out static scenes):

| metric | target | pretrained | | identity floor |
|---|---|---|---|---|
{rows}
{note}"""


def _start_text(r: dict[str, Any]) -> str:
    """Where a later phase started (a card from the seeded initialisation says nothing)."""
    init = r.get("init", "random")
    return "" if init == "random" else f", continuing from `{init}` (an earlier phase's weights)"


def training_text(card: dict[str, Any]) -> str:
    lines = []
    train = card.get("training_scenes")
    if train:
        pre, held = train["mean"], card["heldout"]["pretrained"]["mean"]
        keys = (*GEOMETRY_KEYS, *CAMERA_KEYS)
        rows = "\n".join(f"| {k} | {pre[k]:.3f} | {held[k]:.3f} |" for k in keys)
        lines.append(
            f"\nTraining scenes ({len(train['per_scene'])} of the scenes it trained on) beside the held-out"
            " ones:\n\n"
            f"| metric | training scenes | held-out |\n|---|---|---|\n{rows}\n"
        )
    errors = card.get("camera_errors_in_training")
    if errors:
        lines.append(
            f"\nEvery frame's camera rotation error over the last {errors['steps']} training steps "
            f"({errors['frames']} frames): median {errors['median_deg']:.1f} deg, 90th percentile "
            f"{errors['p90_deg']:.1f} deg, worst {errors['max_deg']:.1f} deg.\n"
        )
    return "".join(lines)


def heldout_coverage(heldout: dict[str, Any]) -> str:
    """Over how many clips the held-out means are, and the clips dropped from them (and why)."""
    if not all("coverage" in s for m in heldout.values() for s in m["per_scene"]):
        return "Clips scored per metric: not recorded by this run (its card predates the counts).\n"
    lines = []
    labels = {"random_init": "random init", "pretrained": "pretrained"}
    for model, label in ((m, labels[m]) for m in labels if m in heldout):
        covs = [s["coverage"] for s in heldout[model]["per_scene"]]
        counts = ", ".join(
            f"{family} {sum(c[family]['clips'] for c in covs)}/{sum(c[family]['of'] for c in covs)}"
            for family in ("depth", "camera")
        )
        lines.append(f"Clips scored, {label}: {counts}.")
        for i, c in enumerate(covs):
            for family in ("depth", "camera"):
                for d in c[family]["dropped"]:
                    where = f"{label}, held-out scene {i}, clip t={d['times']}"
                    lines.append(f"- {where} dropped from {family}: {d['reason']}")
    return "\n".join(lines) + "\n"


def corrections_text(corrections: list[dict[str, Any]]) -> str:
    """The card's corrections after the run: none, or a section listing each one."""
    if not corrections:
        return ""
    items = "\n".join(
        f"- `{c['field']}` ({c['when']}): "
        + ("added" if c.get("was") is None else f"was {c['was']}")
        + f", now {c['now']}: {c['why']}"
        for c in corrections
    )
    return f"""
## Corrected after the run (by hand, not by the run)
{items}
"""


def _recipe_arg(argv: list[str] | None) -> str:
    """The --recipe given on the command line (the options' defaults depend on it), else the default."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--recipe", default=DEFAULT_RECIPE, choices=sorted(RECIPES))
    return pre.parse_known_args(argv)[0].recipe


def build_parser(recipe: str = DEFAULT_RECIPE) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m page4d.experiments.pretrain",
        description=__doc__,
        formatter_class=DefaultsHelpFormatter,
    )
    run = p.add_argument_group("run")
    run.add_argument("--out", required=True, help="run folder (never overwritten once finished)")
    run.add_argument("--resume", action="store_true", help="continue the run in --out")
    run.add_argument("--stop-after", type=int, help="stop after N steps, resumably (default: run to --steps)")
    run.add_argument(
        "--recipe",
        default=recipe,
        choices=sorted(RECIPES),
        help="a named recipe; every option below defaults to its value",
    )
    add_options(
        p.add_argument_group(f"recipe {recipe} (PretrainConfig: the card records it)"), PretrainConfig
    )
    p.set_defaults(**dataclasses.asdict(RECIPES[recipe]))
    return p


def main(argv: list[str] | None = None) -> None:
    recipe = _recipe_arg(argv)
    args = build_parser(recipe).parse_args(argv)
    cfg = from_args(PretrainConfig, args)
    card = pretrain(cfg, args.out, resume=args.resume, stop_after=args.stop_after)
    if card is None:
        print(f"pretrain: stopped early; continue with --resume --out {args.out}")
        return
    pre = card["heldout"]["pretrained"]["mean"]
    rnd = card["heldout"]["random_init"]["mean"]
    print(
        f"pretrain: done in {card['train_seconds'] / 60:.1f} min; held-out AbsRel "
        f"{rnd['depth_abs_rel']:.3f} -> {pre['depth_abs_rel']:.3f}, ATE {rnd['ate']:.3f} -> {pre['ate']:.3f}"
        f"; files in {args.out}"
    )


if __name__ == "__main__":
    main()
