"""Losses with hand-computed values: mask BCE / boundary / temporal terms and geometry terms."""

import math

import pytest
import torch
from conftest import assert_close
from page4d.geometry import extrinsics_intrinsics_to_pose_encoding
from page4d.losses import (
    ARM_NAMES,
    LossConfig,
    MaskLossResult,
    camera_loss,
    compute_auto_pos_weight,
    compute_mask_supervision_loss,
    compute_total_loss,
    depth_loss,
    loss_dict_to_floats,
    mask_boundary_band,
    normalize_scene_scale,
    point_loss,
    temporal_consistency_loss,
)

LN2 = math.log(2.0)


def _quarter_gt(*lead: int, size: int = 28) -> torch.Tensor:
    """GT whose top-left 14x14 patch (a quarter of a 28x28 image) is dynamic."""
    gt = torch.zeros(*lead, size, size)
    gt[..., :14, :14] = 1.0
    return gt


# --------------------------------------------------------------------------------------------------
# config
# --------------------------------------------------------------------------------------------------
def test_arm_presets_switch_only_the_mask_terms():
    flags = {
        name: (
            c.use_seganymo_mask,
            c.use_mask_bce,
            c.use_mask_boundary,
            c.use_mask_temporal,
            c.use_camera and c.use_depth and c.use_point,
        )
        for name in ARM_NAMES
        for c in [LossConfig.for_arm(name)]
    }
    assert flags == {
        "none": (False, False, False, False, True),
        "bce": (True, True, False, False, True),
        "bce+boundary": (True, True, True, False, True),
        "bce+boundary+temporal": (True, True, True, True, True),
    }
    assert LossConfig.for_arm("bce", w_mask_bce=3.0).w_mask_bce == 3.0
    with pytest.raises(ValueError, match="valid names: none, bce, bce\\+boundary"):
        LossConfig.for_arm("dice")


def test_config_validation_is_loud():
    with pytest.raises(ValueError, match="mask_alignment"):
        LossConfig(mask_alignment="nearest")
    with pytest.raises(ValueError, match="pos_weight"):
        LossConfig(pos_weight="balanced")
    with pytest.raises(ValueError, match="w_mask_bce"):
        LossConfig(w_mask_bce=float("nan"))


# --------------------------------------------------------------------------------------------------
# pos_weight and BCE
# --------------------------------------------------------------------------------------------------
def test_auto_pos_weight_arithmetic_and_clamping():
    ones = torch.ones(8)
    target = torch.tensor([1.0, 0, 0, 0, 1, 0, 0, 0])
    assert float(compute_auto_pos_weight(target, ones)) == 3.0  # 6 negatives / 2 positives
    weight = torch.tensor([1.0, 1, 1, 1, 0, 0, 0, 0])  # invalid half ignored: 3 / 1
    assert float(compute_auto_pos_weight(target, weight)) == 3.0
    weight = torch.tensor([1.0, 1, 1, 1, 0, 1, 1, 1])  # 6 / 1
    assert float(compute_auto_pos_weight(target, weight)) == 6.0
    assert float(compute_auto_pos_weight(torch.full((4,), 0.5), torch.ones(4))) == 1.0  # soft counts
    rare = torch.zeros(1000)
    rare[0] = 1.0
    assert float(compute_auto_pos_weight(rare, torch.ones(1000))) == 50.0  # 999 clamped to the ceiling
    assert float(compute_auto_pos_weight(torch.ones(4), torch.ones(4))) == 1.0  # 0 clamped to the floor
    assert float(compute_auto_pos_weight(torch.zeros(4), torch.ones(4))) == 50.0  # no positive at all


@pytest.mark.parametrize(
    ("pos_weight", "expected_pw", "expected_loss"),
    [("auto", 3.0, 1.5 * LN2), (2.0, 2.0, 1.25 * LN2), (None, None, LN2)],
)
def test_bce_hand_value_with_each_pos_weight(pos_weight, expected_pw, expected_loss):
    # logits 0 -> per-pixel BCE log 2, times pos_weight on the dynamic quarter of the pixels.
    cfg = LossConfig(pos_weight=pos_weight)
    out = compute_mask_supervision_loss({"mask_logits": torch.zeros(1, 1, 2, 2)}, _quarter_gt(1, 1), cfg)
    assert out.supervised and out.skip_reason is None
    assert out.pos_weight == expected_pw
    assert abs(float(out.bce) - expected_loss) < 1e-6
    assert abs(float(out.loss) - expected_loss) < 1e-6  # w_mask_bce = 1, other terms off
    assert out.boundary is None and out.temporal is None


def test_frames_marked_invalid_do_not_count_in_pos_weight_or_loss():
    gt = torch.cat((_quarter_gt(1, 1), torch.ones(1, 1, 28, 28)), dim=1)  # frame 1 all dynamic
    logits = torch.stack((torch.zeros(2, 2), torch.full((2, 2), -5.0)))[None]
    out = compute_mask_supervision_loss(
        {"mask_logits": logits}, gt, LossConfig(), valid=torch.tensor([[True, False]])
    )
    assert out.pos_weight == 3.0
    assert abs(float(out.bce) - 1.5 * LN2) < 1e-6
    assert out.valid_frames == 1


def _two_frame_case() -> tuple[torch.Tensor, torch.Tensor, float]:
    """Frame 0: logit 0, a quarter dynamic. Frame 1: logit ln 3, all static.

    pos = 196, neg = 1372 -> pos_weight 7. Sum of BCE = 196*7 ln2 + 588 ln2 + 784 ln4 over 1568
    pixels = 2.25 ln 2.
    """
    logits = torch.stack((torch.zeros(2, 2), torch.full((2, 2), math.log(3.0))))
    gt = torch.cat((_quarter_gt(1), torch.zeros(1, 28, 28)))
    return logits, gt, 2.25 * LN2


@pytest.mark.parametrize("layout", ["BThw", "BTVhw", "BS1hw", "BS1hw_with_BTV_gt"])
def test_each_accepted_logit_layout_gives_the_hand_value(layout):
    logits, gt, expected = _two_frame_case()
    if layout == "BThw":
        lg, g = logits[None], gt[None]  # [1, 2, 2, 2], [1, 2, 28, 28]
    elif layout == "BTVhw":
        lg, g = logits[None, None], gt[None, None]  # T = 1, V = 2
    elif layout == "BS1hw":
        lg, g = logits[None, :, None], gt[None]  # [1, 2, 1, 2, 2]
    else:
        lg, g = logits[None, :, None], gt[None, None]  # S = T * V = 1 * 2
    out = compute_mask_supervision_loss({"mask_logits": lg}, g, LossConfig())
    assert out.pos_weight == 7.0
    assert abs(float(out.bce) - expected) < 1e-6


def test_pool_gt_makes_soft_targets_from_patch_averages():
    # Dynamic region covers patch (0,0) fully and half of patch (0,1): soft targets [[1, .5], [0, 0]].
    gt = torch.zeros(1, 1, 28, 28)
    gt[..., :14, :21] = 1.0
    cfg = LossConfig(mask_alignment="pool_gt")
    out = compute_mask_supervision_loss({"mask_logits": torch.zeros(1, 1, 2, 2)}, gt, cfg)
    # pos = 1.5, neg = 2.5 -> pw = 5/3; BCE(0) = ln2 * (pw*y + 1 - y): (5/3 + 4/3 + 1 + 1) / 4 = 5/4.
    assert abs(out.pos_weight - 5.0 / 3.0) < 1e-6
    assert abs(float(out.bce) - 1.25 * LN2) < 1e-6


def test_the_two_alignments_differ_where_upsampling_blurs_patch_edges():
    gt = _quarter_gt(1, 1).double()  # float64: torch's BCE cancels catastrophically at |x| = 10 in float32
    logits = torch.full((1, 1, 2, 2), -10.0, dtype=torch.float64)
    logits[..., 0, 0] = 10.0  # exactly the GT at patch level
    pool = LossConfig(mask_alignment="pool_gt")
    pooled = compute_mask_supervision_loss({"mask_logits": logits}, gt, pool).bce
    # pool_gt: pw = 3, every patch has BCE softplus(-10): (3 + 3) / 4 * softplus(-10)
    softplus = math.log1p(math.exp(-10.0))
    assert abs(float(pooled) - 1.5 * softplus) < 1e-8
    upsampled = compute_mask_supervision_loss({"mask_logits": logits}, gt, LossConfig()).bce
    assert float(upsampled) > 100 * float(pooled)  # bilinear ramps cross 0 around the patch edge


def test_bce_gradient_pushes_logits_up_where_gt_is_dynamic():
    logits = torch.tensor([[[[-1.0, 0.0], [0.5, 2.0]]]], requires_grad=True)
    out = compute_mask_supervision_loss({"mask_logits": logits}, torch.ones(1, 1, 28, 28), LossConfig())
    out.loss.backward()
    assert (logits.grad < 0).all()  # descent direction -grad is positive for every logit
    with torch.no_grad():
        stepped = logits - 10.0 * logits.grad
    after = compute_mask_supervision_loss({"mask_logits": stepped}, torch.ones(1, 1, 28, 28), LossConfig())
    assert (stepped > logits).all() and float(after.loss) < float(out.loss.detach())


# --------------------------------------------------------------------------------------------------
# skip path and loud errors
# --------------------------------------------------------------------------------------------------
def test_skip_paths_report_none_and_a_reason():
    preds = {"mask_logits": torch.zeros(1, 2, 2, 2)}
    gt = _quarter_gt(1, 2)
    cases = [
        (preds, None, LossConfig(), None, "segmask_gt is None"),
        (preds, gt, LossConfig.for_arm("none"), None, "use_seganymo_mask is False"),
        (preds, gt, LossConfig(use_mask_bce=False), None, "no mask term"),
        (preds, gt, LossConfig(), torch.zeros(1, 2, dtype=torch.bool), "no valid frame"),
        ({}, None, LossConfig(), None, "segmask_gt is None"),  # no logits, no GT: nothing to do
    ]
    for p, g, cfg, valid, reason in cases:
        out = compute_mask_supervision_loss(p, g, cfg, valid)
        assert out.supervised is False
        assert reason in out.skip_reason
        assert all(getattr(out, k) is None for k in ("loss", "bce", "boundary", "temporal"))


@pytest.mark.parametrize(
    ("logits", "gt", "valid", "match"),
    [
        (torch.full((1, 2, 2, 2), float("nan")), _quarter_gt(1, 2), None, "mask_logits.*non-finite"),
        (torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 29, 29), None, "integer multiple"),
        (torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 28, 42), None, "integer multiple"),
        (torch.zeros(1, 3, 2, 2), _quarter_gt(1, 2), None, "does not match segmask_gt"),
        (torch.zeros(2, 2, 2), _quarter_gt(1, 2), None, "mask_logits"),
        (torch.zeros(1, 2, 2, 2), 2.0 * _quarter_gt(1, 2), None, r"\[0, 1\]"),
        (torch.zeros(1, 2, 2, 2), _quarter_gt(1, 2), torch.ones(1, 3, dtype=torch.bool), "valid must be"),
        (torch.zeros(1, 2, 2, 2), _quarter_gt(1, 2), torch.ones(1, 2), "bool"),
    ],
)
def test_bad_inputs_raise(logits, gt, valid, match):
    with pytest.raises(ValueError, match=match):
        compute_mask_supervision_loss({"mask_logits": logits}, gt, LossConfig(), valid)


def test_gt_without_logits_is_a_bug_not_a_skip():
    with pytest.raises(ValueError, match="mask_logits"):
        compute_mask_supervision_loss({"depth": torch.zeros(1)}, _quarter_gt(1, 2), LossConfig())


# --------------------------------------------------------------------------------------------------
# boundary term
# --------------------------------------------------------------------------------------------------
def test_boundary_band_is_k_pixels_each_side_of_the_edge():
    mask = torch.zeros(6, 6)
    mask[:, :3] = 1.0  # edge between columns 2 and 3
    band1 = mask_boundary_band(mask, 1)
    assert band1[:, [2, 3]].all() and band1.sum() == 12
    band2 = mask_boundary_band(mask, 2)
    assert band2[:, 1:5].all() and band2.sum() == 24
    assert not mask_boundary_band(torch.ones(6, 6), 2).any()  # the image border is not an edge


def _square_case(shift: int) -> tuple[torch.Tensor, torch.Tensor]:
    gt = torch.zeros(1, 1, 32, 32)
    gt[..., 10:22, 10:22] = 1.0
    logits = 6.0 * (2.0 * torch.roll(gt, shifts=(shift, shift), dims=(-2, -1)) - 1.0)
    return logits, gt  # logits on a 32x32 grid = image grid (factor 1)


def test_boundary_term_hand_value_for_the_exact_mask():
    logits, gt = _square_case(0)
    out = compute_mask_supervision_loss(
        {"mask_logits": logits}, gt, LossConfig.for_arm("bce+boundary", boundary_width_px=2)
    )
    # band: 12^2 - 8^2 = 80 dynamic and 16^2 - 12^2 = 112 static pixels; the band is class-balanced
    # on its own: pw = 112 / 80 (the frame-level weight would be (1024 - 144) / 144).
    pw = 112.0 / 80.0
    expected = math.log1p(math.exp(-6.0)) * (80 * pw + 112) / 192
    assert out.boundary_pixels == 192
    assert abs(out.boundary_pos_weight - pw) < 1e-6  # float32
    assert abs(out.pos_weight - 880.0 / 144.0) < 1e-6
    assert abs(float(out.boundary) - expected) < 1e-6


def test_boundary_term_is_larger_for_a_shifted_mask():
    cfg = LossConfig.for_arm("bce+boundary")
    exact = compute_mask_supervision_loss({"mask_logits": _square_case(0)[0]}, _square_case(0)[1], cfg)
    logits_s, gt = _square_case(3)
    shifted = compute_mask_supervision_loss({"mask_logits": logits_s}, gt, cfg)
    assert float(shifted.boundary) > 100 * float(exact.boundary)
    # The band concentrates the error: the boundary term exceeds the image-wide mean.
    assert float(shifted.boundary) > float(shifted.bce)
    # Same with patch-level logits and pooled GT.
    gt14 = torch.zeros(1, 1, 56, 56)
    gt14[..., 14:42, 14:28] = 1.0
    good = torch.full((1, 1, 4, 4), -6.0)
    good[..., 1:3, 1:2] = 6.0
    bad = torch.roll(good, shifts=1, dims=-1)
    pool = LossConfig.for_arm("bce+boundary", mask_alignment="pool_gt")
    b_good = compute_mask_supervision_loss({"mask_logits": good}, gt14, pool).boundary
    b_bad = compute_mask_supervision_loss({"mask_logits": bad}, gt14, pool).boundary
    assert float(b_bad) > 100 * float(b_good)


# --------------------------------------------------------------------------------------------------
# temporal term
# --------------------------------------------------------------------------------------------------
def _static_rig(t: int, v: int, size: int = 28):
    k = torch.tensor([[20.0, 0.0, size / 2], [0.0, 20.0, size / 2], [0.0, 0.0, 1.0]])
    e = torch.cat((torch.eye(3), torch.zeros(3, 1)), dim=1)
    shape = (1, t, v)
    return (
        torch.full(shape + (size, size), 4.0),
        k.expand(shape + (3, 3)).clone(),
        e.expand(shape + (3, 4)).clone(),
    )


def test_temporal_term_zero_for_identical_masks_and_hand_value_otherwise():
    cfg = LossConfig(use_mask_bce=False, use_mask_temporal=True)  # auto warp, static GT cameras
    d, k, e = _static_rig(2, 1)
    gt = _quarter_gt(1, 2, 1)
    same = compute_mask_supervision_loss(
        {"mask_logits": torch.zeros(1, 2, 1, 2, 2)}, gt, cfg, depths=d, intrinsics=k, extrinsics=e
    )
    assert float(same.temporal) == 0.0
    assert same.temporal_pixels == 28 * 28
    logits = torch.zeros(1, 2, 1, 2, 2)
    logits[:, 1] = math.log(3.0)  # p = 0.5 then 0.75
    diff = compute_mask_supervision_loss(
        {"mask_logits": logits}, gt, cfg, depths=d, intrinsics=k, extrinsics=e
    )
    assert abs(float(diff.temporal) - 0.25) < 1e-6
    assert abs(float(diff.loss) - 0.05 * 0.25) < 1e-7  # w_mask_temporal = 0.05
    # Identity warp needs no geometry; a frame marked invalid removes its pair.
    ident = LossConfig(use_mask_bce=False, use_mask_temporal=True, temporal_warp="identity")
    out = compute_mask_supervision_loss({"mask_logits": logits}, gt, ident)
    assert abs(float(out.temporal) - 0.25) < 1e-6
    valid = torch.tensor([[[True], [False]]])
    out = compute_mask_supervision_loss({"mask_logits": logits}, gt, ident, valid)
    assert float(out.temporal) == 0.0 and out.temporal_pixels == 0


def test_temporal_auto_without_any_geometry_is_loud():
    cfg = LossConfig(use_mask_temporal=True)
    with pytest.raises(ValueError, match="needs geometry"):
        compute_mask_supervision_loss({"mask_logits": torch.zeros(1, 2, 1, 2, 2)}, _quarter_gt(1, 2, 1), cfg)


def _render_plane(extr: torch.Tensor, k: torch.Tensor, size: int, blob_centre: tuple[float, float]):
    """Depth and a smooth world-anchored 'dynamic probability' seen by a camera looking at Z = 5."""
    v, u = torch.meshgrid(
        torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64), indexing="ij"
    )
    rays = torch.stack(((u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], torch.ones_like(u)), dim=-1)
    rot, t = extr[:, :3], extr[:, 3]
    centre = -rot.T @ t
    dirs = rays @ rot  # R^T r for each pixel
    lam = (5.0 - centre[2]) / dirs[..., 2]  # camera-z of the hit point, since r_z = 1
    hit = centre + lam[..., None] * dirs
    r = ((hit[..., 0] - blob_centre[0]) ** 2 + (hit[..., 1] - blob_centre[1]) ** 2).sqrt()
    return lam, torch.sigmoid((1.0 - r) / 0.3)


def test_temporal_warp_with_moving_camera_is_near_zero_for_a_consistent_pair():
    size = 48
    k = torch.tensor([[40.0, 0.0, 23.5], [0.0, 40.0, 23.5], [0.0, 0.0, 1.0]], dtype=torch.float64)
    c, s = math.cos(0.05), math.sin(0.05)
    rot1 = torch.tensor([[c, 0.0, -s], [0.0, 1.0, 0.0], [s, 0.0, c]], dtype=torch.float64)
    centre1 = torch.tensor([0.4, 0.1, 0.0], dtype=torch.float64)
    e0 = torch.cat((torch.eye(3, dtype=torch.float64), torch.zeros(3, 1, dtype=torch.float64)), dim=1)
    e1 = torch.cat((rot1, (-rot1 @ centre1)[:, None]), dim=1)
    d0, p0 = _render_plane(e0, k, size, (0.2, 0.1))
    d1, p1 = _render_plane(e1, k, size, (0.2, 0.1))
    depths = torch.stack((d0, d1))[None, :, None]
    intr = k.expand(1, 2, 1, 3, 3)
    extr = torch.stack((e0, e1))[None, :, None]
    prob = torch.stack((p0, p1))[None, :, None]
    warped = temporal_consistency_loss(prob, None, depths, intr, extr)
    unwarped = temporal_consistency_loss(prob, config=LossConfig(temporal_warp="identity"))
    assert float(warped) < 2e-3
    assert float(unwarped) > 20 * float(warped)
    # The object moved in the world between t and t+1: the warped term sees it.
    _, p1_moved = _render_plane(e1, k, size, (-0.3, 0.1))
    moved = temporal_consistency_loss(torch.stack((p0, p1_moved))[None, :, None], None, depths, intr, extr)
    assert float(moved) > 20 * float(warped)


def test_temporal_warp_excludes_occluded_pixels():
    # Frame t+1 sees a nearer surface (depth 2 instead of the reprojected 5): no pixel corresponds.
    size = 16
    k = torch.tensor([[20.0, 0.0, 7.5], [0.0, 20.0, 7.5], [0.0, 0.0, 1.0]], dtype=torch.float64)
    e = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0]], dtype=torch.float64)
    e1 = e.clone()
    e1[0, 3] = -0.01  # tiny motion so the depth warp (not the static shortcut) runs
    depths = torch.stack((torch.full((size, size), 5.0), torch.full((size, size), 2.0)))[
        None, :, None
    ].double()
    prob = torch.stack((torch.zeros(size, size), torch.ones(size, size)))[None, :, None].double()
    extr = torch.stack((e, e1))[None, :, None]
    loss = temporal_consistency_loss(prob, None, depths, k.expand(1, 2, 1, 3, 3), extr)
    assert float(loss) == 0.0
    # Control: the same surface at t+1 (depth 5) corresponds almost everywhere and costs |0 - 1| = 1.
    depths[:, 1] = 5.0
    assert (
        abs(float(temporal_consistency_loss(prob, None, depths, k.expand(1, 2, 1, 3, 3), extr)) - 1.0) < 1e-9
    )


# --------------------------------------------------------------------------------------------------
# geometry losses
# --------------------------------------------------------------------------------------------------
def _rigid(angle: float, t: tuple[float, float, float]) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s, 0.0, t[0]], [s, c, 0.0, t[1]], [0.0, 0.0, 1.0, t[2]]], dtype=torch.float64)


def _compose(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[R_a|t_a] after [R_b|t_b]."""
    return torch.cat((a[:, :3] @ b[:, :3], a[:, :3] @ b[:, 3:] + a[:, 3:]), dim=1)


def _inverse(a: torch.Tensor) -> torch.Tensor:
    return torch.cat((a[:, :3].T, -a[:, :3].T @ a[:, 3:]), dim=1)


def test_normalize_scene_scale_hand_values_and_world_frame_invariance():
    k = torch.eye(3, dtype=torch.float64).expand(1, 2, 3, 3)  # 1x1 image, principal point at 0
    e = torch.stack((_rigid(0.0, (0, 0, 0)), _rigid(0.0, (0, 0, -1.0))))[None]  # centre 1 at z = 1
    depth = torch.tensor([2.0, 3.0], dtype=torch.float64).reshape(1, 2, 1, 1)
    out = normalize_scene_scale(e, k, depth)
    # points (0,0,2) and (0,0,4): mean distance 3
    assert abs(float(out.scale) - 3.0) < 1e-12
    assert_close(out.depths.flatten(), torch.tensor([2 / 3, 1.0], dtype=torch.float64))
    assert_close(out.world_points[0, :, 0, 0, 2], torch.tensor([2 / 3, 4 / 3], dtype=torch.float64))
    assert_close(out.extrinsics[0, 1, :, 3], torch.tensor([0, 0, -1 / 3], dtype=torch.float64))
    # Any world frame (E_s -> E_s G^-1) gives the same normalised scene.
    g_inv = _inverse(_rigid(0.7, (3.0, -2.0, 1.0)))
    e_moved = torch.stack([_compose(e[0, i], g_inv) for i in range(2)])[None]
    moved = normalize_scene_scale(e_moved, k, depth)
    assert_close(moved.extrinsics, out.extrinsics)
    assert_close(moved.world_points, out.world_points)
    with pytest.raises(ValueError, match="no valid"):
        normalize_scene_scale(e, k, torch.zeros(1, 2, 1, 1, dtype=torch.float64))


def _camera_case():
    k = torch.tensor([[10.0, 0, 5.0], [0, 10.0, 5.0], [0, 0, 1.0]], dtype=torch.float64).expand(1, 2, 3, 3)
    e = torch.stack((_rigid(0.0, (0, 0, 0)), _rigid(0.3, (0, 0, -2.0))))[None]
    # camera centres (0,0,0) and (0,0,2): mean distance from frame 0 = 1 -> scale 1
    gt_enc = extrinsics_intrinsics_to_pose_encoding(e, k, (10, 10))
    return k, e, gt_enc


def test_camera_loss_hand_values():
    k, e, gt_enc = _camera_case()
    perfect = camera_loss(gt_enc, e, k, (10, 10))
    assert float(perfect["camera_loss"]) < 1e-12
    flipped = gt_enc.clone()
    flipped[..., 3:7] *= -1.0  # q and -q are the same rotation
    assert float(camera_loss(flipped, e, k, (10, 10))["camera_R_loss"]) < 1e-12
    off = gt_enc.clone()
    off[0, 1, 0] += 0.3  # 0.3 on one of 3 components of one of 2 frames -> 0.05
    out = camera_loss(off, e, k, (10, 10))
    assert abs(float(out["camera_T_loss"]) - 0.05) < 1e-12
    assert abs(float(out["camera_loss"]) - 0.05) < 1e-12
    fov = gt_enc.clone()
    fov[0, 0, 7] += 0.4  # -> fov term 0.1, weighted 0.5
    assert abs(float(camera_loss(fov, e, k, (10, 10))["camera_loss"]) - 0.05) < 1e-12
    # Iterations weighted gamma^(N-1-i), normalised: (0.6 * 0.05 + 1 * 0) / 1.6
    listed = camera_loss([off, gt_enc], e, k, (10, 10))
    assert abs(float(listed["camera_loss"]) - 0.6 * 0.05 / 1.6) < 1e-12
    # GT is taken relative to frame 0: moving the whole world changes nothing.
    g_inv = _inverse(_rigid(-1.2, (5.0, 1.0, 0.5)))
    e_moved = torch.stack([_compose(e[0, i], g_inv) for i in range(2)])[None]
    assert abs(float(camera_loss(off, e_moved, k, (10, 10))["camera_loss"]) - 0.05) < 1e-12
    # The scene scale divides GT translations: scale 2 -> GT t_z = -1, error 1/6 on the z entry.
    scaled = camera_loss(gt_enc, e, k, (10, 10), scene_scale=torch.tensor([2.0], dtype=torch.float64))
    assert abs(float(scaled["camera_T_loss"]) - 1.0 / 6.0) < 1e-12
    with pytest.raises(ValueError, match="pose_enc_pred"):
        camera_loss(gt_enc[..., :8], e, k, (10, 10))


def test_depth_loss_hand_values():
    pred = torch.tensor([1.0, 2.0]).reshape(1, 1, 1, 2, 1)
    conf = torch.tensor([1.0, 2.0]).reshape(1, 1, 1, 2)
    gt = torch.tensor([2.0, 2.0]).reshape(1, 1, 1, 2)
    out = depth_loss(pred, conf, gt)
    reg = (1.0 * 1.0 + 2.0 * 0.0 - 0.2 * math.log(2.0)) / 2  # conf|err| - alpha log conf
    grad = 1.5 * 1.0  # one horizontal pair, |(0) - (-1)| weighted by mean conf 1.5
    assert abs(float(out["depth_reg_loss"]) - reg) < 1e-6
    assert abs(float(out["depth_grad_loss"]) - grad) < 1e-6
    assert abs(float(out["depth_loss"]) - (reg + grad)) < 1e-6
    # Scene scale 2: GT becomes [1, 1], errors [0, 1].
    out = depth_loss(pred, conf, gt, scene_scale=torch.tensor([2.0]))
    assert abs(float(out["depth_reg_loss"]) - (2.0 - 0.2 * math.log(2.0)) / 2) < 1e-6
    # Invalid GT (0) drops the pixel and the pair.
    out = depth_loss(pred, conf, torch.tensor([2.0, 0.0]).reshape(1, 1, 1, 2))
    assert abs(float(out["depth_loss"]) - 1.0) < 1e-6
    with pytest.raises(ValueError, match="depth_conf"):
        depth_loss(pred, torch.zeros(1, 1, 1, 2), gt)
    with pytest.raises(ValueError, match="depth_pred"):
        depth_loss(torch.full((1, 1, 1, 2, 1), float("inf")), conf, gt)
    with pytest.raises(ValueError, match="depth_pred must be"):
        depth_loss(pred[..., 0, :], conf, gt)


def test_point_loss_hand_values():
    gt = torch.zeros(1, 1, 1, 2, 3)
    pred = torch.zeros(1, 1, 1, 2, 3)
    pred[0, 0, 0, 0] = torch.tensor([3.0, 4.0, 0.0])  # error 5 at pixel 0, 0 at pixel 1
    conf = torch.tensor([2.0, 1.0]).reshape(1, 1, 1, 2)
    valid = torch.ones(1, 1, 1, 2, dtype=torch.bool)
    out = point_loss(pred, conf, gt, valid)
    reg = (2.0 * 5.0 - 0.2 * math.log(2.0)) / 2
    grad = 1.5 * 5.0
    assert abs(float(out["point_reg_loss"]) - reg) < 1e-5
    assert abs(float(out["point_grad_loss"]) - grad) < 1e-5
    with pytest.raises(ValueError, match="valid"):
        point_loss(pred, conf, gt, torch.ones(1, 1, 1, 2))


# --------------------------------------------------------------------------------------------------
# total loss
# --------------------------------------------------------------------------------------------------
def _batch_and_perfect_predictions():
    b, t, v, size = 1, 2, 2, 28
    k = torch.tensor([[20.0, 0, 14.0], [0, 20.0, 14.0], [0, 0, 1.0]]).expand(b, t, v, 3, 3).clone()
    e = torch.stack((_rigid(0.0, (0, 0, 0)), _rigid(0.0, (-1.0, 0, 0)))).float()  # view 1 one unit right
    e = e[None, None].expand(b, t, v, 3, 4).clone()
    depths = torch.full((b, t, v, size, size), 4.0)
    targets = {
        "images": torch.zeros(b, t, v, 3, size, size),
        "depths": depths,
        "intrinsics": k,
        "extrinsics": e,
        "masks": _quarter_gt(b, t, v),
        "mask_valid": torch.ones(b, t, v, dtype=torch.bool),
    }
    scene = normalize_scene_scale(e, k, depths)
    pose = extrinsics_intrinsics_to_pose_encoding(scene.extrinsics, k, (size, size))
    preds = {
        "pose_enc": pose,
        "pose_enc_list": [pose, pose],
        "depth": scene.depths[..., None],
        "depth_conf": torch.ones(b, t, v, size, size),
        "world_points": scene.world_points,
        "world_points_conf": torch.ones(b, t, v, size, size),
        "mask_logits": torch.zeros(b, t, v, 2, 2),
    }
    return preds, targets


def test_total_loss_perfect_geometry_leaves_only_the_mask_term():
    preds, targets = _batch_and_perfect_predictions()
    out = compute_total_loss(preds, targets, LossConfig.for_arm("bce+boundary+temporal"))
    for key in ("camera_loss", "depth_loss", "point_loss"):
        assert abs(float(out[key])) < 1e-5, key
    assert abs(float(out["mask_bce_loss"]) - 1.5 * LN2) < 1e-5
    assert float(out["mask_temporal_loss"]) == 0.0  # static rig, identical logits over time
    expected = 1.5 * LN2 + 0.5 * float(out["mask_boundary_loss"])
    assert abs(float(out["loss"]) - expected) < 1e-5
    assert out["mask_supervised"] is True
    logged = loss_dict_to_floats(out)
    assert isinstance(logged["loss"], float) and logged["mask_skip_reason"] is None


def test_total_loss_accepts_flat_predictions_and_skips_missing_masks():
    preds, targets = _batch_and_perfect_predictions()
    flat = {
        key: ([p.flatten(1, 2) for p in val] if isinstance(val, list) else val.flatten(1, 2))
        for key, val in preds.items()
    }
    flat["mask_logits"] = preds["mask_logits"].flatten(1, 2)[:, :, None]  # [B, S, 1, h, w]
    flat["depth"] = flat["depth"] + 0.1  # make one geometry term non-zero
    cfg = LossConfig.for_arm("bce")
    a = compute_total_loss({**preds, "depth": preds["depth"] + 0.1}, targets, cfg)
    b = compute_total_loss(flat, targets, cfg)
    assert abs(float(a["loss"]) - float(b["loss"])) < 1e-6 and float(a["depth_loss"]) > 0.09
    no_masks = compute_total_loss(flat, {**targets, "masks": None}, cfg)
    assert no_masks["mask_loss"] is None and "segmask_gt is None" in no_masks["mask_skip_reason"]
    assert abs(float(no_masks["loss"]) - (float(b["loss"]) - float(b["mask_loss"]))) < 1e-6
    with pytest.raises(ValueError, match="depth"):
        compute_total_loss({**preds, "depth": preds["depth"][..., :27, :]}, targets, cfg)


def test_mask_result_is_typed_and_keeps_the_flat_history_keys():
    cfg = LossConfig.for_arm("bce+boundary")
    out = compute_mask_supervision_loss({"mask_logits": torch.zeros(1, 1, 2, 2)}, _quarter_gt(1, 1), cfg)
    assert isinstance(out, MaskLossResult) and out.supervised
    flat = out.as_dict()
    assert list(flat) == [
        "mask_loss",
        "mask_bce_loss",
        "mask_boundary_loss",
        "mask_temporal_loss",
        "mask_supervised",
        "mask_skip_reason",
        "mask_pos_weight",
        "mask_valid_frames",
        "mask_boundary_pixels",
        "mask_boundary_pos_weight",
        "mask_temporal_pixels",
    ]
    assert flat["mask_loss"] is out.loss and flat["mask_boundary_pixels"] == out.boundary_pixels
    skipped = compute_mask_supervision_loss({}, None, cfg)
    assert not skipped.supervised and skipped.as_dict()["mask_valid_frames"] == 0


def test_geometry_enabled_is_one_switch_over_the_three_terms():
    assert LossConfig().geometry_enabled
    assert not LossConfig(use_camera=False, use_depth=False, use_point=False).geometry_enabled
    for term in ("camera", "depth", "point"):
        only = {f"use_{t}": t == term for t in ("camera", "depth", "point")}
        assert LossConfig(**only).geometry_enabled, term


def test_the_canonical_rotation_target_is_vggts_except_near_180_degrees():
    """A prediction on the wrong half of the double cover costs nothing sign-invariantly, but the full
    distance to the w >= 0 GT canonically (VGGT's L1), except where the GT sits near the 180-degree cut."""
    from page4d.losses.geometry_terms import _rotation_error

    gt = torch.tensor([[0.0, 0.0, 0.1, 0.995], [0.0, 0.0, 0.995, 0.1]])  # 11 and 169 degrees about z
    pred = -gt
    inv = _rotation_error(pred, gt, LossConfig(rotation_target="sign_invariant"))
    can = _rotation_error(pred, gt, LossConfig(rotation_target="canonical", rig_cut_w=0.2))
    assert torch.allclose(inv, torch.zeros(2)) and can[1] == 0.0
    assert can[0] == pytest.approx(float((2 * gt[0]).abs().mean()))
    with pytest.raises(ValueError, match="rotation_target"):
        LossConfig(rotation_target="matrix")


def _yaw_quaternion(deg: float) -> torch.Tensor:
    """(x, y, z, w) of a turn about the camera's y axis, w >= 0 as the GT encoding has it."""
    half = math.radians(deg) / 2
    q = torch.tensor([0.0, math.sin(half), 0.0, math.cos(half)], dtype=torch.float64)
    return -q if q[3] < 0 else q


def test_the_chordal_rotation_target_has_no_cut_and_hedges_a_wide_turn_towards_180_degrees():
    """Chordal: -q costs what q costs (zero); GT just either side of 180 degrees costs the same for a
    180-degree prediction; the error grows with the angle; a doubled quaternion costs its norm term.
    And the reason it exists: for GT turns of +150 and -150 degrees (a head that cannot tell left from
    right), the quaternion L1 is as low at (0, 0, 0, w) -- the identity once normalised, 150 degrees
    off -- as at the right answer; the chordal target costs the identity over 3x a 180-degree turn."""
    from page4d.losses.geometry_terms import _rotation_error

    chordal = LossConfig(rotation_target="chordal")
    gt = torch.stack([_yaw_quaternion(d) for d in (11.0, 169.0)])
    assert torch.allclose(_rotation_error(-gt, gt, chordal), torch.zeros(2, dtype=gt.dtype), atol=1e-12)
    near_cut = torch.stack([_yaw_quaternion(179.0), _yaw_quaternion(-179.0)])
    at_180 = _yaw_quaternion(180.0).expand(2, 4)
    err = _rotation_error(at_180, near_cut, chordal)
    assert err[0] == pytest.approx(float(err[1]), rel=1e-9) and 0 < err[0] < 0.01
    costs = [
        float(_rotation_error(_yaw_quaternion(d)[None], _yaw_quaternion(0.0)[None], chordal))
        for d in (5, 30, 90)
    ]
    assert costs[0] < costs[1] < costs[2]
    assert float(_rotation_error(2 * gt[:1], gt[:1], chordal)) == pytest.approx(1.0)
    pair = torch.stack([_yaw_quaternion(150.0), _yaw_quaternion(-150.0)])
    canonical = LossConfig(rotation_target="canonical", rig_cut_w=0.2)
    shrunk = torch.tensor([0.0, 0.0, 0.0, math.cos(math.radians(75))], dtype=torch.float64)  # the identity

    def mean_cost(pred: torch.Tensor, cfg: LossConfig) -> float:
        return float(_rotation_error(pred.expand(2, 4), pair, cfg).mean())

    assert mean_cost(shrunk, canonical) == pytest.approx(mean_cost(pair[0], canonical))  # a flat optimum
    assert mean_cost(_yaw_quaternion(180.0), chordal) < mean_cost(shrunk, chordal) / 3


def test_attention_forcing_measures_the_camera_rows_attention_on_movers():
    """The mass equals the dense softmax written out; a key bias that suppresses the dynamic keys lowers
    it; the gradient reaches q and k; a clip without movers costs nothing."""
    from page4d.losses.attention_forcing import (
        attention_forcing_loss,
        camera_attention_on_dynamic,
        dynamic_keys,
    )
    from page4d.model.attention import RowGatedKeyBias

    torch.manual_seed(0)
    b, heads, s, patch_start, h, w, d = 1, 2, 2, 2, 2, 3, 8
    p = patch_start + h * w
    n = s * p
    q = torch.randn(b, heads, n, d, requires_grad=True)
    k = torch.randn(b, heads, n, d, requires_grad=True)
    masks = torch.zeros(b, s, h, w)
    masks[0, :, 0, :2] = 1.0
    keys = dynamic_keys(masks, patch_start)
    assert keys.shape == (1, n) and keys[0, :patch_start].sum() == 0 and keys.sum() == 4
    rows = torch.tensor([0, 1, p, p + 1])
    mass = camera_attention_on_dynamic(q, k, rows, keys)
    dense = ((q @ k.transpose(-1, -2)) / d**0.5).softmax(-1)[:, :, rows]
    assert torch.allclose(mass, (dense * keys[:, None, None]).sum(-1).mean(1), atol=1e-6)
    bias = RowGatedKeyBias(rows=rows, row_gain=torch.ones(b, 4), key_bias=-5.0 * keys)
    assert bool((camera_attention_on_dynamic(q, k, rows, keys, bias) < mass).all())
    loss = attention_forcing_loss({3: (q, k), 4: (q, k)}, rows, keys, {3: bias})
    loss.backward()
    assert q.grad.abs().sum() > 0 and k.grad.abs().sum() > 0
    none = attention_forcing_loss({3: (q, k)}, rows, torch.zeros_like(keys))
    assert float(none.detach()) == 0.0
