"""Notebook 01's and 02's default model: a mask head that has learnt something, without a checkpoint.

    model, note = trained_model("tiny", "", run_dir, (112, 154), 4, 2)

`trained_model` without a checkpoint takes the newest checkpoint of a finished ablation run under
`outputs/` and otherwise trains the mask head for a few seconds on the built-in synthetic scene (time steps
0..3), so the overlays show a model that has learnt something; `load_clip("")` then shows the same
synthetic scene's later, held-out time steps.
"""

from __future__ import annotations

from pathlib import Path

import torch

from page4d.data import load_scene
from page4d.inference.loading import QUICK_TRAIN_TIMES, load_model, synthetic_scene_root
from page4d.model.network import PAGE4DModel
from page4d.records import is_finished, outputs_root
from page4d.train import NO_GEOMETRY, TrainConfig, train

QUICK_TRAIN_STEPS = 300
RANDOM_WEIGHTS = "random"  # checkpoint="random": seeded random weights (as page4d.predict's)
QUICK_TRAIN_SIZE = (112, 154)  # (H, W) of the synthetic scene when the clip shown is not the synthetic one


def newest_ablation_checkpoint(root: str | Path | None = None) -> Path | None:
    """The most recently written `checkpoint.pt` of a finished ablation run below `root` (default:
    outputs/), skipping arms trained without mask supervision (`none_*`); None when there is none.

    Finished: both the training run and the ablation holding it carry the finish marker
    (`records.is_finished`): an ablation still running (or interrupted) is never read, whatever its
    finished cells hold."""
    root = Path(root) if root is not None else outputs_root()
    if not root.is_dir():
        return None
    found = [
        p
        for p in root.glob("**/train/*/checkpoint.pt")
        if not p.parent.name.startswith("none_") and is_finished(p.parent) and is_finished(p.parents[2])
    ]
    return max(found, key=lambda p: (p.stat().st_mtime, str(p))) if found else None


def quick_trained_model(
    preset_name: str,
    work_dir: str | Path,
    image_size: tuple[int, int],
    num_times: int,
    num_views: int,
    seed: int = 0,
    steps: int = QUICK_TRAIN_STEPS,
) -> tuple[PAGE4DModel, str]:
    """A `preset_name` model whose mask head (only) was trained with BCE for `steps` steps on time steps
    0..QUICK_TRAIN_TIMES-1 of the synthetic scene that `load_clip("")` shows the later steps of
    (a few seconds for `tiny` on one core). image_size (H, W); H = 0 uses QUICK_TRAIN_SIZE."""
    size = tuple(image_size) if image_size[0] > 0 else QUICK_TRAIN_SIZE
    root = synthetic_scene_root(work_dir, size, QUICK_TRAIN_TIMES + num_times, num_views, seed)
    scene = load_scene(root, image_size=size, load_tracks=False)
    cfg = TrainConfig(
        preset=preset_name, arm="bce", steps=steps, lr=0.01, trains="everything",
        clip_times=QUICK_TRAIN_TIMES, seed=seed, device="cpu", loss_overrides=dict(NO_GEOMETRY),
    )  # fmt: skip
    model, _ = train(cfg, scene, train_times=list(range(QUICK_TRAIN_TIMES)), progress=False)
    note = (
        f"preset {preset_name}: mask head trained here with BCE for {steps} steps on time steps "
        f"0-{QUICK_TRAIN_TIMES - 1} of the built-in synthetic scene (seed {seed})"
    )
    return model.eval(), note


def trained_model(
    preset_name: str,
    checkpoint: str | Path,
    work_dir: str | Path,
    image_size: tuple[int, int],
    num_times: int,
    num_views: int,
    seed: int = 0,
    outputs: str | Path | None = None,
) -> tuple[PAGE4DModel, str]:
    """Notebook 01's and 02's model: `checkpoint` when given (`RANDOM_WEIGHTS`: seeded random weights);
    else the newest checkpoint of a finished ablation under `outputs` (its own preset, from the
    checkpoint's config); else `quick_trained_model`."""
    if str(checkpoint) == RANDOM_WEIGHTS:
        return load_model(preset_name, "", seed)
    if str(checkpoint):
        return load_model(preset_name, checkpoint, seed)
    newest = newest_ablation_checkpoint(outputs)
    if newest is None:
        return quick_trained_model(preset_name, work_dir, image_size, num_times, num_views, seed)
    saved = torch.load(newest, map_location="cpu", weights_only=True)
    name = saved.get("config", {}).get("preset", preset_name)
    model, note = load_model(name, newest, seed)
    where = newest.relative_to(Path(outputs) if outputs is not None else outputs_root())
    return model, f"newest ablation checkpoint outputs/{where}; {note}"
