"""The synthetic generator: same layout as the real capture, exact and self-consistent ground truth,
deterministic per seed, fast, with controllable label noise."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from page4d.data import (
    SceneFormatError,
    SyntheticSceneConfig,
    cross_view_depth_agreement,
    generate_synthetic_scene,
    load_scene,
    render_synthetic_scene,
)
from page4d.data.seganymo import EXACT_MASKS
from page4d.data.synthetic import CONFIG_FILE, write_synthetic_scene
from page4d.geometry import depth_to_world_points, project_points, sample_nearest

TINY = {"times": 3, "views": 2, "height": 56, "width": 70, "tracks_per_mover": 16, "query_points_per_step": 4}


@pytest.fixture(scope="module")
def default_scene(tmp_path_factory):
    """The default (8 times x 4 views at 168x224) scene, rendered once (its cost: `page4d.bench data`)."""
    out = tmp_path_factory.mktemp("synthetic") / "scene"
    rendered = render_synthetic_scene(SyntheticSceneConfig(seed=0))
    write_synthetic_scene(rendered, out)
    return out, rendered


@pytest.fixture(scope="module")
def loaded(default_scene):
    return load_scene(default_scene[0])


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_reader_loads_the_default_scene(default_scene, loaded):
    root, rendered = default_scene
    assert loaded.times == list(range(8)) and loaded.views == [0, 1, 2, 3]
    assert loaded.images.shape == (8, 4, 3, 168, 224)
    assert torch.equal(
        (loaded.images * 255).round().to(torch.uint8),
        torch.from_numpy(rendered.images).permute(0, 1, 4, 2, 3),
    )
    assert torch.equal(loaded.depths, torch.from_numpy(rendered.depths))
    assert bool((loaded.depths > 0).all())  # analytic depth is valid everywhere inside the room
    assert bool(loaded.mask_valid.all()) and loaded.mask_missing_reason is None
    assert 0.01 < float(loaded.masks.mean()) < 0.3
    config = json.loads((root / CONFIG_FILE).read_text())
    assert config["seed"] == 0 and config["times"] == 8


def test_cross_view_reprojection_is_exact(default_scene, loaded):
    """Depth of view i moved into view j lands exactly on j's true surface unless occluded there."""
    _, rendered = default_scene
    rng = np.random.default_rng(0)
    for t in [0, 7]:
        for i in range(4):
            j = (i + 1) % 4
            depth = loaded.depths[t, i].double()
            world = depth_to_world_points(
                depth, loaded.intrinsics[t, i].double(), loaded.extrinsics[t, i].double()
            )
            world = world.reshape(-1, 3)[rng.choice(depth.numel(), 3000, replace=False)]
            xy, z = project_points(world, loaded.intrinsics[t, j].double(), loaded.extrinsics[t, j].double())
            inside = (z > 0) & (xy[:, 0] > -0.5) & (xy[:, 0] < 223.5) & (xy[:, 1] > -0.5) & (xy[:, 1] < 167.5)
            true = torch.from_numpy(rendered.depth_at(t, j, xy[inside].numpy()))
            rel = (true - z[inside]) / z[inside]
            visible = rel.abs() < 1e-4
            assert float(visible.double().mean()) > 0.4, (t, i, j)  # the rest is occluded in view j
            assert float(rel.max()) < 1e-4, (t, i, j)  # never "seen through": nothing lies behind it


def test_cross_view_depth_agreement_on_pixels(loaded):
    """The same nearest-pixel check used on the real scene: mutually visible points agree closely."""
    for i, j in [(0, 1), (1, 2), (2, 3), (3, 0)]:
        a = cross_view_depth_agreement(
            loaded.depths[0, i],
            loaded.intrinsics[0, i],
            loaded.extrinsics[0, i],
            loaded.depths[0, j],
            loaded.intrinsics[0, j],
            loaded.extrinsics[0, j],
        )
        assert a.num_points > 10000 and a.median_rel_err < 0.05 and a.within_5pct > 0.5, (i, j, a)


def test_masks_are_the_movers_silhouettes(default_scene, loaded):
    """Checked against the analytic movers, not the renderer's id buffer: every masked pixel's 3D point
    lies on a mover's surface, and no unmasked pixel's does."""
    _, rendered = default_scene
    exact = load_scene(default_scene[0], mask_source=EXACT_MASKS, load_tracks=False)
    assert torch.equal(loaded.masks, exact.masks)  # noise is off by default
    for t in range(loaded.num_times):
        movers = rendered.movers_at(t)
        for v in range(loaded.num_views):
            world = depth_to_world_points(
                loaded.depths[t, v].double(),
                loaded.intrinsics[t, v].double(),
                loaded.extrinsics[t, v].double(),
            ).reshape(-1, 3)
            distance = np.min([np.abs(m.sdf(world.numpy())) for m in movers], axis=0)
            masked = loaded.masks[t, v].reshape(-1).numpy() > 0.5
            assert masked.any()
            assert distance[masked].max() < 1e-4, (t, v)
            assert distance[~masked].min() > 1e-4, (t, v)


def test_tracks_follow_the_movers(loaded):
    for vi, tracks in enumerate(loaded.tracks):
        assert tracks.xy.shape[0] == 8 and tracks.xy.shape[1] > 20
        assert bool(tracks.visible.any(dim=0).all())  # only points seen at least once are kept
        values, inside = sample_nearest(loaded.masks[:, vi], tracks.xy)
        keep = tracks.visible & inside
        assert float(values[keep].mean()) == 1.0
        assert torch.equal(tracks.confidence > 0, tracks.visible)


def test_same_seed_same_bytes_different_seed_different(tmp_path):
    a = generate_synthetic_scene(tmp_path / "a", SyntheticSceneConfig(seed=3, **TINY))
    b = generate_synthetic_scene(tmp_path / "b", SyntheticSceneConfig(seed=3, **TINY))
    c = generate_synthetic_scene(tmp_path / "c", SyntheticSceneConfig(seed=4, **TINY))
    files_a, files_b, files_c = _files(a), _files(b), _files(c)
    assert len(files_a) > 20 and files_a == files_b
    assert files_a.keys() == files_c.keys()
    changed = [k for k in files_a if files_a[k] != files_c[k] and k.startswith("images")]
    assert len(changed) == 3 * 2


def test_inconsistent_views_are_refused(tmp_path):
    root = generate_synthetic_scene(tmp_path / "scene", SyntheticSceneConfig(**TINY))
    assert load_scene(root).views == [0, 1]
    (root / "images" / "time_01" / "view1.png").unlink()
    with pytest.raises(SceneFormatError, match=r"time_01: views \[0\] differ from \[0, 1\]"):
        load_scene(root)


def test_output_folder_must_be_empty(tmp_path):
    (tmp_path / "old.txt").write_text("stale")
    with pytest.raises(FileExistsError, match="not empty"):
        generate_synthetic_scene(tmp_path, SyntheticSceneConfig(**TINY))


def test_mask_noise_options(tmp_path):
    base = render_synthetic_scene(SyntheticSceneConfig(seed=5, **TINY))
    dilated = render_synthetic_scene(SyntheticSceneConfig(seed=5, mask_offset_px=2, **TINY))
    eroded = render_synthetic_scene(SyntheticSceneConfig(seed=5, mask_offset_px=-1, **TINY))
    assert np.array_equal(base.images, dilated.images)  # noise never moves the scene
    assert np.array_equal(base.noisy_masks, base.exact_masks)
    assert (
        dilated.noisy_masks >= dilated.exact_masks
    ).all() and dilated.noisy_masks.sum() > base.exact_masks.sum()
    assert (
        eroded.noisy_masks <= eroded.exact_masks
    ).all() and eroded.noisy_masks.sum() < base.exact_masks.sum()

    config = SyntheticSceneConfig(seed=5, mask_drop_prob=0.5, mask_jitter_px=1, **TINY)
    root = generate_synthetic_scene(tmp_path / "dropped", config)
    rendered = render_synthetic_scene(config)
    assert 0 < rendered.mask_written.sum() < rendered.mask_written.size
    scene = load_scene(root)
    assert torch.equal(scene.mask_valid, torch.from_numpy(rendered.mask_written))
    assert scene.mask_missing_reason is not None and "missing" in scene.mask_missing_reason
    exact = load_scene(root, mask_source=EXACT_MASKS)
    assert bool(exact.mask_valid.all())  # the exact silhouettes are always written


def test_orbiting_cameras_move_and_stay_consistent():
    config = SyntheticSceneConfig(seed=1, orbit_deg_per_step=5.0, **TINY)
    rendered = render_synthetic_scene(config)
    E = rendered.extrinsics.astype(np.float64)
    centres = -np.einsum("tvji,tvj->tvi", E[..., :3], E[..., 3])
    azimuth = np.degrees(np.arctan2(centres[..., 1], centres[..., 0]))
    step = (azimuth[1:] - azimuth[:-1] + 180) % 360 - 180
    assert np.allclose(step, 5.0, atol=1e-3)
    static_rig = render_synthetic_scene(SyntheticSceneConfig(seed=1, **TINY)).extrinsics
    assert np.array_equal(static_rig[0], static_rig[-1])


def test_other_sizes_subsets_and_resize(tmp_path):
    config = SyntheticSceneConfig(seed=2, times=5, views=3, height=112, width=154, num_movers=3)
    root = generate_synthetic_scene(tmp_path / "scene", config)
    scene = load_scene(root, times=[1, 3, 4], views=[2, 0], image_size=(56, 70))  # 154 -> 140 columns
    assert scene.images.shape == (3, 2, 3, 56, 70)
    t = scene.transform
    assert (t.top, t.left, t.crop_h, t.crop_w) == (0, 7, 112, 140)
    a = cross_view_depth_agreement(
        scene.depths[0, 0], scene.intrinsics[0, 0], scene.extrinsics[0, 0],
        scene.depths[0, 1], scene.intrinsics[0, 1], scene.extrinsics[0, 1],
    )  # fmt: skip
    assert a.num_points > 200 and a.median_rel_err < 0.05
    assert len(scene.tracks) == 2 and scene.tracks[0].xy.shape[0] == 3


def test_command_line(tmp_path):
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "page4d.data.synthetic", "--out", str(out), "--seed", "7", "--times", "2"]
    cmd += ["--views", "3", "--height", "42", "--width", "56", "--movers", "1", "--mask-drop-prob", "0"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "2 times x 3 views" in result.stdout
    scene = load_scene(out)
    assert scene.images.shape == (2, 3, 3, 42, 56)
    assert json.loads((out / CONFIG_FILE).read_text())["num_movers"] == 1


def _centres(scene) -> np.ndarray:
    e = scene.extrinsics
    return -np.einsum("tvji,tvj->tvi", e[..., :3], e[..., 3])


def test_camera_motions_move_the_cameras_as_named_and_stay_exact():
    """pan: centres fixed, heading turns by the step angle; dolly: the camera walks in towards the room
    centre; jitter: a hand-held walk; a rig at given azimuths and heights. Depth stays exact (the
    renderer's own ray cast agrees with the written cameras)."""
    from page4d.geometry import rotation_angle

    base = dict(seed=5, times=3, views=1, height=42, width=56, orbit_deg_per_step=4.0)
    pan = render_synthetic_scene(SyntheticSceneConfig(**base, camera_motion="pan"))
    c = _centres(pan)
    assert np.allclose(c[0], c[2], atol=1e-5)
    r = torch.from_numpy(pan.extrinsics[:, 0, :, :3]).double()
    turn = np.rad2deg(float(rotation_angle(r[1] @ r[0].T)))
    assert turn == pytest.approx(4.0, abs=1e-3)
    dolly = render_synthetic_scene(SyntheticSceneConfig(**base, camera_motion="dolly", dolly_m_per_step=0.2))
    radius = np.linalg.norm(_centres(dolly)[:, 0, :2], axis=-1)
    assert radius[0] - radius[2] == pytest.approx(0.4, abs=1e-4)
    shaky = render_synthetic_scene(SyntheticSceneConfig(**base, jitter_deg=1.0, jitter_m=0.03))
    orbit = render_synthetic_scene(SyntheticSceneConfig(**base))
    assert not np.allclose(shaky.extrinsics, orbit.extrinsics, atol=1e-4)
    rig = render_synthetic_scene(
        SyntheticSceneConfig(
            **{**base, "views": 3}, view_azimuths_deg=(10, 100, 250), view_heights=(1.5, 2, 1.2)
        )
    )
    azimuth = np.rad2deg(np.arctan2(_centres(rig)[0, :, 1], _centres(rig)[0, :, 0])) % 360
    assert np.allclose(azimuth, [10, 100, 250], atol=1e-3) and np.allclose(
        _centres(rig)[0, :, 2], [1.5, 2, 1.2]
    )
    for scene in (pan, dolly, shaky, rig):
        xy = np.array([[10.5, 12.0], [30.0, 20.5], [50.0, 35.0]])
        v = scene.config.views - 1
        row, col = xy[:, 1].round().astype(int), xy[:, 0].round().astype(int)
        exact = scene.depth_at(1, v, np.stack([col, row], axis=1).astype(float))
        assert np.allclose(exact, scene.depths[1, v, row, col], rtol=1e-5)
    with pytest.raises(ValueError, match="one value per view"):
        SyntheticSceneConfig(views=2, view_azimuths_deg=(0.0,))
    with pytest.raises(ValueError, match="camera_motion"):
        SyntheticSceneConfig(camera_motion="fly")


def test_a_scene_in_memory_equals_the_written_scene_read_back(tmp_path):
    """What a stream of fresh scenes trains on is exactly what load_scene reads from the written folder."""
    from page4d.data.synthetic import scene_in_memory

    config = SyntheticSceneConfig(seed=4, mask_drop_prob=0.3, mask_offset_px=1, **TINY)
    rendered = render_synthetic_scene(config)
    write_synthetic_scene(rendered, tmp_path / "s")
    disk = load_scene(tmp_path / "s", load_tracks=False)
    memory = scene_in_memory(rendered)
    for key in ("images", "depths", "intrinsics", "extrinsics", "masks", "mask_valid"):
        assert torch.equal(getattr(memory, key), getattr(disk, key)), key
    assert (memory.times, memory.views, memory.image_size) == (disk.times, disk.views, disk.image_size)
    assert not bool(memory.mask_valid.all()) and "dropped" in memory.mask_missing_reason
    exact = scene_in_memory(rendered, exact_masks=True)
    assert bool(exact.mask_valid.all()) and torch.equal(
        exact.masks.bool(), torch.from_numpy(rendered.exact_masks)
    )
