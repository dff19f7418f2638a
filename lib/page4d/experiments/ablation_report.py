"""Tables and figures of an ablation's metrics.json (what notebook 03 and `page4d.main` show).

Every table shows per-seed values when there are fewer than 3 seeds and "mean ±half-width of the 95%
CI" from 3 on; a deterministic arm (training-free from one starting model: its seeds cannot vary) shows
its one value without ±. Each table says over how many frames / clips its numbers are (`n` columns,
"clips 3/4") and ends with footnotes: which clips were dropped from which metrics and why, and which
arms are deterministic. The mask table ends with the trivial floors ("all dynamic", "all static") scored
by the same code, and geometry columns appear only when geometry was trained.

    print(mask_table(metrics))            # rows + footnotes; mask_rows(metrics) for the rows alone
    print(paired_table(metrics))
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from page4d.experiments.ablation import PREDICTIONS_DIR, safe
from page4d.experiments.ablation_stats import MIN_SEEDS_FOR_CI, paired_across_runs

MASK_COLUMNS = {
    "mask_ap": "AP",
    "mask_iou": "IoU@0.5",
    "mask_iou_tuned": "IoU@train-thr",
    "mask_jf": "J&F@0.5",
    "mask_p_static": "P(dyn)|static",
    "mask_p_dynamic": "P(dyn)|dynamic",
    "mask_ece": "ECE",
}
GEOMETRY_COLUMNS = {
    "depth_abs_rel": "AbsRel",
    "depth_delta1": "d<1.25",
    "ate": "ATE",
    "rpe_trans": "RPE-t",
    "rpe_rot": "RPE-r(deg)",
    "rpe_view_trans": "view-RPE-t",
    "rpe_view_rot": "view-RPE-r",
    "camera_rot_deg_median": "cam-rot(deg)",
}
PAIRED_KEYS = ("mask_ap", "mask_iou", "mask_iou_tuned", "mask_p_static", "mask_ece")
FAMILY_LABELS = {"mask": "mask metrics", "depth": "depth", "camera": "ATE/RPE"}
DETERMINISTIC = "det."  # the seeds column of an arm whose seeds cannot vary (see `arm_notes`)


def _fmt(x: float | None, digits: int) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def value_text(entry: dict[str, Any], key: str, digits: int = 3) -> str:
    """`mean ±half` from 3 seeds on, else the per-seed values joined by " / "; a deterministic arm's one
    value alone. "(n=k)" when only k seeds gave a finite value."""
    if entry.get("deterministic"):
        return _fmt(entry[key], digits)
    values = [r.get(key, float("nan")) for r in entry["per_seed"]]
    if len(values) >= MIN_SEEDS_FOR_CI and entry.get(f"{key}_ci95") is not None:
        lo, hi = entry[f"{key}_ci95"]
        text = f"{_fmt(entry[key], digits)} ±{_fmt((hi - lo) / 2, digits)}"
        n = entry.get("n_values", {}).get(key, len(values))
        return text if n == len(values) else f"{text} (n={n})"
    if not any(isinstance(v, float) and math.isfinite(v) for v in values):
        return "-"  # no seed has it (a monocular clip's view-RPE, an oracle's mask scores)
    return " / ".join(_fmt(v, digits) for v in values)


def seeds_text(entry: dict[str, Any]) -> int | str:
    """The seeds column: how many seeds finished, or `DETERMINISTIC` when they cannot vary."""
    return DETERMINISTIC if entry.get("deterministic") else len(entry["per_seed"])


def coverage_text(entry: dict[str, Any], family: str, unit: str = "clips") -> str:
    """`n` of a metric family: "clips 3/4" (scored of evaluated; "clips 2-3/4" when seeds differ),
    "frames 16/16" for masks; "?" for a metrics.json written before counts were recorded."""
    cov = (entry.get("coverage") or {}).get(family)
    if cov is None:
        return "?"
    counts = cov[unit] if unit == "clips" else cov["frames"]
    total = cov["of"] if unit == "clips" else cov["frames_of"]
    if entry.get("deterministic"):
        counts = counts[:1]
    lo, hi = min(counts, default=0), max(counts, default=0)
    return f"{unit} {lo}/{total}" if lo == hi else f"{unit} {lo}-{hi}/{total}"


def geometry_trained(metrics: dict[str, Any]) -> bool:
    return bool(metrics["params"].get("geometry"))


def mask_rows(metrics: dict[str, Any], digits: int = 3) -> list[dict[str, Any]]:
    """One row per arm with the mask metrics and `n` (GT frames scored of frames evaluated), then the
    floors and the GT dynamic share."""
    rows = []
    for arm, entry in metrics["arms"].items():
        row: dict[str, Any] = {
            "arm": arm,
            "seeds": seeds_text(entry),
            "n": coverage_text(entry, "mask", "frames"),
        }
        row.update({label: value_text(entry, key, digits) for key, label in MASK_COLUMNS.items()})
        rows.append(row)
    floors = metrics.get("floors") or {}
    frames_of = next(
        (e["coverage"]["mask"]["frames_of"] for e in metrics["arms"].values() if e.get("coverage")), None
    )
    for name, scores in floors.items():
        n = "?" if frames_of is None else f"frames {scores.get('mask_frames', '?')}/{frames_of}"
        row = {"arm": f"floor: {name.replace('_', ' ')}", "seeds": "-", "n": n}
        row.update({label: _fmt(scores.get(key), digits) for key, label in MASK_COLUMNS.items()})
        rows.append(row)
    if floors:
        share = next(iter(floors.values())).get("gt_dynamic_share")
        rows.append({"arm": f"GT dynamic share {_fmt(share, digits)}", "seeds": ""})
    return rows


def geometry_rows(metrics: dict[str, Any], digits: int = 3) -> list[dict[str, Any]]:
    """Depth and camera metrics per arm, with the clips each family is over (`n depth`, `n cameras`);
    empty when geometry was not trained (its numbers would be an untrained network's noise)."""
    if not geometry_trained(metrics):
        return []
    rows = []
    for arm, entry in metrics["arms"].items():
        row: dict[str, Any] = {
            "arm": arm,
            "seeds": seeds_text(entry),
            "n depth": coverage_text(entry, "depth"),
            "n cameras": coverage_text(entry, "camera"),
        }
        row.update({label: value_text(entry, key, digits) for key, label in GEOMETRY_COLUMNS.items()})
        rows.append(row)
    floor = metrics.get("camera_floor") or {}
    if floor:  # the rotations of "every camera is the first one": what a collapsed camera head scores
        row = {"arm": "floor: identity cameras", "seeds": "-", "n depth": "", "n cameras": ""}
        row.update({label: _fmt(floor.get(key), digits) for key, label in GEOMETRY_COLUMNS.items()})
        rows.append(row)
    return rows


def arm_notes(arms: dict[str, dict[str, Any]], label: str = "") -> list[str]:
    """One footnote per deterministic arm: why its seeds cannot vary, and that it has one value."""
    return [
        f"{label}{arm}: {DETERMINISTIC} = deterministic ({entry['deterministic']}): one value, "
        "seeds do not apply"
        for arm, entry in arms.items()
        if entry.get("deterministic")
    ]


def coverage_notes(
    arms: dict[str, dict[str, Any]], families: tuple[str, ...] = ("mask",), label: str = ""
) -> list[str]:
    """Footnotes listing every clip dropped from a family's metrics, with the (arm, seed)s that dropped
    it and why; a line saying the counts are unknown for arms without recorded coverage."""
    lines = []
    unknown = [arm for arm, e in arms.items() if e.get("coverage") is None and e.get("per_seed")]
    if unknown:
        lines.append(f"{label}{', '.join(unknown)}: clip counts not recorded (metrics.json predates them)")
    for family in families:
        groups: dict[tuple[str, str], list[str]] = {}
        for arm, entry in arms.items():
            cov = (entry.get("coverage") or {}).get(family)
            for d in (cov or {}).get("dropped", []):
                if entry.get("deterministic") and d["seed"] != entry["per_seed"][0]["seed"]:
                    continue  # one computation, listed once
                key = (str(d["times"]), d["reason"])
                who = arm if entry.get("deterministic") else f"{arm} seed {d['seed']}"
                groups.setdefault(key, []).append(who)
        for (times, reason), who in groups.items():
            lines.append(
                f"{label}dropped from {FAMILY_LABELS[family]}: clip t={times} ({', '.join(who)}): {reason}"
            )
    return lines


def _with_notes(rows: list[dict[str, Any]], notes: list[str]) -> str:
    from page4d.report.tables import format_table

    return "\n".join([format_table(rows), *notes])


def mask_table(metrics: dict[str, Any], digits: int = 3) -> str:
    """`mask_rows` as text, with footnotes: dropped clips (mask metrics) and deterministic arms."""
    arms = metrics["arms"]
    return _with_notes(mask_rows(metrics, digits), coverage_notes(arms, ("mask",)) + arm_notes(arms))


def geometry_table(metrics: dict[str, Any], digits: int = 3) -> str:
    """`geometry_rows` as text with their footnotes; "" when geometry was not trained."""
    rows = geometry_rows(metrics, digits)
    if not rows:
        return ""
    arms = metrics["arms"]
    return _with_notes(rows, coverage_notes(arms, ("depth", "camera")) + arm_notes(arms))


def difference_text(d: dict[str, Any], digits: int = 3) -> str:
    """A paired difference {"mean", "ci95", "per_seed"} as "mean [lo, hi]", or the per-seed values; the
    one value of a difference between two deterministic arms alone."""
    if d.get("deterministic"):
        return _fmt_signed(d["mean"], digits)
    if d["ci95"] is not None:
        lo, hi = d["ci95"]
        return f"{d['mean']:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"
    return " / ".join(f"{v:+.{digits}f}" for v in d["per_seed"].values()) or "-"


def _fmt_signed(x: float | None, digits: int) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:+.{digits}f}"


def pairs_text(paired: dict[str, dict[str, Any]], keys: tuple[str, ...]) -> str:
    """The `n` of a row of paired differences: how many seeds paired ("seeds 3"; "seeds 2-3" when a
    metric lost a seed to a NaN; metrics without any value, shown as "-", do not count), or
    `DETERMINISTIC` when both arms are deterministic."""
    if any(paired[k].get("deterministic") for k in keys):
        return DETERMINISTIC
    counts = [paired[k]["n"] for k in keys if paired[k]["n"] > 0]
    lo, hi = min(counts, default=0), max(counts, default=0)
    return f"seeds {lo}" if lo == hi else f"seeds {lo}-{hi}"


def paired_rows(
    metrics: dict[str, Any],
    keys: tuple[str, ...] = PAIRED_KEYS,
    digits: int = 3,
    baseline: str | None = None,
) -> list[dict]:
    """arm - baseline (default the run's: `none`, or `untrained` without geometry; `no_mask` when the
    run has that control, see `metrics["baselines"]`) per metric: "mean [lo, hi]" (95% CI of the paired
    difference) or per-seed values, and `n` (seeds paired). `keys` default to the mask metrics;
    `paired_geometry_rows` gives the geometry ones."""
    labels = {**MASK_COLUMNS, **GEOMETRY_COLUMNS}
    baseline = baseline or metrics.get("baseline", "none")
    rows = []
    for arm, entry in metrics["arms"].items():
        paired = entry.get(f"paired_vs_{baseline}")
        if not paired:
            continue
        row: dict[str, Any] = {f"arm - {baseline}": arm, "n": pairs_text(paired, keys)}
        for key in keys:
            row[labels[key]] = difference_text(paired[key], digits)
        rows.append(row)
    return rows


def paired_table(
    metrics: dict[str, Any], geometry: bool = False, digits: int = 3, baseline: str | None = None
) -> str:
    """`paired_rows` (or `paired_geometry_rows`) as text with footnotes for the arms in them and their
    baseline; "" when no arm is paired."""
    baseline = baseline or metrics.get("baseline", "none")
    rows = (
        paired_geometry_rows(metrics, digits, baseline)
        if geometry
        else paired_rows(metrics, digits=digits, baseline=baseline)
    )
    if not rows:
        return ""
    names = {baseline} | {r[f"arm - {baseline}"] for r in rows}
    arms = {a: e for a, e in metrics["arms"].items() if a in names}
    families = ("depth", "camera") if geometry else ("mask",)
    return _with_notes(rows, coverage_notes(arms, families) + arm_notes(arms))


def across_runs_rows(
    before: dict[str, Any],
    after: dict[str, Any],
    arms: list[str],
    keys: tuple[str, ...] = PAIRED_KEYS,
    digits: int = 3,
) -> list[dict]:
    """One row per arm of two runs' metrics: `after - before` per metric as "mean [lo, hi]"
    (`ablation_stats.paired_across_runs`), e.g. pretrained init - random init, and `n` (seeds paired)."""
    labels = {**MASK_COLUMNS, **GEOMETRY_COLUMNS}
    rows = []
    for arm in arms:
        paired = paired_across_runs(before, after, arm)
        row: dict[str, Any] = {"after - before": arm, "n": pairs_text(paired, keys)}
        for key in keys:
            row[labels[key]] = difference_text(paired[key], digits)
        rows.append(row)
    return rows


def seed_pairing(before: dict[str, Any], after: dict[str, Any], arm: str) -> dict[str, Any]:
    """Which finished seeds of `arm` the two runs share (`paired`) and which only one of them has."""
    seeds = []
    for metrics, which in ((before, "before"), (after, "after")):
        if arm not in metrics["arms"]:
            raise KeyError(f"arm {arm!r} is not in the {which} run (has {sorted(metrics['arms'])})")
        seeds.append([r["seed"] for r in metrics["arms"][arm]["per_seed"]])
    b, a = seeds
    return {
        "arm": arm,
        "paired": [s for s in a if s in b],
        "before_only": [s for s in b if s not in a],
        "after_only": [s for s in a if s not in b],
    }


def pairing_text(p: dict[str, Any]) -> str:
    """One line: the seeds paired for an arm and the ones left out, or why there is nothing to pair."""
    if not p["paired"]:
        return (
            f"{p['arm']}: no seed finished in both runs (before {p['before_only']}, after "
            f"{p['after_only']}): nothing to pair; run the same seeds in both"
        )
    text = f"{p['arm']}: paired seeds {p['paired']}"
    left = [f"{which} only {p[key]}" for which, key in (("before", "before_only"), ("after", "after_only"))]
    left = [t for t, key in zip(left, ("before_only", "after_only"), strict=True) if p[key]]
    return text + ("; left out (" + ", ".join(left) + ")" if left else "; none left out")


def paired_geometry_rows(metrics: dict[str, Any], digits: int = 3, baseline: str | None = None) -> list[dict]:
    """`paired_rows` for depth and camera metrics; empty when geometry was not trained."""
    if not geometry_trained(metrics):
        return []
    return paired_rows(metrics, tuple(GEOMETRY_COLUMNS), digits, baseline)


def _clip_frame_errors(record: dict[str, Any]) -> list[tuple[int, list[float]]]:
    """(views, every frame's rotation error) of each evaluated clip of one seed's result: the held-out
    videos' (pool mode) or the held-out clips' of the one scene."""
    if record.get("per_scene"):
        return [
            (s.get("views", 1), c["rot_deg"]) for s in record["per_scene"] for c in s["camera_frames"] or []
        ]
    views = max(len(record.get("mask_iou_per_view") or {}), 1)
    return [(views, c["rot_deg"]) for c in record.get("camera_frames") or []]


def camera_frame_rows(metrics: dict[str, Any], digits: int = 1) -> list[dict[str, Any]]:
    """Every frame slot's camera rotation error (degrees, relative to the clip's first frame, so no
    alignment is involved): the median over seeds and held-out clips, one row per arm, one column per
    slot (`t3`, or `t1v2` with several views); `clips` counts what each median is over. A camera that
    is wrong on one frame shows here even when the averaged RPE hides it."""
    rows = []
    for arm, entry in metrics["arms"].items():
        records = entry["per_seed"][:1] if entry.get("deterministic") else entry["per_seed"]
        clips = [c for r in records for c in _clip_frame_errors(r)]
        row: dict[str, Any] = {"arm": arm, "clips": len(clips)}
        slots = max((len(errors) for _, errors in clips), default=0)
        views = clips[0][0] if clips else 1
        for s in range(1, slots):
            values = [e[s] for _, e in clips if s < len(e) and e[s] == e[s]]
            name = f"t{s}" if views == 1 else f"t{s // views}v{s % views}"
            row[name] = round(float(np.median(values)), digits) if values else float("nan")
        rows.append(row)
    return rows


def per_view_rows(metrics: dict[str, Any], digits: int = 3) -> list[dict[str, Any]]:
    """Held-out mask IoU at 0.5 per view, averaged over seeds, one row per arm."""
    rows = []
    for arm, m in metrics["arms"].items():
        views = sorted({int(v) for r in m["per_seed"] for v in r["mask_iou_per_view"]})
        row: dict[str, Any] = {"arm": arm}
        for v in views:
            vals = [r["mask_iou_per_view"].get(v, r["mask_iou_per_view"].get(str(v))) for r in m["per_seed"]]
            row[f"view{v}"] = _fmt(float(np.nanmean(vals)), digits)
        rows.append(row)
    return rows


def ablation_figure(metrics: dict[str, Any], keys: tuple[str, ...] | None = None):
    """Bar chart per metric: arm means, 95% CI error bars from 3 seeds on, and the per-seed points;
    dashed lines mark the floors of mask metrics."""
    from matplotlib.figure import Figure

    if keys is None:
        keys = ("mask_ap", "mask_iou", "mask_p_static") + (
            ("depth_abs_rel", "ate") if geometry_trained(metrics) else ()
        )
    arms = list(metrics["arms"])
    fig = Figure(figsize=(3.0 * len(keys), 3.6), dpi=100)
    axes = np.atleast_1d(fig.subplots(1, len(keys)))
    for ax, key in zip(axes, keys, strict=True):
        means = [metrics["arms"][a][key] for a in arms]
        errs = []
        for a in arms:
            ci = metrics["arms"][a].get(f"{key}_ci95")
            errs.append(0.0 if ci is None else (ci[1] - ci[0]) / 2)
        ax.bar(range(len(arms)), np.nan_to_num(means), yerr=errs, capsize=4, color="#4c72b0", alpha=0.8)
        for i, a in enumerate(arms):
            ys = [r[key] for r in metrics["arms"][a]["per_seed"]]
            ax.plot([i] * len(ys), ys, "k.", ms=5)
        for name, style in (("all_dynamic", "r--"), ("all_static", "g:")):
            value = ((metrics.get("floors") or {}).get(name) or {}).get(key)
            if value is not None and math.isfinite(value):
                ax.axhline(value, color=style[0], ls=style[1:], lw=1, label=f"floor: {name}")
        ax.set_xticks(
            range(len(arms)), [a.replace("+", "+\n") for a in arms], fontsize=7, rotation=45, ha="right"
        )
        ax.set_title(MASK_COLUMNS.get(key) or GEOMETRY_COLUMNS.get(key) or key, fontsize=9)
    if any(ax.get_legend_handles_labels()[0] for ax in axes):
        axes[0].legend(fontsize=6, loc="best")
    fig.tight_layout()
    return fig


def arm_overlays_figure(
    run_dir: str | Path, metrics: dict[str, Any], time_index: int = 0, threshold: float = 0.5
):
    """Rows = arms, columns = views: P(dynamic) >= threshold vs SegAnyMo on one held-out time step of the
    first seed (green = both, red = predicted only, blue = missed), with the frame's IoU in the title."""
    from page4d.report.viz import legend_handles, new_figure, overlay_rgb
    from page4d.scoring.metrics import mask_iou

    folder = Path(run_dir) / PREDICTIONS_DIR
    frames = np.load(folder / "eval_frames.npz")
    arms = [a for a in metrics["arms"] if (folder / f"{safe(a)}.npz").is_file()]
    images, gt, valid = frames["images"], frames["gt"], frames["valid"]
    views, times = frames["views"].tolist(), frames["times"].tolist()
    n_v = len(views)
    aspect = images.shape[2] / images.shape[3]
    fig = new_figure((2.3 * n_v + 0.2, (2.3 * aspect + 0.35) * len(arms) + 0.5))
    axes = fig.subplots(len(arms), n_v, squeeze=False)
    for row, arm in enumerate(arms):
        prob = np.load(folder / f"{safe(arm)}.npz")["prob"].astype(np.float32)
        for vi in range(n_v):
            ax = axes[row, vi]
            pred = prob[time_index, vi] >= threshold
            has_gt = bool(valid[time_index, vi])
            g = gt[time_index, vi].astype(bool) if has_gt else None
            ax.imshow(overlay_rgb(images[time_index, vi] / 255.0, pred, g, 0.5, "both"))
            title = f"{arm} v={views[vi]}"
            if has_gt:
                title += f" IoU {float(mask_iou(pred, g)):.2f}"
            ax.set_title(title, fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"held-out t={times[time_index]}, seed {metrics['params']['seeds'][0]}", fontsize=8, y=0.995)
    fig.legend(handles=legend_handles("both"), loc="lower center", ncol=3, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.03, 1, 0.98))
    return fig


def loss_curve_figure(run_dir: str | Path):
    """Training loss per step of every (arm, seed) run under `<run_dir>/train/`. Steps that did not
    train (a clip without mask GT under mask terms only: no `loss` in their record) are left out of the
    curve, and the legend says how many of each run's steps they were."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.2), dpi=100)
    ax = fig.subplots()
    for hist in sorted(Path(run_dir, "train").glob("*/history.json")):
        steps = json.loads(hist.read_text())
        if isinstance(steps, dict):  # {"steps": [...], ...} as well as a bare list
            steps = steps.get("steps", [])
        trained = [s for s in steps if isinstance(s.get("loss"), int | float)]
        label = hist.parent.name
        if len(trained) < len(steps):
            label += f" ({len(steps) - len(trained)} of {len(steps)} steps skipped)"
        ax.plot([s["step"] for s in trained], [s["loss"] for s in trained], label=label, lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    if ax.lines:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> None:
    """`python -m page4d.experiments.ablation_report BEFORE AFTER --arms bce ...`: for two ablation
    run folders that differ in one setting, each arm's paired difference AFTER - BEFORE per seed (95% CI)."""
    import argparse

    from page4d.records import read_json
    from page4d.report.tables import format_table

    parser = argparse.ArgumentParser(
        prog="python -m page4d.experiments.ablation_report", description=main.__doc__
    )
    parser.add_argument("before", help="run folder (its metrics.json) of the reference setting")
    parser.add_argument("after", help="run folder of the changed setting (same seeds, same clips)")
    parser.add_argument("--arms", nargs="+", required=True, help="arms to compare (in both runs)")
    parser.add_argument("--geometry", action="store_true", help="depth / camera metrics instead of masks")
    args = parser.parse_args(argv)
    before = read_json(Path(args.before) / "metrics.json")
    after = read_json(Path(args.after) / "metrics.json")
    keys = tuple(GEOMETRY_COLUMNS) if args.geometry else PAIRED_KEYS
    try:
        pairing = [seed_pairing(before, after, arm) for arm in args.arms]
    except KeyError as err:
        parser.exit(2, f"page4d.experiments.ablation_report: {err.args[0]}\n")
    unpaired = [p for p in pairing if not p["paired"]]
    if unpaired:
        parser.exit(2, "page4d.experiments.ablation_report: " + "; ".join(map(pairing_text, unpaired)) + "\n")
    rows = across_runs_rows(before, after, args.arms, keys)
    print(f"paired by seed, {Path(args.after).name} - {Path(args.before).name} (mean [95% CI]):")
    for p in pairing:
        print(pairing_text(p))
    print(format_table(rows))
    families = ("depth", "camera") if args.geometry else ("mask",)
    for label, metrics in ((Path(args.before).name, before), (Path(args.after).name, after)):
        arms = {a: e for a, e in metrics["arms"].items() if a in args.arms}
        for line in coverage_notes(arms, families, f"{label}: ") + arm_notes(arms, f"{label}: "):
            print(line)


if __name__ == "__main__":
    main()
