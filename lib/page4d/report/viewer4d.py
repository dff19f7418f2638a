"""A 4D viewer: the reconstruction's points over time, static vs dynamic, with the cameras.

Why plotly: it renders in JupyterLab through the `jupyterlab-plotly` extension that ships inside the
pip package (no CDN, no server, nothing to build), it writes one standalone HTML file with its
JavaScript inlined (`save_html`: open it anywhere, offline, or attach it to a message), and its
3D scatter handles the ~10^5 points of a laptop-sized clip. viser and rerun are the field's richer
viewers, but both need a running server or a multi-megabyte WebAssembly bundle; MonST3R-style
exploration here needs a time slider, colours and frustums, which plotly has.

`figure_4d(rec)`: one frame per time step (the slider), points coloured by P(dynamic) (blue static ->
red dynamic; grey without a mask), each camera a frustum of five line segments, the reference camera
(frame 0) in black. Points are subsampled to `max_points` per time step (seeded).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import torch

from page4d.geometry import closed_form_inverse_se3
from page4d.inference.reconstruction import Reconstruction

__all__ = ["figure_4d", "frustum_lines", "save_html"]


def frustum_lines(
    extrinsics: torch.Tensor, intrinsics: torch.Tensor, hw: tuple[int, int], size: float
) -> np.ndarray:
    """Line segments of camera frustums as one polyline with NaN breaks: `[K, 3]` world points.

    extrinsics `[N, 3, 4]` world-to-camera, intrinsics `[N, 3, 3]` for images of `hw`; `size` is the
    frustum depth in world units."""
    h, w = hw
    corners_px = torch.tensor(
        [[0.0, 0.0], [w - 1.0, 0.0], [w - 1.0, h - 1.0], [0.0, h - 1.0]], dtype=torch.float64
    )
    c2w = closed_form_inverse_se3(extrinsics.double())
    lines = []
    for e, k in zip(c2w, intrinsics.double(), strict=True):
        rays = torch.cat(
            [
                (corners_px - k[:2, 2]) / torch.stack([k[0, 0], k[1, 1]]),
                torch.ones(4, 1, dtype=torch.float64),
            ],
            1,
        )
        corners = (rays * size) @ e[:3, :3].T + e[:3, 3]
        centre = e[:3, 3]
        for c in corners:  # centre -> corner
            lines += [centre, c, torch.full((3,), float("nan"), dtype=torch.float64)]
        lines += [*corners, corners[0], torch.full((3,), float("nan"), dtype=torch.float64)]
    return torch.stack(lines).numpy()


def _step_traces(rec: Reconstruction, t: int, max_points: int, rng: np.random.Generator, size: float) -> list:
    xyz = rec.points[t].reshape(-1, 3).numpy()
    valid = (rec.depth[t].reshape(-1) > 0).numpy()
    idx = np.flatnonzero(valid)
    if len(idx) > max_points:
        idx = np.sort(rng.choice(idx, max_points, replace=False))
    if rec.p_dynamic is not None:
        p = rec.p_dynamic[t].reshape(-1).numpy()[idx]
        marker = dict(
            size=2, color=p, colorscale="RdBu_r", cmin=0.0, cmax=1.0, colorbar=dict(title="P(dynamic)")
        )
    else:
        marker = dict(size=2, color="grey")
    points = go.Scatter3d(
        x=xyz[idx, 0], y=xyz[idx, 1], z=xyz[idx, 2], mode="markers", marker=marker, name=f"points t={t}"
    )
    cams = frustum_lines(rec.extrinsics[t], rec.intrinsics[t], tuple(rec.depth.shape[-2:]), size)
    frustums = go.Scatter3d(
        x=cams[:, 0],
        y=cams[:, 1],
        z=cams[:, 2],
        mode="lines",
        line=dict(color="darkorange", width=3),
        name="cameras",
    )
    return [points, frustums]


def figure_4d(rec: Reconstruction, max_points: int = 20_000, seed: int = 0, title: str = "") -> go.Figure:
    """The interactive figure (see the module docstring); one slider step per time step."""
    rng = np.random.default_rng(seed)
    t_n = rec.points.shape[0]
    extent = float(np.nanpercentile(np.abs(rec.points.reshape(-1, 3).numpy()), 95)) or 1.0
    size = 0.15 * extent
    steps = [_step_traces(rec, t, max_points, rng, size) for t in range(t_n)]
    ref = frustum_lines(rec.extrinsics[0, :1], rec.intrinsics[0, :1], tuple(rec.depth.shape[-2:]), size)
    reference = go.Scatter3d(
        x=ref[:, 0], y=ref[:, 1], z=ref[:, 2], mode="lines", line=dict(color="black", width=5), name="frame 0"
    )
    fig = go.Figure(
        data=[*steps[0], reference], frames=[go.Frame(data=s, name=str(t)) for t, s in enumerate(steps)]
    )
    slider = dict(
        active=0,
        currentvalue=dict(prefix="time step "),
        steps=[
            dict(
                method="animate",
                label=str(t),
                args=[[str(t)], dict(mode="immediate", frame=dict(duration=0, redraw=True))],
            )
            for t in range(t_n)
        ],
    )
    fig.update_layout(
        title=title or f"{t_n} time steps x {rec.points.shape[1]} views",
        sliders=[slider],
        scene=dict(aspectmode="data", xaxis_title="x", yaxis_title="y", zaxis_title="z"),
        margin=dict(l=0, r=0, t=40, b=0),
        height=600,
    )
    return fig


def save_html(fig: go.Figure, path: str | Path) -> Path:
    """One standalone HTML file with plotly's JavaScript inlined: opens offline, shares as one file."""
    path = Path(path)
    fig.write_html(path, include_plotlyjs=True, full_html=True, auto_play=False)
    return path
