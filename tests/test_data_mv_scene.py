"""The reader on the real 4-camera capture (../shared/data/mv_scene): geometry and labels stay aligned
after resizing, at the agreement levels its README established, and missing or broken labels are loud."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from page4d.data import (
    CropResize,
    SceneFormatError,
    cross_view_depth_agreement,
    load_scene,
    read_query_points,
    vggt_size,
)
from page4d.geometry import project_points, sample_nearest
from PIL import Image
from scipy import ndimage


def _mv_scene() -> Path:
    shared = Path(os.environ.get("PAGE4D_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
    root = shared / "data" / "mv_scene"
    if not (root / "images").is_dir():
        raise FileNotFoundError(
            f"real test scene not found at {root}; set PAGE4D_SHARED to the shared folder"
        )
    return root


MV_SCENE = _mv_scene()

# README table: % of pixels == 255 in mask_frames at 320x240, rows t = 0..15, columns views 0..3.
README_MASK_PERCENT = [
    [15.0, 17.4, 2.4, 2.2],
    [15.0, 17.4, 2.4, 2.2],
    [15.0, 17.6, 2.4, 2.2],
    [15.1, 17.9, 2.4, 2.2],
    [15.7, 18.2, 2.6, 3.7],
    [16.3, 19.1, 3.7, 5.0],
    [16.4, 20.1, 4.2, 5.6],
    [17.4, 21.1, 4.5, 6.1],
    [18.2, 21.9, 4.7, 6.3],
    [18.7, 22.7, 4.8, 6.5],
    [19.0, 23.1, 4.8, 6.6],
    [19.2, 23.3, 4.8, 6.8],
    [19.4, 23.4, 4.9, 7.2],
    [19.3, 23.4, 5.0, 7.5],
    [19.2, 23.3, 5.1, 8.0],
    [18.9, 23.3, 5.3, 8.6],
]
# 168x224 keeps the 4:3 aspect (pure 0.7x resize); 224x294 and 224x224 need a centre crop of columns,
# 112x154 a crop of rows. VGGT's own 392x518 (upsampling) has a lighter test of its own below.
RESIZED = [(168, 224), (224, 294), (224, 224), (112, 154)]


@pytest.fixture(scope="module")
def native():
    return load_scene(MV_SCENE, load_instances=True)


@pytest.fixture(scope="module", params=RESIZED, ids=lambda s: f"{s[0]}x{s[1]}")
def resized(request):
    return load_scene(MV_SCENE, image_size=request.param)


def _query_point_hits(scene) -> int:
    """Rows of query_points.npy within 5% of the observed depth in at least one view at their time."""
    q = torch.from_numpy(read_query_points(MV_SCENE)).double()
    hits = 0
    for t in torch.unique(q[:, 0]).long().tolist():
        ti = scene.times.index(t)
        rows = q[q[:, 0] == t, 1:]
        views = scene.intrinsics.shape[1]
        xy, z = project_points(  # one camera per view: [V, n]
            rows.expand(views, -1, -1), scene.intrinsics[ti].double(), scene.extrinsics[ti].double()
        )
        observed, inside = sample_nearest(scene.depths[ti].double(), xy)
        ok = inside & (observed > 0) & ((z - observed).abs() < 0.05 * observed)
        hits += int(ok.any(dim=0).sum())
    return hits


def _pair_agreement(scene, i: int, j: int, step: int = 1) -> tuple[float, float]:
    """Median (over time) relative error and pooled within-5% share of view i -> view j."""
    meds, within, counts = [], [], []
    for t in range(0, scene.num_times, step):
        a = cross_view_depth_agreement(
            scene.depths[t, i],
            scene.intrinsics[t, i],
            scene.extrinsics[t, i],
            scene.depths[t, j],
            scene.intrinsics[t, j],
            scene.extrinsics[t, j],
        )
        meds.append(a.median_rel_err)
        within.append(a.within_5pct)
        counts.append(a.num_points)
    w = np.asarray(counts, dtype=float)
    return float(np.median(meds)), float(np.average(within, weights=w))


def test_native_layout_matches_readme(native):
    assert native.times == list(range(16)) and native.views == [0, 1, 2, 3]
    assert native.images.shape == (16, 4, 3, 240, 320) and native.images.dtype == torch.float32
    assert 0.0 <= float(native.images.min()) and float(native.images.max()) <= 1.0
    assert native.depths.shape == (16, 4, 240, 320)
    assert native.intrinsics.shape == (16, 4, 3, 3) and native.extrinsics.shape == (16, 4, 3, 4)
    K0 = native.intrinsics[0, 0]
    assert torch.allclose(
        K0[[0, 1, 0, 1], [0, 1, 2, 2]], torch.tensor([308.32, 308.13, 154.02, 124.01]), atol=0.01
    )
    R, t = native.extrinsics[0, 0, :, :3].double(), native.extrinsics[0, 0, :, 3].double()
    centre = -R.T @ t
    assert torch.allclose(centre, torch.tensor([5.46, 1.78, 0.82], dtype=torch.float64), atol=0.01)
    valid_share = float((native.depths > 0).float().mean())
    assert 0.80 < valid_share < 0.92  # README: about 89% (between 82% and 89% depending on view)


def test_native_query_points_agree_with_depth(native):
    assert _query_point_hits(native) == 348  # README: 348 / 354


def test_native_cross_view_agreement_matches_readme(native):
    for (i, j), (readme_med, readme_within) in {(1, 2): (0.007, 0.88), (2, 3): (0.012, 0.86)}.items():
        med, within = _pair_agreement(native, i, j)
        assert abs(med - readme_med) < 0.002, (i, j, med)
        assert abs(within - readme_within) < 0.02, (i, j, within)


def test_wrong_convention_is_detected(native):
    """The agreement check can fail: camera-to-world extrinsics (the README's losing hypothesis) fail it."""
    E = native.extrinsics[0]
    R, t = E[..., :3], E[..., 3:]
    inverse = torch.cat([R.transpose(-1, -2), -R.transpose(-1, -2) @ t], dim=-1)
    d, K = native.depths[0], native.intrinsics[0]
    a = cross_view_depth_agreement(d[1], K[1], inverse[1], d[2], K[2], inverse[2])
    assert a.median_rel_err > 0.1 or a.num_points < 1000


def test_native_mask_fractions_match_readme_table(native):
    assert native.masks is not None and native.mask_missing_reason is None
    assert bool(native.mask_valid.all())
    assert set(torch.unique(native.masks).tolist()) == {0.0, 1.0}
    percent = 100.0 * native.masks.mean(dim=(-1, -2)).double()
    expected = torch.tensor(README_MASK_PERCENT, dtype=torch.float64)
    assert (percent - expected).abs().max() <= 0.05 + 1e-3, (percent - expected).abs().max()


def test_instance_ids_cover_the_dynamic_mask(native):
    ids = native.instances.values
    assert ids is not None and ids.dtype == torch.int64
    assert set(torch.unique(ids).tolist()) == {0, 1, 2}
    agreement = float(((ids > 0).float() == native.masks).double().mean())
    assert agreement > 0.999  # README: > 99.9% of pixels


def test_native_tracks_fall_on_mask(native):
    assert [tr.xy.shape[1] for tr in native.tracks] == [380, 331, 253, 277]
    assert all(tr.xy.shape == (16, tr.xy.shape[1], 2) for tr in native.tracks)
    rates = _track_on_mask_rates(native)
    assert min(rates) >= 0.95 and max(rates) <= 0.998, rates  # README: 95-99.7% per view


def _track_on_mask_rates(scene) -> list[float]:
    rates = []
    for vi, tracks in enumerate(scene.tracks):
        on, total = 0, 0
        for ti in range(scene.num_times):
            values, inside = sample_nearest(scene.masks[ti, vi], tracks.xy[ti])
            keep = tracks.visible[ti] & inside
            on += int(values[keep].sum())
            total += int(keep.sum())
        rates.append(on / total)
    return rates


def test_resized_geometry_and_intrinsics(resized):
    H, W = resized.image_size
    assert resized.images.shape == (16, 4, 3, H, W)
    assert resized.depths.shape == (16, 4, H, W) and resized.masks.shape == (16, 4, H, W)
    transform = CropResize.centered((240, 320), (H, W))
    assert resized.transform == transform
    sy, sx = transform.scale
    native_K = load_scene(MV_SCENE, times=[0], views=[0], load_tracks=False).intrinsics[0, 0]
    K = resized.intrinsics[0, 0]
    assert float(K[0, 0]) == pytest.approx(float(native_K[0, 0]) * sx, rel=1e-6)
    assert float(K[0, 2]) == pytest.approx(
        (float(native_K[0, 2]) - transform.left + 0.5) * sx - 0.5, abs=1e-4
    )
    assert float(K[1, 2]) == pytest.approx((float(native_K[1, 2]) - transform.top + 0.5) * sy - 0.5, abs=1e-4)
    assert abs(sx - sy) < 0.01  # a crop, not a squash


def test_resized_query_points_agree_with_depth(resized):
    assert _query_point_hits(resized) >= 344  # native: 348 / 354


def test_resized_cross_view_agreement(resized):
    for i, j in [(1, 2), (2, 3)]:
        med, within = _pair_agreement(resized, i, j, step=3)
        assert med < 0.015, (i, j, med)
        assert within > 0.80, (i, j, within)


def test_resized_tracks_fall_on_mask(resized):
    rates = _track_on_mask_rates(resized)
    assert min(rates) >= 0.93, rates


def test_resized_masks_sit_on_the_near_depth(resized):
    """Mask and depth share the transform: view 0's mask covers the person (depth ~6.5 units), the ring
    just outside it is the far background (~21.5); a misaligned mask would blur the two."""
    H, W = resized.image_size
    ring_px = max(1, round(3 * W / 320))
    inside_depth, ring_depth = [], []
    for t in range(resized.num_times):
        mask = resized.masks[t, 0].numpy() > 0.5
        depth = resized.depths[t, 0].numpy()
        ring = ndimage.binary_dilation(mask, iterations=2 * ring_px) & ~ndimage.binary_dilation(
            mask, iterations=ring_px
        )
        inside_depth.append(depth[mask & (depth > 0)])
        ring_depth.append(depth[ring & (depth > 0)])
    assert float(np.median(np.concatenate(inside_depth))) < 8.0
    assert float(np.median(np.concatenate(ring_depth))) > 15.0


def test_resize_never_invents_depth_values(native):
    """Valid-aware median pooling returns measured samples only: no zero mixing, no bilinear blends."""
    scene = load_scene(MV_SCENE, times=[3], views=[0, 2], image_size=(168, 224), load_tracks=False)
    for vi in range(2):
        out = scene.depths[0, vi]
        source = native.depths[3, [0, 2][vi]]
        values = out[out > 0]
        assert bool(torch.isin(values, source[source > 0]).all())
        valid_share = float((out > 0).float().mean())
        assert abs(valid_share - float((source > 0).float().mean())) < 0.02


def test_upsampled_to_vggt_size_keeps_geometry():
    scene = load_scene(MV_SCENE, times=[0, 5, 10], image_size=vggt_size((240, 320)), load_tracks=False)
    assert scene.images.shape == (3, 4, 3, 392, 518)
    assert 0.0 <= float(scene.images.min()) and float(scene.images.max()) <= 1.0
    med, within = _pair_agreement(scene, 1, 2)
    assert med < 0.015 and within > 0.80, (med, within)
    assert 0.80 < float((scene.depths > 0).float().mean()) < 0.92


def test_vggt_size_and_patch_multiple():
    assert vggt_size((240, 320)) == (392, 518)
    assert vggt_size((240, 320), width=224) == (168, 224)
    with pytest.raises(ValueError, match="multiples of 14"):
        load_scene(MV_SCENE, times=[0], image_size=(100, 150))


def test_subset_of_times_and_views():
    scene = load_scene(MV_SCENE, times=[2, 9, 15], views=[3, 1], image_size=(112, 154))
    assert scene.times == [2, 9, 15] and scene.views == [3, 1]
    assert scene.images.shape == (3, 2, 3, 112, 154)
    assert [tr.xy.shape[1] for tr in scene.tracks] == [277, 331]
    full = load_scene(MV_SCENE, image_size=(112, 154))
    assert torch.equal(scene.images[1, 0], full.images[9, 3])
    assert torch.equal(scene.masks[2, 1], full.masks[15, 1])
    assert torch.equal(scene.tracks[0].xy[1], full.tracks[3].xy[9])
    with pytest.raises(SceneFormatError, match="time ids \\[16\\]"):
        load_scene(MV_SCENE, times=[16])


def test_missing_seganymo_gives_none_and_reason(tmp_path):
    scene = load_scene(MV_SCENE, times=[0, 1], seganymo_dir=tmp_path / "nowhere")
    assert scene.masks is None
    assert not bool(scene.mask_valid.any()) and scene.mask_valid.shape == (2, 4)
    assert "does not exist" in scene.mask_missing_reason and "nowhere" in scene.mask_missing_reason
    assert scene.tracks is None and "moseg" in scene.tracks_missing_reason


def test_deleted_mask_frame_is_invalid_only_there(tmp_path):
    root = tmp_path / "scene"
    shutil.copytree(MV_SCENE, root)
    (root / "SegAnyMo/sam2/mask_frames/view_2/005.png").unlink()
    scene = load_scene(root, image_size=(168, 224))
    expected = torch.ones(16, 4, dtype=torch.bool)
    expected[5, 2] = False
    assert torch.equal(scene.mask_valid, expected)
    assert float(scene.masks[5, 2].abs().sum()) == 0.0  # filled, but mask_valid says it is not GT
    assert float(scene.masks[5, 1].sum()) > 0 and float(scene.masks[6, 2].sum()) > 0
    assert "view_2/005.png" in scene.mask_missing_reason and "1 of 64" in scene.mask_missing_reason


def _copy_seganymo(tmp_path: Path) -> Path:
    target = tmp_path / "SegAnyMo"
    shutil.copytree(MV_SCENE / "SegAnyMo", target)
    return target


def test_seganymo_dir_can_live_elsewhere(tmp_path):
    seganymo = _copy_seganymo(tmp_path)
    scene = load_scene(MV_SCENE, times=[4], seganymo_dir=seganymo)
    reference = load_scene(MV_SCENE, times=[4])
    assert torch.equal(scene.masks, reference.masks)


def test_corrupt_mask_png_raises_naming_file(tmp_path):
    seganymo = _copy_seganymo(tmp_path)
    bad = seganymo / "sam2/mask_frames/view_1/007.png"
    bad.write_bytes(bad.read_bytes()[:60])  # truncated file
    with pytest.raises(SceneFormatError, match="view_1/007.png"):
        load_scene(MV_SCENE, seganymo_dir=seganymo)


def test_wrong_sized_or_valued_mask_raises_naming_file(tmp_path):
    seganymo = _copy_seganymo(tmp_path)
    small = seganymo / "sam2/mask_frames/view_0/003.png"
    Image.fromarray(np.zeros((120, 160), dtype=np.uint8)).save(small)
    with pytest.raises(SceneFormatError, match=r"view_0/003.png: mask size .*\(120, 160\)"):
        load_scene(MV_SCENE, seganymo_dir=seganymo)
    soft = np.full((240, 320), 128, dtype=np.uint8)
    Image.fromarray(soft).save(small)
    with pytest.raises(SceneFormatError, match=r"view_0/003.png: mask values \[128\]"):
        load_scene(MV_SCENE, seganymo_dir=seganymo)


def test_wrong_sized_track_file_raises_naming_file(tmp_path):
    seganymo = _copy_seganymo(tmp_path)
    vis = seganymo / "moseg/view_3/dynamic_visibility.npy"
    np.save(vis, np.zeros((10, 16), dtype=bool))
    with pytest.raises(SceneFormatError, match="view_3/dynamic_visibility.npy"):
        load_scene(MV_SCENE, seganymo_dir=seganymo)


def test_broken_depth_file_raises_naming_file(tmp_path):
    root = tmp_path / "scene"
    shutil.copytree(MV_SCENE, root, ignore=shutil.ignore_patterns("SegAnyMo"))
    np.save(root / "depths/time_04/view1.npy", np.zeros((240, 321), dtype=np.float32))
    with pytest.raises(SceneFormatError, match=r"time_04/view1.npy: shape \(240, 321\)"):
        load_scene(root)
