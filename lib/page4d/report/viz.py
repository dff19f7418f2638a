"""Pictures of predicted vs SegAnyMo masks, plus the interactive overlay viewer (scores: frame_scores.py).

Figures are `matplotlib.figure.Figure` objects built without pyplot, so a notebook shows exactly the
figures it displays (none leak into the cell output twice) and tests render them headless.

    scores = frame_scores.frame_scores(prob, scene.masks, scene.mask_valid, threshold=0.5)
    fig = overlay_grid_figure(scene.images, prob, scene.masks, scene.mask_valid, 0.5, 0.5, times, views)
    viewer = MaskOverlayViewer(scene.images, prob, scene.masks, scene.mask_valid, times, views)
    viewer.time.value = 2            # the figure and viewer.score_label update
"""

from __future__ import annotations

import html
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from page4d.scoring.frame_scores import BOUND_TH, MaskScores
from page4d.scoring.metrics import boundary_f_measure, mask_iou

# Okabe-Ito colours (distinguishable with the common colour-vision deficiencies).
TP_COLOR = (0 / 255, 158 / 255, 115 / 255)  # bluish green: predicted and in the SegAnyMo mask
FP_COLOR = (213 / 255, 94 / 255, 0 / 255)  # vermillion: predicted, not in the mask
FN_COLOR = (86 / 255, 180 / 255, 233 / 255)  # sky blue: in the mask, missed
PRED_COLOR = (230 / 255, 159 / 255, 0 / 255)  # orange: the prediction alone
GT_COLOR = (204 / 255, 121 / 255, 167 / 255)  # reddish purple: the SegAnyMo mask alone
SHOW_MODES = ("both", "prediction", "gt")


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def image_hwc(image: Any) -> np.ndarray:
    """`[3, H, W]` (torch layout) or `[H, W, 3]` in [0, 1] -> float `[H, W, 3]` numpy."""
    a = _np(image).astype(np.float64)
    if a.ndim == 3 and a.shape[0] == 3 and a.shape[-1] != 3:
        a = a.transpose(1, 2, 0)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"image must be [3, H, W] or [H, W, 3], got {a.shape}")
    return np.clip(a, 0.0, 1.0)


def overlay_rgb(image: Any, pred: Any, gt: Any | None, alpha: float = 0.5, show: str = "both") -> np.ndarray:
    """Colour a frame's masks over its image: float `[H, W, 3]` in [0, 1].

    pred / gt: bool `[H, W]` (gt may be None). show "both": true positives TP_COLOR, false positives
    FP_COLOR, misses FN_COLOR; "prediction": pred in PRED_COLOR; "gt": gt in GT_COLOR. `alpha` is the
    colour's opacity over the image.
    """
    if show not in SHOW_MODES:
        raise ValueError(f"show must be one of {SHOW_MODES}, got {show!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    rgb = image_hwc(image)
    p = _np(pred).astype(bool)
    g = None if gt is None else _np(gt).astype(bool)
    if p.shape != rgb.shape[:2] or (g is not None and g.shape != p.shape):
        raise ValueError(
            f"image {rgb.shape[:2]}, pred {p.shape} and gt {None if g is None else g.shape} disagree"
        )
    layers: list[tuple[np.ndarray, tuple[float, float, float]]]
    if show == "prediction" or g is None:
        layers = [(p, PRED_COLOR)] if show != "gt" else []
    elif show == "gt":
        layers = [(g, GT_COLOR)]
    else:
        layers = [(p & g, TP_COLOR), (p & ~g, FP_COLOR), (~p & g, FN_COLOR)]
    out = rgb.copy()
    for where, color in layers:
        out[where] = (1 - alpha) * out[where] + alpha * np.asarray(color)
    return out


def legend_handles(show: str = "both") -> list[Patch]:
    if show == "prediction":
        return [Patch(color=PRED_COLOR, label="prediction")]
    if show == "gt":
        return [Patch(color=GT_COLOR, label="SegAnyMo")]
    return [
        Patch(color=TP_COLOR, label="true positive"),
        Patch(color=FP_COLOR, label="false positive"),
        Patch(color=FN_COLOR, label="missed"),
    ]


# --------------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------------
def new_figure(figsize: tuple[float, float], dpi: int = 100) -> Figure:
    """A Figure with an Agg canvas, not registered with pyplot."""
    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Save as PNG without the matplotlib-version metadata (same picture -> same bytes)."""
    path = Path(path)
    fig.savefig(path, dpi=dpi, format="png", metadata={"Software": None})
    return path


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format="png", metadata={"Software": None})
    return buf.getvalue()


def probability_grid_figure(
    prob: Any,
    times: Sequence[int],
    views: Sequence[int],
    title: str,
    images: Any | None = None,
    panel_size: float = 2.2,
) -> Figure:
    """T x V panels of P(dynamic) `[T, V, h, w]` (0 = static, 1 = dynamic), over `images [T, V, 3, H, W]`
    when given (then prob must be at image resolution)."""
    p = _np(prob)
    t_n, v_n = p.shape[:2]
    fig = new_figure((panel_size * v_n + 0.8, panel_size * 0.8 * t_n + 0.5))
    axes = fig.subplots(t_n, v_n, squeeze=False)
    im = None
    for ti in range(t_n):
        for vi in range(v_n):
            ax = axes[ti, vi]
            if images is not None:
                ax.imshow(image_hwc(_np(images)[ti, vi]))
                im = ax.imshow(p[ti, vi], cmap="magma", vmin=0, vmax=1, alpha=0.6, interpolation="nearest")
            else:
                im = ax.imshow(p[ti, vi], cmap="magma", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(f"t={times[ti]} v={views[vi]}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    fig.colorbar(im, ax=axes, shrink=0.8, label="P(dynamic)")
    return fig


def overlay_grid_figure(
    images: Any,
    prob: Any,
    gt: Any | None,
    valid: Any | None,
    threshold: float,
    alpha: float,
    times: Sequence[int],
    views: Sequence[int],
    scores: MaskScores | None = None,
    show: str = "both",
    panel_size: float = 2.4,
) -> Figure:
    """T x V overlays of thresholded P(dynamic) vs SegAnyMo (TP / FP / missed colours), scores in titles."""
    imgs, p = _np(images), _np(prob)
    g = None if gt is None else _np(gt)
    ok = np.ones(p.shape[:2], bool) if valid is None else _np(valid).astype(bool)
    t_n, v_n = p.shape[:2]
    aspect = imgs.shape[-2] / imgs.shape[-1]  # H / W of one panel
    height = (panel_size * aspect + 0.3) * t_n + 0.5
    fig = new_figure((panel_size * v_n + 0.2, height))
    axes = fig.subplots(t_n, v_n, squeeze=False)
    for ti in range(t_n):
        for vi in range(v_n):
            ax = axes[ti, vi]
            has_gt = g is not None and ok[ti, vi]
            frame_gt = g[ti, vi] >= 0.5 if has_gt else None
            ax.imshow(overlay_rgb(imgs[ti, vi], p[ti, vi] >= threshold, frame_gt, alpha, show))
            title = f"t={times[ti]} v={views[vi]}"
            if scores is not None and has_gt:
                title += f"  IoU {scores.iou[ti, vi]:.2f} F {scores.f[ti, vi]:.2f}"
            elif not has_gt:
                title += "  (no mask)"
            ax.set_title(title, fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.legend(handles=legend_handles(show), loc="upper center", ncol=3, fontsize=7, frameon=False)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.01, top=1 - 0.45 / height, hspace=0.3, wspace=0.05)
    return fig


def score_plot_figure(scores: MaskScores, times: Sequence[int], views: Sequence[int]) -> Figure:
    """IoU and boundary F per time step, one line per view, plus the mean over views."""
    fig = new_figure((8.0, 3.0))
    axes = fig.subplots(1, 2)
    per_time = scores.per_time()
    for ax, values, mean, name in zip(
        axes, (scores.iou, scores.f), per_time, ("IoU (J)", "boundary F"), strict=True
    ):
        for vi, v in enumerate(views):
            ax.plot(times, values[:, vi], marker="o", lw=1, label=f"view {v}")
        ax.plot(times, mean, color="black", lw=2, label="mean")
        ax.set_xlabel("time")
        ax.set_ylabel(name)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xticks(list(times))
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="best")
    fig.suptitle(
        f"threshold {scores.threshold:.2f}: mean IoU {scores.mean_iou:.3f}, mean F {scores.mean_f:.3f}",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def comparison_bar_figure(rows: Sequence[dict[str, Any]], metrics: Sequence[str]) -> Figure:
    """One bar chart per metric, one numbered bar per (run, arm) row; the legend below maps numbers
    (and colours) to `run / arm` (arm "-" omitted). A missing value is an empty slot marked n/a."""
    if not rows or not metrics:
        raise ValueError("nothing to plot: no runs or no metrics")
    labels = [r["run"] if r.get("arm", "-") == "-" else f"{r['run']} / {r['arm']}" for r in rows]
    colors = [f"C{i % 10}" for i in range(len(rows))]
    n, cols = len(metrics), min(len(metrics), 3)
    grid_rows = math.ceil(n / cols)
    legend_h = 0.16 * len(rows) + 0.15
    fig = new_figure((max(3.0, 0.35 * len(rows) + 1.2) * cols, 2.6 * grid_rows + legend_h))
    axes = fig.subplots(grid_rows, cols, squeeze=False).ravel()
    x = np.arange(len(rows))
    for ax, metric in zip(axes, metrics, strict=False):
        vals = np.array([r.get(metric, np.nan) for r in rows], dtype=float)
        ax.bar(x, np.nan_to_num(vals, nan=0.0), color=colors)
        for xi, v in zip(x, vals, strict=True):
            text = "n/a" if np.isnan(v) else f"{v:.3g}"
            ax.text(xi, 0 if np.isnan(v) else v, text, ha="center", va="bottom", fontsize=6)
        ax.set_title(metric, fontsize=9)
        ax.set_xticks(x)
        ax.set_xticklabels([str(i + 1) for i in x], fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[n:]:
        ax.set_visible(False)
    handles = [
        Patch(color=c, label=f"{i + 1}  {label}")
        for i, (c, label) in enumerate(zip(colors, labels, strict=True))
    ]
    fig.legend(handles=handles, loc="lower left", fontsize=7, frameon=False, ncol=1)
    fig.tight_layout(rect=(0, legend_h / fig.get_figheight(), 1, 1))
    return fig


# --------------------------------------------------------------------------------------------------
# the interactive viewer
# --------------------------------------------------------------------------------------------------
class MaskOverlayViewer:
    """Browse predicted vs SegAnyMo masks frame by frame.

    images `[T, V, 3, H, W]`, prob `[T, V, H, W]` P(dynamic), gt `[T, V, H, W]` or None, valid `[T, V]`.
    Controls (ipywidgets, attributes): `time` (IntSlider, index into `times`), `view` (Dropdown),
    `threshold`, `alpha` (FloatSliders), `show` (ToggleButtons: both / prediction / gt). Any change
    calls `update()`, which re-renders `image` (PNG) and sets `score_label` to `score_text()`.
    `widget` is the box to display.
    """

    def __init__(
        self,
        images: Any,
        prob: Any,
        gt: Any | None,
        valid: Any | None,
        times: Sequence[int],
        views: Sequence[int],
        threshold: float = 0.5,
        alpha: float = 0.5,
        show: str = "both",
        bound_th: float = BOUND_TH,
        figsize: tuple[float, float] = (4.0, 3.2),
    ) -> None:
        import ipywidgets as w

        self.images = _np(images)
        self.prob = torch.as_tensor(_np(prob), dtype=torch.float32)
        self.gt = None if gt is None else torch.as_tensor(_np(gt), dtype=torch.float32)
        t_n, v_n = self.prob.shape[:2]
        self.valid = np.ones((t_n, v_n), bool) if valid is None else _np(valid).astype(bool)
        if self.gt is None:
            self.valid = np.zeros((t_n, v_n), bool)
        self.times, self.views = list(times), list(views)
        if (len(self.times), len(self.views)) != (t_n, v_n):
            raise ValueError(
                f"{len(self.times)} times x {len(self.views)} views for prob {tuple(self.prob.shape)}"
            )
        self.bound_th = bound_th
        self.figsize = figsize
        self.renders = 0

        self.time = w.IntSlider(
            value=0, min=0, max=t_n - 1, step=1, description="time", continuous_update=False
        )
        self.view = w.Dropdown(
            options=[(f"view {v}", i) for i, v in enumerate(self.views)], value=0, description="view"
        )
        self.threshold = w.FloatSlider(
            value=threshold, min=0.0, max=1.0, step=0.01, description="threshold", continuous_update=False
        )
        self.alpha = w.FloatSlider(
            value=alpha, min=0.0, max=1.0, step=0.05, description="alpha", continuous_update=False
        )
        self.show = w.ToggleButtons(options=list(SHOW_MODES), value=show, description="show")
        self.score_label = w.HTML(value="")
        self.image = w.Image(format="png")
        for name, control in self.controls().items():
            control.add_class(f"page4d-{name}")
            control.observe(self._on_change, names="value")
        self.score_label.add_class("page4d-score")
        self.widget = w.VBox(
            [
                w.HBox([self.time, self.view]),
                w.HBox([self.threshold, self.alpha]),
                self.show,
                self.score_label,
                self.image,
            ]
        )
        self.update()

    def controls(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "view": self.view,
            "threshold": self.threshold,
            "alpha": self.alpha,
            "show": self.show,
        }

    def _on_change(self, _change: dict) -> None:
        self.update()

    def frame_index(self) -> tuple[int, int]:
        return int(self.time.value), int(self.view.value)

    def current_scores(self) -> tuple[float, float] | None:
        """(IoU, boundary F) of the current frame at the current threshold; None without a mask."""
        ti, vi = self.frame_index()
        if not self.valid[ti, vi]:
            return None
        p, g = self.prob[ti, vi], self.gt[ti, vi]
        thr = float(self.threshold.value)
        iou = float(mask_iou(p, g, threshold=thr))
        f = float(boundary_f_measure(p, g, threshold=thr, bound_th=self.bound_th))
        return iou, f

    def score_text(self) -> str:
        ti, vi = self.frame_index()
        where = f"t={self.times[ti]} v={self.views[vi]}"
        scores = self.current_scores()
        if scores is None:
            return f"{where} | no SegAnyMo mask for this frame"
        return f"{where} | IoU {scores[0]:.3f} | F {scores[1]:.3f}"

    def render(self) -> Figure:
        ti, vi = self.frame_index()
        thr = float(self.threshold.value)
        gt = self.gt[ti, vi].numpy() >= 0.5 if self.valid[ti, vi] else None
        fig = new_figure(self.figsize)
        ax = fig.add_axes((0, 0, 1, 0.9))
        ax.imshow(
            overlay_rgb(
                self.images[ti, vi],
                self.prob[ti, vi].numpy() >= thr,
                gt,
                float(self.alpha.value),
                self.show.value,
            )
        )
        ax.set_axis_off()
        fig.legend(
            handles=legend_handles(self.show.value), loc="upper center", ncol=3, fontsize=7, frameon=False
        )
        return fig

    def update(self) -> None:
        self.score_label.value = f"<code>{html.escape(self.score_text())}</code>"
        self.image.value = figure_png(self.render())
        self.renders += 1


def probability_overlay_figure(
    images: Any,
    prob: Any,
    gt: Any | None,
    valid: Any | None,
    threshold: float,
    alpha: float,
    times: Sequence[int],
    views: Sequence[int],
    scores: MaskScores | None = None,
    panel_size: float = 2.2,
) -> Figure:
    """Per frame, P(dynamic) (left) next to its thresholded overlay (right); rows = time, column pairs
    = views. Overlay colours as in `overlay_grid_figure` (TP / FP / missed; prediction only without GT)."""
    imgs, p = _np(images), _np(prob)
    g = None if gt is None else _np(gt)
    ok = np.zeros(p.shape[:2], bool) if (valid is None or g is None) else _np(valid).astype(bool)
    t_n, v_n = p.shape[:2]
    aspect = imgs.shape[-2] / imgs.shape[-1]
    height = (panel_size * aspect + 0.3) * t_n + 0.6
    fig = new_figure((2 * panel_size * v_n + 0.9, height))
    axes = fig.subplots(t_n, 2 * v_n, squeeze=False)
    im = None
    for ti in range(t_n):
        for vi in range(v_n):
            left, right = axes[ti, 2 * vi], axes[ti, 2 * vi + 1]
            im = left.imshow(p[ti, vi], cmap="magma", vmin=0, vmax=1, interpolation="nearest")
            frame_gt = g[ti, vi] >= 0.5 if ok[ti, vi] else None
            right.imshow(overlay_rgb(imgs[ti, vi], p[ti, vi] >= threshold, frame_gt, alpha))
            left.set_title(f"t={times[ti]} v={views[vi]} P(dynamic)", fontsize=7)
            title = f"p >= {threshold:.2f}"
            if scores is not None and ok[ti, vi]:
                title += f"  IoU {scores.iou[ti, vi]:.2f} F {scores.f[ti, vi]:.2f}"
            elif not ok[ti, vi]:
                title += "  (no mask)"
            right.set_title(title, fontsize=7)
            for ax in (left, right):
                ax.set_xticks([])
                ax.set_yticks([])
    show = "both" if g is not None else "prediction"
    fig.legend(handles=legend_handles(show), loc="upper center", ncol=3, fontsize=7, frameon=False)
    fig.subplots_adjust(left=0.02, right=0.9, bottom=0.01, top=1 - 0.5 / height, hspace=0.3, wspace=0.05)
    cax = fig.add_axes((0.92, 0.1, 0.015, 0.75))
    fig.colorbar(im, cax=cax, label="P(dynamic)")
    return fig


def widget_bundle(widget: Any, text: str) -> dict[str, Any]:
    """The widget's display data with `text` as its plain-text form (instead of the `VBox(children=...`
    repr that a saved notebook, nbval and a terminal would show); `display(bundle, raw=True)`."""
    bundle = dict(widget._repr_mimebundle_())
    bundle["text/plain"] = text
    return bundle
