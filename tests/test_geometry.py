"""Hand-checked geometry: rotations, pose encoding, (un)projection, SE(3) inverse, Umeyama."""

import math

import pytest
import torch
from conftest import assert_close
from page4d.geometry import (
    camera_centers,
    closed_form_inverse_se3,
    depth_to_world_points,
    extrinsics_intrinsics_to_pose_encoding,
    pose_encoding_to_extrinsics_intrinsics,
    project_points,
    quaternion_to_rotation_matrix,
    rotation_angle,
    rotation_matrix_to_quaternion,
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
