"""Metrics on hand-drawn masks, scaled depth maps and similarity-transformed trajectories."""

import math

import numpy as np
import pytest
import torch
from conftest import assert_close
from page4d.scoring.metrics import (
    boundary_f_measure,
    depth_metrics,
    jf_metrics,
    mask_boundaries,
    mask_iou,
    trajectory_metrics,
)


# --------------------------------------------------------------------------------------------------
# J and F
# --------------------------------------------------------------------------------------------------
def test_iou_on_hand_drawn_masks_and_empty_conventions():
    gt = torch.zeros(4, 4)
    gt[0, :4] = 1.0  # 4 pixels
    pred = torch.zeros(4, 4)
    pred[0, 1:4] = 0.9  # 3 of them ...
    pred[1, 0:3] = 0.7  # ... plus 3 wrong ones
    pred[2, 0] = 0.4  # below the threshold
    assert float(mask_iou(pred, gt)) == pytest.approx(3 / 7)
    assert float(mask_iou(pred, gt, threshold=0.3)) == pytest.approx(3 / 8)
    empty = torch.zeros(4, 4)
    assert float(mask_iou(empty, empty)) == 1.0
    assert float(mask_iou(empty, gt)) == 0.0 and float(mask_iou(gt, empty)) == 0.0
    with pytest.raises(ValueError, match="sigmoid"):
        mask_iou(pred * 10 - 5, gt)  # logits by mistake
    with pytest.raises(ValueError, match="one shape"):
        mask_iou(pred[:3], gt)


def test_boundary_map_marks_each_edge_once():
    m = torch.zeros(5, 6, dtype=torch.bool)
    m[:, :3] = True
    b = mask_boundaries(m)
    assert b[:, 2].all() and int(b.sum()) == 5  # only the last foreground column
    assert not mask_boundaries(torch.ones(5, 6, dtype=torch.bool)).any()


def _stripe(cols_top: int, cols_bottom: int) -> torch.Tensor:
    m = torch.zeros(100, 100)
    m[:50, :cols_top] = 1.0
    m[50:, :cols_bottom] = 1.0
    return m


def test_boundary_f_tolerance_is_ceil_of_0_008_diagonal():
    # 100x100: 0.008 * 141.4 = 1.13 -> disk of radius 2. GT boundary = column 49.
    gt = _stripe(50, 50)
    assert float(boundary_f_measure(_stripe(52, 52), gt)) == 1.0  # 2 px away: matched
    assert float(boundary_f_measure(_stripe(53, 53), gt)) == 0.0  # 3 px away: not matched
    assert float(mask_iou(_stripe(53, 53), gt)) == pytest.approx(50 / 53)


def test_boundary_f_partial_match_hand_value():
    # Pred boundary: column 49 in rows 0-49 (50 px), row 49 cols 50-59 (10 px), column 59 rows 50-99
    # (50 px) = 110 px; 52 of them lie within 2 px of GT column 49 (50 + cols 50, 51).
    # GT boundary: 100 px; rows 0-51 are within 2 px of a predicted boundary pixel -> 52.
    # F = 2PR / (P + R) = 2 * 52 / (110 + 100).
    f = boundary_f_measure(_stripe(50, 60), _stripe(50, 50))
    assert float(f) == pytest.approx(104 / 210)


def test_boundary_f_empty_conventions():
    empty = torch.zeros(10, 10)
    square = torch.zeros(10, 10)
    square[3:6, 3:6] = 1.0
    assert float(boundary_f_measure(empty, empty)) == 1.0
    assert float(boundary_f_measure(empty, square)) == 0.0
    assert float(boundary_f_measure(square, empty)) == 0.0


def test_jf_per_frame_and_aggregated():
    gt = torch.stack((_stripe(50, 50), _stripe(50, 50), torch.zeros(100, 100)))
    pred = torch.stack((_stripe(50, 50), _stripe(53, 53), torch.ones(100, 100)))
    out = jf_metrics(pred, gt, valid=torch.tensor([True, True, False]))
    assert_close(out["J"][:2], torch.tensor([1.0, 50 / 53], dtype=torch.float64))
    assert_close(out["F"][:2], torch.tensor([1.0, 0.0], dtype=torch.float64))
    assert out["J_mean"] == pytest.approx((1 + 50 / 53) / 2)
    assert out["F_mean"] == pytest.approx(0.5)
    assert out["JF_mean"] == pytest.approx(((1 + 50 / 53) / 2 + 0.5) / 2)
    assert out["J_recall"] == 1.0 and out["F_recall"] == 0.5 and out["num_frames"] == 2
    with pytest.raises(ValueError, match="no valid frame"):
        jf_metrics(pred, gt, valid=torch.zeros(3, dtype=torch.bool))


# --------------------------------------------------------------------------------------------------
# depth
# --------------------------------------------------------------------------------------------------
def _depth_gt() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    gt = 1.0 + 9.0 * torch.rand(3, 8, 10, generator=g, dtype=torch.float64)
    gt[0, 0, :4] = 0.0  # invalid pixels
    return gt


def test_median_scaled_abs_rel_is_zero_for_a_scaled_depth():
    gt = _depth_gt()
    pred = 0.37 * gt + 100.0 * (gt == 0)  # garbage where GT is invalid must not matter
    out = depth_metrics(pred, gt)
    assert out["abs_rel"] < 1e-12 and out["delta_1_25"] == 1.0
    assert out["scale"] == pytest.approx(1 / 0.37) and out["num_valid"] == 3 * 80 - 4
    raw = depth_metrics(pred, gt, alignment="none")
    assert raw["abs_rel"] == pytest.approx(0.63)  # |0.37 g - g| / g
    assert raw["delta_1_25"] == 0.0


def test_scale_shift_alignment_and_hand_values():
    gt = _depth_gt()
    out = depth_metrics(2.0 * gt - 1.0, gt, alignment="scale_shift")
    assert (
        out["abs_rel"] < 1e-10 and out["scale"] == pytest.approx(0.5) and out["shift"] == pytest.approx(0.5)
    )
    # Hand example: gt [1, 2, 4], pred [1.1, 2, 6] unaligned: abs_rel = (0.1 + 0 + 0.5) / 3;
    # ratios 1.1, 1, 1.5 -> delta = 2/3.
    g = torch.tensor([[1.0, 2.0, 4.0]])
    p = torch.tensor([[1.1, 2.0, 6.0]])
    out = depth_metrics(p, g, alignment="none")
    assert out["abs_rel"] == pytest.approx(0.2) and out["delta_1_25"] == pytest.approx(2 / 3)
    masked = depth_metrics(p, g, valid=torch.tensor([[True, True, False]]), alignment="none")
    assert masked["abs_rel"] == pytest.approx(0.05) and masked["delta_1_25"] == 1.0
    with pytest.raises(ValueError, match="non-finite"):
        depth_metrics(torch.full((1, 3), float("nan")), g)
    with pytest.raises(ValueError, match="constant"):
        depth_metrics(torch.ones(1, 3), g, alignment="scale_shift")
    np_out = depth_metrics(p.numpy(), g.numpy(), alignment="none")  # numpy arrays work too
    assert np_out["abs_rel"] == pytest.approx(0.2)


# --------------------------------------------------------------------------------------------------
# trajectories
# --------------------------------------------------------------------------------------------------
def _rot(axis: str, angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    if axis == "z":
        m = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    else:
        m = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
    return torch.tensor(m, dtype=torch.float64)


def _w2c(r_c2w: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    r = r_c2w.T
    return torch.cat((r, (-r @ centre)[:, None]), dim=1)


def _helix(n: int = 10) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    rots = [_rot("z", 0.3 * i) @ _rot("y", 0.1 * i) for i in range(n)]
    centres = [
        torch.tensor([math.cos(0.5 * i), math.sin(0.5 * i), 0.2 * i], dtype=torch.float64) for i in range(n)
    ]
    return rots, centres


def test_ate_and_rpe_are_zero_for_a_similarity_transformed_trajectory():
    rots, centres = _helix()
    gt = torch.stack([_w2c(r, c) for r, c in zip(rots, centres, strict=True)])
    s, rot, t = 0.25, _rot("y", 1.0) @ _rot("z", -2.0), torch.tensor([3.0, -1.0, 7.0], dtype=torch.float64)
    pred = torch.stack([_w2c(rot @ r, s * rot @ c + t) for r, c in zip(rots, centres, strict=True)])
    out = trajectory_metrics(pred, gt)
    assert out["ate"] < 1e-9 and out["rpe_trans"] < 1e-9 and out["rpe_rot_deg"] < 1e-6
    assert out["scale"] == pytest.approx(1 / s)
    # Without scale the same prediction is far off.
    assert trajectory_metrics(pred, gt, align="se3")["ate"] > 0.1


def test_ate_and_rpe_hand_values_without_alignment():
    n = 5
    eye = torch.eye(3, dtype=torch.float64)
    centres = [torch.tensor([float(i), 0.0, 0.0], dtype=torch.float64) for i in range(n)]
    gt = torch.stack([_w2c(eye, c) for c in centres])
    shifted = torch.stack(
        [_w2c(eye, c + torch.tensor([0.0, 0.3, 0.4], dtype=torch.float64)) for c in centres]
    )
    out = trajectory_metrics(shifted, gt, align="none")
    assert out["ate"] == pytest.approx(0.5) and out["rpe_trans"] < 1e-12 and out["rpe_rot_deg"] < 1e-9
    # Rotate camera 2 by 10 deg about z: pairs (1,2) and (2,3) have 10 deg rotation error; only pair
    # (2,3) has a translation error |Rz^T a - a| = 2 sin(5 deg) for the unit step a along x.
    rotated = gt.clone()
    rotated[2] = _w2c(_rot("z", math.radians(10.0)), centres[2])
    out = trajectory_metrics(rotated, gt, align="none")
    assert out["ate"] < 1e-12
    assert out["rpe_rot_deg"] == pytest.approx(math.sqrt(2 * 10.0**2 / 4))
    assert out["rpe_trans"] == pytest.approx(math.sqrt((2 * math.sin(math.radians(5.0))) ** 2 / 4))


def test_trajectory_errors_are_loud():
    eye = torch.eye(3, dtype=torch.float64)
    line = torch.stack([_w2c(eye, torch.tensor([float(i), 0.0, 0.0], dtype=torch.float64)) for i in range(4)])
    with pytest.raises(ValueError, match="degenerate"):
        trajectory_metrics(line, line)  # collinear centres: rotation about the line is free
    with pytest.raises(ValueError, match=r"\[N, 3, 4\]"):
        trajectory_metrics(line[:, :, :3], line[:, :, :3])
    with pytest.raises(ValueError, match="align"):
        trajectory_metrics(line, line, align="sim2")
    assert trajectory_metrics(np.asarray(line), np.asarray(line), align="none")["ate"] == 0.0


# --------------------------------------------------------------------------------------------------
# threshold-free mask scores and calibration
# --------------------------------------------------------------------------------------------------
def _reference_average_precision(scores: list[float], labels: list[int]) -> float:
    """Step-wise AP by brute force: for each distinct threshold from high to low, (R_n - R_n-1) P_n."""
    n_pos = sum(labels)
    ap, prev_recall = 0.0, 0.0
    for thr in sorted(set(scores), reverse=True):
        picked = [lab for s, lab in zip(scores, labels, strict=True) if s >= thr]
        tp = sum(picked)
        recall = tp / n_pos
        ap += (recall - prev_recall) * tp / len(picked)
        prev_recall = recall
    return ap


def test_average_precision_matches_a_brute_force_reference_with_ties():
    from page4d.scoring.metrics import mask_average_precision

    gen = torch.Generator().manual_seed(3)
    prob = (torch.rand(2, 6, 7, generator=gen) * 8).round() / 8  # many ties
    gt = (torch.rand(2, 6, 7, generator=gen) < 0.3).double()
    ref = _reference_average_precision(prob.flatten().tolist(), gt.flatten().int().tolist())
    assert mask_average_precision(prob, gt) == pytest.approx(ref, abs=1e-12)
    # perfect ranking -> 1; a constant -> the positive share; valid frames only; no positive -> NaN
    assert mask_average_precision(gt, gt) == pytest.approx(1.0)
    share = float(gt.mean())
    assert mask_average_precision(torch.full_like(gt, 0.3), gt) == pytest.approx(share)
    valid = torch.tensor([True, False])
    ref0 = _reference_average_precision(prob[0].flatten().tolist(), gt[0].flatten().int().tolist())
    assert mask_average_precision(prob, gt, valid) == pytest.approx(ref0, abs=1e-12)
    assert math.isnan(mask_average_precision(prob, torch.zeros_like(gt)))
    with pytest.raises(ValueError, match="sigmoid"):
        mask_average_precision(prob * 4 - 2, gt)


def test_calibration_error_and_class_means_on_hand_values():
    from page4d.scoring.metrics import (
        best_iou_threshold,
        expected_calibration_error,
        mean_probability_by_class,
    )

    gt = torch.tensor([[1.0, 1.0, 0.0, 0.0]]).reshape(1, 2, 2)
    calibrated = torch.tensor([[1.0, 1.0, 0.0, 0.0]]).reshape(1, 2, 2)
    assert expected_calibration_error(calibrated, gt) == pytest.approx(0.0)
    half = torch.full((1, 2, 2), 0.5)
    assert expected_calibration_error(half, gt) == pytest.approx(0.0)  # 0.5 is the frequency here
    assert expected_calibration_error(half, torch.zeros_like(gt)) == pytest.approx(0.5)
    means = mean_probability_by_class(torch.tensor([[0.9, 0.7], [0.2, 0.0]])[None], gt)
    assert means == pytest.approx({"static": 0.1, "dynamic": 0.8, "dynamic_share": 0.5})
    # a model whose dynamic scores sit at 0.3 is best thresholded below 0.3
    prob = torch.tensor([[0.3, 0.3], [0.1, 0.1]])[None]
    thr, iou = best_iou_threshold(prob, gt)
    assert thr <= 0.3 and iou == pytest.approx(1.0)


def test_relative_pose_error_over_explicit_pairs():
    """Two views over three times: a temporal pair skips the (t, last view) -> (t+1, first view) wrap."""
    from page4d.scoring.evaluate import camera_pairs
    from page4d.scoring.metrics import trajectory_errors

    temporal, inter_view = camera_pairs(3, 2)
    assert temporal == [(0, 2), (1, 3), (2, 4), (3, 5)]
    assert inter_view == [(0, 1), (2, 3), (4, 5)]
    rots, centres = _helix(6)
    gt = torch.stack([_w2c(r, c) for r, c in zip(rots, centres, strict=True)])
    pred = gt.clone()
    pred[3] = _w2c(_rot("z", math.radians(4.0)) @ rots[3], centres[3])  # view 1 at t=1 is rotated
    err = trajectory_errors(pred, gt, align="none", pairs=temporal + inter_view)
    rot = err["rpe_rot_deg"].tolist()
    # pairs touching frame 3: temporal (1,3), (3,5) and inter-view (2,3) -> 4 degrees each
    assert [round(r, 6) for r in rot] == [0.0, 4.0, 0.0, 4.0, 0.0, 4.0, 0.0]


def _evo_path(extrinsics: torch.Tensor):
    from evo.core import trajectory

    poses = []
    for e in extrinsics.double().numpy():
        w2c = np.eye(4)
        w2c[:3] = e
        poses.append(np.linalg.inv(w2c))  # evo holds camera-to-world poses
    return trajectory.PosePath3D(poses_se3=poses)


def test_ate_and_rpe_agree_with_evo():
    """Cross-check against the reference implementation (evo): Sim(3)-aligned APE and delta-1 RPE."""
    import copy

    from evo.core import metrics as evo_metrics

    gen = torch.Generator().manual_seed(0)
    rots, centres = _helix(12)
    gt = torch.stack([_w2c(r, c) for r, c in zip(rots, centres, strict=True)])
    s, rot, t = 0.5, _rot("x", 0.4) @ _rot("z", 1.0), torch.tensor([1.0, 2.0, -0.5], dtype=torch.float64)
    noisy = []
    for r, c in zip(rots, centres, strict=True):
        wobble = _rot("z", 0.05 * float(torch.randn(1, generator=gen))) @ _rot(
            "x", 0.05 * float(torch.randn(1, generator=gen))
        )
        c_noisy = c + 0.05 * torch.randn(3, generator=gen, dtype=torch.float64)
        noisy.append(_w2c(rot @ wobble @ r, s * rot @ c_noisy + t))
    pred = torch.stack(noisy)
    ours = trajectory_metrics(pred, gt, align="sim3")

    ref, est = _evo_path(gt), _evo_path(pred)
    est_aligned = copy.deepcopy(est)
    est_aligned.align(ref, correct_scale=True)
    ape = evo_metrics.APE(evo_metrics.PoseRelation.translation_part)
    ape.process_data((ref, est_aligned))
    assert ours["ate"] == pytest.approx(ape.get_statistic(evo_metrics.StatisticsType.rmse), rel=1e-9)
    for relation, key in (
        (evo_metrics.PoseRelation.translation_part, "rpe_trans"),
        (evo_metrics.PoseRelation.rotation_angle_deg, "rpe_rot_deg"),
    ):
        rpe = evo_metrics.RPE(relation, delta=1, delta_unit=evo_metrics.Unit.frames, all_pairs=False)
        rpe.process_data((ref, est_aligned))
        assert ours[key] == pytest.approx(rpe.get_statistic(evo_metrics.StatisticsType.rmse), rel=1e-7)


def test_per_frame_camera_errors_show_the_one_wrong_frame():
    """GT cameras on a circle; the prediction equals GT up to a world change and a global scale, except
    frame 3 turned 30 degrees about its own axis and frame 5 moved along another direction."""
    from page4d.geometry import closed_form_inverse_se3
    from page4d.scoring.metrics import camera_errors_per_frame
    from scipy.spatial.transform import Rotation

    def w2c(yaw_deg: float, centre: list[float]) -> torch.Tensor:
        r = torch.tensor(Rotation.from_euler("z", yaw_deg, degrees=True).as_matrix())
        c = torch.tensor(centre, dtype=torch.float64)
        return torch.cat([r, -(r @ c)[:, None]], dim=1)

    gt = torch.stack([w2c(20.0 * i, [math.cos(i), math.sin(i), 0.1 * i]) for i in range(6)])
    world = closed_form_inverse_se3(w2c(50.0, [3.0, -1.0, 2.0]))  # another world, scale 2.5
    pred = torch.cat([gt[:, :, :3] @ world[:3, :3], 2.5 * (gt[:, :, :3] @ world[:3, 3:] + gt[:, :, 3:])], 2)
    turn = torch.tensor(Rotation.from_euler("x", 30.0, degrees=True).as_matrix())
    pred[3, :, :3] = turn @ pred[3, :, :3]
    pred[3, :, 3] = turn @ pred[3, :, 3]  # rotate about camera 3's own centre: the centre stays
    c5 = -(pred[5, :, :3].T @ pred[5, :, 3]) + torch.tensor([0.0, 0.0, 5.0], dtype=torch.float64)
    pred[5, :, 3] = -(pred[5, :, :3] @ c5)
    err = camera_errors_per_frame(pred, gt)
    rot, direction = err["rot_deg"], err["dir_deg"]
    assert rot[3] == pytest.approx(30.0, abs=1e-6) and torch.all(rot[[0, 1, 2, 4, 5]] < 1e-6)
    assert math.isnan(direction[0]) and torch.all(direction[[1, 2, 3, 4]] < 1e-5)
    assert direction[5] > 5.0
    with pytest.raises(ValueError, match=r"\[S, 3, 4\]"):
        camera_errors_per_frame(pred[:, :, :3], gt[:, :, :3])
