"""How good a fused point map is against the GT surface, in both directions.

`accuracy`: mean distance from each predicted point to the nearest GT point (are the points where
surfaces are?); `completeness`: mean distance from each GT point to the nearest predicted point (is
every surface covered?). The prediction must first be in the GT's frame and units: `align_to_gt`
applies the Sim(3) that maps the predicted camera centres onto the GT ones (Umeyama), the same
alignment as ATE. Distances are estimated (seeded) from `queries` points of one side against
`targets` points of the other: a k-d tree query far from the other surface (a poor map) must look at
every target point within that distance, so millions of points would take hours. The target's sampling
lengthens each distance by at most its spacing (a few centimetres for 50,000 points in a room).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree

from page4d.geometry import camera_centers, trajectory_is_degenerate, umeyama_alignment

__all__ = ["align_to_gt", "map_distances"]


def align_to_gt(
    points: np.ndarray, pred_extrinsics: torch.Tensor, gt_extrinsics: torch.Tensor
) -> tuple[np.ndarray | None, str | None]:
    """Predicted points [N, 3] moved into the GT frame by the camera-centre Sim(3); (None, reason) when
    the centres cannot determine it (fewer than 3, coincident or collinear: a static single camera)."""
    p, g = pred_extrinsics.reshape(-1, 3, 4).double(), gt_extrinsics.reshape(-1, 3, 4).double()
    if len(p) < 3 or trajectory_is_degenerate(g) or trajectory_is_degenerate(p):
        return None, "camera centres coincident or collinear: no Sim(3) to the GT frame"
    s, rot, t = umeyama_alignment(camera_centers(p), camera_centers(g))
    moved = float(s) * (torch.from_numpy(points).double() @ rot.T) + t
    return moved.numpy().astype(np.float32), None


def map_distances(
    pred: np.ndarray, gt: np.ndarray, queries: int = 5_000, targets: int = 50_000, seed: int = 0
) -> dict[str, float]:
    """Accuracy and completeness (mean nearest-neighbour distances, GT units) and their medians."""
    if len(pred) == 0 or len(gt) == 0:
        raise ValueError(
            f"map_distances needs points on both sides, got {len(pred)} predicted and {len(gt)} GT"
        )
    rng = np.random.default_rng(seed)

    def sample(x: np.ndarray, n: int) -> np.ndarray:
        x = np.asarray(x, np.float64)
        return x if len(x) <= n else x[rng.choice(len(x), n, replace=False)]

    to_gt, _ = cKDTree(sample(gt, targets)).query(sample(pred, queries))
    to_pred, _ = cKDTree(sample(pred, targets)).query(sample(gt, queries))
    return {
        "accuracy": float(to_gt.mean()),
        "completeness": float(to_pred.mean()),
        "accuracy_median": float(np.median(to_gt)),
        "completeness_median": float(np.median(to_pred)),
        "points": int(len(pred)),
        "gt_points": int(len(gt)),
    }
