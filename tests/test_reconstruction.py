"""Cameras, depth and point clouds out of a forward pass, re-read with independent readers (plyfile,
evo's TUM reader) and checked against the in-memory predictions; the static map and its scoring."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from page4d.data import CropResize, SyntheticSceneConfig, render_synthetic_scene, scene_to_batch
from page4d.data.synthetic import scene_in_memory
from page4d.inference.reconstruction import (
    Reconstruction,
    reconstruct,
    source_depth,
    source_intrinsics,
    static_map,
    write_ply,
    write_tum,
)
from page4d.model import build_model, load_checkpoint, preset
from page4d.scoring.maps import align_to_gt, map_distances


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    rendered = render_synthetic_scene(
        SyntheticSceneConfig(
            seed=2, times=2, views=3, height=56, width=70, orbit_deg_per_step=3.0, tracks_per_mover=0
        )
    )
    scene = scene_in_memory(rendered, exact_masks=True)
    batch = scene_to_batch(scene, world_frame="first_camera")
    model = build_model(preset("tiny")).eval()
    load_checkpoint(model, "tiny-synthetic")  # a random init predicts no field of view
    with torch.no_grad():
        pred = model(batch.images)
    return scene, batch, pred


def test_reconstruction_points_lie_on_the_predicted_rays(clip):
    scene, batch, pred = clip
    rec = reconstruct(pred, batch.images)
    assert rec.points.shape == (2, 3, 56, 70, 3) and rec.p_dynamic.shape == (2, 3, 56, 70)
    # reproject: every point lands on its own pixel in its own camera at its own depth
    e, k = rec.extrinsics[1, 2].double(), rec.intrinsics[1, 2].double()
    cam = rec.points[1, 2].double() @ e[:, :3].T + e[:, 3]
    uv = cam @ k.T
    u = uv[..., 0] / uv[..., 2]
    assert torch.allclose(cam[..., 2], rec.depth[1, 2].double(), rtol=1e-4)
    assert torch.allclose(u, torch.arange(70, dtype=torch.float64).expand(56, 70), atol=1e-3)
    assert torch.equal(
        rec.colors[0, 1], (batch.images[0, 0, 1].permute(1, 2, 0) * 255).round().to(torch.uint8)
    )


def test_ply_and_tum_files_read_back_with_independent_readers(clip, tmp_path):
    plyfile = pytest.importorskip("plyfile")
    from evo.tools import file_interface

    _, batch, pred = clip
    rec = reconstruct(pred, batch.images)
    pts = static_map(rec, use_mask=False, conf_quantile=0.0)
    write_ply(tmp_path / "map.ply", pts["xyz"], pts["rgb"], pts["confidence"], pts["p_dynamic"])
    vertex = plyfile.PlyData.read(str(tmp_path / "map.ply"))["vertex"]
    assert vertex.count == len(pts["xyz"]) == 2 * 3 * 56 * 70
    assert np.array_equal(np.stack([vertex["x"], vertex["y"], vertex["z"]], 1), pts["xyz"])
    assert np.array_equal(np.stack([vertex["red"], vertex["green"], vertex["blue"]], 1), pts["rgb"])
    assert np.array_equal(vertex["p_dynamic"], pts["p_dynamic"]) and np.array_equal(
        vertex["confidence"], pts["confidence"]
    )
    write_tum(tmp_path / "view1.txt", [0, 1], rec.extrinsics[:, 1])
    traj = file_interface.read_tum_trajectory_file(str(tmp_path / "view1.txt"))
    for i, pose in enumerate(traj.poses_se3):  # camera-to-world 4x4
        w2c = torch.from_numpy(np.linalg.inv(pose)[:3]).float()
        assert torch.allclose(w2c, rec.extrinsics[i, 1], atol=1e-5)
    assert list(traj.timestamps) == [0.0, 1.0]


def test_intrinsics_and_depth_go_back_to_the_source_resolution():
    t = CropResize.centered((120, 200), (56, 70))
    k_src = torch.tensor([[150.0, 0, 99.5], [0, 150.0, 59.5], [0, 0, 1]])
    assert torch.allclose(source_intrinsics(t.intrinsics(k_src), t), k_src, atol=1e-4)
    depth = torch.full((2, 56, 70), 3.0)
    src = source_depth(depth, t)
    assert src.shape == (2, 120, 200)
    assert bool((src[:, :, t.left : t.left + t.crop_w] == 3.0).all())
    assert t.left > 0 and bool((src[:, :, : t.left] == 0).all())  # outside the crop: invalid


def test_the_static_map_drops_movers_and_doubt_and_gt_geometry_scores_zero(clip):
    scene, batch, _ = clip
    t, v, h, w = scene.depths.shape
    # the GT's own geometry as a "prediction": its static map sits exactly on the GT surface
    from page4d.geometry import depth_to_world_points

    rec = Reconstruction(
        extrinsics=batch.extrinsics[0],
        intrinsics=batch.intrinsics[0],
        depth=batch.depths[0],
        depth_conf=torch.rand(t, v, h, w),
        points=depth_to_world_points(batch.depths[0], batch.intrinsics[0], batch.extrinsics[0]),
        colors=torch.zeros(t, v, h, w, 3, dtype=torch.uint8),
        p_dynamic=batch.masks[0],
    )
    masked, unmasked = static_map(rec, conf_quantile=0.3), static_map(rec, use_mask=False, conf_quantile=0.3)
    assert len(masked["xyz"]) < len(unmasked["xyz"]) and float(masked["p_dynamic"].max()) < 0.5
    assert 0.5 < float(unmasked["kept_share"]) < 0.8
    gt = static_map(rec, conf_quantile=0.0)["xyz"]
    moved, reason = align_to_gt(masked["xyz"], batch.extrinsics[0], batch.extrinsics[0])
    assert reason is None
    scores = map_distances(moved, gt)
    assert scores["accuracy"] < 1e-5 and scores["completeness"] > scores["accuracy"]
    none, why = align_to_gt(gt, batch.extrinsics[0, :1, :1], batch.extrinsics[0, :1, :1])
    assert none is None and "collinear" in why


def test_the_4d_viewer_has_a_time_slider_coloured_points_and_frustums_and_saves_offline(clip, tmp_path):
    from page4d.report.viewer4d import figure_4d, frustum_lines, save_html

    _, batch, pred = clip
    rec = reconstruct(pred, batch.images)
    fig = figure_4d(rec, max_points=500)
    assert [f.name for f in fig.frames] == ["0", "1"] and len(fig.layout.sliders[0].steps) == 2
    points, cams = fig.frames[1].data
    assert len(points.x) == 500 and np.allclose(points.marker.color, _p_at(rec, 1, points))
    assert len(cams.x) == 3 * (4 * 3 + 6)  # 3 cameras: 4 rays + a closed rectangle, NaN breaks
    lines = frustum_lines(rec.extrinsics[0, :1], rec.intrinsics[0, :1], (56, 70), 1.0)
    centre = -(rec.extrinsics[0, 0, :, :3].T @ rec.extrinsics[0, 0, :, 3]).numpy()
    assert np.allclose(lines[0], centre, atol=1e-5)
    html = save_html(fig, tmp_path / "view.html").read_text()
    assert not re.findall(r"<script[^>]*\bsrc=", html)  # no script fetched from anywhere
    assert len(html) > 1_000_000  # plotly.js inlined: opens offline


def _p_at(rec, t, points) -> np.ndarray:
    """P(dynamic) of the plotted points, looked up by their coordinates."""
    xyz = rec.points[t].reshape(-1, 3).numpy()
    p = rec.p_dynamic[t].reshape(-1).numpy()
    lookup = {tuple(np.round(x, 5)): v for x, v in zip(xyz, p, strict=True)}
    return np.array([lookup[tuple(np.round(x, 5))] for x in zip(points.x, points.y, points.z, strict=True)])


def test_chunks_chained_through_one_overlapping_step_land_in_one_world():
    """Split a clip's GT geometry into two chunks, the second re-expressed in its first frame's camera at
    another scale (what a second forward predicts): chaining recovers the global cameras and points."""
    from page4d.geometry import depth_to_world_points, relative_to_first_camera
    from page4d.inference.reconstruction import chain

    rendered = render_synthetic_scene(
        SyntheticSceneConfig(
            seed=3, times=4, views=2, height=56, width=70, orbit_deg_per_step=4.0, tracks_per_mover=0
        )
    )
    full = scene_in_memory(rendered)
    e = relative_to_first_camera(full.extrinsics.reshape(-1, 3, 4)).reshape(4, 2, 3, 4)

    def rec(ext, depth):
        k = full.intrinsics[: len(ext)]
        pts = depth_to_world_points(depth, k, ext)
        colors = torch.zeros(*pts.shape, dtype=torch.uint8)
        return Reconstruction(ext, k, depth, torch.ones_like(depth), pts, colors, None)

    first = rec(e[:2], full.depths[:2])
    second_world = relative_to_first_camera(e[1:].reshape(-1, 3, 4)).reshape(3, 2, 3, 4)
    s = 0.37  # the second forward's own scale
    second = rec(
        torch.cat([second_world[..., :3], s * second_world[..., 3:]], -1),
        s * full.depths[1:],
    )
    chained = chain(first, second)
    assert chained.points.shape[0] == 2  # the overlapping step is dropped
    assert torch.allclose(chained.extrinsics, e[2:].float(), atol=1e-4)
    want = depth_to_world_points(full.depths[2:], full.intrinsics[2:], e[2:].float())
    assert torch.allclose(chained.points, want, atol=1e-3)
    assert torch.allclose(chained.depth, full.depths[2:], rtol=1e-4)


def test_the_static_picture_has_a_panel_per_time_step_coloured_like_the_viewer(clip):
    from matplotlib.colors import to_rgba
    from page4d.report.viewer4d import _panel_times, picture_4d
    from page4d.report.viz import figure_png

    _, batch, pred = clip
    rec = reconstruct(pred, batch.images)
    fig = picture_4d(rec, max_points=300)
    panels = [ax for ax in fig.axes if ax.name == "3d"]
    assert [ax.get_title() for ax in panels] == ["time step 0", "time step 1"]
    assert len(fig.axes) == 3  # + the P(dynamic) colour bar
    scatter = panels[1].collections[0]
    assert len(scatter.get_offsets()) == 300 and scatter.get_clim() == (0.0, 1.0)
    values = np.asarray(scatter.get_array())
    assert values.min() >= 0.0 and values.max() <= 1.0
    assert scatter.cmap(0.0)[:3] == to_rgba("blue")[:3] and scatter.cmap(1.0)[:3] == to_rgba("red")[:3]
    rgb = picture_4d(rec, max_points=300, color_by="rgb")
    assert len(rgb.axes) == 2 and rgb.axes[0].collections[0].get_array() is None  # image colours, no bar
    png = figure_png(fig)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    with pytest.raises(ValueError, match="color_by"):
        picture_4d(rec, color_by="depth")
    assert _panel_times(10, 4) == [0, 3, 6, 9] and _panel_times(3, 4) == [0, 1, 2]


def test_export_points_writes_a_ply_per_time_step_and_the_static_map(clip, tmp_path):
    plyfile = pytest.importorskip("plyfile")
    from page4d.report.viewer4d import export_points

    _, batch, pred = clip
    rec = reconstruct(pred, batch.images)
    out = export_points(rec, tmp_path, threshold=0.5, conf_quantile=0.3)
    assert out["files"] == ["points_t00.ply", "points_t01.ply", "static_map.ply"]
    assert out["points_per_time"] == [3 * 56 * 70] * 2 and out["points"] == 2 * 3 * 56 * 70
    t1 = plyfile.PlyData.read(str(tmp_path / "points_t01.ply"))["vertex"]
    assert np.array_equal(np.stack([t1["x"], t1["y"], t1["z"]], 1), rec.points[1].reshape(-1, 3).numpy())
    assert np.array_equal(t1["p_dynamic"], rec.p_dynamic[1].reshape(-1).numpy())
    smap = static_map(rec, threshold=0.5, conf_quantile=0.3)
    static = plyfile.PlyData.read(str(tmp_path / "static_map.ply"))["vertex"]
    assert static.count == out["static_map_points"] == len(smap["xyz"])
    assert out["static_map_kept_share"] == pytest.approx(static.count / out["points"])
