"""Pretrain the tiny preset on generated synthetic scenes: a backbone that knows some geometry, on a laptop.

Every CPU experiment used to start from a randomly initialised backbone, while PAGE-4D fine-tunes a
pretrained VGGT. No released weights fit the `tiny` preset, so this trains one the way VGGT trains
(camera, depth and point losses on multi-view clips), on a pool of rendered scenes with orbiting cameras
and moving objects. The mask head is present with its attention bias off (`masked_global_blocks=()`),
as in PAGE-4D's `checkpoint_nomask`: it gets no gradient, so the checkpoint holds a geometry backbone plus
an untouched head, and it loads strictly into the `tiny` preset (whose bias is on) for fine-tuning.

    python -m page4d.experiments.pretrain --out outputs/pretrain           # the shipped recipe
    python -m page4d.experiments.pretrain --out outputs/pretrain --resume  # continue an interrupted run

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from page4d.cli_args import DefaultsHelpFormatter, add_options, from_args, knob
from page4d.data import Scene, SyntheticSceneConfig, generate_synthetic_scene, load_scene
from page4d.model import build_model, load_checkpoint, preset
from page4d.model.config import ModelConfig
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

    def __post_init__(self) -> None:
        self.image_size = tuple(int(x) for x in self.image_size)
        if self.pool_scenes < 1 or self.heldout_scenes < 1:
            raise ValueError(
                f"need >= 1 pool and held-out scene, got {self.pool_scenes}, {self.heldout_scenes}"
            )
        if self.clip_times > self.times:
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
            clip_times=self.clip_times,
            seed=self.seed,
            threads=self.threads,
            device=self.device,
            save_every=self.save_every,
            keep_last=2,
            log_every=25,
        )


def model_config() -> ModelConfig:
    """The tiny preset with the mask head's attention bias off (PAGE-4D's `checkpoint_nomask`)."""
    cfg = preset("tiny").replace(track_head=None)
    return cfg.replace(mask_head=dataclasses.replace(cfg.mask_head, masked_global_blocks=()))


def initial_model(seed: int) -> PAGE4DModel:
    """The seeded random initialisation pretraining starts from (and the held-out comparison uses)."""
    torch.manual_seed(seed)
    return build_model(model_config())


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


class SceneOnDisk:
    """Scene `index` of the recipe, rendered into its folder and loaded the first time anything but its
    time ids is read. The trainer only needs every scene's `times` to build its clip list, so a run
    (or a 3-step replay) renders just the scenes its steps draw, not the whole pool up front."""

    def __init__(self, folder: Path, config: SyntheticSceneConfig, image_size: tuple[int, int]) -> None:
        self.folder, self.config, self.image_size = folder, config, image_size
        self.times = list(range(config.times))
        self._scene: Scene | None = None

    def load(self) -> Scene:
        if self._scene is None:
            if not self.folder.is_dir():
                generate_synthetic_scene(self.folder, self.config)
            self._scene = load_scene(self.folder, image_size=self.image_size, load_tracks=False)
            if self._scene.times != self.times:
                raise ValueError(f"{self.folder}: time ids {self._scene.times}, expected {self.times}")
        return self._scene

    def __getattr__(self, name: str) -> Any:  # only for attributes not set in __init__
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.load(), name)


def render_scenes(cfg: PretrainConfig, root: Path) -> tuple[list[SceneOnDisk], list[SceneOnDisk]]:
    """(pool, held-out) scenes under `root/scenes`, each rendered on first use (`SceneOnDisk`)."""
    names = [f"pool_{i:03d}" for i in range(cfg.pool_scenes)]
    names += [f"heldout_{j:03d}" for j in range(cfg.heldout_scenes)]
    scenes = [
        SceneOnDisk(root / "scenes" / name, scene_config(cfg, index), cfg.image_size)
        for index, name in enumerate(names)
    ]
    return scenes[: cfg.pool_scenes], scenes[cfg.pool_scenes :]


def heldout_metrics(
    model: torch.nn.Module, scenes: list[Scene] | list[SceneOnDisk], clip_times: int
) -> dict[str, Any]:
    """Zero-shot geometry on scenes nothing trained on: each `GEOMETRY_KEYS` metric averaged over the
    scenes (each scene evaluated on all its frames in clips of `clip_times`), plus the per-scene values."""
    per_scene = []
    for scene in scenes:
        result = evaluate(
            model, scene.load() if isinstance(scene, SceneOnDisk) else scene, clip_times=clip_times
        )
        per_scene.append({**{k: result[k] for k in GEOMETRY_KEYS}, "coverage": result["coverage"]})
    mean = {k: float(np.mean([s[k] for s in per_scene])) for k in GEOMETRY_KEYS}
    return {"mean": mean, "per_scene": per_scene}


def recipe_command(cfg: PretrainConfig) -> str:
    """The command that runs `cfg`: the module with the options that differ from the shipped recipe."""
    default = PretrainConfig()
    options = []
    for field in dataclasses.fields(PretrainConfig):
        value = getattr(cfg, field.name)
        if value != getattr(default, field.name):
            shown = " ".join(map(str, value)) if isinstance(value, (tuple, list)) else value
            options.append(f" --{field.name.replace('_', '-')} {shown}")
    return "python -m page4d.experiments.pretrain --out DIR" + "".join(options)


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
    commit = git_commit()  # the code that runs now; HEAD may move during a long run
    pool, heldout = render_scenes(cfg, out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "pretrain_config.json", dataclasses.asdict(cfg))
    model = initial_model(cfg.seed)
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
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    weights_path = atomic_torch_save({"model": state}, out / f"{NAME}.pt")
    shipped = build_model(model_config()).eval()  # the card scores exactly the float16 weights it ships
    load_checkpoint(shipped, weights_path)
    pretrained = heldout_metrics(shipped, heldout, cfg.eval_clip_times)
    random_init = heldout_metrics(initial_model(cfg.seed), heldout, cfg.eval_clip_times)
    card = {
        "name": NAME,
        "preset": "tiny",
        "model_config_changes": {"mask_head.masked_global_blocks": [], "track_head": None},
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
        "heldout_scenes": [
            dataclasses.asdict(scene_config(cfg, cfg.pool_scenes + j)) for j in range(cfg.heldout_scenes)
        ],
    }
    _write_loss_curve(history, out / f"{NAME}_loss.png")
    atomic_write_text(out / f"{NAME}.md", card_markdown(card))
    write_json(out / f"{NAME}.json", card)
    mark_finished(out, "pretrain", card=f"{NAME}.json")  # last: its presence marks the run finished
    return card


def _write_loss_curve(history: list[dict[str, Any]], path: Path) -> None:
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
    ax.set_title("tiny-synthetic pretraining")
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
{r["pool_scenes"]} generated scenes of {r["times"]} time steps x {r["views"]} orbiting or static cameras
with 1-3 movers, {r["image_size"][0]}x{r["image_size"][1]}, clips of {r["clip_times"]} time steps;
camera + depth + point losses (VGGT's), everything trains, AdamW lr {r["lr"]:g}
(warm-up {r["warmup_steps"]} steps, cosine to {r["min_lr"]:g}), weight decay {r["weight_decay"]:g},
{r["steps"]} steps, seed {r["seed"]}: {minutes:.0f} minutes.

![loss curve]({card["name"]}_loss.png)

## Held-out scenes (never trained on; {n_heldout} scenes, all frames, clips of {r["eval_clip_times"]})
| metric | random init (seed {r["seed"]}) | pretrained |
|---|---|---|
{rows}

Depth after median scaling; ATE / RPE after a Sim(3) alignment per clip (`page4d.scoring.evaluate`).
{_heldout_coverage(card["heldout"])}{_corrections(card.get("corrections", []))}"""


def _heldout_coverage(heldout: dict[str, Any]) -> str:
    """Over how many clips the held-out means are, and the clips dropped from them (and why)."""
    if not all("coverage" in s for m in heldout.values() for s in m["per_scene"]):
        return "Clips scored per metric: not recorded by this run (its card predates the counts).\n"
    lines = []
    for model, label in (("random_init", "random init"), ("pretrained", "pretrained")):
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


def _corrections(corrections: list[dict[str, Any]]) -> str:
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m page4d.experiments.pretrain",
        description=__doc__,
        formatter_class=DefaultsHelpFormatter,
    )
    run = p.add_argument_group("run")
    run.add_argument("--out", required=True, help="run folder (never overwritten once finished)")
    run.add_argument("--resume", action="store_true", help="continue the run in --out")
    run.add_argument("--stop-after", type=int, help="stop after N steps, resumably (default: run to --steps)")
    add_options(p.add_argument_group("recipe (PretrainConfig: the card records it)"), PretrainConfig)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
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
