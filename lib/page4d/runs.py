"""Run folders: where the repository is, how a new run folder is named, and reading finished ones.

Every path a notebook or the sweep runner writes is resolved from one root (the repository, found by
`repo_root`), never from the kernel's working directory, so notebooks run from any folder.

    run = resolve_output_dir("", "extract")          # <repo>/outputs/20260101-120000_extract/
    runs = find_runs(outputs_root())                 # every folder below with a metrics.json
    rows = comparison_rows(runs)                     # one row per (run, arm) for a table / bar plot
    print(format_table(rows))                        # plain text, stable for nbval
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from page4d.records import atomic_write_text

OUTPUTS_ENV = "PAGE4D_OUTPUTS"  # overrides <repo>/outputs (tests point it at a temporary folder)
METRICS_FILE = "metrics.json"
DONE_FILE = "DONE.json"
FAILED_FILE = "FAILED.json"
RUN_NAME_TIME_FORMAT = "%Y%m%d-%H%M%S"


def _is_repo_root(path: Path) -> bool:
    return (path / "pyproject.toml").is_file() and (path / "lib" / "page4d").is_dir()


def repo_root(start: str | Path | None = None) -> Path:
    """The repository root: the nearest folder above `start` (default: this file, then the working
    directory) holding `pyproject.toml` and `lib/page4d/`. Raises when there is none."""
    candidates = [Path(start)] if start is not None else [Path(__file__), Path.cwd()]
    for c in candidates:
        c = c.resolve()
        for p in (c, *c.parents):
            if _is_repo_root(p):
                return p
    raise FileNotFoundError(
        f"no page4d repository (pyproject.toml + lib/page4d/) above {', '.join(map(str, candidates))}"
    )


def outputs_root() -> Path:
    """`$PAGE4D_OUTPUTS` if set, else `<repo>/outputs` (git-ignored)."""
    env = os.environ.get(OUTPUTS_ENV)
    return Path(env).resolve() if env else repo_root() / "outputs"


def resolve_path(path: str | Path) -> Path:
    """An absolute path; a relative one is taken relative to the repository root (not the cwd)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (repo_root() / p).resolve()


def new_run_dir(label: str, parent: str | Path | None = None, now: float | None = None) -> Path:
    """Create and return `<parent>/<YYYYmmdd-HHMMSS>_<label>` (parent defaults to `outputs_root()`).

    The folder is created exclusively: a second run started in the same second gets a `-2`, `-3`
    ... suffix instead of sharing (and overwriting) the first one's folder.
    """
    if not label or any(c in label for c in '/\\:*?"<>|'):
        raise ValueError(f"run label must be a non-empty plain name, got {label!r}")
    base = Path(parent) if parent is not None else outputs_root()
    base.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime(RUN_NAME_TIME_FORMAT, time.localtime(now))
    for n in range(1, 1000):
        path = base / (f"{stamp}_{label}" if n == 1 else f"{stamp}_{label}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a new run folder for {label!r} in {base}")


def resolve_output_dir(output_dir: str | Path, label: str) -> Path:
    """A notebook's `output_dir` parameter: empty = a new run folder under `outputs_root()`,
    otherwise that folder (relative = from the repository root), created if absent."""
    if not str(output_dir):
        return new_run_dir(label)
    path = resolve_path(output_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def display_path(path: str | Path) -> str:
    """A path as a reader should see it in a committed notebook: relative to the repository root when
    inside it (no machine-specific prefix), else as given."""
    p, root = Path(path).resolve(), repo_root()
    return p.relative_to(root).as_posix() if p.is_relative_to(root) else str(path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy / torch scalars and arrays
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def write_json(path: str | Path, obj: Any) -> Path:
    """Write `obj` as indented JSON atomically (a reader never sees half a file); paths, numpy and torch
    values are converted. The write itself is `page4d.records`' (temp file, fsync, rename)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


# --------------------------------------------------------------------------------------------------
# reading finished runs
# --------------------------------------------------------------------------------------------------
@dataclass
class RunRecord:
    """One run folder with a metrics.json. `name` is its path relative to the scanned root."""

    path: Path
    name: str
    metrics: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunScan:
    runs: list[RunRecord]
    skipped: list[tuple[Path, str]]  # folders with an unreadable metrics.json, and why


def find_runs(root: str | Path) -> RunScan:
    """Every folder below `root` (any depth, so sweep cells count) holding a `metrics.json`, sorted
    by relative path. Unreadable or non-object files are reported in `skipped`, never fatal."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"runs root {root} is not a folder")
    runs, skipped = [], []
    for metrics_path in sorted(root.rglob(METRICS_FILE)):
        folder = metrics_path.parent
        if any(part.startswith(".") for part in folder.relative_to(root).parts):
            continue
        try:
            metrics = read_json(metrics_path)
        except (OSError, json.JSONDecodeError) as exc:
            skipped.append((folder, f"{type(exc).__name__}: {exc}"))
            continue
        if not isinstance(metrics, dict):
            skipped.append((folder, f"metrics.json holds a {type(metrics).__name__}, not an object"))
            continue
        params = metrics.get("params")
        if not isinstance(params, dict) and (folder / DONE_FILE).is_file():
            try:
                params = read_json(folder / DONE_FILE).get("params")
            except (OSError, json.JSONDecodeError):
                params = None
        name = folder.relative_to(root).as_posix() or "."
        runs.append(RunRecord(folder, name, metrics, params if isinstance(params, dict) else {}))
    return RunScan(runs, skipped)


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
