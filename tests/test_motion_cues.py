"""VGGT4D's training-free attention cues (`page4d.inference.motion_cues`) and the q/k observer they
read through: the observer changes nothing, the streamed statistics equal the dense definition and do not
depend on the chunking, a hand-built mover is found, the GT-free threshold is scikit-image's multi-Otsu and
sits at logit 0, and impossible inputs fail with their shapes."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from page4d.inference.motion_cues import (
    CUES,
    MotionCueConfig,
    attention_motion_cues,
    clip_threshold,
    gram_window_statistics,
    motion_cues_from_qk,
    multi_otsu_thresholds,
    predict_with_attention_masks,
    scores_to_logits,
    window_weights,
)
from page4d.model import build_model, preset, upsample_mask_logits
from page4d.model.attention import observe_qk

SIZE = (56, 70)  # a 4 x 5 patch grid


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    return build_model(preset("tiny")).eval()


@pytest.fixture(scope="module")
def clip() -> torch.Tensor:
    return torch.rand(1, 3, 2, 3, *SIZE, generator=torch.Generator().manual_seed(1))  # [B, T, V, 3, H, W]


def test_observer_sees_every_global_block_and_changes_no_output(tiny, clip):
    with torch.no_grad():
        plain = tiny(clip)
    seen: dict[int, tuple] = {}
    layers = {i: block.attn for i, block in enumerate(tiny.aggregator.global_blocks)}
    with torch.no_grad(), observe_qk(layers, lambda i, q, k: seen.setdefault(i, (q.shape, k.shape))):
        watched = tiny(clip)
    tokens = 6 * (5 + 4 * 5)  # S = T*V frames of camera + 4 registers + h*w patches
    assert seen == {i: ((1, 4, tokens, 16),) * 2 for i in range(6)}  # [B, heads, S*P, head_dim]
    assert plain.keys() == watched.keys()
    for key, value in plain.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, watched[key]), key
    assert all(a.qk_observer is None for a in layers.values())  # released on exit


def test_observer_is_released_after_an_error_and_refuses_nesting(tiny, clip):
    layers = {0: tiny.aggregator.global_blocks[0].attn}

    def fail(i, q, k):
        raise RuntimeError("observer failed")

    with pytest.raises(RuntimeError, match="observer failed"), torch.no_grad(), observe_qk(layers, fail):
        tiny(clip)
    assert layers[0].qk_observer is None
    with observe_qk(layers, lambda i, q, k: None):
        with pytest.raises(RuntimeError, match=r"layers \[0\] already have a q/k observer"):
            with observe_qk(layers, lambda i, q, k: None):
                pass


def dense_statistics(target, sources, num_times, num_views, offsets):
    """The definition, written out: every [P, P] Gram map of every (layer, head, source) kept at once."""
    b, s, layers, heads, p, _ = sources.shape
    means, spreads = torch.zeros(b, s, p, dtype=target.dtype), torch.zeros(b, s, p, dtype=target.dtype)
    for f in range(s):
        t = f // num_views
        src = [u * num_views + v for u in range(num_times) if u - t in offsets for v in range(num_views)]
        maps = torch.stack(
            [
                target[0, f, l, h] @ sources[0, j, l, h].T
                for l in range(layers)
                for h in range(heads)
                for j in src
            ]
        )  # [L*H*sources, P, P] (batch 0)
        gram = maps.mean(dim=0)
        means[0, f], spreads[0, f] = gram.mean(dim=-1), gram.std(dim=-1, correction=0)
    return means, spreads


def test_streamed_statistics_equal_the_dense_definition():
    gen = torch.Generator().manual_seed(0)
    num_times, num_views, offsets = 4, 2, (-2, -1, 1)
    target = torch.randn(1, 8, 2, 3, 6, 5, generator=gen, dtype=torch.float64)  # [B, S, L, H, P, d]
    sources = torch.randn(1, 8, 2, 3, 6, 5, generator=gen, dtype=torch.float64)
    weights = window_weights(num_times, num_views, offsets)
    mean, spread = gram_window_statistics(target, sources, weights)
    ref_mean, ref_spread = dense_statistics(target, sources, num_times, num_views, offsets)
    assert torch.allclose(mean, ref_mean, atol=1e-12) and torch.allclose(spread, ref_spread, atol=1e-12)
    # frame (t=0, v=1) averages the 2 views of t=1 only (t=-1, -2 are outside the clip)
    assert weights[1].nonzero().flatten().tolist() == [2, 3] and weights[1].sum() == 1


def random_qk(num_frames: int, patches: int, cfg: MotionCueConfig, dtype=torch.float32, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    q = {i: torch.randn(2, num_frames, 2, patches, 8, generator=gen, dtype=dtype) for i in cfg.q_layers()}
    k = {i: torch.randn(2, num_frames, 2, patches, 8, generator=gen, dtype=dtype) for i in cfg.k_layers()}
    return q, k


def test_scores_do_not_depend_on_how_target_frames_are_chunked():
    """Frame by frame, in chunks of 4 or all 6 at once: the same numbers (float64, so that the different
    summation orders of the batched products stay below 1e-12)."""
    cfg = MotionCueConfig(shallow=(0,), middle=(1, 2), deep=(3, 4), deep_spread=(4,), time_offsets=(-1, 1, 2))
    q, k = random_qk(3 * 2, 20, cfg, torch.float64)
    results = [
        motion_cues_from_qk(q, k, 3, 2, (4, 5), dataclasses.replace(cfg, frames_per_chunk=n))
        for n in (1, 4, 6)
    ]
    scores, factors = results[0]
    assert scores.shape == (2, 3, 2, 4, 5) and set(factors) == set(CUES)
    assert float(scores.amin()) >= 0.0 and float(scores.amax()) <= 1.0
    for other_scores, other_factors in results[1:]:
        assert torch.allclose(other_scores, scores, rtol=0, atol=1e-12)
        assert all(torch.allclose(other_factors[n], factors[n], rtol=0, atol=1e-12) for n in CUES)


def orthonormal(count: int, dim: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))
    return basis[:count]


def test_a_block_whose_tokens_change_over_time_is_least_similar_to_its_neighbours():
    """Tokens identical in every frame except a 2 x 2 block that gets new tokens each frame (new content
    at those patches, as a mover gives): its mean Gram similarity to the neighbours is the lowest."""
    num_frames, p, mover = 4, 16, [5, 6, 9, 10]
    vectors = orthonormal(p + num_frames * len(mover), 64)
    frames = vectors[:p].repeat(num_frames, 1, 1)  # [S, P, d]
    for f in range(num_frames):
        frames[f, mover] = vectors[p + f * len(mover) : p + (f + 1) * len(mover)]
    tokens = frames[None, :, None, None]  # [B, S, L=1, H=1, P, d]
    mean, _ = gram_window_statistics(tokens, tokens, window_weights(num_frames, 1, (-1, 1)))
    static = [i for i in range(p) if i not in mover]
    assert bool((mean[0][:, mover].amax(dim=1) < mean[0][:, static].amin(dim=1)).all())
    assert torch.allclose(
        mean[0][:, static], torch.full((num_frames, len(static)), 1 / p, dtype=torch.float64)
    )


def test_every_cue_points_at_a_hand_built_mover_and_the_otsu_mask_is_the_mover():
    """One layer per band, q/k built from orthonormal vectors so that each of the five cues marks the
    mover the way VGGT4D reads it (shallow: keys unlike the neighbours', queries matching one key
    selectively; middle: queries unlike the neighbours'; deep: queries like the neighbours', evenly)."""
    num_times, num_views, (h, w) = 3, 2, (4, 4)
    p, s = h * w, num_times * num_views
    mover = [5, 6, 9, 10]
    e = orthonormal(p + s + 1, 32)  # static patch i: e[i]; mover at frame f: e[p + f]; shared: e[-1]
    static_tokens = e[:p].expand(s, p, -1).clone()  # [S, P, d]
    changing = static_tokens.clone()
    for f in range(s):
        changing[f, mover] = e[p + f]
    shared_mover = static_tokens.clone()
    shared_mover[:, mover] = 2 * e[-1]
    selective = torch.zeros_like(static_tokens)
    selective[:, mover] = 5 * e[0]  # matches static patch 0's key in every frame
    silent_mover = static_tokens.clone()
    silent_mover[:, mover] = 0.0

    def as_layer(x: torch.Tensor) -> torch.Tensor:
        return x[None, :, None]  # [B=1, S, H=1, P, d]

    cfg = MotionCueConfig(shallow=(0,), middle=(1,), deep=(2,), deep_spread=(3,), time_offsets=(-1, 1))
    q = {0: as_layer(selective), 1: as_layer(changing), 2: as_layer(shared_mover), 3: as_layer(silent_mover)}
    k = {0: as_layer(changing)}
    scores, factors = motion_cues_from_qk(q, k, num_times, num_views, (h, w), cfg)
    flat = scores.reshape(s, p)
    static = [i for i in range(p) if i not in mover]
    assert bool((flat[:, mover] > 0.99).all()) and bool((flat[:, static] < 1e-6).all())
    for name, cue in CUES.items():  # each normalised statistic is 1 on the mover for the "high" cues
        stat = factors[name].reshape(s, p)[:, mover]
        assert torch.allclose(stat, torch.full_like(stat, 1.0 if cue.dynamic_is_high else 0.0), atol=1e-5), (
            name
        )
    logits, thresholds, notes = scores_to_logits(scores, (56, 56), cfg)
    assert not notes and 0.0 < float(thresholds[0]) < 1.0
    assert torch.equal(logits.reshape(s, p) >= 0, flat > 0.5)


def test_multi_otsu_is_scikit_images():
    skimage_filters = pytest.importorskip("skimage.filters")
    rng = np.random.default_rng(3)
    values = np.concatenate(
        [rng.normal(0.1, 0.05, 600), rng.normal(0.5, 0.05, 300), rng.normal(0.9, 0.03, 80)]
    )
    for classes in (2, 3, 4):
        ours = multi_otsu_thresholds(values, classes)
        assert np.allclose(ours, skimage_filters.threshold_multiotsu(values, classes=classes)), classes
    # the adaptive choice ends above the middle mode and below the top one
    assert 0.6 < clip_threshold(torch.from_numpy(values)) < 0.85
    assert clip_threshold(torch.zeros(5, 5)) is None and multi_otsu_thresholds(np.ones(9), 2) is None


def test_logit_zero_is_the_threshold_after_upsampling():
    cfg = MotionCueConfig.for_depth(6)
    scores = torch.rand(2, 3, 2, 4, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    logits, thresholds, notes = scores_to_logits(scores, SIZE, cfg)
    assert not notes and thresholds.shape == (2,)
    up_logits = upsample_mask_logits(logits, SIZE)
    up_scores = F.interpolate(scores.reshape(-1, 1, 4, 5), size=SIZE, mode="bilinear").reshape(2, 3, 2, *SIZE)
    # affine in the score, so upsampling commutes: the mask at image resolution is score >= threshold
    assert torch.allclose(up_logits, cfg.logit_gain * (up_scores - thresholds[:, None, None, None, None]))
    assert torch.equal(up_logits >= 0, up_scores >= thresholds[:, None, None, None, None])
    constant, _, notes = scores_to_logits(torch.zeros(1, 2, 1, 4, 5), SIZE, cfg)
    assert bool((constant < 0).all()) and "constant" in notes[0]  # no evidence of motion: all static


def test_a_full_forward_keeps_the_models_outputs_and_replaces_mask_logits(tiny, clip):
    with torch.no_grad():
        plain = tiny(clip)
    pred = predict_with_attention_masks(tiny, clip)
    cues = attention_motion_cues(tiny, clip)  # the aggregator alone: the same q and k
    for key in ("pose_enc", "depth", "world_points"):
        assert torch.equal(pred[key], plain[key]), key
    assert pred["mask_logits"].shape == plain["mask_logits"].shape == (1, 3, 2, 4, 5)
    assert torch.equal(pred["mask_logits"], cues.logits) and torch.equal(
        pred["attention_scores"], cues.scores
    )
    assert float(cues.scores.amin()) == 0.0 and math.isclose(float(cues.scores.amax()), 1.0, abs_tol=1e-5)


def test_models_without_rope_qk_norm_or_mask_head_give_cues(clip):
    torch.manual_seed(0)
    for changes in ({"rope_freq": 0.0, "qk_norm": False}, {"mask_head": None}):
        model = build_model(preset("tiny", **changes)).eval()
        pred = predict_with_attention_masks(model, clip)
        assert pred["mask_logits"].shape == (1, 3, 2, 4, 5) and bool(
            torch.isfinite(pred["mask_logits"]).all()
        )


def test_loud_errors_name_the_shapes(tiny, clip):
    with pytest.raises(ValueError, match=r"images \[1, 1, 2, 3, 56, 70\] have a single time step"):
        attention_motion_cues(tiny, clip[:, :1])
    with pytest.raises(ValueError, match=r"time step 0 of a clip with T=2 time steps x V=2 views .* \(3,\)"):
        window_weights(2, 2, (3,))
    with pytest.raises(ValueError, match=r"uses global blocks \[6, 7\]; the model has 6"):
        attention_motion_cues(
            tiny, clip, MotionCueConfig(shallow=(0,), middle=(1,), deep=(6,), deep_spread=(7,))
        )
    with pytest.raises(ValueError, match="no default layer bands for depth 12"):
        MotionCueConfig.for_depth(12)
    with pytest.raises(ValueError, match="distinct non-zero"):
        MotionCueConfig.for_depth(6, time_offsets=(0, 1))
    q, k = random_qk(6, 20, MotionCueConfig.for_depth(6))
    with pytest.raises(ValueError, match=r"\(2, 6, 2, 20, 8\) do not match T=2 x V=2 frames of a 4 x 5"):
        motion_cues_from_qk(q, k, 2, 2, (4, 5), MotionCueConfig.for_depth(6))
    assert MotionCueConfig.for_depth(24).middle == (3, 4, 5, 6, 7)  # the released VGGT4D bands


def test_a_clip_without_a_gt_free_threshold_is_reported_not_silently_static(tiny, tmp_path, monkeypatch):
    """Constant scores have no Otsu threshold: the clip is all static, and the evaluation says why."""
    import page4d.inference.motion_cues as mc
    from page4d.data import SyntheticSceneConfig, generate_synthetic_scene, load_scene
    from page4d.scoring.evaluate import predict_scene, score_predictions

    def constant(q, k, num_times, num_views, grid_hw, cfg):
        zeros = torch.zeros(1, num_times, num_views, *grid_hw)
        return zeros, {name: zeros for name in mc.CUES}

    monkeypatch.setattr(mc, "motion_cues_from_qk", constant)
    cfg = SyntheticSceneConfig(seed=1, times=4, views=2, height=56, width=70)
    scene = load_scene(generate_synthetic_scene(tmp_path / "s", cfg))
    clips = predict_scene(tiny, scene, [0, 1, 2, 3], clip_times=2, method="attention")
    result = score_predictions(clips, scene)
    assert (
        len(result["mask_method_notes"]) == 2
        and "constant attention scores" in result["mask_method_notes"][0]
    )
    assert result["mask_p_dynamic"] < 0.5 and result["mask_iou"] == 0.0  # all static, as the note says
