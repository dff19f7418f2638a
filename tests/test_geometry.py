"""Hand-checked geometry: rotations, pose encoding, (un)projection, SE(3) inverse, Umeyama."""

import math

import pytest
import torch
from conftest import assert_close
from page4d.geometry import (
    camera_centers,
    closed_form_inverse_se3,
    depth_backward_warp,
    depth_to_world_points,
    extrinsics_intrinsics_to_pose_encoding,
    points_are_degenerate,
    pose_encoding_to_extrinsics_intrinsics,
    project_points,
    quaternion_to_rotation_matrix,
    relative_to_first_camera,
    rotation_angle,
    rotation_axis_sine,
    rotation_matrix_to_quaternion,
    sample_nearest,
    trajectory_is_degenerate,
    umeyama_alignment,
)


def _axis_angle(axis: tuple[float, float, float], angle: float) -> torch.Tensor:
    """Rodrigues' formula in float64, independent of the code under test."""
    k = torch.tensor(axis, dtype=torch.float64)
    k = k / k.norm()
    kx = torch.tensor([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]], dtype=torch.float64)
    return torch.eye(3, dtype=torch.float64) + math.sin(angle) * kx + (1 - math.cos(angle)) * kx @ kx


def test_quaternion_90deg_about_z_is_the_hand_written_matrix():
    s = math.sqrt(0.5)
    rot = quaternion_to_rotation_matrix(torch.tensor([0.0, 0.0, s, s], dtype=torch.float64))
    expected = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    assert_close(rot, expected)
    # Non-unit quaternions encode the same rotation (the network's raw output is not normalised).
    assert_close(quaternion_to_rotation_matrix(torch.tensor([0.0, 0.0, 3.0, 3.0])), expected.float())


def test_matrix_to_quaternion_is_sign_stable_and_handles_180_degrees():
    # 180 degrees about x: q = (1, 0, 0, 0); the w-based formula would divide by zero here.
    q = rotation_matrix_to_quaternion(torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64)))
    assert_close(q, torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64))
    # A quaternion with w < 0 comes back as its w >= 0 twin.
    q_neg = torch.tensor([0.1, -0.2, 0.3, -0.9], dtype=torch.float64)
    q_neg = q_neg / q_neg.norm()
    back = rotation_matrix_to_quaternion(quaternion_to_rotation_matrix(q_neg))
    assert_close(back, -q_neg)


def test_rotation_round_trip_over_many_rotations():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(200, 4, generator=g, dtype=torch.float64)
    q = q / q.norm(dim=-1, keepdim=True)
    q = torch.where(q[:, 3:] < 0, -q, q)
    rot = quaternion_to_rotation_matrix(q)
    assert_close(rot @ rot.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand(200, 3, 3))
    assert_close(rotation_matrix_to_quaternion(rot), q)


def test_rotation_errors_are_loud():
    with pytest.raises(ValueError, match="zero-norm"):
        quaternion_to_rotation_matrix(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="quaternion"):
        quaternion_to_rotation_matrix(torch.tensor([float("nan"), 0.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match=r"\[\.\.\., 3, 3\]"):
        rotation_matrix_to_quaternion(torch.eye(4))


def test_rotation_angle_small_and_large():
    for angle in (1e-6, 0.5, 3.0):
        got = rotation_angle(_axis_angle((1.0, 2.0, -0.5), angle))
        assert abs(float(got) - angle) < 1e-12


def test_rotation_axis_sine_is_the_axis_times_the_sine_and_flips_with_the_turn():
    axis = torch.tensor([1.0, 2.0, -0.5], dtype=torch.float64)
    unit = axis / axis.norm()
    for angle in (0.5, 2.8):
        assert_close(rotation_axis_sine(_axis_angle(tuple(axis.tolist()), angle)), unit * math.sin(angle))
        assert_close(rotation_axis_sine(_axis_angle(tuple(axis.tolist()), -angle)), -unit * math.sin(angle))


def test_pose_encoding_known_values_and_round_trip():
    h, w = 28, 42
    rot = _axis_angle((0.0, 1.0, 0.0), 0.3)
    extr = torch.cat((rot, torch.tensor([[1.0], [-2.0], [3.0]], dtype=torch.float64)), dim=1)
    # fy = H/2 -> fov_h = 90 deg; fx = W/2 / tan(30 deg) -> fov_w = 60 deg.
    intr = torch.tensor(
        [[21.0 / math.tan(math.pi / 6), 0.0, 21.0], [0.0, 14.0, 14.0], [0.0, 0.0, 1.0]], dtype=torch.float64
    )
    enc = extrinsics_intrinsics_to_pose_encoding(extr[None, None], intr[None, None], (h, w))
    assert enc.shape == (1, 1, 9)
    assert_close(enc[0, 0, :3], torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64))
    # rotation about y by 0.3: q = (0, sin 0.15, 0, cos 0.15)
    assert_close(
        enc[0, 0, 3:7], torch.tensor([0.0, math.sin(0.15), 0.0, math.cos(0.15)], dtype=torch.float64)
    )
    assert abs(float(enc[0, 0, 7]) - math.pi / 2) < 1e-12
    assert abs(float(enc[0, 0, 8]) - math.pi / 3) < 1e-12
    extr_back, intr_back = pose_encoding_to_extrinsics_intrinsics(enc, (h, w))
    assert_close(extr_back[0, 0], extr)
    assert_close(intr_back[0, 0], intr)


def test_pose_encoding_rejects_bad_inputs():
    with pytest.raises(ValueError, match="leading dims"):
        extrinsics_intrinsics_to_pose_encoding(torch.zeros(2, 3, 4), torch.eye(3).expand(3, 3, 3), (10, 10))
    with pytest.raises(ValueError, match="field of view"):
        pose_encoding_to_extrinsics_intrinsics(torch.tensor([0, 0, 0, 0, 0, 0, 1, 0.0, 1.0]), (10, 10))
    with pytest.raises(ValueError, match="pose_enc"):
        pose_encoding_to_extrinsics_intrinsics(torch.zeros(2, 8), (10, 10))


def test_unproject_and_project_known_pixel():
    k = torch.tensor([[100.0, 0.0, 2.0], [0.0, 50.0, 1.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    extr = torch.tensor([[1.0, 0, 0, 1.0], [0, 1.0, 0, 0], [0, 0, 1.0, 0]], dtype=torch.float64)
    depth = torch.zeros(3, 5, dtype=torch.float64)
    depth[2, 4] = 2.0
    pts = depth_to_world_points(depth, k, extr)
    # pixel (u=4, v=2): x_cam = (4-2)/100*2 = 0.04, y_cam = (2-1)/50*2 = 0.04, z=2; world = cam - t
    assert_close(pts[2, 4], torch.tensor([0.04 - 1.0, 0.04, 2.0], dtype=torch.float64))
    uv, z = project_points(pts[2, 4][None], k, extr)
    assert_close(uv, torch.tensor([[4.0, 2.0]], dtype=torch.float64))
    assert_close(z, torch.tensor([2.0], dtype=torch.float64))


def test_project_points_hand_value_and_prefix_batching():
    k = torch.tensor([[200.0, 0.0, 32.0], [0.0, 100.0, 24.0], [0.0, 0.0, 1.0]])
    extr = torch.cat((torch.eye(3), torch.zeros(3, 1)), dim=1)
    pts = torch.tensor([0.5, -0.25, 5.0]).expand(2, 4, 6, 3)  # cameras [2], points [4, 6]
    uv, z = project_points(pts, k.expand(2, 3, 3), extr.expand(2, 3, 4))
    assert uv.shape == (2, 4, 6, 2) and z.shape == (2, 4, 6)
    assert_close(uv[1, 3, 5], torch.tensor([52.0, 19.0]))
    assert_close(z[0, 0, 0], torch.tensor(5.0))
    with pytest.raises(ValueError, match="points_world"):
        project_points(torch.zeros(3, 4, 3), k.expand(2, 3, 3), extr.expand(2, 3, 4))


def test_depth_to_world_round_trip_through_a_rotated_camera():
    g = torch.Generator().manual_seed(1)
    rot = _axis_angle((0.3, -1.0, 0.2), 0.7)
    extr = torch.cat((rot, torch.tensor([[0.2], [0.1], [-0.4]], dtype=torch.float64)), dim=1)
    k = torch.tensor([[30.0, 0.0, 7.5], [0.0, 28.0, 5.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    depth = 1.0 + torch.rand(10, 16, generator=g, dtype=torch.float64)
    pts = depth_to_world_points(depth, k, extr)
    uv, z = project_points(pts, k, extr)
    v, u = torch.meshgrid(torch.arange(10.0), torch.arange(16.0), indexing="ij")
    assert_close(uv, torch.stack((u, v), dim=-1).double())
    assert_close(z, depth)
    with pytest.raises(ValueError, match="squeeze"):
        depth_to_world_points(depth[..., None], k, extr)


def test_closed_form_inverse_and_camera_centre():
    rot = _axis_angle((1.0, 1.0, 0.0), 1.1)
    t = torch.tensor([[0.5], [-1.0], [2.0]], dtype=torch.float64)
    m4 = torch.eye(4, dtype=torch.float64)
    m4[:3, :3], m4[:3, 3:] = rot, t
    assert_close(closed_form_inverse_se3(m4) @ m4, torch.eye(4, dtype=torch.float64))
    inv3 = closed_form_inverse_se3(m4[:3])
    assert_close(inv3, torch.linalg.inv(m4)[:3])
    assert_close(camera_centers(m4[:3]), inv3[:, 3])


def test_umeyama_recovers_a_known_similarity():
    g = torch.Generator().manual_seed(2)
    src = torch.randn(20, 3, generator=g, dtype=torch.float64)
    rot = _axis_angle((0.2, 0.5, 1.0), 2.0)
    t = torch.tensor([1.0, -3.0, 0.5], dtype=torch.float64)
    dst = 2.5 * src @ rot.T + t
    s, r, tt = umeyama_alignment(src, dst)
    assert abs(float(s) - 2.5) < 1e-10
    assert_close(r, rot)
    assert_close(tt, t)
    # SE(3): a rigid motion is recovered with s fixed to 1.
    s1, r1, t1 = umeyama_alignment(src, src @ rot.T + t, with_scale=False)
    assert float(s1) == 1.0
    assert_close(r1, rot)
    assert_close(t1, t)


def test_umeyama_rejects_degenerate_points():
    line = torch.linspace(0, 1, 5, dtype=torch.float64)[:, None] * torch.tensor([[1.0, 2.0, 3.0]]).double()
    with pytest.raises(ValueError, match="degenerate"):
        umeyama_alignment(line, line + 1.0)
    with pytest.raises(ValueError, match="at least 3"):
        umeyama_alignment(torch.zeros(2, 3), torch.zeros(2, 3))


def _w2c(rot: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """World-to-camera [R | -R C] of a camera at ``centre`` with world-to-camera rotation ``rot``."""
    return torch.cat((rot, -(rot @ centre)[:, None]), dim=-1)


def test_relative_to_first_camera_makes_camera_0_the_world_and_keeps_relative_poses():
    rots = [_axis_angle((1.0, 2.0, 0.5), a) for a in (0.3, -0.7, 1.1)]
    centres = torch.tensor([[1.0, 0.0, 2.0], [0.0, -1.0, 0.5], [3.0, 1.0, 0.0]], dtype=torch.float64)
    e = torch.stack([_w2c(r, c) for r, c in zip(rots, centres, strict=True)])[None]  # [1, 3, 3, 4]
    rel = relative_to_first_camera(e)
    assert_close(rel[0, 0], torch.eye(3, 4, dtype=torch.float64))

    def homogeneous(m: torch.Tensor) -> torch.Tensor:
        return torch.cat((m, torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=m.dtype)), dim=0)

    # camera 2 seen from camera 1 does not depend on the world frame
    before = homogeneous(e[0, 2]) @ torch.linalg.inv(homogeneous(e[0, 1]))
    after = homogeneous(rel[0, 2]) @ torch.linalg.inv(homogeneous(rel[0, 1]))
    assert_close(after, before)
    with pytest.raises(ValueError, match=r"\[\.\.\., S, 3, 4\]"):
        relative_to_first_camera(torch.zeros(3, 4))


def test_depth_backward_warp_hand_values_shift_and_occlusion():
    h, w, z, f, shift = 6, 8, 5.0, 10.0, 1.0
    k = torch.tensor([[f, 0.0, 3.5], [0.0, f, 2.5], [0.0, 0.0, 1.0]], dtype=torch.float64)[None]
    eye = torch.eye(3, dtype=torch.float64)
    source = _w2c(eye, torch.zeros(3, dtype=torch.float64))[None]
    # target camera moved by `shift` along +x: a point at depth z lands f * shift / z = 2 pixels further left
    target = _w2c(eye, torch.tensor([shift, 0.0, 0.0], dtype=torch.float64))[None]
    target_depth = torch.full((1, h, w), z, dtype=torch.float64)
    depth = target_depth.clone()
    depth[0, 0, 0] = 0.0  # invalid source pixel
    warp = depth_backward_warp(depth, k, source, target_depth, k, target)
    u = (warp.grid[..., 0] + 1.0) / 2.0 * (w - 1)  # back to pixel columns
    v = (warp.grid[..., 1] + 1.0) / 2.0 * (h - 1)
    cols = torch.arange(w, dtype=torch.float64)
    expected_in = (cols - 2.0 >= -0.5)[None, None].expand(1, h, w).clone()
    expected_in[0, 0, 0] = False
    assert torch.equal(warp.in_view, expected_in)
    assert_close(u[warp.in_view], (cols - 2.0).expand(1, h, w)[warp.in_view])
    assert_close(v[warp.in_view], torch.arange(h, dtype=torch.float64)[:, None].expand(1, h, w)[warp.in_view])
    assert bool((warp.grid[~warp.in_view] == 0).all())  # finite, harmless sampling outside
    assert bool((warp.depth[warp.in_view] == z).all()) and bool(warp.visible(0.05)[warp.in_view].all())
    # the backward warp reads the target image at the shifted columns
    image = cols.expand(1, 1, h, w).clone()
    assert_close(warp.sample(image)[0, 0][warp.in_view[0]], (cols - 2.0).expand(h, w)[warp.in_view[0]])
    # something closer in the target hides the surface: not visible, though still in view
    occluded = depth_backward_warp(depth, k, source, target_depth * 0.5, k, target)
    assert not bool(occluded.visible(0.05).any()) and torch.equal(occluded.in_view, warp.in_view)
    holes = target_depth.clone()
    holes[0, :, 4] = 0.0  # the target has no depth where source column 6 lands
    seen = depth_backward_warp(depth, k, source, holes, k, target).visible(0.05)
    assert not bool(seen[0, :, 6].any()) and bool(seen[0, 1:, 5].all())
    with pytest.raises(ValueError, match="target_depth"):
        depth_backward_warp(depth, k, source, target_depth[:, :-1], k, target)


def test_sample_nearest_rounds_to_pixel_centres_and_flags_outside():
    image = torch.arange(12.0).reshape(3, 4)
    xy = torch.tensor([[0.49, 0.0], [0.5, 1.2], [3.4, 2.0], [-0.6, 0.0], [1.0, 2.6]])
    values, inside = sample_nearest(image, xy)
    assert values[:3].tolist() == [0.0, 5.0, 11.0]
    assert inside.tolist() == [True, True, True, False, False]


def test_degeneracy_is_one_test_for_alignment_and_evaluation():
    plane = torch.tensor(
        [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.3]], dtype=torch.float64
    )
    line = torch.linspace(0, 1, 4, dtype=torch.float64)[:, None] * torch.tensor([[1.0, 2.0, 3.0]]).double()
    batch = torch.stack((plane, line, torch.zeros(4, 3, dtype=torch.float64)))
    assert points_are_degenerate(batch).tolist() == [False, True, True]
    assert bool(points_are_degenerate(plane[:2]))  # fewer than 3 points
    eye = torch.eye(3, dtype=torch.float64)
    cameras = torch.stack([_w2c(eye, c) for c in plane])
    assert trajectory_is_degenerate(cameras) is False
    assert trajectory_is_degenerate(torch.stack([_w2c(eye, c) for c in line])) is True
