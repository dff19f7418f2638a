"""report.viz (overlays, figures, the widget viewer), scoring.frame_scores, inference.extract and
inference.loading (notebooks 01/02).

The viewer's callbacks are exercised without a kernel: setting a control's `.value` must re-render the
overlay and put the right score (recomputed here with plain numpy) into the label.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from page4d.data import scene_to_batch
from page4d.experiments import trained_heads
from page4d.inference import extract, loading
from page4d.inference.extract import vggt_twin
from page4d.model import build_model, preset
from page4d.report import viz
from page4d.report.tables import format_table
from page4d.scoring import frame_scores

T, V, H, W = 3, 2, 28, 42


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One thread: on a shared 2-core machine a second OpenMP thread makes tiny forwards ~50x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _numpy_iou(p: np.ndarray, g: np.ndarray) -> float:
    union = np.logical_or(p, g).sum()
    return 1.0 if union == 0 else float(np.logical_and(p, g).sum() / union)


@pytest.fixture
def clip():
    """Images, a soft prediction and box-shaped GT masks that differ per frame; frame (2, 1) has no mask."""
    rng = np.random.default_rng(0)
    images = rng.random((T, V, 3, H, W)).astype(np.float32)
    yy, xx = np.mgrid[0:H, 0:W]
    gt = np.zeros((T, V, H, W), np.float32)
    prob = np.zeros((T, V, H, W), np.float32)
    for t in range(T):
        for v in range(V):
            x0 = 5 + 6 * t + 3 * v
            gt[t, v, 8:20, x0 : x0 + 12] = 1
            cx, cy = x0 + 8, 14  # the prediction is a blob shifted right of the mask
            prob[t, v] = np.exp(-(((xx - cx) / 7.0) ** 2 + ((yy - cy) / 6.0) ** 2))
    valid = np.ones((T, V), bool)
    valid[2, 1] = False
    gt[2, 1] = 0
    return images, prob, gt, valid


def _viewer(clip, **kw):
    images, prob, gt, valid = clip
    return viz.MaskOverlayViewer(images, prob, gt, valid, times=[10, 11, 12], views=[0, 3], **kw)


# --------------------------------------------------------------------------------------------------
# the viewer
# --------------------------------------------------------------------------------------------------
def test_viewer_starts_on_first_frame_with_its_score(clip):
    _, prob, gt, _ = clip
    viewer = _viewer(clip)
    expected = _numpy_iou(prob[0, 0] >= 0.5, gt[0, 0] >= 0.5)
    assert viewer.score_text().startswith(f"t=10 v=0 | IoU {expected:.3f} | F ")
    assert f"IoU {expected:.3f}" in viewer.score_label.value
    assert viewer.image.value[:8] == b"\x89PNG\r\n\x1a\n"


def test_time_slider_updates_label_and_figure(clip):
    _, prob, gt, _ = clip
    viewer = _viewer(clip)
    before_png, before_renders = viewer.image.value, viewer.renders
    viewer.time.value = 1
    expected = _numpy_iou(prob[1, 0] >= 0.5, gt[1, 0] >= 0.5)
    assert f"t=11 v=0 | IoU {expected:.3f}" in viewer.score_label.value
    assert viewer.renders == before_renders + 1
    assert viewer.image.value != before_png


def test_threshold_view_and_boundary_f_follow_the_controls(clip):
    _, prob, gt, _ = clip
    viewer = _viewer(clip)
    viewer.view.value = 1
    viewer.threshold.value = 0.2
    p, g = prob[0, 1] >= 0.2, gt[0, 1] >= 0.5
    iou = _numpy_iou(p, g)
    f = float(viz.boundary_f_measure(torch.from_numpy(p), torch.from_numpy(g), bound_th=viz.BOUND_TH))
    assert viewer.score_text() == f"t=10 v=3 | IoU {iou:.3f} | F {f:.3f}"
    assert viewer.current_scores() == pytest.approx((iou, f))
    # a different threshold gives a different IoU for this blob
    assert iou != pytest.approx(_numpy_iou(prob[0, 1] >= 0.5, g))


def test_alpha_and_show_change_the_picture_not_the_score(clip):
    viewer = _viewer(clip)
    text, png = viewer.score_label.value, viewer.image.value
    viewer.alpha.value = 1.0
    assert viewer.image.value != png and viewer.score_label.value == text
    png = viewer.image.value
    viewer.show.value = "gt"
    assert viewer.image.value != png and viewer.score_label.value == text


def test_frame_without_mask_says_so(clip):
    viewer = _viewer(clip)
    viewer.time.value, viewer.view.value = 2, 1
    assert viewer.current_scores() is None
    assert viewer.score_text() == "t=12 v=3 | no SegAnyMo mask for this frame"


def test_viewer_without_any_masks(clip):
    images, prob, _, _ = clip
    viewer = viz.MaskOverlayViewer(images, prob, None, None, times=[0, 1, 2], views=[0, 1])
    assert "no SegAnyMo mask" in viewer.score_text()
    viewer.time.value = 2
    assert viewer.score_text().startswith("t=2 v=0 |")


# --------------------------------------------------------------------------------------------------
# overlays, scores, tables, figures
# --------------------------------------------------------------------------------------------------
def test_overlay_colours_true_false_positives_and_misses():
    image = np.zeros((3, 2, 2), np.float32)
    pred = np.array([[1, 1], [0, 0]], bool)
    gt = np.array([[1, 0], [1, 0]], bool)
    out = viz.overlay_rgb(image, pred, gt, alpha=1.0)
    np.testing.assert_allclose(out[0, 0], viz.TP_COLOR)
    np.testing.assert_allclose(out[0, 1], viz.FP_COLOR)
    np.testing.assert_allclose(out[1, 0], viz.FN_COLOR)
    np.testing.assert_allclose(out[1, 1], 0.0)
    half = viz.overlay_rgb(image, pred, gt, alpha=0.5, show="prediction")
    np.testing.assert_allclose(half[0, 1], 0.5 * np.asarray(viz.PRED_COLOR))
    np.testing.assert_allclose(half[1, 0], 0.0)
    with pytest.raises(ValueError, match="show must be"):
        viz.overlay_rgb(image, pred, gt, show="nope")


def test_frame_scores_match_numpy_and_skip_frames_without_mask(clip):
    _, prob, gt, valid = clip
    scores = frame_scores.frame_scores(prob, gt, valid, threshold=0.3)
    expected = np.array(
        [[_numpy_iou(prob[t, v] >= 0.3, gt[t, v] >= 0.5) for v in range(V)] for t in range(T)]
    )
    assert np.isnan(scores.iou[2, 1]) and np.isnan(scores.f[2, 1])
    np.testing.assert_allclose(scores.iou[valid], expected[valid])
    assert scores.mean_iou == pytest.approx(expected[valid].mean())
    per_time_iou, _ = scores.per_time()
    assert per_time_iou[2] == pytest.approx(expected[2, 0])  # the view without a mask is left out
    rows = frame_scores.score_rows(scores, [10, 11, 12], [0, 3])
    assert rows[5] == {"time": 12, "view": 3, "IoU": None, "F": None}
    means = frame_scores.mean_rows(scores, [10, 11, 12], [0, 3])
    assert means[-1]["over"] == "all" and means[-1]["IoU"] == pytest.approx(scores.mean_iou)
    with pytest.raises(ValueError, match="no SegAnyMo masks"):
        frame_scores.frame_scores(prob, None, valid)


def test_format_table_aligns_and_marks_missing_values():
    text = format_table([{"a": "x", "b": 1.23456}, {"a": "long", "b": None}], floatfmt=".2f")
    assert text.splitlines() == ["a        b", "----  ----", "x     1.23", "long     -"]


def test_figures_draw_the_overlays_scores_and_bars_they_are_given(clip, tmp_path):
    images, prob, gt, valid = clip
    scores = frame_scores.frame_scores(prob, gt, valid)
    grid = viz.overlay_grid_figure(images, prob, gt, valid, 0.5, 0.5, [0, 1, 2], [0, 1], scores)
    panels = [ax for ax in grid.axes if ax.get_visible()]
    assert len(panels) == T * V
    for i, ax in enumerate(panels):  # row-major: panel i is (t, v) = divmod(i, V)
        t, v = divmod(i, V)
        want = viz.overlay_rgb(images[t, v], prob[t, v] >= 0.5, gt[t, v] >= 0.5 if valid[t, v] else None, 0.5)
        np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), want)
        title = ax.get_title()
        assert title.startswith(f"t={t} v={v}")
        assert title.endswith("(no mask)") if not valid[t, v] else f"IoU {scores.iou[t, v]:.2f}" in title
    png = viz.save_figure(grid, tmp_path / "grid.png")
    from PIL import Image

    with Image.open(png) as im:  # the saved file is the figure at its size, not a blank canvas
        w, h = grid.get_size_inches() * 100
        assert im.size == (round(w), round(h)) and np.asarray(im.convert("L")).std() > 10
    plot = viz.score_plot_figure(scores, [0, 1, 2], [0, 1])
    assert len(plot.axes) == 2 and len(plot.axes[0].lines) == V + 1
    probs = viz.probability_grid_figure(prob, [0, 1, 2], [0, 1], "p", images=images)
    assert len(probs.axes) == T * V + 1  # + colorbar
    rows = [
        {"run": "r1", "arm": "bce", "mask_iou": 0.5},
        {"run": "r2", "arm": "-", "mask_iou": 0.4, "ate": 0.1},
    ]
    bars = viz.comparison_bar_figure(rows, ["mask_iou", "ate"])
    assert [t.get_text() for t in bars.legends[0].get_texts()] == ["1  r1 / bce", "2  r2"]
    assert [round(p.get_height(), 3) for p in bars.axes[1].patches] == [0.0, 0.1]  # missing -> n/a bar


# --------------------------------------------------------------------------------------------------
# extract.py
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    torch.manual_seed(0)
    scene = loading.prepare_scene("", (56, 70), 2, 2, 0, tmp_path_factory.mktemp("scene"))
    model, note = loading.load_model("tiny", "", seed=0)
    images = scene_to_batch(scene).images
    return scene, model, note, images, extract.run_model(model, images)


def test_prepare_scene_generates_and_selects(tiny_run, tmp_path):
    scene = tiny_run[0]
    assert scene.images.shape == (2, 2, 3, 56, 70) and scene.masks is not None
    assert (scene.root.parent / "synthetic_scene").is_dir() or scene.root.name == "synthetic_scene"
    sub = loading.prepare_scene(scene.root, (56, 70), 1, 2, 0, tmp_path)
    assert sub.times == [0] and sub.views == [0, 1]
    with pytest.raises(ValueError, match="asked for 5 x 2"):
        loading.prepare_scene(scene.root, (56, 70), 5, 2, 0, tmp_path)


def test_load_model_from_checkpoint_gives_the_same_weights(tiny_run, tmp_path):
    model = tiny_run[1]
    torch.save({"model": model.state_dict()}, tmp_path / "ck.pt")
    other, note = loading.load_model("tiny", tmp_path / "ck.pt", seed=123)
    assert "all keys matched" in note and "ck.pt" in note
    for (k, a), b in zip(model.state_dict().items(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert "random weights (seed 0)" in tiny_run[2]


def test_prediction_shape_rows_list_every_key(tiny_run):
    rows = {r["key"]: r for r in extract.prediction_shape_rows(tiny_run[4])}
    assert rows["mask_logits"]["shape"] == "[1, 2, 2, 4, 5]" and rows["mask_logits"]["dtype"] == "float32"
    assert rows["aggregated_tokens_list"]["shape"] == "6 x [1, 4, 25, 128]"
    assert rows["mask_head.key_bias"]["shape"] == "[1, 100]"
    assert rows["patch_start_idx"]["shape"] == "5"


def test_sign_check_passes_and_catches_a_flipped_sign(tiny_run):
    _, model, _, _, pred = tiny_run
    ok = extract.sign_check(model, pred)
    assert ok["max_abs_diff"] < 1e-6 and ok["most_dynamic_patch_gets_lowest_bias"]
    assert ok["alpha"] == pytest.approx(float(torch.nn.functional.softplus(torch.tensor(0.0))), abs=1e-5)
    flipped = dict(pred, mask_logits=-pred["mask_logits"])
    bad = extract.sign_check(model, flipped)
    assert bad["max_abs_diff"] > 1e-3 and not bad["most_dynamic_patch_gets_lowest_bias"]


def test_official_head_suppression_reads_back_too():
    torch.manual_seed(0)
    cfg = preset("tiny")
    cfg.mask_head = cfg.mask_head.__class__(
        variant="official", mask_after_block=2, masked_global_blocks=(3, 4)
    )
    model = build_model(cfg).eval()
    pred = extract.run_model(model, torch.rand(1, 2, 1, 3, 28, 28))
    check = extract.sign_check(model, pred)
    assert check["variant"] == "official" and check["max_abs_diff"] < 1e-6


def test_mask_probabilities_upsample_logits_then_squash():
    logits = torch.zeros(1, 1, 1, 2, 2)
    logits[..., 0, 0] = 4.0
    prob = extract.mask_probabilities(logits, (28, 28))
    assert prob.shape == (1, 1, 28, 28)
    assert prob[0, 0, -1, -1] == pytest.approx(0.5) and prob[0, 0, 0, 0] == pytest.approx(
        torch.sigmoid(torch.tensor(4.0))
    )
    with pytest.raises(ValueError, match="batch size 1"):
        extract.mask_probabilities(torch.zeros(2, 1, 1, 2, 2), (28, 28))


def test_export_cost_rows_and_its_memory_numbers_repeat_exactly(tiny_run):
    _, model, _, images, _ = tiny_run
    rows = extract.export_cost(model, images[:, :1, :1], repeats=1)  # one frame keeps it quick
    assert [r["variant"] for r in rows] == ["no mask head", "mask_logits", "+ internals"]
    assert rows[0]["mask_logits_bytes"] == 0 and rows[1]["mask_logits_bytes"] == 1 * 1 * 4 * 5 * 4
    assert rows[2]["retained_bytes"] > rows[1]["retained_bytes"] > rows[0]["retained_bytes"]
    assert rows[1]["retained_bytes"] - rows[0]["retained_bytes"] == rows[1]["mask_logits_bytes"]
    assert rows[1]["peak_bytes"] >= rows[0]["peak_bytes"] and rows[0]["time_ratio"] == 1.0
    again = extract.export_cost(model, images[:, :1, :1], repeats=1)
    for a, b in zip(rows, again, strict=True):  # notebook 01's stored table compares these
        assert (a["peak_bytes"], a["retained_bytes"]) == (b["peak_bytes"], b["retained_bytes"])
    plain = vggt_twin(model)
    assert plain.aggregator.spatial_mask_head is None
    assert torch.equal(
        plain.state_dict()["camera_head.token_norm.weight"],
        model.state_dict()["camera_head.token_norm.weight"],
    )


def test_save_mask_logits_round_trip(tiny_run, tmp_path):
    scene, _, _, _, pred = tiny_run
    path = extract.save_mask_logits(tmp_path / "m.pt", pred, scene, "tiny")
    saved = torch.load(path, weights_only=True)
    assert torch.equal(saved["mask_logits"], pred["mask_logits"][0])
    assert saved["image_size"] == [56, 70] and saved["preset"] == "tiny"


def test_probability_next_to_overlay_figure_with_and_without_gt(clip):
    images, prob, gt, valid = clip
    scores = frame_scores.frame_scores(prob, gt, valid)
    fig = viz.probability_overlay_figure(images, prob, gt, valid, 0.5, 0.5, [0, 1, 2], [0, 1], scores)
    assert len(fig.axes) == T * 2 * V + 1  # + colorbar
    assert "IoU" in fig.axes[1].get_title() and "(no mask)" in fig.axes[2 * (2 * V) + 3].get_title()
    bare = viz.probability_overlay_figure(images, prob, None, None, 0.5, 0.5, [0, 1, 2], [0, 1])
    assert [t.get_text() for t in bare.legends[0].get_texts()] == ["prediction"]


def test_widget_bundle_replaces_the_vbox_repr():
    import ipywidgets as w

    bundle = viz.widget_bundle(w.VBox([w.IntSlider()]), "viewer")
    assert bundle["text/plain"] == "viewer" and "application/vnd.jupyter.widget-view+json" in bundle


# --------------------------------------------------------------------------------------------------
# loading.py
# --------------------------------------------------------------------------------------------------
def test_newest_ablation_checkpoint_skips_unsupervised_arms_and_unfinished_runs(tmp_path):
    import os

    from page4d.records import mark_finished

    assert trained_heads.newest_ablation_checkpoint(tmp_path / "absent") is None
    paths = {}
    for i, rel in enumerate(
        [
            "a_ablation/train/bce_seed0",
            "b_ablation/train/none_seed0",
            "c/train/bce_seed1",
            "d/train/bce_seed0",
        ]
    ):
        (tmp_path / rel).mkdir(parents=True)
        paths[rel] = tmp_path / rel / "checkpoint.pt"
        paths[rel].write_bytes(b"")
        os.utime(paths[rel], (1000 + i, 1000 + i))
        mark_finished(tmp_path / rel, "train")
        if not rel.startswith("d/"):  # d: an ablation still running (its cell finished, it did not)
            mark_finished(tmp_path / rel.split("/")[0], "ablation")
    (tmp_path / "d" / "RUNNING.json").write_text("{}")
    os.utime(paths["a_ablation/train/bce_seed0"], (5000, 5000))
    assert trained_heads.newest_ablation_checkpoint(tmp_path) == paths["a_ablation/train/bce_seed0"]
    os.utime(paths["b_ablation/train/none_seed0"], (9000, 9000))  # newest, but learnt no masks
    assert trained_heads.newest_ablation_checkpoint(tmp_path) == paths["a_ablation/train/bce_seed0"]
    os.utime(paths["d/train/bce_seed0"], (9500, 9500))  # newest, but its ablation is running
    assert trained_heads.newest_ablation_checkpoint(tmp_path) == paths["a_ablation/train/bce_seed0"]
    (tmp_path / "c" / "DONE.json").unlink()  # an interrupted ablation: its cells are not read either
    os.utime(paths["c/train/bce_seed1"], (9600, 9600))
    assert trained_heads.newest_ablation_checkpoint(tmp_path) == paths["a_ablation/train/bce_seed0"]
    mark_finished(tmp_path / "d", "notebook")  # the running one finished: now it is the newest
    assert trained_heads.newest_ablation_checkpoint(tmp_path) == paths["d/train/bce_seed0"]


def test_load_clip_shows_the_synthetic_scenes_held_out_steps(tmp_path):
    scene = loading.load_clip("", (56, 70), 2, 1, 0, tmp_path)
    assert scene.times == [4, 5] and scene.views == [0] and scene.image_size == (56, 70)
    with pytest.raises(ValueError, match="image_height > 0"):
        loading.load_clip("", (0, 70), 2, 1, 0, tmp_path)


def test_run_model_on_a_device_in_reduced_precision_returns_cpu_float32(tiny_run):
    """The notebooks' --device / --precision path: the forward runs under autocast where asked, every
    output comes back on the CPU in float32 (the mask head's too), and the model goes back home."""
    scene, model, note, images, pred = tiny_run
    bf16 = extract.run_model(model, images, return_internals=True, device="cpu", precision="bf16")
    assert bf16["depth"].dtype == torch.float32 and bf16["mask_head"].key_bias.dtype == torch.float32
    assert not torch.equal(bf16["depth"], pred["depth"])  # autocast really ran in bfloat16
    assert torch.allclose(bf16["mask_logits"], pred["mask_logits"], atol=0.1)
    assert next(model.parameters()).device.type == "cpu"
    with pytest.raises(ValueError, match="precision must be"):
        extract.run_model(model, images, precision="fp8")
