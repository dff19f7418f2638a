"""Tables of run metrics: one reader of a metrics.json's numbers, one row per (run, arm), the
plain-text formatter the command line prints, and pandas DataFrames for notebooks.

    rows = comparison_rows(find_runs(outputs_root()).runs)   # one row per (run, arm)
    print(format_table(rows))                                # plain text: the command line

    frame = comparison_frame(find_runs(outputs_root()).runs)  # DataFrame indexed by (run, arm)
    display(styled(frame))                                    # HTML in JupyterLab; sort/filter `frame`

DataFrames keep numbers numeric (a researcher sorts and filters them): a metric's mean is one float
column, the half-width of its 95% CI another (`"<metric> ±"`), a paired difference's CI bounds two more
(`"<metric> lo"`, `"<metric> hi"`); the trivial floors of an ablation are rows of kind "floor" after
its arms. `styled` only formats for reading (digits, ±, floors in grey italics, footnotes as a caption).
"""

from __future__ import annotations

import hashlib
import html
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from page4d.records import METRICS_FILE, RunRecord, read_json

if TYPE_CHECKING:
    import pandas as pd
    from pandas.io.formats.style import Styler


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def arm_metrics(metrics: dict[str, Any]) -> list[tuple[str, dict[str, float]]]:
    """The one reader of a metrics.json's numbers: `[(arm, {metric: value})]`.

    The ablation's `{"arms": {arm: {metric: value, ..., "per_seed": [...]}}, "params": {...}}` gives
    one entry per arm (its means); any other metrics.json one entry, arm "-", with its top-level
    numbers. Non-numeric, boolean and non-finite values are left out (a table shows them as blanks).
    """
    arms = metrics.get("arms")
    if isinstance(arms, dict):
        items = [(str(arm), vals) for arm, vals in arms.items() if isinstance(vals, dict)]
    else:
        items = [("-", metrics)]
    return [
        (arm, {k: float(v) for k, v in vals.items() if _is_number(v) and math.isfinite(v)})
        for arm, vals in items
    ]


def flat_metrics(run_dir: str | Path) -> dict[str, Any]:
    """A run folder's metrics.json as one flat row (the sweep summary): `<arm>:<metric>` for an
    ablation, the plain names otherwise; `{}` without metrics.json, and `metrics_error` (instead of
    silently dropping the numbers) when the file cannot be read."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return {}
    try:
        data = read_json(path)
    except ValueError as err:
        return {"metrics_error": f"unreadable {path.name}: {err}"}
    if not isinstance(data, dict):
        return {"metrics_error": f"{path.name} holds a {type(data).__name__}, not an object"}
    return {
        (key if arm == "-" else f"{arm}:{key}"): value
        for arm, values in arm_metrics(data)
        for key, value in values.items()
    }


def comparison_rows(runs: list[RunRecord]) -> list[dict[str, Any]]:
    """One row per (run, arm): `{"run", "arm", <metric>: float, ..., "seeds": n}` (see `arm_metrics`)."""
    rows = []
    for run in runs:
        arms = run.metrics.get("arms") if isinstance(run.metrics.get("arms"), dict) else {}
        for arm, values in arm_metrics(run.metrics):
            row: dict[str, Any] = {"run": run.name, "arm": arm, **values}
            per_seed = arms.get(arm, {}).get("per_seed") if arm in arms else None
            if isinstance(per_seed, list):
                row["seeds"] = len(per_seed)
            rows.append(row)
    return rows


def table_columns(rows: list[dict[str, Any]], preferred: list[str] | None = None) -> list[str]:
    """Columns for a comparison table: run, arm, the metrics (`metric_columns`), seeds when known."""
    seeds = ["seeds"] if any("seeds" in r for r in rows) else []
    return ["run", "arm", *metric_columns(rows, preferred), *seeds]


def metric_columns(rows: list[dict[str, Any]], preferred: list[str] | None = None) -> list[str]:
    """Metric names present in `rows`: `preferred` first (in that order, when present), then the rest
    sorted; "run", "arm" and "seeds" are not metrics."""
    present = {k for r in rows for k in r if k not in ("run", "arm", "seeds")}
    first = [m for m in preferred or [] if m in present]
    return first + sorted(present - set(first))


def format_table(
    rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None, floatfmt: str = ".3f"
) -> str:
    """A plain-text table (stable text for nbval): floats with `floatfmt`, None as "-"."""
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))

    def cell(x: Any) -> str:
        if x is None or (isinstance(x, float) and math.isnan(x)):
            return "-"
        if isinstance(x, float):
            return format(x, floatfmt)
        return str(x)

    body = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(str(c))] + [len(b[i]) for b in body]) for i, c in enumerate(columns)]
    numeric = [all(_is_numberlike(r.get(c)) for r in rows) for c in columns]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            (s.rjust(w) if num else s.ljust(w)) for s, w, num in zip(cells, widths, numeric, strict=True)
        ).rstrip()

    out = [line([str(c) for c in columns]), line(["-" * w for w in widths])]
    out += [line(b) for b in body]
    return "\n".join(out)


def _is_numberlike(x: Any) -> bool:
    return x is None or (isinstance(x, (int, float)) and not isinstance(x, bool))


# --------------------------------------------------------------------------------------------------
# DataFrames (notebooks)
# --------------------------------------------------------------------------------------------------
PM = " ±"  # suffix of the column holding a metric's 95% CI half-width
COVERAGE_UNITS = {"mask": ("frames", "frames_of"), "depth": ("clips", "of"), "camera": ("clips", "of")}


def _labels(
    columns: Mapping[str, str] | Sequence[str] | None,
    present: Iterable[str],
    names: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """{metric key: column label} in display order: `columns` ({key: label} or keys) where present,
    else every present key sorted; `names` labels keys that `columns` does not."""
    present = list(present)
    if columns is None:
        columns = sorted(present)
    labels = dict(columns) if isinstance(columns, Mapping) else {k: (names or {}).get(k, k) for k in columns}
    return {k: v for k, v in labels.items() if k in present}


def _count_columns(families: Sequence[str]) -> dict[str, tuple[str, str]]:
    """{family: (scored column, evaluated column)}: "n" / "of" for one family, "n depth" / "of depth" ...
    for several."""
    return {f: ("n", "of") if len(families) == 1 else (f"n {f}", f"of {f}") for f in families}


def _coverage(entry: dict[str, Any], family: str, names: tuple[str, str] = ("n", "of")) -> dict[str, int]:
    """The fewest scored (over the seeds) and the evaluated frames or clips of a metric family."""
    cov = (entry.get("coverage") or {}).get(family)
    if not cov:
        return {}
    unit, total = COVERAGE_UNITS[family]
    counts = cov.get(unit) or []
    return {names[0]: min(counts), names[1]: cov.get(total)} if counts else {}


def _arm_records(metrics: dict[str, Any], run: str | None, coverage: Sequence[str]) -> list[dict[str, Any]]:
    """One record per arm: its metric means, `<key> ±` (95% CI half-width) where the arm has a CI, seeds,
    deterministic, and the counts of the `coverage` families (`_count_columns`)."""
    arms = metrics.get("arms") if isinstance(metrics.get("arms"), dict) else {}
    records = []
    for arm, values in arm_metrics(metrics):
        rec: dict[str, Any] = {"run": run, "arm": arm, "kind": "arm", **values}
        entry = arms.get(arm) if isinstance(arms.get(arm), dict) else {}
        if isinstance(entry.get("per_seed"), list):
            rec["seeds"] = len(entry["per_seed"])
            rec["deterministic"] = bool(entry.get("deterministic"))
        for key in values if not entry.get("deterministic") else ():  # one value: no spread to show
            ci = entry.get(f"{key}_ci95")
            if isinstance(ci, list) and len(ci) == 2 and all(_is_number(x) for x in ci):
                rec[key + PM] = (ci[1] - ci[0]) / 2
        for family, names in _count_columns(coverage).items():
            rec.update(_coverage(entry, family, names))
        records.append(rec)
    return records


def _floor_records(metrics: dict[str, Any], run: str | None, coverage: Sequence[str]) -> list[dict[str, Any]]:
    """An ablation's trivial floors ("floor: all dynamic", ...), scored by the same code as its arms."""
    floors = metrics.get("floors") if isinstance(metrics.get("floors"), dict) else {}
    arms = metrics.get("arms") if isinstance(metrics.get("arms"), dict) else {}
    frames_of = next((_coverage(e, "mask").get("of") for e in arms.values() if isinstance(e, dict)), None)
    records = []
    for name, scores in floors.items():
        if not isinstance(scores, dict):
            continue
        rec: dict[str, Any] = {"run": run, "arm": f"floor: {name.replace('_', ' ')}", "kind": "floor"}
        rec.update({k: float(v) for k, v in scores.items() if _is_number(v) and k.startswith("mask_")})
        rec.pop("mask_frames", None)
        names = _count_columns(coverage).get("mask")
        if names and _is_number(scores.get("mask_frames")):
            rec.update({names[0]: int(scores["mask_frames"]), names[1]: frames_of})
        records.append(rec)
    camera = metrics.get("camera_floor")
    if isinstance(camera, dict) and any(_is_number(v) for v in camera.values()):
        rec = {"run": run, "arm": "floor: identity cameras", "kind": "floor"}
        rec.update({k: float(v) for k, v in camera.items() if _is_number(v)})
        records.append(rec)
    return records


def _frame(
    records: list[dict[str, Any]],
    labels: dict[str, str],
    index: list[str],
    kind: bool = False,
    counts: Sequence[str] = (),
) -> pd.DataFrame:
    """The records as a DataFrame: `index`, then kind (with floors, or always with `kind`), seeds,
    deterministic (only when an arm is), the `counts` columns, then each metric with its ± column;
    metrics renamed by `labels`. A floor without any of these metrics is left out."""
    import pandas as pd

    df = pd.DataFrame.from_records(records) if records else pd.DataFrame(columns=[*index, "kind"])
    body = [c for k in labels for c in (k, k + PM) if c in df.columns]
    if body:
        df = df[(df["kind"] != "floor") | df[body].notna().any(axis=1)]
    lead = [c for c in ("kind", "seeds", "deterministic", *counts) if c in df.columns]
    if not kind and not (df["kind"] == "floor").any():
        lead.remove("kind")
    if "deterministic" in df.columns and not df["deterministic"].fillna(False).astype(bool).any():
        lead.remove("deterministic")
    df = df.set_index(index)[lead + body]
    for c in ("seeds", *counts):
        if c in df.columns:
            df[c] = df[c].astype("Int64")
    if "deterministic" in df.columns:
        df["deterministic"] = df["deterministic"].astype("boolean")
    return df.rename(columns={**labels, **{k + PM: v + PM for k, v in labels.items()}})


def arm_frame(
    metrics: dict[str, Any],
    columns: Mapping[str, str] | Sequence[str] | None = None,
    coverage: str | Sequence[str] = (),
    floors: bool = True,
    labels: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """One metrics.json as a DataFrame indexed by arm (`arm_metrics`: an ablation's arms, or "-"): a float
    column per metric (`columns`: {key: label} or keys, in that order, `labels` naming keys; None: all,
    sorted), `<label> ±` beside it when some arm has a 95% CI, `seeds` and `deterministic` for an
    ablation, the scored / evaluated frames or clips (fewest over the seeds) of the `coverage` families
    ("mask", "depth", "camera": `n` / `of` for one, `n depth` / `of depth` ... for several), and with
    `floors` the trivial floors as rows of kind "floor" after the arms (where they have a value), the
    GT dynamic share in `df.attrs["notes"]` (`styled` shows it under the table)."""
    families = (coverage,) if isinstance(coverage, str) else tuple(coverage)
    counts = [c for pair in _count_columns(families).values() for c in pair]
    floor_records = _floor_records(metrics, None, families) if floors else []
    if columns is not None:  # a floor row only where it has one of the columns asked for
        wanted = set(columns)
        floor_records = [r for r in floor_records if wanted & set(r)]
    records = _arm_records(metrics, None, families) + floor_records
    present = {k for r in records for k in r} - {"run", "arm", "kind", "seeds", "deterministic", *counts}
    names = _labels(columns, (k for k in present if not k.endswith(PM)), labels)
    df = _frame([{k: v for k, v in r.items() if k != "run"} for r in records], names, ["arm"], counts=counts)
    shares = [
        f.get("gt_dynamic_share") for f in (metrics.get("floors") or {}).values() if isinstance(f, dict)
    ]
    if floors and shares and _is_number(shares[0]):
        df.attrs["notes"] = [f"GT dynamic share {shares[0]:.3f}"]
    return df


def comparison_frame(
    runs: list[RunRecord], preferred: list[str] | None = None, floors: bool = True
) -> pd.DataFrame:
    """`comparison_rows` as one DataFrame indexed by (run, arm): `kind` ("arm", or "floor" for each
    ablation's floors, after its arms), `seeds`, then the metrics in `metric_columns` order (`preferred`
    first), each with its `<metric> ±` column when a run has a CI."""
    records = []
    for run in runs:
        records += _arm_records(run.metrics, run.name, ())
        records += _floor_records(run.metrics, run.name, ()) if floors else []
    metric_rows = [{k: v for k, v in r.items() if not k.endswith(PM)} for r in records]
    names = [c for c in metric_columns(metric_rows, preferred) if c not in ("kind", "deterministic")]
    return _frame(records, {k: k for k in names}, ["run", "arm"], kind=True)


def paired_frame(
    metrics: dict[str, Any],
    columns: Mapping[str, str] | Sequence[str],
    baseline: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """An ablation's paired differences `arm - baseline` (default: metrics["baseline"], else "none"),
    one row per paired arm, indexed "arm - <baseline>": `seeds paired` (fewest over the metrics), and per
    metric (`columns`: {key: label} or keys, `labels` naming keys) its mean difference and the 95% CI's
    bounds (`<label> lo`, `<label> hi`; missing below 3 seeds and between two deterministic arms)."""
    import pandas as pd

    baseline = baseline or metrics.get("baseline", "none")
    labels = _labels(columns, list(columns), labels)
    records = []
    for arm, entry in (metrics.get("arms") or {}).items():
        paired = entry.get(f"paired_vs_{baseline}") if isinstance(entry, dict) else None
        if not paired:
            continue
        rec: dict[str, Any] = {f"arm - {baseline}": arm}
        counts = [paired[k]["n"] for k in labels if k in paired and paired[k].get("n")]
        rec["seeds paired"] = min(counts) if counts else None
        for key, label in labels.items():
            d = paired.get(key) or {}
            rec[label] = d.get("mean")
            if d.get("ci95") is not None:
                rec[f"{label} lo"], rec[f"{label} hi"] = d["ci95"]
        records.append(rec)
    if not records:
        return pd.DataFrame(columns=["seeds paired", *labels.values()]).rename_axis(f"arm - {baseline}")
    df = pd.DataFrame.from_records(records).set_index(f"arm - {baseline}")
    df["seeds paired"] = df["seeds paired"].astype("Int64")
    order = ["seeds paired"] + [c for v in labels.values() for c in (v, f"{v} lo", f"{v} hi") if c in df]
    return df[order].astype({c: float for c in order[1:]})


def _as_number(x: Any) -> float | None:
    """A number, or text that is one ("0.553", "-" and "" as missing); None when it is not."""
    if x is None or (isinstance(x, str) and x.strip() in ("", "-")):
        return float("nan")
    if _is_number(x):
        return float(x)
    try:
        return float(x) if isinstance(x, str) else None
    except ValueError:
        return None


def to_dataframe(rows: Sequence[dict[str, Any]], index: str | Sequence[str] | None = None) -> pd.DataFrame:
    """Rows as `format_table` takes them, as a DataFrame: a column whose every value is a number (or a
    number written as text, "-" and None as missing) becomes a float column, the others stay as they
    are; `index` names the column(s) to index by."""
    import pandas as pd

    df = pd.DataFrame.from_records(list(rows))
    for c in df.columns:
        values = [_as_number(x) for x in df[c]]
        if all(v is not None for v in values) and not all(math.isnan(v) for v in values):
            df[c] = pd.array(values, dtype=float)
    return df.set_index(index if isinstance(index, str) or index is None else list(index)) if index else df


def styled(df: pd.DataFrame, digits: int = 3, notes: Sequence[str] = ()) -> Styler:
    """`df` formatted for reading (a Styler: display it, keep sorting/filtering `df`): floats with
    `digits`, ± columns as "±0.012" in grey, missing values blank, floors (kind "floor") in grey
    italics, numbers in tabular figures, `df.attrs["notes"]` and `notes` as footnotes under the table."""

    def number(x: Any) -> str:
        return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"

    def plus_minus(x: Any) -> str:
        return number(x) and f"±{number(x)}"

    notes = [*df.attrs.get("notes", []), *notes]
    floats = [c for c in df.columns if df[c].dtype.kind == "f"]
    pm = [c for c in floats if str(c).endswith(PM)]
    styler = df.style.format({c: plus_minus if c in pm else number for c in floats}, na_rep="")
    styler = styler.set_uuid(hashlib.sha1(df.to_csv().encode()).hexdigest()[:12])  # same table, same HTML
    if pm:
        styler = styler.set_properties(subset=pm, color="#666")
    if "kind" in df.columns:
        grey = "color: #666; font-style: italic"
        styler = styler.apply(lambda row: [grey if row["kind"] == "floor" else ""] * len(row), axis=1)
    cells = [("font-variant-numeric", "tabular-nums"), ("text-align", "right"), ("padding", "0 0.5em")]
    table_styles = [{"selector": "td", "props": cells}]
    if notes:
        styler = styler.set_caption("<br>".join(html.escape(n) for n in notes))
        table_styles.append(
            {"selector": "caption", "props": [("caption-side", "bottom"), ("text-align", "left")]}
        )
    return styler.set_table_styles(table_styles, overwrite=False)
