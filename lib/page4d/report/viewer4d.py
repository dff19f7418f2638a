"""A 4D viewer: the reconstruction's points over time, static vs dynamic, with the cameras.

Why plotly: it renders in JupyterLab through the `jupyterlab-plotly` extension that ships inside the
pip package (no CDN, no server, nothing to build), it writes one standalone HTML file with its
JavaScript inlined (`save_html`: open it anywhere, offline, or attach it to a message), and its
3D scatter handles the ~10^5 points of a laptop-sized clip. viser and rerun are the field's richer
viewers, but both need a running server or a multi-megabyte WebAssembly bundle; MonST3R-style
exploration here needs a time slider, colours and frustums, which plotly has.

`figure_4d(rec)`: one frame per time step (the slider), points coloured by P(dynamic) (blue static ->
purple -> red dynamic, a scale with no white middle, so uncertain points stay visible on white; grey
without a mask), each camera a frustum of five line segments, the reference camera
(frame 0) in black. Points are subsampled to `max_points` per time step (seeded). The initial view looks
over the first camera's shoulder with its "up" (-y in OpenCV axes) up.

`picture_4d(rec)`: the same content as a static matplotlib picture (one 3D panel per time step), for
readers without a JavaScript renderer (GitHub, nbconvert's HTML, a paper); plotly's own static export
needs kaleido and a Chrome, which this project does not assume.

`export_points(rec, folder)`: every time step's points and the static map as PLY files
(`inference.reconstruction.write_ply`), with the counts a metrics.json records.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import torch
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure

from page4d.geometry import closed_form_inverse_se3
from page4d.inference.reconstruction import Reconstruction, static_map, write_ply, write_step_points
from page4d.report.viz import new_figure

__all__ = ["export_points", "figure_4d", "frustum_lines", "picture_4d", "save_html"]

DYNAMIC_SCALE = [[0.0, "#0000ff"], [1.0, "#ff0000"]]  # P(dynamic) 0 -> 1 (plotly's "Bluered")
# plotly's initial camera: OpenCV's -y is "up", eye behind and above the first camera (scene units).
SCENE_CAMERA = dict(up=dict(x=0, y=-1, z=0), eye=dict(x=0.6, y=-0.9, z=-1.6), center=dict(x=0, y=0, z=0))


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


def _sample(rec: Reconstruction, t: int, max_points: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of at most `max_points` valid points (depth > 0) of time step `t`, flattened over V, H, W."""
    idx = np.flatnonzero((rec.depth[t].reshape(-1) > 0).numpy())
    if len(idx) > max_points:
        idx = np.sort(rng.choice(idx, max_points, replace=False))
    return idx


def _frustum_size(rec: Reconstruction) -> float:
    return 0.15 * (float(np.nanpercentile(np.abs(rec.points.reshape(-1, 3).numpy()), 95)) or 1.0)


def _step_traces(rec: Reconstruction, t: int, max_points: int, rng: np.random.Generator, size: float) -> list:
    xyz = rec.points[t].reshape(-1, 3).numpy()
    idx = _sample(rec, t, max_points, rng)
    if rec.p_dynamic is not None:
        p = rec.p_dynamic[t].reshape(-1).numpy()[idx]
        marker = dict(
            size=2, color=p, colorscale=DYNAMIC_SCALE, cmin=0.0, cmax=1.0, colorbar=dict(title="P(dynamic)")
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
    size = _frustum_size(rec)
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
        scene=dict(aspectmode="data", xaxis_title="x", yaxis_title="y", zaxis_title="z", camera=SCENE_CAMERA),
        margin=dict(l=0, r=0, t=40, b=0),
        legend=dict(x=0.0, y=1.0, bgcolor="rgba(255, 255, 255, 0.6)"),  # clear of the colour bar
        height=600,
    )
    return fig


def save_html(fig: go.Figure, path: str | Path) -> Path:
    """One standalone HTML file with plotly's JavaScript inlined: opens offline, shares as one file."""
    path = Path(path)
    fig.write_html(path, include_plotlyjs=True, full_html=True, auto_play=False)
    return path


def _panel_times(t_n: int, max_panels: int) -> list[int]:
    """At most `max_panels` time steps, evenly spread, first and last included."""
    if t_n <= max_panels:
        return list(range(t_n))
    return sorted({round(i * (t_n - 1) / (max_panels - 1)) for i in range(max_panels)})


def _up(xyz: np.ndarray) -> np.ndarray:
    """OpenCV world (x right, y down, z forward) -> matplotlib's (x, forward, up) = (x, z, -y)."""
    return np.stack([xyz[..., 0], xyz[..., 2], -xyz[..., 1]], -1)


def _draw_panel(ax, rec: Reconstruction, t: int, idx: np.ndarray, size: float, lims: np.ndarray, by: str):
    xyz = _up(rec.points[t].reshape(-1, 3).numpy()[idx])
    if by == "p_dynamic":
        cmap = LinearSegmentedColormap.from_list("p_dynamic", [c for _, c in DYNAMIC_SCALE])
        colour = dict(c=rec.p_dynamic[t].reshape(-1).numpy()[idx], cmap=cmap, vmin=0.0, vmax=1.0)
    else:
        colour = dict(c=rec.colors[t].reshape(-1, 3).numpy()[idx] / 255.0)
    scatter = ax.scatter(xyz[:, 0], xyz[:, 1], xyz[:, 2], s=2, depthshade=False, linewidths=0, **colour)
    hw = tuple(rec.depth.shape[-2:])
    cams = _up(frustum_lines(rec.extrinsics[t], rec.intrinsics[t], hw, size))
    ax.plot(cams[:, 0], cams[:, 1], cams[:, 2], color="darkorange", lw=1.2)
    ref = _up(frustum_lines(rec.extrinsics[0, :1], rec.intrinsics[0, :1], hw, size))
    ax.plot(ref[:, 0], ref[:, 1], ref[:, 2], color="black", lw=1.5)
    ax.set(xlim=lims[:, 0], ylim=lims[:, 1], zlim=lims[:, 2], title=f"time step {t}")
    ax.set_xlabel("x", labelpad=-8)
    ax.set_ylabel("z (forward)", labelpad=-8)
    ax.set_zlabel("-y (up)", labelpad=-8)
    ax.tick_params(labelsize=6, pad=-2)
    ax.set_box_aspect(np.ptp(lims, axis=0))
    ax.view_init(elev=25, azim=-65)
    return scatter


def picture_4d(
    rec: Reconstruction,
    max_points: int = 4000,
    seed: int = 0,
    max_panels: int = 4,
    color_by: str = "p_dynamic",
    title: str = "",
) -> Figure:
    """A static picture of the reconstruction: one 3D panel per time step (at most `max_panels`, evenly
    spread), `max_points` seeded points each, coloured by P(dynamic) as in `figure_4d` (`color_by=
    "p_dynamic"`, the default when there is a mask) or by their image colour (`"rgb"`), the cameras of
    that step in orange and frame 0's in black. Axes: x right, z forward, -y up (frame 0's camera);
    every panel has the same limits (1st-99th percentile of all points)."""
    if color_by not in ("p_dynamic", "rgb"):
        raise ValueError(f"color_by must be 'p_dynamic' or 'rgb', got {color_by!r}")
    by = "rgb" if rec.p_dynamic is None else color_by
    rng = np.random.default_rng(seed)
    times = _panel_times(rec.points.shape[0], max_panels)
    valid = (rec.depth.reshape(-1) > 0).numpy()
    lims = np.percentile(_up(rec.points.reshape(-1, 3).numpy()[valid]), [1, 99], axis=0)
    lims = lims + np.array([[-0.05], [0.05]]) * np.ptp(lims, axis=0)
    size = _frustum_size(rec)
    cols = min(len(times), 2)
    rows = -(-len(times) // cols)
    fig = new_figure((4.2 * cols + 1.0, 3.6 * rows + 0.4))
    fig.subplots_adjust(left=0.0, right=0.88, bottom=0.02, top=0.9, wspace=0.05, hspace=0.08)
    for i, t in enumerate(times):
        ax = fig.add_subplot(rows, cols, i + 1, projection="3d")
        scatter = _draw_panel(ax, rec, t, _sample(rec, t, max_points, rng), size, lims, by)
    if by == "p_dynamic":
        fig.colorbar(scatter, ax=fig.axes, shrink=0.6, pad=0.02, label="P(dynamic)")
    fig.suptitle(title or f"{rec.points.shape[0]} time steps x {rec.points.shape[1]} views", fontsize=10)
    return fig


def export_points(
    rec: Reconstruction, folder: str | Path, threshold: float = 0.5, conf_quantile: float = 0.3
) -> dict:
    """Write `points_t<t>.ply` (every valid point of time step t, all views: `write_step_points`, the
    same files `page4d.predict` writes) and `static_map.ply` (`static_map(rec, threshold,
    conf_quantile)`) into `folder`; return what a metrics.json records: `points_per_time`, `points`,
    `static_map_points`, `static_map_kept_share` and the file names."""
    folder = Path(folder)
    files = [f"points_t{t:02d}.ply" for t in range(rec.points.shape[0])]
    counts = [write_step_points(folder / name, rec, t) for t, name in enumerate(files)]
    smap = static_map(rec, threshold=threshold, conf_quantile=conf_quantile)
    write_ply(folder / "static_map.ply", smap["xyz"], smap["rgb"], smap["confidence"], smap["p_dynamic"])
    return {
        "points_per_time": counts,
        "points": sum(counts),
        "static_map_points": len(smap["xyz"]),
        "static_map_kept_share": float(smap["kept_share"]),
        "static_map_threshold": threshold,
        "static_map_conf_quantile": conf_quantile,
        "files": [*files, "static_map.ply"],
    }
