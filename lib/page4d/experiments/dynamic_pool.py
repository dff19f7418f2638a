"""The dynamic scenes the answer fine-tunes on and is scored on: generated monocular videos with large movers.

PAGE-4D fine-tunes a static-pretrained VGGT on dynamic videos and evaluates on other dynamic videos.
Here both sides are drawn from one recipe (`PoolRecipe`) with disjoint generator seed ranges, apart
from every range pretraining draws (`scene_stream`: training `seed_base + index`, held-out static
`HELDOUT_SEED_BASE + index`), so nothing evaluated here was ever trained on:

- training scene `i`: generator seed `TRAIN_SEED_BASE + i`;
- held-out scene `j`: generator seed `EVAL_SEED_BASE + j`.

Each scene is one moving camera (orbit or dolly about the room centre, with a hand-held random walk) over
`times` steps, because the field's dynamic benchmarks are monocular videos and because the pretrained
tiny backbone's temporal cameras work (its card: held-out RPE-r of a few degrees) while its wide-baseline
rig views do not. Movers are large (2-3 objects, a quarter to a third of the pixels on average) so that
they matter to the cameras and depth, as in `experiments.phenomenon`.

`pool_scenes(recipe, heldout, noisy)` renders the scenes in memory (0.1 s each at 112 x 154). With
`noisy=True` the same scenes come with SegAnyMo-like pseudo labels (dilated/eroded by a per-frame
jitter, some frames' labels missing; `mask_noise`); the generator draws label noise from its own random
stream, so the images, depth and cameras are bit-identical to the exact-mask version.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from page4d.data import Scene, SyntheticSceneConfig, render_synthetic_scene
from page4d.data.synthetic import scene_in_memory
from page4d.experiments.scene_stream import first_placeable

TRAIN_SEED_BASE = 200_000_000
EVAL_SEED_BASE = 300_000_000


@dataclass(frozen=True)
class PoolRecipe:
    """How many dynamic scenes, and what they look like."""

    train_scenes: int = 16
    eval_scenes: int = 8
    times: int = 8
    image_size: tuple[int, int] = (112, 154)
    movers: tuple[int, int] = (2, 3)  # inclusive range
    mover_size: tuple[float, float] = (0.45, 0.75)  # range of the movers' half-extent (metres)
    orbit_deg: float = 5.0  # largest orbit per step (either direction)
    mask_noise: tuple[int, int, float] = (2, 2, 0.1)  # (offset px, per-frame jitter px, drop prob)

    def __post_init__(self) -> None:
        if self.train_scenes < 1 or self.eval_scenes < 1 or self.times < 2:
            raise ValueError(f"a pool needs >= 1 training and held-out scene and >= 2 time steps: {self}")


def scene_config(recipe: PoolRecipe, index: int, heldout: bool = False) -> SyntheticSceneConfig:
    """Scene `index` of the training pool (or of the held-out scenes): a pure function of its arguments.
    A draw whose static objects cannot be placed around its movers is replaced by the next draw."""
    seed = (EVAL_SEED_BASE if heldout else TRAIN_SEED_BASE) + index
    rng = np.random.default_rng([seed, 13])
    return first_placeable(lambda: _draw(recipe, seed, rng), f"dynamic scene {index} of {recipe}")


def _draw(recipe: PoolRecipe, seed: int, rng: np.random.Generator) -> SyntheticSceneConfig:
    h, w = recipe.image_size
    low = float(rng.uniform(*recipe.mover_size))
    return SyntheticSceneConfig(
        seed=seed,
        times=recipe.times,
        views=1,
        height=h,
        width=w,
        fov_deg=float(rng.uniform(55.0, 75.0)),
        camera_radius=float(rng.uniform(3.2, 3.8)),
        camera_height=float(rng.uniform(1.3, 2.2)),
        look_at_height=float(rng.uniform(0.3, 0.7)),
        camera_motion=str(rng.choice(["orbit", "dolly"])),
        orbit_deg_per_step=float(rng.choice([-1.0, 1.0]) * rng.uniform(2.0, recipe.orbit_deg)),
        dolly_m_per_step=float(rng.uniform(0.03, 0.12)),
        jitter_deg=float(rng.uniform(0.0, 1.0)),
        jitter_m=float(rng.uniform(0.0, 0.02)),
        num_movers=int(rng.integers(recipe.movers[0], recipe.movers[1] + 1)),
        mover_speed=float(rng.uniform(0.15, 0.3)),
        mover_size=(low, min(low + 0.1, recipe.mover_size[1])),
        num_static_boxes=int(rng.integers(2, 5)),
        num_static_spheres=int(rng.integers(0, 2)),
        tracks_per_mover=0,
        query_points_per_step=0,
    )


def noisy_config(recipe: PoolRecipe, config: SyntheticSceneConfig) -> SyntheticSceneConfig:
    """The same scene with the recipe's pseudo-label noise on its masks (nothing else changes)."""
    offset, jitter, drop = recipe.mask_noise
    return dataclasses.replace(config, mask_offset_px=offset, mask_jitter_px=jitter, mask_drop_prob=drop)


def pool_scenes(recipe: PoolRecipe, heldout: bool = False, noisy: bool = False) -> list[Scene]:
    """The training pool (or the held-out scenes) rendered in memory; masks exact unless `noisy`."""
    count = recipe.eval_scenes if heldout else recipe.train_scenes
    scenes = []
    for index in range(count):
        config = scene_config(recipe, index, heldout)
        if noisy:
            config = noisy_config(recipe, config)
        scenes.append(scene_in_memory(render_synthetic_scene(config)))
    return scenes


def moving_share(scenes: list[Scene]) -> float:
    """The mean share of pixels labelled dynamic over the scenes' frames that have a label."""
    shares = [float(s.masks[s.mask_valid].float().mean()) for s in scenes if s.masks is not None]
    return float(np.mean(shares)) if shares else float("nan")
