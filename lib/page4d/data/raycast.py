"""Analytic ray casting of textured primitives (room, oriented boxes, spheres) in numpy.

Just enough of a renderer for the synthetic scenes: exact first-hit depth, a surface normal for
Lambertian shading, a procedural texture so that multi-view geometry is learnable from the pixels,
and a signed distance so tests can check labels against the geometry independently of the renderer.
Rays are ``origin + s * dirs`` with dirs scaled so that s is the camera z-depth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_EPS = 1e-6


@dataclass(frozen=True)
class Texture:
    """Checkerboard of two colours with per-tile brightness and a fine grating; ``tile`` in world units."""

    color_a: tuple[float, float, float]
    color_b: tuple[float, float, float]
    tile: float
    salt: int

    def __call__(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        iu = np.floor(u / self.tile).astype(np.int64)
        iv = np.floor(v / self.tile).astype(np.int64)
        checker = ((iu + iv) & 1).astype(np.float64)[:, None]
        # Integer hash per tile: irregular brightness gives every tile a distinct look (no aliasing).
        h = (iu * 73856093) ^ (iv * 19349663) ^ (self.salt * 83492791)
        jitter = ((h % 1000003) / 1000003.0)[:, None]
        grating = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * u / self.tile) * np.sin(
            2 * np.pi * 3.0 * v / self.tile
        )
        a, b = np.asarray(self.color_a), np.asarray(self.color_b)
        base = a * (1 - checker) + b * checker
        return base * (0.65 + 0.35 * jitter) * (0.85 + 0.15 * grating[:, None])


def _yaw_matrix(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


class Primitive:
    """Interface: first hit distance (inf for a miss) and normal, albedo at hit points, signed distance."""

    def intersect(self, origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def albedo(self, points: np.ndarray, normals: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def sdf(self, points: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def bounding_sphere(self) -> tuple[np.ndarray, float] | None:
        """(centre, radius) enclosing the primitive, to skip rays that cannot hit it; None = test all."""
        return None


@dataclass(frozen=True)
class Room(Primitive):
    """Inside of the box [-half_x, half_x] x [-half_y, half_y] x [0, height]: floor, four walls, ceiling."""

    half_x: float
    half_y: float
    height: float
    textures: tuple[Texture, ...]  # floor, +x, -x, +y, -y walls, ceiling

    def _bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return np.array([-self.half_x, -self.half_y, 0.0]), np.array([self.half_x, self.half_y, self.height])

    def intersect(self, origin, dirs):
        lo, hi = self._bounds()
        safe = np.where(np.abs(dirs) < _EPS, _EPS, dirs)
        exit_ = np.where(dirs > 0, (hi - origin) / safe, (lo - origin) / safe)
        exit_ = np.where(np.abs(dirs) < _EPS, np.inf, exit_)
        axis = exit_.argmin(1)
        t = exit_[np.arange(len(dirs)), axis]
        normals = np.zeros_like(dirs)
        normals[np.arange(len(dirs)), axis] = -np.sign(dirs[np.arange(len(dirs)), axis])
        return t, normals

    def albedo(self, points, normals):
        out = np.empty_like(points)
        x, y, z = points.T
        faces = [
            (normals[:, 2] > 0.5, x, y),
            (normals[:, 0] < -0.5, y, z),
            (normals[:, 0] > 0.5, y, z),
            (normals[:, 1] < -0.5, x, z),
            (normals[:, 1] > 0.5, x, z),
            (normals[:, 2] < -0.5, x, y),
        ]
        for (sel, u, v), texture in zip(faces, self.textures, strict=True):
            if sel.any():
                out[sel] = texture(u[sel], v[sel])
        return out

    def sdf(self, points):
        lo, hi = self._bounds()
        return np.minimum(points - lo, hi - points).min(1)  # distance to the nearest wall, inside > 0


@dataclass(frozen=True)
class Box(Primitive):
    """Box rotated by ``yaw`` about the world z axis."""

    center: tuple[float, float, float]
    half: tuple[float, float, float]
    yaw: float
    texture: Texture

    def _to_local(self, x: np.ndarray, is_direction: bool = False) -> np.ndarray:
        R = _yaw_matrix(self.yaw)
        return x @ R if is_direction else (x - np.asarray(self.center)) @ R  # R^T x in row form

    def intersect(self, origin, dirs):
        o = self._to_local(origin[None])[0]
        d = self._to_local(dirs, is_direction=True)
        half = np.asarray(self.half)
        safe = np.where(np.abs(d) < _EPS, _EPS, d)
        t1, t2 = (-half - o) / safe, (half - o) / safe
        near, far = np.minimum(t1, t2), np.maximum(t1, t2)
        parallel = np.abs(d) < _EPS
        outside_slab = parallel & (np.abs(o) > half)
        near = np.where(parallel, -np.inf, near)
        far = np.where(parallel, np.inf, far)
        axis = near.argmax(1)
        t_near = near[np.arange(len(d)), axis]
        t_far = far.min(1)
        hit = (t_near <= t_far) & (t_near > _EPS) & ~outside_slab.any(1)
        t = np.where(hit, t_near, np.inf)
        n_local = np.zeros_like(d)
        n_local[np.arange(len(d)), axis] = -np.sign(d[np.arange(len(d)), axis])
        return t, n_local @ _yaw_matrix(self.yaw).T

    def albedo(self, points, normals):
        p = self._to_local(points)
        n = np.abs(self._to_local(normals, is_direction=True)).argmax(1)
        u = np.where(n == 0, p[:, 1], p[:, 0])
        v = np.where(n == 2, p[:, 1], p[:, 2])
        return self.texture(u + 7.0 * n, v)

    def bounding_sphere(self):
        return np.asarray(self.center), float(np.linalg.norm(self.half))

    def sdf(self, points):
        q = np.abs(self._to_local(points)) - np.asarray(self.half)
        return np.linalg.norm(np.maximum(q, 0.0), axis=1) + np.minimum(q.max(1), 0.0)


@dataclass(frozen=True)
class Sphere(Primitive):
    """Sphere whose texture is spun by ``spin`` radians about z (so a rolling mover shows motion)."""

    center: tuple[float, float, float]
    radius: float
    spin: float
    texture: Texture

    def intersect(self, origin, dirs):
        oc = origin - np.asarray(self.center)
        a = (dirs * dirs).sum(1)
        b = 2.0 * dirs @ oc
        c = oc @ oc - self.radius**2
        disc = b * b - 4 * a * c
        root = np.sqrt(np.maximum(disc, 0.0))
        t = (-b - root) / (2 * a)
        t = np.where((disc >= 0) & (t > _EPS), t, np.inf)
        points = origin + np.where(np.isfinite(t), t, 0.0)[:, None] * dirs
        normals = (points - np.asarray(self.center)) / self.radius
        return t, normals

    def albedo(self, points, normals):
        local = normals @ _yaw_matrix(self.spin)
        azimuth = np.arctan2(local[:, 1], local[:, 0]) * self.radius
        elevation = np.arcsin(np.clip(local[:, 2], -1, 1)) * self.radius
        return self.texture(azimuth, elevation)

    def bounding_sphere(self):
        return np.asarray(self.center), float(self.radius)

    def sdf(self, points):
        return np.linalg.norm(points - np.asarray(self.center), axis=1) - self.radius


@dataclass
class RayHits:
    """First hit per ray: distance ``t`` (camera z-depth), primitive index (-1 = miss), normal, albedo."""

    t: np.ndarray
    index: np.ndarray
    normals: np.ndarray
    albedo: np.ndarray


def cast(primitives: list[Primitive], origin: np.ndarray, dirs: np.ndarray) -> RayHits:
    """Nearest hit of each ray among ``primitives``; albedo is evaluated only where a primitive won."""
    n = len(dirs)
    best_t = np.full(n, np.inf)
    best_i = np.full(n, -1, dtype=np.int64)
    normals = np.zeros((n, 3))
    dir_sq = (dirs * dirs).sum(1)
    for i, prim in enumerate(primitives):
        bound = prim.bounding_sphere()
        if bound is None:
            rays = np.arange(n)
        else:  # only rays that pass within the bounding sphere can hit (most objects are small)
            oc = origin - bound[0]
            b = dirs @ oc
            rays = np.flatnonzero(b * b - dir_sq * (oc @ oc - (1.0 + 1e-6) * bound[1] ** 2) >= 0)
            if rays.size == 0:
                continue
        t, nrm = prim.intersect(origin, dirs[rays])
        closer = t < best_t[rays]
        hit = rays[closer]
        best_t[hit] = t[closer]
        best_i[hit] = i
        normals[hit] = nrm[closer]
    albedo = np.zeros((n, 3))
    points = origin + np.where(np.isfinite(best_t), best_t, 0.0)[:, None] * dirs
    for i, prim in enumerate(primitives):
        sel = best_i == i
        if sel.any():
            albedo[sel] = prim.albedo(points[sel], normals[sel])
    return RayHits(t=best_t, index=best_i, normals=normals, albedo=albedo)
