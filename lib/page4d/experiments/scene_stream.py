"""Scenes drawn fresh, as VGGT is trained: a new room for every clip, never a fixed pool.

`draw_scene_config(recipe, index)` is a pure function of (recipe, index): the same index always
draws the same room, cameras and movers, so a stream is reproducible and resumable without storing
it. What a stream draws (`StreamRecipe`):

- mostly static scenes (`static_share` of them have no movers, as VGGT's data is mostly static);
- rigs of 2..`max_views` cameras at random azimuths (neighbouring gaps of 20 to 90 degrees, so views
  overlap as in a multi-view capture, while the rig spans up to 270 degrees; the order
  of views in a clip random, heights random) that stay put or orbit a few degrees per step;
- monocular moving cameras (`monocular_share`, V = 1) that orbit, pan or dolly, with a hand-held
  random walk, over `mono_times` steps: what the field's benchmarks (DAVIS, Sintel, TUM, Bonn) are.

Seeds: scene `index` renders with generator seed `seed_base + index`; held-out scenes use
`HELDOUT_SEED_BASE + index`, a range no training stream ever draws (a stream would need 10^8 scenes
to reach it).

`SceneStream(recipe, n)` is a sequence of `n` such scenes for the trainer (`LazyScene`s), each rendered in
memory the first time it is read (`data.synthetic.scene_in_memory`), the last few kept.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from page4d.data import Scene, SyntheticSceneConfig, render_synthetic_scene
from page4d.data.synthetic import build_world, scene_in_memory

HELDOUT_SEED_BASE = 100_000_000


@dataclass(frozen=True)
class StreamRecipe:
    """What a stream of scenes draws; one recipe + index -> one scene, always the same."""

    seed_base: int = 1_000
    image_size: tuple[int, int] = (112, 154)
    static_share: float = 0.75  # scenes without any mover
    monocular_share: float = 0.4  # single moving camera (the rest: rigs of 2..max_views)
    max_views: int = 4
    rig_times: int = 2  # time steps per rig clip (all views)
    mono_times: tuple[int, int] = (4, 8)  # time steps per monocular clip, drawn in this range
    max_orbit_deg: float = 6.0
    max_movers: int = 3

    def __post_init__(self) -> None:
        if not 0.0 <= self.static_share <= 1.0 or not 0.0 <= self.monocular_share <= 1.0:
            raise ValueError("static_share and monocular_share must lie in [0, 1]")
        if self.max_views < 2 or self.rig_times < 1 or not 1 <= self.mono_times[0] <= self.mono_times[1]:
            raise ValueError(f"bad stream sizes: {self}")


def rig_azimuths(rng: np.random.Generator, views: int) -> tuple[float, ...]:
    """Azimuths (degrees) with random gaps of 20..90 degrees between neighbours, in random order."""
    gaps = rng.uniform(20.0, 90.0, size=views - 1)
    azimuths = rng.uniform(0.0, 360.0) + np.concatenate([[0.0], np.cumsum(gaps)])
    return tuple(float(a % 360.0) for a in rng.permutation(azimuths))


def draw_scene_config(recipe: StreamRecipe, index: int, heldout: bool = False) -> SyntheticSceneConfig:
    """Scene `index` of the stream (`heldout`: of the held-out range, never drawn by training).

    Rejection sampling, deterministic: a draw whose static objects cannot be placed around its movers
    (about 1 in 300) is replaced by the next draw of the same random stream."""
    seed = (HELDOUT_SEED_BASE if heldout else recipe.seed_base) + index
    rng = np.random.default_rng([seed, 7])
    return first_placeable(lambda: _draw(recipe, seed, rng), f"scene {index} of {recipe}")


def first_placeable(
    draw: Callable[[], SyntheticSceneConfig], what: str, tries: int = 50
) -> SyntheticSceneConfig:
    """The first of `draw()`'s successive draws whose static objects can be placed around its movers
    (deterministic rejection sampling: `draw` reads one seeded random stream); raises after `tries`."""
    for _ in range(tries):
        config = draw()
        if placeable(config):
            return config
    raise RuntimeError(f"{what}: no placeable draw in {tries} tries; the recipe is too crowded")


def placeable(config: SyntheticSceneConfig) -> bool:
    """Whether the generator can place this config's static objects (its world only, no rendering)."""
    try:
        build_world(config, np.random.default_rng(config.seed))
    except RuntimeError:
        return False
    return True


def _draw(recipe: StreamRecipe, seed: int, rng: np.random.Generator) -> SyntheticSceneConfig:
    h, w = recipe.image_size
    static = rng.random() < recipe.static_share
    monocular = rng.random() < recipe.monocular_share
    size_low = float(rng.uniform(0.25, 0.5))
    common = dict(
        seed=seed,
        height=h,
        width=w,
        fov_deg=float(rng.uniform(50.0, 80.0)),
        camera_radius=float(rng.uniform(3.0, 3.8)),
        camera_height=float(rng.uniform(1.2, 2.4)),
        look_at_height=float(rng.uniform(0.2, 0.8)),
        num_movers=0 if static else int(rng.integers(1, recipe.max_movers + 1)),
        mover_speed=float(rng.uniform(0.1, 0.3)),
        mover_size=(size_low, size_low + float(rng.uniform(0.05, 0.2))),
        num_static_boxes=int(rng.integers(2, 5)),
        num_static_spheres=int(rng.integers(0, 2)),
        tracks_per_mover=0,
        query_points_per_step=0,
    )
    if monocular:
        return SyntheticSceneConfig(
            **common,
            times=int(rng.integers(recipe.mono_times[0], recipe.mono_times[1] + 1)),
            views=1,
            camera_motion=str(rng.choice(["orbit", "pan", "dolly"])),
            orbit_deg_per_step=float(rng.uniform(-recipe.max_orbit_deg, recipe.max_orbit_deg)),
            dolly_m_per_step=float(rng.uniform(0.0, 0.15)),
            jitter_deg=float(rng.uniform(0.0, 1.5)),
            jitter_m=float(rng.uniform(0.0, 0.03)),
        )
    views = int(rng.integers(2, recipe.max_views + 1))
    return SyntheticSceneConfig(
        **common,
        times=recipe.rig_times,
        views=views,
        orbit_deg_per_step=0.0 if rng.random() < 0.5 else float(rng.uniform(1.0, recipe.max_orbit_deg)),
        view_azimuths_deg=rig_azimuths(rng, views),
        view_heights=tuple(float(x) for x in common["camera_height"] + rng.uniform(-0.5, 0.5, size=views)),
    )


class LazyScene:
    """A scene whose time ids are known at once and whose pixels are rendered the first time anything
    else is read: a trainer lists every clip of a long stream (it needs only `times`) without rendering
    it. `release()` drops the rendered tensors again (the stream keeps only the newest few)."""

    def __init__(self, config: SyntheticSceneConfig) -> None:
        self.config = config
        self.times = list(range(config.times))
        self.geometry_missing_reason = None  # a generated scene always has depth and cameras
        self._scene: Scene | None = None

    def load(self) -> Scene:
        if self._scene is None:
            self._scene = self.make()
        return self._scene

    def make(self) -> Scene:
        """The rendered scene (here in memory; `pretrain.SceneOnDisk` writes and reads a folder)."""
        return scene_in_memory(render_synthetic_scene(self.config))

    def release(self) -> None:
        self._scene = None

    def __getattr__(self, name: str):  # only for attributes not set in __init__
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.load(), name)


class SceneStream(Sequence):
    """`length` scenes of a recipe as `LazyScene`s: each rendered in memory on first read, only the
    `keep` most recently read kept rendered.

    Each scene is one clip (all of its time steps and views: train with `clip_times=0`), so a trainer
    that reads scene k at step k (`clip_order="stream"`) sees a new room every step."""

    def __init__(self, recipe: StreamRecipe, length: int, heldout: bool = False, keep: int = 4) -> None:
        self.recipe, self.length, self.heldout, self.keep = recipe, length, heldout, keep
        self._rendered: OrderedDict[int, LazyScene] = OrderedDict()
        self._scenes: dict[int, LazyScene] = {}

    def __len__(self) -> int:
        return self.length

    def config(self, index: int) -> SyntheticSceneConfig:
        if not 0 <= index < self.length:
            raise IndexError(f"scene {index} outside the stream's {self.length}")
        return draw_scene_config(self.recipe, index, self.heldout)

    def __getitem__(self, index: int) -> LazyScene:  # type: ignore[override]
        if index not in self._scenes:
            self._scenes[index] = _Tracked(self, index, self.config(index))
        return self._scenes[index]

    def _rendering(self, index: int) -> None:
        """Called when scene `index` renders: keep it, release the oldest beyond `keep`."""
        self._rendered[index] = self._scenes[index]
        self._rendered.move_to_end(index)
        while len(self._rendered) > self.keep:
            _, oldest = self._rendered.popitem(last=False)
            oldest.release()


class _Tracked(LazyScene):
    def __init__(self, stream: SceneStream, index: int, config: SyntheticSceneConfig) -> None:
        super().__init__(config)
        self._stream, self._index = stream, index

    def load(self) -> Scene:
        self._stream._rendering(self._index)
        return super().load()
