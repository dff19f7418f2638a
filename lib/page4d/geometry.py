"""Camera geometry shared by the losses, the metrics and the notebooks.

Conventions (the same as VGGT and as ``data/mv_scene``):

- Extrinsics are **world-to-camera** OpenCV matrices ``[R|t]`` of shape ``[..., 3, 4]``:
  ``X_cam = R @ X_world + t`` with x right, y down, z forward. The camera centre is ``-R^T t``.
- Intrinsics are pinhole ``K`` of shape ``[..., 3, 3]``; integer pixel coordinates are pixel
  centres, ``u`` is the column and ``v`` the row: ``u = fx * x / z + cx``.
- Quaternions are ``(x, y, z, w)`` with the scalar **last**; we return them with ``w >= 0`` so the
  same rotation always gives the same four numbers.
- Pose encoding ``absT_quaR_FoV``: ``(tx, ty, tz, qx, qy, qz, qw, fov_h, fov_w)`` with
  ``fov_h = 2 atan((H / 2) / fy)`` and ``fov_w = 2 atan((W / 2) / fx)``. Decoding places the
  principal point at ``(W / 2, H / 2)``, as VGGT does.

Every function checks shapes and finiteness and raises ``ValueError`` naming the argument: a wrong
layout here silently corrupts every loss downstream.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from page4d.checks import require_finite, require_tensor

__all__ = [
    "DEGENERACY_REL_TOL",
    "DepthWarp",
    "camera_centers",
    "closed_form_inverse_se3",
    "depth_backward_warp",
    "depth_to_camera_points",
    "depth_to_world_points",
    "extrinsics_intrinsics_to_pose_encoding",
    "points_are_degenerate",
    "pose_encoding_to_extrinsics_intrinsics",
    "project_points",
    "quaternion_to_rotation_matrix",
    "relative_to_first_camera",
    "rotation_angle",
    "rotation_axis_sine",
    "rotation_matrix_to_quaternion",
    "sample_nearest",
    "trajectory_is_degenerate",
    "umeyama_alignment",
]

# Points whose second singular value (of the centred point set) is at most this share of the first
# lie on a line as far as an alignment is concerned: the rotation about that line is not determined.
DEGENERACY_REL_TOL = 1e-6


# --------------------------------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------------------------------
def _check_trailing(x: torch.Tensor, name: str, trailing: tuple[int, ...]) -> None:
    n = len(trailing)
    if x.ndim < n or tuple(x.shape[-n:]) != trailing:
        want = "[..., " + ", ".join(str(t) for t in trailing) + "]"
        raise ValueError(f"{name} must have shape {want}, got {tuple(x.shape)}")


def _check_image_hw(image_hw: Sequence[int]) -> tuple[int, int]:
    if len(image_hw) != 2:
        raise ValueError(f"image_hw must be (H, W), got {image_hw!r}")
    h, w = int(image_hw[0]), int(image_hw[1])
    if h <= 0 or w <= 0 or h != image_hw[0] or w != image_hw[1]:
        raise ValueError(f"image_hw must be two positive integers (H, W), got {image_hw!r}")
    return h, w


# --------------------------------------------------------------------------------------------------
# rotations
# --------------------------------------------------------------------------------------------------
def quaternion_to_rotation_matrix(quaternion: torch.Tensor) -> torch.Tensor:
    """Rotation matrices from quaternions ``(x, y, z, w)``, scalar last.

    quaternion: ``[..., 4]``, any non-zero norm (the network's raw output is not unit length, so
    the formula divides by ``|q|^2`` instead of assuming it). Returns ``[..., 3, 3]``.
    """
    q = require_tensor(quaternion, "quaternion")
    _check_trailing(q, "quaternion", (4,))
    require_finite(q, "quaternion")
    norm2 = (q * q).sum(-1)
    if (norm2 <= torch.finfo(q.dtype).tiny).any():
        raise ValueError(f"quaternion (shape {tuple(q.shape)}) has a zero-norm entry; it encodes no rotation")
    x, y, z, w = q.unbind(-1)
    two_s = 2.0 / norm2
    rows = (
        1 - two_s * (y * y + z * z),
        two_s * (x * y - z * w),
        two_s * (x * z + y * w),
        two_s * (x * y + z * w),
        1 - two_s * (x * x + z * z),
        two_s * (y * z - x * w),
        two_s * (x * z - y * w),
        two_s * (y * z + x * w),
        1 - two_s * (x * x + y * y),
    )
    return torch.stack(rows, dim=-1).reshape(q.shape[:-1] + (3, 3))


def _sqrt_positive(x: torch.Tensor) -> torch.Tensor:
    # sqrt(max(x, 0)) whose gradient stays finite at 0 (plain sqrt would give inf there).
    positive = x > 0
    return torch.where(
        positive, torch.sqrt(torch.where(positive, x, torch.ones_like(x))), torch.zeros_like(x)
    )


def rotation_matrix_to_quaternion(rotation: torch.Tensor) -> torch.Tensor:
    """Unit quaternions ``(x, y, z, w)`` with ``w >= 0`` from rotation matrices ``[..., 3, 3]``.

    Branch-free in the tensor sense: the four algebraically equivalent formulas (divide by 4w, 4x,
    4y or 4z) are all evaluated and, per matrix, the one with the largest divisor is kept, so there
    is no catastrophic cancellation near 180-degree rotations. The sign is then fixed to ``w >= 0``
    (q and -q are the same rotation). Returns ``[..., 4]``.
    """
    r = require_tensor(rotation, "rotation")
    _check_trailing(r, "rotation", (3, 3))
    require_finite(r, "rotation")
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = r.reshape(r.shape[:-2] + (9,)).unbind(-1)
    # 2|w|, 2|x|, 2|y|, 2|z| from the diagonal.
    two_abs = _sqrt_positive(
        torch.stack(
            (
                1 + m00 + m11 + m22,
                1 + m00 - m11 - m22,
                1 - m00 + m11 - m22,
                1 - m00 - m11 + m22,
            ),
            dim=-1,
        )
    )
    # Each row is 4*c*(x, y, z, w) for c = w, x, y, z respectively (off-diagonal sums/differences).
    candidates = torch.stack(
        (
            torch.stack((m21 - m12, m02 - m20, m10 - m01, two_abs[..., 0] ** 2), dim=-1),
            torch.stack((two_abs[..., 1] ** 2, m10 + m01, m02 + m20, m21 - m12), dim=-1),
            torch.stack((m10 + m01, two_abs[..., 2] ** 2, m21 + m12, m02 - m20), dim=-1),
            torch.stack((m02 + m20, m21 + m12, two_abs[..., 3] ** 2, m10 - m01), dim=-1),
        ),
        dim=-2,
    )
    # The kept divisor is >= 1 (the squares sum to 4); the floor only guards the discarded rows.
    candidates = candidates / (2.0 * two_abs[..., None].clamp_min(0.1))
    best = two_abs.argmax(dim=-1)
    one_hot = torch.nn.functional.one_hot(best, num_classes=4).to(r.dtype)
    q = (candidates * one_hot[..., None]).sum(dim=-2)
    q = torch.where(q[..., 3:4] < 0, -q, q)
    return q / q.norm(dim=-1, keepdim=True)


def rotation_angle(rotation: torch.Tensor) -> torch.Tensor:
    """Rotation angle in radians, in [0, pi], of rotation matrices ``[..., 3, 3]``.

    Uses ``atan2(|axis * sin|, cos)`` rather than ``acos((tr - 1) / 2)``: acos loses all precision
    for the small angles that RPE measures.
    """
    r = require_tensor(rotation, "rotation")
    _check_trailing(r, "rotation", (3, 3))
    require_finite(r, "rotation")
    cos = (r.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0) / 2.0
    return torch.atan2(rotation_axis_sine(r).norm(dim=-1), cos)


def rotation_axis_sine(rotation: torch.Tensor) -> torch.Tensor:
    """The rotation axis scaled by the sine of the angle, ``[..., 3]``, of rotation matrices ``[..., 3, 3]``:
    half the vee of ``R - R^T``. Its norm is ``sin(angle)``; its direction says which way the rotation
    turns (two turns to the same side have a positive dot product), undefined at 0 and 180 degrees."""
    r = require_tensor(rotation, "rotation")
    _check_trailing(r, "rotation", (3, 3))
    vee = torch.stack(
        (r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0], r[..., 1, 0] - r[..., 0, 1]), dim=-1
    )
    return vee / 2.0


# --------------------------------------------------------------------------------------------------
# rigid transforms and cameras
# --------------------------------------------------------------------------------------------------
def closed_form_inverse_se3(transform: torch.Tensor) -> torch.Tensor:
    """Inverse of rigid transforms ``[R|t]`` without a general matrix inverse: ``[R^T | -R^T t]``.

    transform: ``[..., 3, 4]`` or ``[..., 4, 4]`` (the last row must then be ``0 0 0 1``); the
    output has the same shape. Turns world-to-camera into camera-to-world and back.
    """
    m = require_tensor(transform, "transform")
    if m.ndim < 2 or tuple(m.shape[-2:]) not in ((3, 4), (4, 4)):
        raise ValueError(f"transform must have shape [..., 3, 4] or [..., 4, 4], got {tuple(m.shape)}")
    require_finite(m, "transform")
    rot = m[..., :3, :3]
    trans = m[..., :3, 3:]
    rot_t = rot.transpose(-1, -2)
    top = torch.cat((rot_t, -rot_t @ trans), dim=-1)
    if m.shape[-2] == 3:
        return top
    bottom = torch.zeros_like(m[..., 3:, :])
    bottom[..., 0, 3] = 1.0
    return torch.cat((top, bottom), dim=-2)


def camera_centers(extrinsics: torch.Tensor) -> torch.Tensor:
    """Camera centres in world coordinates, ``-R^T t``, from world-to-camera ``[..., 3, 4]``."""
    e = require_tensor(extrinsics, "extrinsics")
    _check_trailing(e, "extrinsics", (3, 4))
    require_finite(e, "extrinsics")
    return -(e[..., :3, :3].transpose(-1, -2) @ e[..., :3, 3:])[..., 0]


def relative_to_first_camera(extrinsics: torch.Tensor) -> torch.Tensor:
    """The same cameras with camera 0 as the world: ``E_s @ inv(E_0)``, so ``E_0`` becomes ``[I | 0]``.

    extrinsics: world-to-camera ``[..., S, 3, 4]``; camera 0 is index 0 of the S axis (``s = t * V + v``
    for multi-view clips, so frame t = 0, v = 0). Returns the same shape. A rigid change of world:
    depths are unchanged, world points move with it.
    """
    e = require_tensor(extrinsics, "extrinsics")
    if e.ndim < 3 or tuple(e.shape[-2:]) != (3, 4):
        raise ValueError(f"extrinsics must have shape [..., S, 3, 4], got {tuple(e.shape)}")
    e0_inv = closed_form_inverse_se3(e[..., :1, :, :])  # camera 0 -> world
    rot = e[..., :3, :3] @ e0_inv[..., :3, :3]
    trans = e[..., :3, :3] @ e0_inv[..., :3, 3:] + e[..., :3, 3:]
    return torch.cat((rot, trans), dim=-1)


def extrinsics_intrinsics_to_pose_encoding(
    extrinsics: torch.Tensor, intrinsics: torch.Tensor, image_hw: Sequence[int]
) -> torch.Tensor:
    """Encode cameras as VGGT's ``absT_quaR_FoV`` 9-vector.

    extrinsics: world-to-camera ``[..., 3, 4]``; intrinsics: ``[..., 3, 3]`` with the same leading
    dims; image_hw: ``(H, W)`` in pixels of the image the intrinsics refer to. Returns ``[..., 9]``:
    translation of the world-to-camera transform (world origin in camera coordinates), the
    rotation as a ``w >= 0`` quaternion, and the vertical/horizontal fields of view in radians.
    The principal point is not encoded.
    """
    e = require_tensor(extrinsics, "extrinsics")
    k = require_tensor(intrinsics, "intrinsics")
    _check_trailing(e, "extrinsics", (3, 4))
    _check_trailing(k, "intrinsics", (3, 3))
    if e.shape[:-2] != k.shape[:-2]:
        raise ValueError(
            f"extrinsics {tuple(e.shape)} and intrinsics {tuple(k.shape)} must share leading dims"
        )
    require_finite(e, "extrinsics")
    require_finite(k, "intrinsics")
    h, w = _check_image_hw(image_hw)
    fx, fy = k[..., 0, 0], k[..., 1, 1]
    if (fx <= 0).any() or (fy <= 0).any():
        raise ValueError(f"intrinsics (shape {tuple(k.shape)}) must have positive focal lengths")
    fov_h = 2.0 * torch.atan((h / 2.0) / fy)
    fov_w = 2.0 * torch.atan((w / 2.0) / fx)
    quat = rotation_matrix_to_quaternion(e[..., :3, :3])
    return torch.cat((e[..., :3, 3], quat, fov_h[..., None], fov_w[..., None]), dim=-1)


def pose_encoding_to_extrinsics_intrinsics(
    pose_enc: torch.Tensor, image_hw: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode ``absT_quaR_FoV`` ``[..., 9]`` into world-to-camera ``[..., 3, 4]`` and K ``[..., 3, 3]``.

    The quaternion need not be unit length (it is normalised by the rotation formula). The
    principal point is put at ``(W / 2, H / 2)``; FoVs must lie in (0, pi).
    """
    p = require_tensor(pose_enc, "pose_enc")
    _check_trailing(p, "pose_enc", (9,))
    require_finite(p, "pose_enc")
    h, w = _check_image_hw(image_hw)
    fov_h, fov_w = p[..., 7], p[..., 8]
    if ((fov_h <= 0) | (fov_h >= math.pi) | (fov_w <= 0) | (fov_w >= math.pi)).any():
        raise ValueError(f"pose_enc (shape {tuple(p.shape)}) has a field of view outside (0, pi)")
    rot = quaternion_to_rotation_matrix(p[..., 3:7])
    extrinsics = torch.cat((rot, p[..., :3, None]), dim=-1)
    fy = (h / 2.0) / torch.tan(fov_h / 2.0)
    fx = (w / 2.0) / torch.tan(fov_w / 2.0)
    intrinsics = torch.zeros(p.shape[:-1] + (3, 3), dtype=p.dtype, device=p.device)
    intrinsics[..., 0, 0] = fx
    intrinsics[..., 1, 1] = fy
    intrinsics[..., 0, 2] = w / 2.0
    intrinsics[..., 1, 2] = h / 2.0
    intrinsics[..., 2, 2] = 1.0
    return extrinsics, intrinsics


def depth_to_camera_points(depth: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Unproject z-depth ``[..., H, W]`` with K ``[..., 3, 3]`` to camera coordinates ``[..., H, W, 3]``.

    Pixel ``(row v, column u)`` is the ray through pixel centre ``(u, v)``; depth is distance along
    the optical axis (not along the ray). Invalid depth (0) gives the camera centre; mask it.
    """
    d = require_tensor(depth, "depth")
    k = require_tensor(intrinsics, "intrinsics")
    if d.ndim < 2:
        raise ValueError(f"depth must have shape [..., H, W], got {tuple(d.shape)}")
    _check_trailing(k, "intrinsics", (3, 3))
    if d.shape[:-2] != k.shape[:-2]:
        raise ValueError(
            f"depth {tuple(d.shape)} must be [..., H, W] with the same leading dims as "
            f"intrinsics {tuple(k.shape)} (squeeze a trailing channel of 1 explicitly)"
        )
    require_finite(d, "depth")
    require_finite(k, "intrinsics")
    h, w = d.shape[-2:]
    v, u = torch.meshgrid(
        torch.arange(h, dtype=d.dtype, device=d.device),
        torch.arange(w, dtype=d.dtype, device=d.device),
        indexing="ij",
    )
    fx = k[..., 0, 0, None, None]
    fy = k[..., 1, 1, None, None]
    cx = k[..., 0, 2, None, None]
    cy = k[..., 1, 2, None, None]
    x = (u - cx) / fx * d
    y = (v - cy) / fy * d
    return torch.stack((x, y, d), dim=-1)


def depth_to_world_points(
    depth: torch.Tensor, intrinsics: torch.Tensor, extrinsics: torch.Tensor
) -> torch.Tensor:
    """Unproject z-depth ``[..., H, W]`` to world points ``[..., H, W, 3]``.

    intrinsics ``[..., 3, 3]`` and world-to-camera extrinsics ``[..., 3, 4]`` share depth's leading
    dims. ``X_world = R^T (X_cam - t)``. Pixels with depth 0 land on the camera centre; callers
    must carry the ``depth > 0`` mask.
    """
    cam = depth_to_camera_points(depth, intrinsics)
    e = require_tensor(extrinsics, "extrinsics")
    _check_trailing(e, "extrinsics", (3, 4))
    if e.shape[:-2] != depth.shape[:-2]:
        raise ValueError(
            f"extrinsics {tuple(e.shape)} must share the leading dims of depth {tuple(depth.shape)}"
        )
    require_finite(e, "extrinsics")
    rot = e[..., None, None, :3, :3]
    trans = e[..., None, None, :3, 3]
    return ((cam - trans)[..., None, :] @ rot)[..., 0, :]


def project_points(
    points_world: torch.Tensor, intrinsics: torch.Tensor, extrinsics: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Project world points into cameras: returns pixel coords ``uv`` and camera depth ``z``.

    intrinsics ``[*C, 3, 3]``, extrinsics ``[*C, 3, 4]`` (world-to-camera); points_world
    ``[*C, *P, 3]``: the camera dims ``C`` are a prefix of the point dims (each camera sees its own
    points, no broadcasting guesses). Returns ``uv [*C, *P, 2]`` (u = column, v = row, pixel centres
    at integers) and ``z [*C, *P]``. Points with ``z <= 0`` are behind the camera; their uv is
    meaningless and the caller must mask ``z > 0``.
    """
    pts = require_tensor(points_world, "points_world")
    k = require_tensor(intrinsics, "intrinsics")
    e = require_tensor(extrinsics, "extrinsics")
    _check_trailing(k, "intrinsics", (3, 3))
    _check_trailing(e, "extrinsics", (3, 4))
    cam_dims = tuple(k.shape[:-2])
    if tuple(e.shape[:-2]) != cam_dims:
        raise ValueError(
            f"extrinsics {tuple(e.shape)} and intrinsics {tuple(k.shape)} must share leading dims"
        )
    if (
        pts.shape[-1:] != (3,)
        or tuple(pts.shape[: len(cam_dims)]) != cam_dims
        or pts.ndim < len(cam_dims) + 1
    ):
        raise ValueError(
            f"points_world must be [*C, *P, 3] with C = {cam_dims} (camera dims), got {tuple(pts.shape)}"
        )
    require_finite(pts, "points_world")
    require_finite(k, "intrinsics")
    require_finite(e, "extrinsics")
    n_extra = pts.ndim - 1 - len(cam_dims)
    flat = pts.reshape(cam_dims + (-1, 3))
    cam = flat @ e[..., :3, :3].transpose(-1, -2) + e[..., None, :3, 3]
    z = cam[..., 2]
    z_safe = torch.where(z.abs() > 1e-12, z, torch.full_like(z, 1e-12))
    u = k[..., 0, 0, None] * cam[..., 0] / z_safe + k[..., 0, 2, None]
    v = k[..., 1, 1, None] * cam[..., 1] / z_safe + k[..., 1, 2, None]
    out_shape = pts.shape[: len(cam_dims) + n_extra]
    return torch.stack((u, v), dim=-1).reshape(out_shape + (2,)), z.reshape(out_shape)


def sample_nearest(image: torch.Tensor, xy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Values of ``image [..., H, W]`` at the nearest pixel of points ``xy [..., N, 2]`` (x = column).

    Pixel centres are at integers (the convention of :func:`project_points`), so a point belongs to
    pixel ``floor(x + 0.5)``. Leading dims broadcast (e.g. depths ``[V, H, W]`` with points
    ``[V, N, 2]``). Returns values ``[..., N]`` and a bool ``[..., N]`` that is False for points outside
    the image (their value is that of the clamped pixel).
    """
    h, w = image.shape[-2:]
    ix = torch.floor(xy[..., 0] + 0.5).long()
    iy = torch.floor(xy[..., 1] + 0.5).long()
    inside = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
    index = iy.clamp(0, h - 1) * w + ix.clamp(0, w - 1)
    lead = torch.broadcast_shapes(image.shape[:-2], index.shape[:-1])
    flat = image.flatten(-2).expand(*lead, h * w)
    values = flat.gather(-1, index.expand(*lead, index.shape[-1]))
    return values, inside.expand(*lead, index.shape[-1])


# --------------------------------------------------------------------------------------------------
# warping one view into another with depth
# --------------------------------------------------------------------------------------------------
@dataclass
class DepthWarp:
    """Where the surface seen at each pixel of a source view appears in a target view.

    All maps are ``[N, H, W]`` on the source's pixel grid:
    grid: ``[N, H, W, 2]`` sampling positions in the target image, normalised for
        ``F.grid_sample(..., align_corners=True)`` (-1 / +1 = centres of the first / last pixel);
        ``(0, 0)`` where ``in_view`` is False, so that sampling stays finite there.
    in_view: bool, the source depth is valid (> 0), the point lies in front of the target camera and
        lands inside the target image (within the outer pixels' footprints).
    depth: z of the source surface point in the target camera (what the target should see there).
    target_depth: the target's own depth at the landing pixel (nearest), 0 = invalid.
    """

    grid: torch.Tensor
    in_view: torch.Tensor
    depth: torch.Tensor
    target_depth: torch.Tensor

    def visible(self, depth_rel_tol: float) -> torch.Tensor:
        """In view, and the target sees this surface: depths agree within ``depth_rel_tol`` (occlusion)."""
        target = self.target_depth
        return self.in_view & (target > 0) & ((self.depth - target).abs() <= depth_rel_tol * self.depth)

    def sample(self, image: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
        """Backward warp: ``image [N, C, H, W]`` of the target, read at ``grid`` -> ``[N, C, H, W]``."""
        return _sample_grid(image, self.grid, mode)


def _sample_grid(image: torch.Tensor, grid: torch.Tensor, mode: str) -> torch.Tensor:
    return F.grid_sample(image, grid, mode=mode, padding_mode="border", align_corners=True)


def depth_backward_warp(
    depth: torch.Tensor,
    intrinsics: torch.Tensor,
    extrinsics: torch.Tensor,
    target_depth: torch.Tensor,
    target_intrinsics: torch.Tensor,
    target_extrinsics: torch.Tensor,
) -> DepthWarp:
    """Correspondences from a source view into a target view by unprojecting the source's depth.

    depth / target_depth: z-depth ``[N, H, W]`` (0 = invalid) of N source / target views of one size;
    intrinsics ``[N, 3, 3]``, world-to-camera extrinsics ``[N, 3, 4]`` of each. Every source pixel is
    unprojected with its depth and projected into the target camera; :meth:`DepthWarp.sample` then
    reads any target image at those positions (a backward warp of the target into the source) and
    :meth:`DepthWarp.visible` drops pixels the target cannot see (occlusion, invalid depth).
    Returns a :class:`DepthWarp` in the source's dtype.
    """
    d = require_tensor(depth, "depth")
    d_target = require_tensor(target_depth, "target_depth")
    if d.ndim != 3 or d_target.shape != d.shape:
        raise ValueError(
            f"depth and target_depth must both be [N, H, W], got {tuple(d.shape)} and {tuple(d_target.shape)}"
        )
    require_finite(d_target, "target_depth")
    h, w = d.shape[-2:]
    points = depth_to_world_points(d, intrinsics, extrinsics)  # [N, H, W, 3]
    uv, z = project_points(points, target_intrinsics, target_extrinsics)  # [N, H, W, 2], [N, H, W]
    u, v = uv.unbind(-1)
    # Inside the image = within the pixel footprints (half a pixel beyond the outer centres), so that
    # round-off at the border does not drop pixels; the samplers clamp to the border there.
    in_view = (d > 0) & (z > 1e-6) & (u >= -0.5) & (u <= w - 0.5) & (v >= -0.5) & (v <= h - 0.5)
    grid = torch.stack((2.0 * u / max(w - 1, 1) - 1.0, 2.0 * v / max(h - 1, 1) - 1.0), dim=-1)
    grid = torch.where(in_view[..., None], grid, torch.zeros_like(grid)).to(d.dtype)
    seen = _sample_grid(d_target[:, None], grid, "nearest")[:, 0]
    return DepthWarp(grid=grid, in_view=in_view, depth=z, target_depth=seen)


# --------------------------------------------------------------------------------------------------
# alignment
# --------------------------------------------------------------------------------------------------
def points_are_degenerate(points: torch.Tensor, rel_tol: float = DEGENERACY_REL_TOL) -> torch.Tensor:
    """True where a point set spans less than a plane: fewer than 3 points, coincident or collinear.

    points: ``[..., N, 3]``. Tested in float64 on the singular values ``s0 >= s1`` of the centred
    points: coincident when ``s0 <= 1e-12``, collinear when ``s1 <= rel_tol * s0``. Such a set leaves
    the rotation of an alignment (:func:`umeyama_alignment`) undetermined. Returns bool ``[...]``.
    """
    p = require_tensor(points, "points")
    if p.ndim < 2 or p.shape[-1] != 3:
        raise ValueError(f"points must have shape [..., N, 3], got {tuple(p.shape)}")
    require_finite(p, "points")
    x = p.double()
    if x.shape[-2] < 3:
        return torch.ones(x.shape[:-2], dtype=torch.bool, device=x.device)
    sv = torch.linalg.svdvals(x - x.mean(-2, keepdim=True))
    return (sv[..., 0] <= 1e-12) | (sv[..., 1] <= rel_tol * sv[..., 0])


def trajectory_is_degenerate(extrinsics: torch.Tensor, rel_tol: float = DEGENERACY_REL_TOL) -> bool:
    """True when the camera centres of world-to-camera ``[N, 3, 4]`` span less than a plane.

    A static rig seen by two views, say: a Sim(3) alignment of such a trajectory is undetermined
    (see :func:`points_are_degenerate`).
    """
    return bool(points_are_degenerate(camera_centers(extrinsics.double()), rel_tol).any())


def umeyama_alignment(
    src: torch.Tensor, dst: torch.Tensor, with_scale: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Least-squares similarity ``dst ~ s * R @ src + t`` (Umeyama 1991).

    src, dst: ``[..., N, 3]`` corresponding points (batched over leading dims). Returns ``s [...]``,
    ``R [..., 3, 3]`` (a proper rotation, det +1) and ``t [..., 3]``. ``with_scale=False`` fixes
    ``s = 1`` (SE(3) alignment). Computed in float64 and cast back. Fewer than 3 points, or points
    that are (nearly) collinear or coincident (:func:`points_are_degenerate`, on src and on dst),
    leave the rotation undetermined: ``ValueError``.
    """
    a = require_tensor(src, "src")
    b = require_tensor(dst, "dst")
    if a.shape != b.shape or a.ndim < 2 or a.shape[-1] != 3:
        raise ValueError(f"src and dst must both be [..., N, 3]; got {tuple(a.shape)} and {tuple(b.shape)}")
    n = a.shape[-2]
    if n < 3:
        raise ValueError(f"umeyama_alignment needs at least 3 points, got src {tuple(a.shape)}")
    require_finite(a, "src")
    require_finite(b, "dst")
    if (points_are_degenerate(a) | points_are_degenerate(b)).any():
        raise ValueError(
            f"umeyama_alignment: src/dst {tuple(a.shape)} are degenerate (coincident or collinear "
            f"points); the rotation is not determined"
        )
    out_dtype = a.dtype if a.dtype.is_floating_point else torch.float64
    x = a.to(torch.float64)
    y = b.to(torch.float64)
    mean_x = x.mean(-2, keepdim=True)
    mean_y = y.mean(-2, keepdim=True)
    xc = x - mean_x
    yc = y - mean_y
    var_x = (xc * xc).sum((-2, -1)) / n
    cov = yc.transpose(-1, -2) @ xc / n  # [..., 3, 3], Sigma_xy of the paper
    u, d, vh = torch.linalg.svd(cov)
    sign = torch.ones_like(d)
    sign[..., 2] = torch.sign(torch.linalg.det(u) * torch.linalg.det(vh))
    sign[..., 2] = torch.where(sign[..., 2] == 0, torch.ones_like(sign[..., 2]), sign[..., 2])
    rot = u @ torch.diag_embed(sign) @ vh
    if with_scale:
        s = (d * sign).sum(-1) / var_x
    else:
        s = torch.ones_like(var_x)
    t = mean_y[..., 0, :] - s[..., None] * (rot @ mean_x[..., 0, :, None])[..., 0]
    return s.to(out_dtype), rot.to(out_dtype), t.to(out_dtype)
