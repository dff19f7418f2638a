"""The pretraining stream: a pure function of (recipe, index), the mix of scenes it promises, held-out
seeds no stream draws, and scenes rendered on demand."""

from __future__ import annotations

import collections

import pytest
import torch
from page4d.experiments.scene_stream import (
    HELDOUT_SEED_BASE,
    SceneStream,
    StreamRecipe,
    draw_scene_config,
)


def test_the_stream_draws_mostly_static_rigs_and_moving_monocular_cameras():
    recipe = StreamRecipe()
    configs = [draw_scene_config(recipe, i) for i in range(400)]
    assert configs[17] == draw_scene_config(recipe, 17)  # the same index is always the same scene
    assert len({c.seed for c in configs}) == 400
    static = sum(c.num_movers == 0 for c in configs) / 400
    mono = [c for c in configs if c.views == 1]
    rigs = [c for c in configs if c.views > 1]
    assert 0.65 < static < 0.85 and 0.3 < len(mono) / 400 < 0.5
    assert {c.camera_motion for c in mono} == {"orbit", "pan", "dolly"}
    assert all(
        c.orbit_deg_per_step != 0 and recipe.mono_times[0] <= c.times <= recipe.mono_times[1] for c in mono
    )
    assert collections.Counter(c.views for c in rigs).keys() == set(range(2, recipe.max_views + 1))
    gaps = [
        abs(a - b) % 360
        for c in rigs
        for a, b in zip(c.view_azimuths_deg[:-1], c.view_azimuths_deg[1:], strict=True)
    ]
    assert min(gaps) < 30 and max(gaps) > 120  # random gaps, random order: not an even ring
    assert any(c.orbit_deg_per_step == 0 for c in rigs) and any(c.orbit_deg_per_step > 0 for c in rigs)


def test_heldout_scenes_come_from_a_seed_range_no_stream_draws():
    recipe = StreamRecipe()
    held = draw_scene_config(recipe, 3, heldout=True)
    assert held.seed == HELDOUT_SEED_BASE + 3 and held != draw_scene_config(recipe, 3)
    assert draw_scene_config(recipe, 10**6).seed < HELDOUT_SEED_BASE


def test_a_stream_renders_scenes_on_demand_and_keeps_only_the_newest():
    stream = SceneStream(StreamRecipe(image_size=(56, 70)), length=5, keep=2)
    scene = stream[3]
    config = stream.config(3)
    assert scene.times == list(range(config.times)) and scene.geometry_missing_reason is None
    assert scene._scene is None  # the trainer's checks read neither without rendering
    assert scene.images.shape[:2] == (config.times, config.views) and scene.image_size == (56, 70)
    assert stream[3] is scene and len(stream) == 5
    stream[0].images, stream[1].images
    assert list(stream._rendered) == [0, 1] and scene._scene is None  # the oldest was released
    assert torch.equal(scene.images, stream[3].images)  # rendered again, identical
    with pytest.raises(IndexError, match="outside the stream"):
        stream.config(5)
