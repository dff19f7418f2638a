"""What notebooks and `page4d.predict` load: a model (preset + weights) and a clip (any input).

    model, note = load_model("tiny", checkpoint="", seed=0)                 # preset, seeded weights
    scene = prepare_scene("", (112, 154), 4, 2, seed=0, work_dir=run_dir)    # synthetic or scene folder
    scene = load_clip("clip.mp4", (0, 224), 8, 1, 0, run_dir, gt="masks/")   # any INPUT

Notebooks 01's and 02's default model (a mask head trained on the synthetic scene's first steps) is
`page4d.experiments.trained_heads.trained_model`: it trains, so it lives above the trainer.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from page4d.data import Scene, SyntheticSceneConfig, generate_synthetic_scene, load_scene
from page4d.data.inputs import load_input
from page4d.model import build_model, load_checkpoint, read_state_dict
from page4d.model.checkpoint import patch_embed_of
from page4d.model.config import AUTO_PATCH_EMBED, preset_with_patch_embed
from page4d.model.network import PAGE4DModel

QUICK_TRAIN_TIMES = (
    4  # synthetic time steps 0..3 train notebook 02's quick head; load_clip("") shows later ones
)


AUTO = AUTO_PATCH_EMBED  # a patch_embed value: the embedding the checkpoint's keys say it was made with


def resolve_patch_embed(preset_name: str, checkpoint: str | Path, patch_embed: str = AUTO) -> str:
    """`patch_embed`, or for "auto" the one the checkpoint was made with (read from its keys,
    `model.checkpoint.patch_embed_of`): so the shipped `tiny-pos` and issue 20's other `conv_pos` weights
    load by their name or path alone. Without a checkpoint, or for a preset other than `tiny` (the 1B
    presets keep DINOv2), "auto" is the preset's own, "conv"."""
    if patch_embed != AUTO:
        return patch_embed
    if preset_name != "tiny" or not str(checkpoint):
        return "conv"
    return patch_embed_of(read_state_dict(checkpoint), where=str(checkpoint))


def load_model(
    preset_name: str, checkpoint: str | Path = "", seed: int = 0, patch_embed: str = AUTO
) -> tuple[PAGE4DModel, str]:
    """`(model in eval mode, one-line note)`: the preset (with `patch_embed`, see
    `model.config.preset_with_patch_embed`; "auto": the checkpoint's own, `resolve_patch_embed`) with
    seeded random weights, then the checkpoint if one is given (every key and shape must match; see
    `page4d.model.load_checkpoint`)."""
    patch_embed = resolve_patch_embed(preset_name, checkpoint, patch_embed)
    torch.manual_seed(seed)
    model = build_model(preset_with_patch_embed(preset_name, patch_embed)).eval()
    n_params = sum(p.numel() for p in model.parameters())
    what = f"preset {preset_name}" + (f" with patch embedding {patch_embed}" if patch_embed != "conv" else "")
    if str(checkpoint):
        report = load_checkpoint(model, checkpoint, allow_missing_mask_head=True)
        note = f"{what} ({n_params:,} parameters), weights from {Path(checkpoint).name}: "
        note += report.summary()
    else:
        note = f"{what} ({n_params:,} parameters), random weights (seed {seed})"
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
