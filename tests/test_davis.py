"""page4d.scoring.davis against the independent vos-benchmark implementation, and the M / R / D statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from page4d.scoring.davis import decay_bins, frame_j_f, score_sequences, sequence_statistics
from vos_benchmark.evaluator import Evaluator

H, W = 60, 90


def _disc(cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return (yy - cy) ** 2 + (xx - cx) ** 2 < r * r


def hard_frames() -> list[tuple[np.ndarray, np.ndarray]]:
    """(pred, gt) pairs: a ring with a hole and a 1-px line, empty frames of every kind, noise."""
    rng = np.random.default_rng(0)
    gt = _disc(30, 40, 15) & ~_disc(30, 40, 5)
    gt[10:50, 70] = True  # a thin part, one pixel wide
    pred = _disc(31, 42, 14)
    pred[12:48, 71] = True
    empty = np.zeros((H, W), bool)
    frames = [(pred, gt), (empty, empty), (pred, empty), (empty, gt), (gt, gt)]
    frames += [(rng.random((H, W)) < 0.3, rng.random((H, W)) < 0.3) for _ in range(4)]
    frames.append((pred & ~_disc(31, 42, 6), gt))  # a hole the GT does not have
    return frames


def test_j_and_f_match_vos_benchmark_on_holes_thin_parts_and_empty_frames():
    evaluator = Evaluator(boundary=0.008)
    ours = []
    for pred, gt in hard_frames():  # the first frame has an object, so vos-benchmark scores every frame
        evaluator.feed_frame(pred.astype(np.uint8), gt.astype(np.uint8))
        ours.append(frame_j_f(pred, gt))
    np.testing.assert_allclose([j for j, _ in ours], evaluator.object_iou[1], rtol=0, atol=1e-12)
    np.testing.assert_allclose([f for _, f in ours], evaluator.boundary_f[1], rtol=0, atol=1e-12)
    assert ours[1] == (1.0, 1.0) and ours[2] == (0.0, 0.0) and ours[3] == (0.0, 0.0)
    iou, f = evaluator.conclude()
    summary = score_sequences({"seq": [(str(i), p, g) for i, (p, g) in enumerate(hard_frames())]})
    assert summary["J_mean"] == pytest.approx(iou[1] / 100, abs=1e-12)
    assert summary["F_mean"] == pytest.approx(f[1] / 100, abs=1e-12)
    assert summary["resolution"] == [H, W] and summary["bound_th"] == 0.008


def test_recall_and_decay_follow_the_davis_definitions():
    values = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]
    # davis2017-evaluation's bins for 8 frames: edges round(linspace(1, 8, 5)) - 1 = 0, 2, 4, 5, 7
    assert decay_bins(8) == [(0, 3), (2, 5), (4, 6), (5, 8)]
    stats = sequence_statistics(values)
    assert stats["M"] == pytest.approx(0.65)
    assert stats["R"] == pytest.approx(5 / 8)  # strictly above 0.5
    assert stats["D"] == pytest.approx(np.mean(values[0:3]) - np.mean(values[5:8]))
    assert sequence_statistics([0.2, 0.2, 0.2, 0.2])["D"] == pytest.approx(0.0)


def test_frames_without_gt_are_listed_not_scored_and_sequences_are_averaged():
    gt = _disc(30, 40, 10)
    a = [("0", gt, gt), ("1", gt, None), ("2", np.zeros_like(gt), gt)]
    b = [("0", gt, gt)]
    s = score_sequences({"a": a, "b": b})
    assert s["sequences"]["a"]["J_mean"] == pytest.approx(0.5) and s["sequences"]["a"]["frames_scored"] == 2
    assert s["J_mean"] == pytest.approx((0.5 + 1.0) / 2)  # mean over sequences, not over frames
    assert s["per_frame"][1] == {"sequence": "a", "frame": "1", "J": None, "F": None, "size": None}
    assert s["JF_mean"] == pytest.approx((s["J_mean"] + s["F_mean"]) / 2)
    assert math.isclose(s["J_recall"], (0.5 + 1.0) / 2)
    with pytest.raises(ValueError, match="no frame has a GT mask"):
        score_sequences({"a": [("0", gt, None)]})
    with pytest.raises(ValueError, match="GT's resolution"):
        frame_j_f(gt, gt[:-1])
