"""Tables of run metrics: one reader of a metrics.json's numbers, one row per (run, arm), and the
plain-text formatter the command line prints.

    rows = comparison_rows(find_runs(outputs_root()).runs)   # one row per (run, arm)
    print(format_table(rows))                                # plain text, stable for nbval
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from page4d.records import METRICS_FILE, RunRecord, read_json


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
