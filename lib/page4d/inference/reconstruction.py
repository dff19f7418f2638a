"""What a 4D researcher takes out of a forward pass: cameras, depth and point clouds, and a static map.

Conventions (stated once, used by every writer here and by `page4d.predict`):
- Cameras are world-to-camera ``[R | t]`` (OpenCV axes: x right, y down, z forward); the world is the
  camera of the clip's first frame (t = 0, v = 0), as VGGT predicts it. Units are the model's
  (scale-free: align to metric GT with a similarity, e.g. `page4d.scoring.maps`).
- Intrinsics are given for the ORIGINAL input resolution: the model sees a centre crop resized to a
  multiple of 14 (`data.resize.CropResize`), and the crop/resize is undone exactly
  (``K_source = A^-1 K_model``, A the crop/resize pixel map), pixel centres at integers.
- Depth is z-depth along the optical axis. At the source resolution it is resampled bilinearly inside
  the crop; pixels outside the crop (the model never saw them) are 0 = invalid.
- Points are unprojected from predicted depth with predicted cameras (VGGT's recommended route, more
  accurate than its point head), at the model's resolution, one per pixel.
- TUM trajectories: one line per frame, ``timestamp tx ty tz qx qy qz qw`` of the camera-to-world
  pose (TUM RGB-D's format, what ``evo_ape tum`` reads); the timestamp is the time index.
- PLY: binary little-endian, vertex properties x y z (float32), red green blue (uint8), confidence and
  p_dynamic (float32).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from page4d.data.resize import CropResize
from page4d.geometry import (
    closed_form_inverse_se3,
    depth_to_world_points,
    pose_encoding_to_extrinsics_intrinsics,
    rotation_matrix_to_quaternion,
)
from page4d.records import atomic_write_bytes

__all__ = [
    "Reconstruction",
    "reconstruct",
    "source_intrinsics",
    "source_depth",
    "static_map",
    "time_step",
    "write_ply",
    "write_step_points",
    "write_tum",
]


@dataclass
class Reconstruction:
    """One clip's geometry at the model's resolution (T time steps x V views, H x W pixels).

    extrinsics [T, V, 3, 4] world-to-camera; intrinsics [T, V, 3, 3] for the model's pixels;
    depth, depth_conf [T, V, H, W]; points [T, V, H, W, 3] (frame 0's camera as the world);
    colors [T, V, H, W, 3] uint8; p_dynamic [T, V, H, W] (sigmoid of the mask logits, upsampled), or
    None without a mask.
    """

    extrinsics: torch.Tensor
    intrinsics: torch.Tensor
    depth: torch.Tensor
    depth_conf: torch.Tensor
    points: torch.Tensor
    colors: torch.Tensor
    p_dynamic: torch.Tensor | None


def reconstruct(pred: dict, images: torch.Tensor) -> Reconstruction:
    """From one multi-view forward's predictions (batch 1: ``pose_enc [1, T, V, 9]``, ``depth
    [1, T, V, H, W, 1]``, ``depth_conf``, optional ``mask_logits [1, T, V, h, w]``) and its images
    ``[1, T, V, 3, H, W]`` in [0, 1]."""
    if images.ndim != 6 or images.shape[0] != 1:
        raise ValueError(f"images must be [1, T, V, 3, H, W], got {list(images.shape)}")
    for key in ("pose_enc", "depth", "depth_conf"):
        if key not in pred:
            raise ValueError(f"predictions have no {key!r}: the model needs a camera and a depth head")
    h, w = images.shape[-2:]
    extrinsics, intrinsics = pose_encoding_to_extrinsics_intrinsics(pred["pose_enc"][0].float(), (h, w))
    depth = pred["depth"][0, ..., 0].float()
    points = depth_to_world_points(depth, intrinsics, extrinsics)
    p_dyn = None
    if pred.get("mask_logits") is not None:
        logits = pred["mask_logits"][0].float()
        p_dyn = torch.sigmoid(F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False))
    colors = (images[0].permute(0, 1, 3, 4, 2).clamp(0, 1) * 255).round().to(torch.uint8)
    return Reconstruction(extrinsics, intrinsics, depth, pred["depth_conf"][0].float(), points, colors, p_dyn)


def source_intrinsics(intrinsics: torch.Tensor, transform: CropResize) -> torch.Tensor:
    """K ``[..., 3, 3]`` of the model's pixels -> K of the original input's pixels (undo crop/resize)."""
    inverse = torch.linalg.inv(transform.pixel_affine())
    return (inverse @ intrinsics.to(torch.float64)).to(intrinsics.dtype)


def source_depth(depth: torch.Tensor, transform: CropResize) -> torch.Tensor:
    """Depth ``[..., H, W]`` at the model's resolution -> ``[..., H_src, W_src]``: bilinear inside the
    crop the model saw, 0 (invalid) outside it."""
    lead = depth.shape[:-2]
    flat = depth.reshape(-1, 1, *depth.shape[-2:]).float()
    crop = F.interpolate(
        flat, size=(transform.crop_h, transform.crop_w), mode="bilinear", align_corners=False
    )
    out = flat.new_zeros(flat.shape[0], 1, *transform.src_hw)
    out[
        :,
        :,
        transform.top : transform.top + transform.crop_h,
        transform.left : transform.left + transform.crop_w,
    ] = crop
    return out.reshape(*lead, *transform.src_hw).to(depth.dtype)


def static_map(
    rec: Reconstruction, threshold: float = 0.5, conf_quantile: float = 0.3, use_mask: bool = True
) -> dict[str, np.ndarray]:
    """Every time step's points fused into one map, without what moves and what the model doubts:
    points with P(dynamic) >= `threshold` (when `use_mask` and a mask exists) and the `conf_quantile`
    least confident points are left out. Returns xyz [N, 3] float32, rgb [N, 3] uint8, confidence,
    p_dynamic [N] float32 and `kept_share`, the fraction of all points kept."""
    conf = rec.depth_conf.reshape(-1)
    keep = (rec.depth.reshape(-1) > 0) & (conf >= torch.quantile(conf, conf_quantile))
    p_dyn = rec.p_dynamic.reshape(-1) if rec.p_dynamic is not None else torch.zeros_like(conf)
    if use_mask and rec.p_dynamic is not None:
        keep &= p_dyn < threshold
    return {
        "xyz": rec.points.reshape(-1, 3)[keep].numpy().astype(np.float32),
        "rgb": rec.colors.reshape(-1, 3)[keep].numpy(),
        "confidence": conf[keep].numpy().astype(np.float32),
        "p_dynamic": p_dyn[keep].numpy().astype(np.float32),
        "kept_share": np.float32(float(keep.float().mean())),
    }


PLY_PROPERTIES = (
    ("x", "f4"),
    ("y", "f4"),
    ("z", "f4"),
    ("red", "u1"),
    ("green", "u1"),
    ("blue", "u1"),
    ("confidence", "f4"),
    ("p_dynamic", "f4"),
)
_PLY_TYPES = {"f4": "float", "u1": "uchar"}


def write_ply(path: str | Path, xyz, rgb, confidence, p_dynamic) -> Path:
    """Binary little-endian PLY of N points (see the module docstring for the properties), written
    atomically: an interrupted run leaves no half-written file."""
    xyz, rgb = np.asarray(xyz, np.float32).reshape(-1, 3), np.asarray(rgb, np.uint8).reshape(-1, 3)
    n = len(xyz)
    conf, p_dyn = (
        np.asarray(confidence, np.float32).reshape(-1),
        np.asarray(p_dynamic, np.float32).reshape(-1),
    )
    if not len(rgb) == len(conf) == len(p_dyn) == n:
        raise ValueError(
            f"write_ply: {n} points but {len(rgb)} colours, {len(conf)} confidences, {len(p_dyn)} p_dynamic"
        )
    vertex = np.empty(n, dtype=[(name, "<" + t) for name, t in PLY_PROPERTIES])
    for i, name in enumerate(("x", "y", "z")):
        vertex[name] = xyz[:, i]
    for i, name in enumerate(("red", "green", "blue")):
        vertex[name] = rgb[:, i]
    vertex["confidence"], vertex["p_dynamic"] = conf, p_dyn
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    header += [f"property {_PLY_TYPES[t]} {name}" for name, t in PLY_PROPERTIES]
    header.append("end_header")
    return atomic_write_bytes(path, ("\n".join(header) + "\n").encode("ascii") + vertex.tobytes())


def time_step(rec: Reconstruction, k: int) -> Reconstruction:
    """Time step k of a reconstruction, as a one-step reconstruction (views and pixels unchanged)."""
    pick = slice(k, k + 1)
    return Reconstruction(
        rec.extrinsics[pick],
        rec.intrinsics[pick],
        rec.depth[pick],
        rec.depth_conf[pick],
        rec.points[pick],
        rec.colors[pick],
        None if rec.p_dynamic is None else rec.p_dynamic[pick],
    )


def write_step_points(path: str | Path, rec: Reconstruction, k: int) -> int:
    """Every valid point (depth > 0) of time step k, all views, as one PLY; returns how many. The one
    definition of a `points` file, shared by `page4d.predict`'s writer and the notebooks' export."""
    points = static_map(time_step(rec, k), conf_quantile=0.0, use_mask=False)
    write_ply(path, points["xyz"], points["rgb"], points["confidence"], points["p_dynamic"])
    return len(points["xyz"])


def write_tum(path: str | Path, timestamps, extrinsics: torch.Tensor) -> Path:
    """TUM trajectory of world-to-camera poses ``[N, 3, 4]`` (written as camera-to-world)."""
    c2w = closed_form_inverse_se3(extrinsics.double())
    quat = rotation_matrix_to_quaternion(c2w[:, :3, :3])  # (x, y, z, w)
    lines = [
        " ".join(f"{x:.9f}" for x in [float(ts), *c2w[i, :3, 3].tolist(), *quat[i].tolist()])
        for i, ts in enumerate(timestamps)
    ]
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path


def chain(previous: Reconstruction, current: Reconstruction) -> Reconstruction:
    """Bring a chunk predicted in its own world into the world of the chunks before it.

    A long clip runs in chunks (one forward each), and each forward predicts in the camera of its first
    frame, at its own scale. Each chunk after the first therefore starts with the previous chunk's last
    time step (one overlapping step, all views): that step's view 0 has a known pose in the global
    world (`previous`, already chained) and a depth in both chunks, which fix the rotation, translation
    and scale between the worlds (scale = median ratio of the two depth maps over pixels valid in both).
    Returns `current` without the overlapping step, in the global world and scale.
    """
    prev_depth, cur_depth = previous.depth[-1, 0], current.depth[0, 0]
    valid = (prev_depth > 0) & (cur_depth > 0)
    if not bool(valid.any()):
        raise ValueError("chaining chunks: the overlapping frame has no depth valid in both chunks")
    scale = torch.median(prev_depth[valid] / cur_depth[valid])
    ref = previous.extrinsics[-1, 0].double()  # the overlap camera, world-to-camera, global world
    r_g, t_g = ref[:, :3], ref[:, 3]
    e = current.extrinsics[1:].double()
    r_l, t_l = e[..., :3], e[..., 3]
    rot = r_l @ r_g
    trans = (r_l @ t_g[..., None])[..., 0] + scale * t_l
    pts = current.points[1:].double() * scale  # local world = the overlap camera's frame
    pts = (pts - t_g) @ r_g  # X_g = R_g^T (X_cam - t_g), row vectors
    return Reconstruction(
        extrinsics=torch.cat([rot, trans[..., None]], -1).float(),
        intrinsics=current.intrinsics[1:],
        depth=current.depth[1:] * float(scale),
        depth_conf=current.depth_conf[1:],
        points=pts.float(),
        colors=current.colors[1:],
        p_dynamic=None if current.p_dynamic is None else current.p_dynamic[1:],
    )
