"""Tests for the VGGT track predictor (``page4d.model.tracker``).

End-to-end agreement with the fixture's ``track_list`` / ``vis`` / ``conf`` needs the DPT feature
extractor and lives in ``tests/test_reference_fixtures.py``; here we check checkpoint compatibility,
shapes, and the arithmetic of each building block against hand-written formulas.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from page4d.model.tracker import TrackPredictor
from page4d.model.tracker_blocks import (
    CorrelationPyramid,
    flow_fourier_embedding,
    grid_sincos_embedding,
    sample_at_points,
)
from reference_config import config_from_reference

PREFIX = "track_head.tracker."


@pytest.fixture(scope="module")
def tiny_case(fixtures_dir: Path) -> dict:
    return torch.load(fixtures_dir / "vggt_tiny_dino_track.pt", weights_only=True)


def _build_tiny(case: dict) -> TrackPredictor:
    return TrackPredictor.from_config(config_from_reference(case["config"]).track_head)


def _tracker_weights(case: dict) -> dict[str, torch.Tensor]:
    return {k[len(PREFIX) :]: v for k, v in case["state_dict"].items() if k.startswith(PREFIX)}


@pytest.fixture(scope="module")
def tiny_model(tiny_case: dict) -> TrackPredictor:
    model = _build_tiny(tiny_case).double().eval()
    model.load_state_dict(_tracker_weights(tiny_case), strict=True)
    return model


# --------------------------------------------------------------------------------------------------
# Checkpoint compatibility
# --------------------------------------------------------------------------------------------------


def test_tiny_loads_fixture_weights_strict(tiny_case: dict) -> None:
    model = _build_tiny(tiny_case).double()
    weights = _tracker_weights(tiny_case)
    assert weights, "fixture has no track_head.tracker.* weights"
    model.load_state_dict(weights, strict=True)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, weights[name]), name


def test_vggt_1b_keys_and_shapes_match_manifest(fixtures_dir: Path) -> None:
    manifest = json.loads((fixtures_dir / "vggt_1b_state_dict_manifest.json").read_text())
    expected = {k[len(PREFIX) :]: list(v) for k, v in manifest.items() if k.startswith(PREFIX)}
    with torch.device("meta"):
        # VGGT-1B's TrackHead: latent_dim = features = 128, hidden 384, 7 levels, radius 4, stride 2,
        # BaseTrackerPredictor default depth 6.
        model = TrackPredictor(
            stride=2, corr_levels=7, corr_radius=4, latent_dim=128, hidden_size=384, depth=6
        )
    got = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert sorted(got) == sorted(expected)
    mismatched = {k: (got[k], expected[k]) for k in got if got[k] != expected[k]}
    assert not mismatched, mismatched


def test_no_space_attention_has_no_virtual_tracks() -> None:
    model = TrackPredictor(
        stride=2, corr_levels=2, corr_radius=1, latent_dim=16, hidden_size=32, depth=2, use_spaceatt=False
    )
    keys = model.state_dict().keys()
    assert not any("virual_tracks" in k or "space_" in k for k in keys)
    coords, vis, conf = model(torch.rand(1, 3, 2) * 10, torch.randn(1, 2, 16, 8, 8), iters=1)
    assert coords[0].shape == (1, 2, 3, 2) and vis.shape == (1, 2, 3) and conf.shape == (1, 2, 3)


# --------------------------------------------------------------------------------------------------
# Forward behaviour
# --------------------------------------------------------------------------------------------------


def test_forward_shapes_and_dtype_float64(tiny_case: dict, tiny_model: TrackPredictor) -> None:
    torch.manual_seed(0)
    query = tiny_case["inputs"]["query_points"].double()  # [2, 5, 2]
    batch, num_points, _ = query.shape
    frames = 3
    fmaps = torch.randn(batch, frames, 32, 28, 21, dtype=torch.float64)
    with torch.no_grad():
        coord_preds, vis, conf = tiny_model(query, fmaps, iters=3)
    assert len(coord_preds) == 3
    for coords in coord_preds:
        assert coords.shape == (batch, frames, num_points, 2)
        assert coords.dtype == torch.float64
        # The query frame stays pinned to the query point.
        torch.testing.assert_close(coords[:, 0], query, rtol=0, atol=1e-12)
    assert vis.shape == conf.shape == (batch, frames, num_points)
    assert vis.dtype == conf.dtype == torch.float64
    assert ((vis > 0) & (vis < 1)).all() and ((conf > 0) & (conf < 1)).all()
    # Real weights move the non-query frames.
    assert not torch.allclose(coord_preds[-1][:, 1:], query[:, None].expand(-1, frames - 1, -1, -1))


def test_zero_flow_head_keeps_tracks_at_query(tiny_case: dict) -> None:
    """With no coordinate update, every frame and every iteration returns exactly the query points."""
    model = _build_tiny(tiny_case).double().eval()
    model.load_state_dict(_tracker_weights(tiny_case), strict=True)
    with torch.no_grad():
        model.updateformer.flow_head.weight.zero_()
        model.updateformer.flow_head.bias.zero_()
    query = tiny_case["inputs"]["query_points"].double()
    fmaps = torch.randn(2, 4, 32, 28, 21, dtype=torch.float64)
    with torch.no_grad():
        coord_preds, vis, conf = model(query, fmaps, iters=2)
    expected = query[:, None].expand(-1, 4, -1, -1)
    for coords in coord_preds:
        torch.testing.assert_close(coords, expected, rtol=0, atol=1e-12)
    # With zero feature deltas the track features stay the query feature, so all frames agree.
    torch.testing.assert_close(vis, vis[:, :1].expand_as(vis), rtol=0, atol=1e-12)
    torch.testing.assert_close(conf, conf[:, :1].expand_as(conf), rtol=0, atol=1e-12)


def test_logits_when_sigmoid_disabled() -> None:
    torch.manual_seed(0)
    model = TrackPredictor(stride=2, corr_levels=2, corr_radius=1, latent_dim=16, hidden_size=32, depth=2)
    model = model.double().eval()
    query = torch.rand(1, 4, 2, dtype=torch.float64) * 12
    fmaps = torch.randn(1, 2, 16, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        _, vis_p, conf_p = model(query, fmaps, iters=1)
        _, vis_l, conf_l = model(query, fmaps, iters=1, apply_sigmoid=False)
    torch.testing.assert_close(torch.sigmoid(vis_l), vis_p)
    torch.testing.assert_close(torch.sigmoid(conf_l), conf_p)


@pytest.mark.parametrize(
    ("query_shape", "fmap_shape", "iters"),
    [
        ((2, 5, 3), (2, 2, 16, 8, 8), 1),  # xy has 3 components
        ((5, 2), (2, 2, 16, 8, 8), 1),  # no batch dim
        ((2, 5, 2), (2, 16, 8, 8), 1),  # no frame dim
        ((1, 5, 2), (2, 2, 16, 8, 8), 1),  # batch mismatch
        ((2, 5, 2), (2, 2, 8, 8, 8), 1),  # wrong channel count
        ((2, 5, 2), (2, 2, 16, 8, 8), 0),  # no iterations
    ],
)
def test_bad_inputs_raise(query_shape: tuple, fmap_shape: tuple, iters: int) -> None:
    model = TrackPredictor(stride=2, corr_levels=2, corr_radius=1, latent_dim=16, hidden_size=32, depth=2)
    with pytest.raises(ValueError, match=r"\(|iters"):
        model(torch.zeros(query_shape), torch.zeros(fmap_shape), iters=iters)


def test_latent_dim_must_be_multiple_of_four() -> None:
    with pytest.raises(ValueError, match="multiple of 4"):
        TrackPredictor(stride=2, corr_levels=2, corr_radius=1, latent_dim=18, hidden_size=32, depth=2)


# --------------------------------------------------------------------------------------------------
# Building blocks against explicit formulas
# --------------------------------------------------------------------------------------------------


def test_flow_embedding_formula_and_float32_storage() -> None:
    channels = 8
    flows = torch.tensor([[[0.3, -1.7], [2.25, 0.0]]], dtype=torch.float64)  # [1, 2, 2]
    emb = flow_fourier_embedding(flows, channels)
    assert emb.shape == (1, 2, 2 * channels) and emb.dtype == torch.float32
    freqs = torch.arange(0, channels, 2, dtype=torch.float32) * (1000.0 / channels)
    for axis in range(2):
        angles = flows[..., axis : axis + 1] * freqs  # float64 angles from float32 frequencies
        block = emb[..., axis * channels : (axis + 1) * channels]
        torch.testing.assert_close(block[..., 0::2], torch.sin(angles).float(), rtol=0, atol=0)
        torch.testing.assert_close(block[..., 1::2], torch.cos(angles).float(), rtol=0, atol=0)


def test_grid_embedding_formula() -> None:
    dim, height, width = 12, 3, 5
    emb = grid_sincos_embedding(dim, height, width)
    assert emb.shape == (1, dim, height, width) and emb.dtype == torch.float32
    quarter = dim // 4
    omega = 1.0 / 10000.0 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    for y in range(height):
        for x in range(width):
            expected = torch.cat(
                [torch.sin(x * omega), torch.cos(x * omega), torch.sin(y * omega), torch.cos(y * omega)]
            ).float()
            torch.testing.assert_close(emb[0, :, y, x], expected, rtol=0, atol=0)


def test_sample_at_points_pixel_convention() -> None:
    fmap = torch.arange(2 * 3 * 4, dtype=torch.float64).reshape(1, 2, 3, 4)  # [B, C, H=3, W=4]
    points = torch.tensor([[[0.0, 0.0], [3.0, 2.0], [1.5, 1.0], [9.0, -4.0]]], dtype=torch.float64)
    out = sample_at_points(fmap, points)  # [1, 4, 2]
    expected = torch.stack(
        [
            fmap[0, :, 0, 0],
            fmap[0, :, 2, 3],
            0.5 * (fmap[0, :, 1, 1] + fmap[0, :, 1, 2]),
            fmap[0, :, 0, 3],  # border padding clamps
        ]
    )
    torch.testing.assert_close(out[0], expected, rtol=0, atol=1e-12)


def test_correlation_window_layout_and_levels() -> None:
    """Window index a*(2r+1)+b holds offset (x=a-r, y=b-r); level l samples the 2^l-pooled map at p/2^l."""
    torch.manual_seed(0)
    channels, height, width, radius = 4, 8, 10, 1
    fmaps = torch.randn(1, 2, channels, height, width, dtype=torch.float64)
    feats = torch.randn(1, 2, 1, channels, dtype=torch.float64)
    coords = torch.tensor([[[[4.0, 2.0]], [[8.0, 6.0]]]], dtype=torch.float64)  # [B, S, N, 2]
    pyramid = CorrelationPyramid(fmaps, num_levels=2, radius=radius)
    out = pyramid.sample(feats, coords)
    side = 2 * radius + 1
    assert out.shape == (1, 2, 1, 2 * side * side)

    pooled = torch.nn.functional.avg_pool2d(fmaps[0], 2, stride=2)  # [S, C, 4, 5]
    for s in range(2):
        for level, fmap in enumerate([fmaps[0, s], pooled[s]]):
            cx, cy = (coords[0, s, 0] / 2**level).tolist()
            for a in range(side):
                for b in range(side):
                    x, y = cx + a - radius, cy + b - radius
                    assert x == int(x) and y == int(y)  # integer positions: one pixel or padding
                    if 0 <= x <= fmap.shape[-1] - 1 and 0 <= y <= fmap.shape[-2] - 1:
                        expected = feats[0, s, 0] @ fmap[:, int(y), int(x)] / math.sqrt(channels)
                    else:
                        expected = torch.tensor(0.0, dtype=torch.float64)  # zero padding
                    got = out[0, s, 0, level * side * side + a * side + b]
                    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
