"""Synthetic dynamic multi-view scenes: the built-in default data (no downloads).

A textured room (floor, walls, ceiling) with static boxes and spheres, plus independently moving
objects, seen by V calibrated pinhole cameras over T steps. Everything is analytic, so depth,
cameras and dynamic masks are exact; optional mask noise (dilate/erode, dropped frames) imitates
imperfect SegAnyMo pseudo labels while the exact silhouettes stay on disk beside them.

The output uses the same layout as the real capture (layout.py, seganymo.py), so `load_scene` reads
both. World frame: z up, metres-like units; extrinsics world-to-camera, OpenCV axes; depth is z-depth.

    python -m page4d.data.synthetic --out DIR --seed 0 --times 8 --views 4 --height 168 --width 224
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from page4d.data.layout import (
    DEPTHS_DIR,
    EXTRINSICS_DIR,
    IMAGES_DIR,
    INTRINSICS_DIR,
    QUERY_POINTS_FILE,
    SceneLayout,
    write_array,
    write_png,
)
from page4d.data.raycast import Box, Primitive, Room, Sphere, Texture, cast
from page4d.data.resize import CropResize
from page4d.data.scene import Scene
from page4d.data.seganymo import (
    EXACT_MASKS,
    INITIAL_PREDS,
    MASK_FRAMES,
    MOSEG,
    frame_file_name,
    view_dir_name,
)

CONFIG_FILE = "synthetic_config.json"
CAMERA_MOTIONS = ("orbit", "pan", "dolly")
_LIGHT = np.array([0.35, 0.55, 1.0]) / np.linalg.norm([0.35, 0.55, 1.0])
# Palette for initial_preds: 0 black, then distinct colours per instance id (as SAM2's DAVIS palette).
_PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128, 128, 0, 128, 0, 128, 128, 128, 128, 128]


@dataclass
class SyntheticSceneConfig:
    """Everything that decides a synthetic scene; the same config and seed give identical bytes.

    Sizes: height and width are multiples of 14 by default so the model needs no resize.
    Cameras: ``orbit_deg_per_step`` = 0 is a static rig; otherwise, by ``camera_motion``:
    ``"orbit"`` every camera turns about the room centre by that many degrees per step; ``"pan"`` every
    camera stays and turns its own heading by that many degrees per step; ``"dolly"`` every camera
    moves ``dolly_m_per_step`` towards the room centre and turns about it by that many degrees (a walk
    in and around). ``jitter_deg`` / ``jitter_m`` add a hand-held random walk (per step, in heading
    and position) on top of any motion. ``view_azimuths_deg`` places the V cameras at these azimuths
    (degrees; random gaps, any order) instead of an evenly spaced ring, ``view_heights`` at these
    heights. The defaults draw exactly the scenes earlier versions drew (new options use their own
    random stream). Movers: ``mover_speed`` is path length per step; ``mover_size`` the
    range their radius / half-extent is drawn from.
    Mask noise (applied to ``sam2/mask_frames`` only; ``sam2/exact_masks`` is always exact):
    ``mask_offset_px`` > 0 dilates, < 0 erodes; ``mask_jitter_px`` adds a random per-frame offset in
    [-jitter, jitter]; ``mask_drop_prob`` leaves a frame's file out (a missing pseudo label).
    """

    seed: int = 0
    times: int = 8
    views: int = 4
    height: int = 168
    width: int = 224
    fov_deg: float = 65.0
    camera_radius: float = 3.2
    camera_height: float = 1.9
    look_at_height: float = 0.4
    orbit_deg_per_step: float = 0.0
    camera_motion: str = "orbit"
    dolly_m_per_step: float = 0.0
    jitter_deg: float = 0.0
    jitter_m: float = 0.0
    view_azimuths_deg: tuple[float, ...] | None = None
    view_heights: tuple[float, ...] | None = None
    num_movers: int = 2
    mover_speed: float = 0.15
    mover_size: tuple[float, float] = (0.28, 0.42)
    num_static_boxes: int = 4
    num_static_spheres: int = 1
    room_half_size: float = 4.5
    room_height: float = 3.0
    mask_offset_px: int = 0
    mask_jitter_px: int = 0
    mask_drop_prob: float = 0.0
    tracks_per_mover: int = 64
    query_points_per_step: int = 16

    def __post_init__(self) -> None:
        if self.times < 1 or self.views < 1:
            raise ValueError(f"times and views must be >= 1, got {self.times}, {self.views}")
        if self.height < 8 or self.width < 8:
            raise ValueError(f"image size {self.height}x{self.width} is too small")
        if not 0.0 <= self.mask_drop_prob <= 1.0:
            raise ValueError(f"mask_drop_prob {self.mask_drop_prob} outside [0, 1]")
        if self.num_movers < 0 or self.num_movers > len(_PALETTE) // 3 - 1:
            raise ValueError(f"num_movers {self.num_movers} outside [0, {len(_PALETTE) // 3 - 1}]")
        lo, hi = self.mover_size
        if not 0 < lo <= hi:
            raise ValueError(f"mover_size must be (low, high) with 0 < low <= high, got {self.mover_size}")
        if self.camera_motion not in CAMERA_MOTIONS:
            raise ValueError(f"camera_motion must be one of {CAMERA_MOTIONS}, got {self.camera_motion!r}")
        for name in ("view_azimuths_deg", "view_heights"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, tuple(float(x) for x in value))
                if len(getattr(self, name)) != self.views:
                    raise ValueError(f"{name} needs one value per view ({self.views}), got {value}")
        if self.camera_radius >= self.room_half_size:
            raise ValueError("camera_radius must be inside the room (< room_half_size)")


@dataclass(frozen=True)
class Mover:
    """An object on a circular path (centre, radius, phase, direction) with a small vertical bob."""

    shape: str  # "sphere" or "box"
    size: float  # sphere radius or box half-extent
    path_center: tuple[float, float]
    path_radius: float
    phase: float
    angular_speed: float  # radians per step, signed
    base_height: float
    texture: Texture

    def at(self, step: int) -> Primitive:
        angle = self.phase + self.angular_speed * step
        x = self.path_center[0] + self.path_radius * np.cos(angle)
        y = self.path_center[1] + self.path_radius * np.sin(angle)
        z = self.base_height + 0.12 * (1 - np.cos(0.7 * step + self.phase))
        if self.shape == "sphere":
            return Sphere(center=(x, y, z), radius=self.size, spin=2.0 * angle, texture=self.texture)
        half = (self.size, 0.7 * self.size, self.size)
        return Box(center=(x, y, z), half=half, yaw=angle, texture=self.texture)

    @property
    def extent(self) -> float:
        """Radius of the disc (in xy) this mover sweeps, about ``path_center``."""
        return self.path_radius + self.size * np.sqrt(2.0)


@dataclass
class SyntheticScene:
    """An in-memory rendered scene (what `write_synthetic_scene` puts on disk).

    images [T, V, H, W, 3] uint8; depths [T, V, H, W] float32 z-depth (all valid);
    intrinsics [T, V, 3, 3], extrinsics [T, V, 3, 4] world-to-camera float32;
    exact_masks [T, V, H, W] bool (pixels of movers); instance_ids [T, V, H, W] uint8 (mover k -> k + 1);
    noisy_masks [T, V, H, W] bool and mask_written [T, V] bool (False = frame dropped);
    tracks: per view (xy [2, N, T] float32, visibility [N, T] bool, confidences [N, T] float32);
    query_points [M, 4] float32 (t, X, Y, Z).
    """

    config: SyntheticSceneConfig
    images: np.ndarray
    depths: np.ndarray
    intrinsics: np.ndarray
    extrinsics: np.ndarray
    exact_masks: np.ndarray
    instance_ids: np.ndarray
    noisy_masks: np.ndarray
    mask_written: np.ndarray
    tracks: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
    query_points: np.ndarray
    static: list[Primitive] = field(repr=False)
    movers: list[Mover] = field(repr=False)

    def movers_at(self, step: int) -> list[Primitive]:
        return [m.at(step) for m in self.movers]

    def depth_at(self, t: int, v: int, xy: np.ndarray) -> np.ndarray:
        """Exact z-depth [N] of camera (t, v) through sub-pixel positions xy [N, 2] (x = column, y = row).

        Lets tests check reprojections against the true geometry instead of a nearest-pixel lookup.
        """
        K, E = self.intrinsics[t, v].astype(np.float64), self.extrinsics[t, v].astype(np.float64)
        pix = np.concatenate([np.asarray(xy, dtype=np.float64), np.ones((len(xy), 1))], axis=1)
        R, trans = E[:, :3], E[:, 3]
        dirs = (pix @ np.linalg.inv(K).T) @ R
        return cast(self.static + self.movers_at(t), -R.T @ trans, dirs).t


def look_at(center: np.ndarray, target: np.ndarray) -> np.ndarray:
    """World-to-camera [3, 4] (OpenCV: x right, y down, z forward) for a camera at ``center``, z-up world."""
    forward = target - center
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right = right / np.linalg.norm(right)
    down = np.cross(forward, right)
    R = np.stack([right, down, forward])
    return np.concatenate([R, -(R @ center)[:, None]], axis=1)


def _random_texture(rng: np.random.Generator, tile_range: tuple[float, float]) -> Texture:
    a = rng.uniform(0.25, 0.95, size=3)
    b = np.clip(a * rng.uniform(0.3, 0.7) + rng.uniform(0.0, 0.3, size=3), 0.0, 1.0)
    return Texture(
        color_a=tuple(float(x) for x in a),
        color_b=tuple(float(x) for x in b),
        tile=float(rng.uniform(*tile_range)),
        salt=int(rng.integers(1, 1 << 20)),
    )


def build_world(
    config: SyntheticSceneConfig, rng: np.random.Generator
) -> tuple[list[Primitive], list[Mover]]:
    room = Room(
        half_x=config.room_half_size,
        half_y=config.room_half_size,
        height=config.room_height,
        textures=tuple(_random_texture(rng, (0.3, 0.7)) for _ in range(6)),
    )
    movers = []
    for k in range(config.num_movers):
        size = float(rng.uniform(*config.mover_size))
        path_radius = float(rng.uniform(0.35, 0.7))
        angle, dist = rng.uniform(0, 2 * np.pi), rng.uniform(0.0, 0.5)
        movers.append(
            Mover(
                shape="sphere" if k % 2 == 0 else "box",
                size=size,
                path_center=(float(dist * np.cos(angle)), float(dist * np.sin(angle))),
                path_radius=path_radius,
                phase=float(rng.uniform(0, 2 * np.pi)),
                angular_speed=float(rng.choice([-1.0, 1.0]) * config.mover_speed / path_radius),
                base_height=float(size + rng.uniform(0.05, 0.6)),
                texture=_random_texture(rng, (0.08, 0.16)),
            )
        )
    # Static objects: rejection-sample footprints that avoid each other, the movers' swept discs
    # (so nothing moves through a wall of the static set) and the cameras.
    footprints = [(np.asarray(m.path_center), m.extent) for m in movers]
    static: list[Primitive] = [room]
    max_radius = config.camera_radius - 0.8
    wanted = ["box"] * config.num_static_boxes + ["sphere"] * config.num_static_spheres
    for kind in wanted:
        for _ in range(2000):
            half = rng.uniform(0.2, 0.45, size=3) if kind == "box" else np.full(3, rng.uniform(0.2, 0.4))
            reach = float(np.linalg.norm(half[:2])) if kind == "box" else float(half[0])
            angle, dist = rng.uniform(0, 2 * np.pi), rng.uniform(0.3, max_radius - reach)
            xy = np.array([dist * np.cos(angle), dist * np.sin(angle)])
            if all(np.linalg.norm(xy - c) > r + reach + 0.05 for c, r in footprints):
                break
        else:
            raise RuntimeError(f"could not place {len(wanted)} static objects; lower their number or movers")
        footprints.append((xy, reach))
        texture = _random_texture(rng, (0.1, 0.25))
        if kind == "box":
            center = (float(xy[0]), float(xy[1]), float(half[2]))
            yaw = float(rng.uniform(0, np.pi))
            static.append(Box(center=center, half=tuple(float(h) for h in half), yaw=yaw, texture=texture))
        else:
            center = (float(xy[0]), float(xy[1]), float(half[0]))
            static.append(Sphere(center=center, radius=float(half[0]), spin=0.0, texture=texture))
    return static, movers


def _rotate_z(vec: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([c * vec[0] - s * vec[1], s * vec[0] + c * vec[1], vec[2]])


def _camera_pose(
    config: SyntheticSceneConfig, azimuth: float, height: float, target: np.ndarray, t: int
) -> tuple[np.ndarray, np.ndarray]:
    """Centre and look-at point of the camera placed at `azimuth` (radians) at step `t`."""
    turn = np.deg2rad(config.orbit_deg_per_step) * t
    r = config.camera_radius
    if config.camera_motion == "orbit":
        return np.array([r * np.cos(azimuth + turn), r * np.sin(azimuth + turn), height]), target
    if config.camera_motion == "pan":
        center = np.array([r * np.cos(azimuth), r * np.sin(azimuth), height])
        return center, center + _rotate_z(target - center, turn)
    # dolly: walk in towards the centre while turning, at most 0.7 (static objects stay 0.8 inside)
    r = r - min(config.dolly_m_per_step * t, 0.7)
    return np.array([r * np.cos(azimuth + turn), r * np.sin(azimuth + turn), height]), target


def _handheld_walk(config: SyntheticSceneConfig, rng: np.random.Generator) -> np.ndarray:
    """[T, V, 4] random walk per camera: heading (degrees), look-at height, x, y offsets (metres).
    All zeros (and no draw) without jitter, so the default scenes stay bit-identical."""
    walk = np.zeros((config.times, config.views, 4))
    if config.jitter_deg == 0.0 and config.jitter_m == 0.0:
        return walk
    steps = rng.normal(size=(config.times, config.views, 4))
    steps[:, :, :2] *= config.jitter_deg * np.array([1.0, 0.02])
    steps[:, :, 2:] *= config.jitter_m
    return np.cumsum(steps, axis=0)


def _cameras(config: SyntheticSceneConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Intrinsics [T, V, 3, 3] and world-to-camera extrinsics [T, V, 3, 4]."""
    H, W = config.height, config.width
    f = 0.5 * W / np.tan(np.deg2rad(config.fov_deg) / 2)
    K = np.array([[f, 0.0, (W - 1) / 2], [0.0, f, (H - 1) / 2], [0.0, 0.0, 1.0]])
    base = 2 * np.pi * np.arange(config.views) / config.views + rng.uniform(0, 2 * np.pi)
    base = base + rng.uniform(-0.15, 0.15, size=config.views)
    heights = config.camera_height + rng.uniform(-0.3, 0.3, size=config.views)
    if config.view_azimuths_deg is not None:
        base = np.deg2rad(np.asarray(config.view_azimuths_deg))
    if config.view_heights is not None:
        heights = np.asarray(config.view_heights)
    target = np.array([0.0, 0.0, config.look_at_height])
    intrinsics = np.broadcast_to(K, (config.times, config.views, 3, 3)).copy()
    extrinsics = np.empty((config.times, config.views, 3, 4))
    shake = _handheld_walk(config, np.random.default_rng([config.seed, 4]))  # [T, V, 4]
    for t in range(config.times):
        for v in range(config.views):
            center, look = _camera_pose(config, base[v], heights[v], target, t)
            if shake[t, v].any():  # (no arithmetic at all without jitter: bit-identical defaults)
                look = center + _rotate_z(look - center, np.deg2rad(shake[t, v, 0]))
                look = look + np.array([0.0, 0.0, shake[t, v, 1]])
                center = center + np.array([shake[t, v, 2], shake[t, v, 3], 0.0])
            extrinsics[t, v] = look_at(center, look)
    # Render with exactly the float32 cameras that get written, so the files are self-consistent.
    return intrinsics.astype(np.float32).astype(np.float64), extrinsics.astype(np.float32).astype(np.float64)


def _pixel_rays(K: np.ndarray, E: np.ndarray, H: int, W: int) -> tuple[np.ndarray, np.ndarray]:
    """Camera centre [3] and world directions [H*W, 3] scaled to unit camera z (so t = z-depth)."""
    v, u = np.meshgrid(np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64), indexing="ij")
    pix = np.stack([u.ravel(), v.ravel(), np.ones(H * W)], axis=1)
    cam = pix @ np.linalg.inv(K).T
    R, t = E[:, :3], E[:, 3]
    return -R.T @ t, cam @ R


def _shade(albedo: np.ndarray, normals: np.ndarray) -> np.ndarray:
    light = 0.45 + 0.55 * np.clip(normals @ _LIGHT, 0.0, None)
    return np.clip(albedo * light[:, None], 0.0, 1.0)


def _noisy_mask(mask: np.ndarray, offset: int) -> np.ndarray:
    if offset > 0:
        return ndimage.binary_dilation(mask, iterations=offset)
    if offset < 0:
        return ndimage.binary_erosion(mask, iterations=-offset)
    return mask.copy()


def render_synthetic_scene(config: SyntheticSceneConfig) -> SyntheticScene:
    """Render every (t, v) frame, the labels and the tracks in memory. Deterministic for a config."""
    rng = np.random.default_rng(config.seed)
    static, movers = build_world(config, rng)
    intrinsics, extrinsics = _cameras(config, rng)
    T, V, H, W = config.times, config.views, config.height, config.width
    images = np.empty((T, V, H, W, 3), dtype=np.uint8)
    depths = np.empty((T, V, H, W), dtype=np.float32)
    ids = np.zeros((T, V, H, W), dtype=np.uint8)
    n_static = len(static)
    for t in range(T):
        primitives = static + [m.at(t) for m in movers]
        for v in range(V):
            origin, dirs = _pixel_rays(intrinsics[t, v], extrinsics[t, v], H, W)
            hits = cast(primitives, origin, dirs)
            if not np.isfinite(hits.t).all():
                raise RuntimeError(f"rays escaped the room at t={t}, view {v}; is a camera outside it?")
            images[t, v] = np.round(255.0 * _shade(hits.albedo, hits.normals)).reshape(H, W, 3)
            depths[t, v] = hits.t.reshape(H, W)
            mover = hits.index >= n_static
            ids[t, v] = np.where(mover, hits.index - n_static + 1, 0).reshape(H, W)
    exact = ids > 0

    # Label noise draws from its own stream so switching it on does not move any object.
    noise_rng = np.random.default_rng([config.seed, 1])
    noisy = np.empty_like(exact)
    written = np.ones((T, V), dtype=bool)
    for t in range(T):
        for v in range(V):
            jitter = int(noise_rng.integers(-config.mask_jitter_px, config.mask_jitter_px + 1))
            noisy[t, v] = _noisy_mask(exact[t, v], config.mask_offset_px + jitter)
            written[t, v] = noise_rng.random() >= config.mask_drop_prob

    tracks = _tracks(
        config, movers, intrinsics, extrinsics, depths, ids, np.random.default_rng([config.seed, 2])
    )
    queries = _query_points(config, intrinsics, extrinsics, depths, np.random.default_rng([config.seed, 3]))
    return SyntheticScene(
        config=config,
        images=images,
        depths=depths,
        intrinsics=intrinsics.astype(np.float32),
        extrinsics=extrinsics.astype(np.float32),
        exact_masks=exact,
        instance_ids=ids,
        noisy_masks=noisy,
        mask_written=written,
        tracks=tracks,
        query_points=queries,
        static=static,
        movers=movers,
    )


def _surface_samples(mover: Mover, n: int, rng: np.random.Generator) -> np.ndarray:
    """Points [n, 3] on the mover's surface in its own (unrotated, centred) frame."""
    if mover.shape == "sphere":
        d = rng.normal(size=(n, 3))
        return mover.size * d / np.linalg.norm(d, axis=1, keepdims=True)
    half = np.array([mover.size, 0.7 * mover.size, mover.size])
    p = rng.uniform(-1.0, 1.0, size=(n, 3))
    axis = rng.integers(0, 3, size=n)
    p[np.arange(n), axis] = rng.choice([-1.0, 1.0], size=n)
    return p * half


def _mover_pose(mover: Mover, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Rotation [3, 3] and centre [3] that carry the mover's local frame to the world at ``step``."""
    prim = mover.at(step)
    angle = prim.spin if isinstance(prim, Sphere) else prim.yaw
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]), np.asarray(prim.center)


def _tracks(config, movers, intrinsics, extrinsics, depths, ids, rng):
    """moseg-style 2D tracks per view of points fixed on the movers' surfaces.

    A point is visible where it projects inside the image onto its own mover with matching depth
    (1% tolerance). Each view keeps the points visible at least once, as SegAnyMo only tracks those.
    """
    T, V, H, W = depths.shape
    local = [(k, _surface_samples(m, config.tracks_per_mover, rng)) for k, m in enumerate(movers)]
    out = []
    for v in range(V):
        xy_all, vis_all = [], []
        for k, pts in local:
            xy = np.empty((2, len(pts), T))
            vis = np.zeros((len(pts), T), dtype=bool)
            for t in range(T):
                R, c = _mover_pose(movers[k], t)
                world = pts @ R.T + c
                E, K = extrinsics[t, v], intrinsics[t, v]
                cam = world @ E[:, :3].T + E[:, 3]
                pix = cam @ K.T
                x, y = pix[:, 0] / pix[:, 2], pix[:, 1] / pix[:, 2]
                xy[0, :, t], xy[1, :, t] = x, y
                ix, iy = np.floor(x + 0.5).astype(int), np.floor(y + 0.5).astype(int)
                inside = (ix >= 0) & (ix < W) & (iy >= 0) & (iy < H) & (cam[:, 2] > 0)
                ixc, iyc = ix.clip(0, W - 1), iy.clip(0, H - 1)
                same_depth = np.abs(depths[t, v, iyc, ixc] - cam[:, 2]) < 0.01 * cam[:, 2]
                vis[:, t] = inside & same_depth & (ids[t, v, iyc, ixc] == k + 1)
            xy_all.append(xy)
            vis_all.append(vis)
        if xy_all:
            xy = np.concatenate(xy_all, axis=1)
            vis = np.concatenate(vis_all, axis=0)
        else:
            xy, vis = np.zeros((2, 0, T)), np.zeros((0, T), dtype=bool)
        seen = vis.any(1)
        out.append((xy[:, seen].astype(np.float32), vis[seen], vis[seen].astype(np.float32)))
    return out


def _query_points(config, intrinsics, extrinsics, depths, rng) -> np.ndarray:
    """(t, X, Y, Z) rows: random pixels of random views unprojected with the exact depth."""
    T, V, H, W = depths.shape
    rows = []
    for t in range(T):
        for _ in range(config.query_points_per_step):
            v, y, x = int(rng.integers(V)), int(rng.integers(H)), int(rng.integers(W))
            K, E = intrinsics[t, v], extrinsics[t, v]
            cam = np.linalg.inv(K) @ np.array([x, y, 1.0]) * depths[t, v, y, x]
            world = E[:, :3].T @ (cam - E[:, 3])
            rows.append([t, *world])
    return np.asarray(rows, dtype=np.float32).reshape(-1, 4)


def write_synthetic_scene(scene: SyntheticScene, out_dir: str | Path) -> Path:
    """Write ``scene`` in the multi-view + SegAnyMo layout. ``out_dir`` must be absent or empty, so stale
    frames from an earlier scene (e.g. a dropped mask that existed before) can never mix in."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out}: output folder is not empty; choose a new one")
    cfg = scene.config
    times, views = list(range(cfg.times)), list(range(cfg.views))
    layout = SceneLayout.standard(out, times, views)
    sam = out / "SegAnyMo"
    for t in times:
        for v in views:
            write_png(layout.path(IMAGES_DIR, t, v), scene.images[t, v])
            write_array(layout.path(DEPTHS_DIR, t, v), scene.depths[t, v])
            write_array(layout.path(INTRINSICS_DIR, t, v), scene.intrinsics[t, v])
            write_array(layout.path(EXTRINSICS_DIR, t, v), scene.extrinsics[t, v])
            frame = Path(view_dir_name(v)) / frame_file_name(t)
            write_png(sam / EXACT_MASKS / frame, scene.exact_masks[t, v].astype(np.uint8) * 255)
            write_png(sam / INITIAL_PREDS / frame, scene.instance_ids[t, v], palette=_PALETTE)
            if scene.mask_written[t, v]:
                write_png(sam / MASK_FRAMES / frame, scene.noisy_masks[t, v].astype(np.uint8) * 255)
    for v, (xy, vis, conf) in zip(views, scene.tracks, strict=True):
        folder = sam / MOSEG / view_dir_name(v)
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "dynamic_traj.npy", xy)
        np.save(folder / "dynamic_visibility.npy", vis)
        np.save(folder / "dynamic_confidences.npy", conf)
    (sam / MASK_FRAMES).mkdir(parents=True, exist_ok=True)  # exists even if every frame was dropped
    np.save(out / QUERY_POINTS_FILE, scene.query_points)
    (out / CONFIG_FILE).write_text(json.dumps(asdict(cfg), indent=2, sort_keys=True) + "\n")
    return out


def generate_synthetic_scene(out_dir: str | Path, config: SyntheticSceneConfig | None = None) -> Path:
    """Render and write a synthetic scene; returns ``out_dir`` (load it with `load_scene`)."""
    return write_synthetic_scene(render_synthetic_scene(config or SyntheticSceneConfig()), out_dir)


def _parse_args(argv: list[str] | None) -> tuple[Path, SyntheticSceneConfig]:
    defaults = SyntheticSceneConfig()
    p = argparse.ArgumentParser(prog="python -m page4d.data.synthetic", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="output folder (absent or empty)")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--times", type=int, default=defaults.times)
    p.add_argument("--views", type=int, default=defaults.views)
    p.add_argument("--height", type=int, default=defaults.height)
    p.add_argument("--width", type=int, default=defaults.width)
    p.add_argument("--movers", type=int, default=defaults.num_movers, help="number of moving objects")
    p.add_argument("--mover-speed", type=float, default=defaults.mover_speed, help="path length per step")
    p.add_argument(
        "--orbit-deg", type=float, default=defaults.orbit_deg_per_step, help="camera orbit per step"
    )
    p.add_argument("--static-boxes", type=int, default=defaults.num_static_boxes)
    p.add_argument("--static-spheres", type=int, default=defaults.num_static_spheres)
    p.add_argument("--mask-offset-px", type=int, default=defaults.mask_offset_px, help=">0 dilate, <0 erode")
    p.add_argument("--mask-jitter-px", type=int, default=defaults.mask_jitter_px)
    p.add_argument("--mask-drop-prob", type=float, default=defaults.mask_drop_prob)
    a = p.parse_args(argv)
    config = SyntheticSceneConfig(
        seed=a.seed,
        times=a.times,
        views=a.views,
        height=a.height,
        width=a.width,
        num_movers=a.movers,
        mover_speed=a.mover_speed,
        orbit_deg_per_step=a.orbit_deg,
        num_static_boxes=a.static_boxes,
        num_static_spheres=a.static_spheres,
        mask_offset_px=a.mask_offset_px,
        mask_jitter_px=a.mask_jitter_px,
        mask_drop_prob=a.mask_drop_prob,
    )
    return a.out, config


def main(argv: list[str] | None = None) -> None:
    out, config = _parse_args(argv)
    path = generate_synthetic_scene(out, config)
    size = f"{config.times} times x {config.views} views at {config.height}x{config.width}"
    print(f"wrote synthetic scene ({size}) to {path}")


if __name__ == "__main__":
    main()


def scene_in_memory(rendered: SyntheticScene, exact_masks: bool = False) -> Scene:
    """The `Scene` that `load_scene` would return for the written folder at its native size, built
    without touching the disk: what a stream of freshly drawn scenes trains on (a new room every step
    would spend more time in PNG encoding than in training). Masks: the noisy pseudo labels with their
    dropped frames (as `sam2/mask_frames`), or the exact silhouettes with `exact_masks`."""
    cfg = rendered.config
    masks = rendered.exact_masks if exact_masks else rendered.noisy_masks
    valid = np.ones_like(rendered.mask_written) if exact_masks else rendered.mask_written
    values = torch.from_numpy(masks.astype(np.float32)) * torch.from_numpy(valid)[:, :, None, None]
    dropped = int((~valid).sum())
    return Scene(
        root=Path(f"<synthetic seed {cfg.seed}>"),
        times=list(range(cfg.times)),
        views=list(range(cfg.views)),
        images=torch.from_numpy(rendered.images).permute(0, 1, 4, 2, 3).float().div_(255.0),
        depths=torch.from_numpy(rendered.depths),
        intrinsics=torch.from_numpy(rendered.intrinsics.astype(np.float32)),
        extrinsics=torch.from_numpy(rendered.extrinsics.astype(np.float32)),
        masks=values,
        mask_valid=torch.from_numpy(valid.copy()),
        mask_missing_reason=f"{dropped} mask frame(s) dropped by mask_drop_prob" if dropped else None,
        mask_source=EXACT_MASKS if exact_masks else MASK_FRAMES,
        tracks=None,
        tracks_missing_reason="tracks are not kept in memory (write the scene to read them)",
        instances=None,
        transform=CropResize.identity((cfg.height, cfg.width)),
    )
