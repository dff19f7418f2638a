"""What notebooks and `page4d.predict` load: a model (preset + weights) and a clip (any input).

    model, note = load_model("tiny", checkpoint="", seed=0)                 # preset, seeded weights
    scene = prepare_scene("", (112, 154), 4, 2, seed=0, work_dir=run_dir)    # synthetic or scene folder
    scene = load_clip("clip.mp4", (0, 224), 8, 1, 0, run_dir, gt="masks/")   # any INPUT
    model, note = trained_model("tiny", "", run_dir, (112, 154), 4, 2)       # notebook 02's default

`trained_model` without a checkpoint takes the newest checkpoint of an ablation run under `outputs/`
and otherwise trains the mask head for a few seconds on the built-in synthetic scene (time steps
0..3), so the overlays show a model that has learnt something; `load_clip("")` then shows the same
synthetic scene's later, held-out time steps.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from page4d.data import Scene, SyntheticSceneConfig, generate_synthetic_scene, load_scene
from page4d.data.inputs import load_input
from page4d.model import build_model, load_checkpoint, preset
from page4d.model.vggt import PAGE4DModel
from page4d.runs import outputs_root

QUICK_TRAIN_TIMES = 4  # synthetic time steps 0..3 train the quick head; later ones are held out
QUICK_TRAIN_STEPS = 300
QUICK_TRAIN_SIZE = (112, 154)  # (H, W) of the synthetic scene when the clip shown is not the synthetic one
NO_GEOMETRY_TERMS = {"use_camera": False, "use_depth": False, "use_point": False}


def load_model(preset_name: str, checkpoint: str | Path = "", seed: int = 0) -> tuple[PAGE4DModel, str]:
    """`(model in eval mode, one-line note)`: the preset with seeded random weights, then the checkpoint
    if one is given (every key and shape must match; see `page4d.model.load_checkpoint`)."""
    torch.manual_seed(seed)
    model = build_model(preset(preset_name)).eval()
    n_params = sum(p.numel() for p in model.parameters())
    if str(checkpoint):
        report = load_checkpoint(model, checkpoint, allow_missing_mask_head=True)
        note = f"preset {preset_name} ({n_params:,} parameters), weights from {Path(checkpoint).name}: "
        note += report.summary()
    else:
        note = f"preset {preset_name} ({n_params:,} parameters), random weights (seed {seed})"
    return model, note


def synthetic_scene_root(
    work_dir: str | Path, image_size: tuple[int, int], times: int, views: int, seed: int
) -> Path:
    """`work_dir/synthetic_scene`, rendered at `image_size` (H, W) unless it is already there."""
    root = Path(work_dir) / "synthetic_scene"
    if not root.is_dir():
        h, w = image_size
        generate_synthetic_scene(
            root, SyntheticSceneConfig(seed=seed, times=times, views=views, height=h, width=w)
        )
    return root


def prepare_scene(
    scene_root: str | Path,
    image_size: tuple[int, int],
    num_times: int,
    num_views: int,
    seed: int,
    work_dir: str | Path,
) -> Scene:
    """Load the first `num_times` x `num_views` frames of `scene_root` at `image_size` (H, W).

    An empty `scene_root` renders a synthetic dynamic scene of exactly that size into
    `work_dir/synthetic_scene` (so the run folder keeps the data it was computed on).
    """
    if num_times < 1 or num_views < 1:
        raise ValueError(f"need at least one time and one view, got {num_times} x {num_views}")
    if str(scene_root):
        root = Path(scene_root)
    else:
        root = synthetic_scene_root(work_dir, image_size, num_times, num_views, seed)
    full = load_scene(root, image_size=tuple(image_size), load_tracks=False)
    if len(full.times) < num_times or len(full.views) < num_views:
        raise ValueError(
            f"{root} has {len(full.times)} times x {len(full.views)} views; "
            f"asked for {num_times} x {num_views}"
        )
    if len(full.times) == num_times and len(full.views) == num_views:
        return full
    return load_scene(
        root,
        times=full.times[:num_times],
        views=full.views[:num_views],
        image_size=tuple(image_size),
        load_tracks=False,
    )


def first_views(scene: Scene, num_views: int) -> Scene:
    """The same scene restricted to its first `num_views` views."""
    if num_views >= scene.num_views:
        return scene

    def cut(x):
        return None if x is None else x[:, :num_views]

    return dataclasses.replace(
        scene,
        views=scene.views[:num_views],
        images=cut(scene.images),
        depths=cut(scene.depths),
        intrinsics=cut(scene.intrinsics),
        extrinsics=cut(scene.extrinsics),
        masks=cut(scene.masks),
        mask_valid=cut(scene.mask_valid),
        tracks=None if scene.tracks is None else scene.tracks[:num_views],
        instances=None,
        frame_names=None if scene.frame_names is None else [n[:num_views] for n in scene.frame_names],
        view_names=None if scene.view_names is None else scene.view_names[:num_views],
    )


def load_clip(
    input: str | Path,
    image_size: tuple[int, int],
    num_times: int,
    num_views: int,
    seed: int,
    work_dir: str | Path,
    gt: str | Path = "",
    every: int = 1,
) -> Scene:
    """At most `num_times` x `num_views` frames of any INPUT (see `page4d.data.inputs`).

    image_size (H, W); H = 0 keeps the input's aspect ratio at width W (VGGT's rule). An empty `input`
    is the built-in synthetic scene's held-out time steps (after the `QUICK_TRAIN_TIMES` the quick head
    trains on), rendered at `image_size` into `work_dir`.
    """
    h, w = (int(s) for s in image_size)
    if not str(input):
        if h <= 0:
            raise ValueError("the synthetic scene needs image_height > 0")
        root = synthetic_scene_root(work_dir, (h, w), QUICK_TRAIN_TIMES + num_times, num_views, seed)
        times = list(range(QUICK_TRAIN_TIMES, QUICK_TRAIN_TIMES + num_times))
        return load_scene(
            root, times=times, views=list(range(num_views)), image_size=(h, w), load_tracks=False
        )
    scene = load_input(
        input,
        image_width=w,
        image_size=(h, w) if h > 0 else None,
        every=every,
        max_frames=num_times,
        gt=str(gt) or None,
    )
    return first_views(scene, num_views)


def newest_ablation_checkpoint(root: str | Path | None = None) -> Path | None:
    """The most recently written `checkpoint.pt` of an ablation run below `root` (default: outputs/),
    skipping arms trained without mask supervision (`none_*`); None when there is none."""
    root = Path(root) if root is not None else outputs_root()
    if not root.is_dir():
        return None
    found = [p for p in root.glob("**/train/*/checkpoint.pt") if not p.parent.name.startswith("none_")]
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
    from page4d.train import TrainConfig, train  # the trainer is only needed here

    size = tuple(image_size) if image_size[0] > 0 else QUICK_TRAIN_SIZE
    root = synthetic_scene_root(work_dir, size, QUICK_TRAIN_TIMES + num_times, num_views, seed)
    scene = load_scene(root, image_size=size, load_tracks=False)
    cfg = TrainConfig(
        preset=preset_name, arm="bce", steps=steps, lr=0.01, freeze="all", clip_times=QUICK_TRAIN_TIMES,
        seed=seed, device="cpu", loss_overrides=dict(NO_GEOMETRY_TERMS),
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
    """Notebook 02's model: `checkpoint` when given; else the newest ablation checkpoint under
    `outputs` (its own preset, from the checkpoint's config); else `quick_trained_model`."""
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
