"""A clip's reconstruction as files, written while its chunks arrive (`page4d.predict` uses it).

The conventions are `page4d.inference.reconstruction`'s (stated in its docstring and in cameras.json).
With GT depth in the scene, each time step's depth is scored as it passes (median-scaled AbsRel and
delta<1.25), so nothing but the static map's sample is kept in memory for a long clip.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from page4d.inference.reconstruction import (
    Reconstruction,
    source_depth,
    source_intrinsics,
    static_map,
    time_step,
    write_ply,
    write_step_points,
    write_tum,
)
from page4d.records import write_json
from page4d.scoring.metrics import depth_metrics

__all__ = ["CAMERA_CONVENTION", "ReconstructionWriter"]


class ReconstructionWriter:
    """Writes a clip's reconstruction as its chunks arrive (each already in the global world, `chain`):

    ```
    cameras.json                   per frame: time, view, frame name, world-to-camera 3x4, K 3x3 at the
                                   source resolution (the convention is stated in the file)
    trajectories/<view>.txt        TUM format, one line per time step (evo_ape tum reads it as is)
    depth/<view>/<frame>.npy       z-depth at the source resolution, float16 (0 outside the model's crop)
    depth_conf/<view>/<frame>.npy  its confidence, float16          (with `depth`)
    points/t_<time>.ply            every view of one time step, model resolution (with `points`)
    static_map.ply                 all time steps without movers (P(dynamic) >= threshold) and without
                                   each frame's `conf_quantile` least confident points
    ```
    The static map keeps at most `map_points_per_frame` points of each frame (seeded), so a long clip's
    map stays a few million points; `unfiltered` keeps the same sample without the mask filter, for
    measuring what the mask is worth."""

    def __init__(
        self,
        out: Path,
        scene: Any,
        threshold: float,
        conf_quantile: float = 0.3,
        depth: bool = True,
        points: bool = True,
        map_points_per_frame: int = 20_000,
    ) -> None:
        self.out, self.scene, self.threshold, self.conf_quantile = out, scene, threshold, conf_quantile
        self.depth, self.points, self.per_frame = depth, points, map_points_per_frame
        self.cameras: list[dict[str, Any]] = []
        self.extrinsics: list[torch.Tensor] = []  # [V, 3, 4] per time step, global world
        self.maps: dict[str, list[np.ndarray]] = {"static": [], "unfiltered": []}
        self.kept = {"static": 0, "unfiltered": 0}  # points that passed each map's filters, before sampling
        self.rng = np.random.default_rng(0)
        self.depth_rows: list[tuple[float, float, int]] = []  # (AbsRel, delta<1.25, pixels) per time step
        self.skipped: str | None = None  # why no reconstruction is written (explicit, never a blank file)

    def skip(self, reason: str) -> None:
        """Write no reconstruction for this clip, for `reason` (recorded by the caller)."""
        self.skipped = reason

    def add(self, rec: Reconstruction, times: range) -> None:
        """The chunk `rec` (model resolution, global world) of time indices `times` (into the scene)."""
        k_src = source_intrinsics(rec.intrinsics, self.scene.transform)
        for k, ti in enumerate(times):
            self.extrinsics.append(rec.extrinsics[k].detach().cpu())
            self._score_depth(rec.depth[k], ti)
            for vi in range(rec.points.shape[1]):
                self._frame(rec, k, ti, vi, k_src[k, vi])
            if self.points:
                self.out.joinpath("points").mkdir(parents=True, exist_ok=True)
                write_step_points(self.out / "points" / f"t_{ti:05d}.ply", rec, k)
            for name, use_mask in (("static", True), ("unfiltered", False)):
                kept = static_map(time_step(rec, k), self.threshold, self.conf_quantile, use_mask)
                self.kept[name] += len(kept["xyz"])
                self.maps[name].append(self._sample(kept))

    def _frame(self, rec: Reconstruction, k: int, ti: int, vi: int, k_src: torch.Tensor) -> None:
        view, stem = self.scene.view_name(vi), self.scene.frame_name(ti, vi)
        self.cameras.append(
            {
                "time": ti,
                "view": view,
                "frame": stem,
                "world_to_camera": rec.extrinsics[k, vi].tolist(),
                "intrinsics": k_src.tolist(),
            }
        )
        if not self.depth:
            return
        for folder, values in (("depth", rec.depth[k, vi]), ("depth_conf", rec.depth_conf[k, vi])):
            path = self.out / folder / view
            path.mkdir(parents=True, exist_ok=True)
            resampled = source_depth(values, self.scene.transform)  # bilinear in the crop, 0 outside
            np.save(path / f"{stem}.npy", resampled.numpy().astype(np.float16))

    def _score_depth(self, depth: torch.Tensor, ti: int) -> None:
        """Against the scene's GT depth (when it has one): median-scaled AbsRel and delta<1.25 of a step."""
        gt = getattr(self.scene, "depths", None)
        if gt is None or not bool((gt[ti] > 0).any()):
            return
        d = depth_metrics(depth, gt[ti], alignment="median")
        self.depth_rows.append((d["abs_rel"], d["delta_1_25"], int((gt[ti] > 0).sum())))

    def depth_scores(self) -> dict[str, float] | None:
        """Pixel-weighted means over the time steps scored (None without GT depth)."""
        if not self.depth_rows:
            return None
        n = sum(r[2] for r in self.depth_rows)
        return {
            "depth_abs_rel": sum(r[0] * r[2] for r in self.depth_rows) / n,
            "depth_delta1": sum(r[1] * r[2] for r in self.depth_rows) / n,
            "time_steps": len(self.depth_rows),
        }

    def _sample(self, kept: dict[str, np.ndarray]) -> np.ndarray:
        """[N, 8] rows x y z r g b confidence p_dynamic, at most `per_frame` of them."""
        rows = np.concatenate(
            [
                kept["xyz"],
                kept["rgb"].astype(np.float32),
                kept["confidence"][:, None],
                kept["p_dynamic"][:, None],
            ],
            1,
        )
        if len(rows) > self.per_frame:
            rows = rows[np.sort(self.rng.choice(len(rows), self.per_frame, replace=False))]
        return rows

    def close(self) -> dict[str, Any]:
        """Write cameras.json, the trajectories and the static map; returns what was written."""
        write_json(
            self.out / "cameras.json",
            {
                "convention": CAMERA_CONVENTION,
                "source_size": list(self.scene.transform.src_hw),
                "frames": self.cameras,
            },
        )
        ext = torch.stack(self.extrinsics)  # [T, V, 3, 4]
        (self.out / "trajectories").mkdir(exist_ok=True)
        for vi in range(ext.shape[1]):
            write_tum(
                self.out / "trajectories" / f"{self.scene.view_name(vi)}.txt", self.scene.times, ext[:, vi]
            )
        static = self.static_points("static")
        write_ply(
            self.out / "static_map.ply",
            static[:, :3],
            static[:, 3:6].astype(np.uint8),
            static[:, 6],
            static[:, 7],
        )
        return {"static_map_points": int(len(static)), "extrinsics": ext}

    def static_points(self, name: str) -> np.ndarray:
        rows = self.maps[name]
        return np.concatenate(rows) if rows else np.zeros((0, 8), np.float32)


CAMERA_CONVENTION = (
    "world_to_camera is [R|t] mapping world points to OpenCV camera coordinates (x right, y down, z "
    "forward); the world is the first frame's camera (time 0, view 0), in the model's scale-free units. "
    "intrinsics are for the original input's pixels, pixel centres at integer coordinates."
)
