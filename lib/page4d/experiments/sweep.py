"""Parameter sweeps over a papermill notebook: one run folder per grid cell, resumable, failures recorded.

    python -m page4d.experiments.sweep notebooks/02_mask_overlays.ipynb --grid threshold=0.3,0.5 \\
        --grid seed=0,1 --out outputs/sweeps [--workers 2] [-p num_times 2] [--name overlays] [--retry-failed]

Before anything runs, every name is checked against the notebook's `parameters` cell
(`papermill.inspect_notebook`) and every value is parsed with the type the notebook declares
(`int`, `float`, `bool`, `str`; anything else as a Python literal). Each grid cell executes into
`OUT/<name>/<p1=v1,p2=v2>/` (its `output_dir` parameter points there when the notebook has one):
the executed notebook, whatever the notebook writes (metrics.json, figures) and a marker:

- `DONE.json`: the execution finished; `status` "ok" or "failed", params, wall time. A cell with
  DONE.json is never run again (so a killed sweep resumes where it stopped), except a failed one
  with `--retry-failed`, whose folder is first moved to `OUT/<name>/.attempts/`.
- `FAILED.json` (failed executions only): the error and the kernel's traceback; the partial output
  notebook stays beside it. Other cells keep running.
- `RUNNING.json` while it executes (pid, host); a leftover one from a dead process marks an
  interrupted cell, moved to `.attempts/` and run again.

A cell is claimed with the runner's lock (`page4d.notebook.runner.run_lock`, one atomic `flock` on
`OUT/<name>/.<cell>.lock`) before its state is read again, an earlier attempt moved aside and the notebook
executed: two sweeps over one grid never run (or move away) the same cell; the second one skips a cell
a live process holds ("running", saying so) or that finished meanwhile.

Each cell is executed by `page4d.notebook.runner` (the runner `page4d.main` uses too): kernel
`python3`, working directory = the notebook's folder, paths resolved from the repository root.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any
from urllib.parse import quote

from page4d.notebook.params import (
    ParameterError,
    format_value,
    notebook_parameters,
    parse_value,
    split_values,
)
from page4d.notebook.runner import (
    OUTPUT_DIR_PARAM,
    RunLocked,
    RunRefused,
    execute_notebook,
    run_lock,
    run_state,
)
from page4d.records import FINISH_MARKER, read_json, resolve_path, write_json
from page4d.report.tables import flat_metrics, format_table

SWEEP_FILE = "sweep.json"
ATTEMPTS_DIR = ".attempts"


class SweepError(ParameterError):
    """A sweep that must not start (bad grid, conflicting records)."""


def cell_id(assignment: dict[str, Any]) -> str:
    """Folder name of a grid cell: `name1=v1,name2=v2` in grid order; unsafe characters %-escaped."""
    parts = [f"{name}={quote(format_value(v), safe='.+-_:@[]')}" for name, v in assignment.items()]
    ident = ",".join(parts) or "default"
    if len(ident) > 200:
        import hashlib

        ident = ident[:180] + "~" + hashlib.sha1(ident.encode()).hexdigest()[:12]
    return ident


@dataclass
class Cell:
    id: str
    params: dict[str, Any]  # grid values + fixed values (not output_dir)
    dir: Path


@dataclass
class SweepPlan:
    notebook: Path
    name: str
    sweep_dir: Path
    grid: dict[str, list[Any]]
    fixed: dict[str, Any]
    cells: list[Cell]
    passes_output_dir: bool


def plan_sweep(
    notebook: str | Path,
    grid: list[str] | dict[str, list[str]],
    out: str | Path,
    fixed: list[tuple[str, str]] | dict[str, str] | None = None,
    name: str | None = None,
) -> SweepPlan:
    """Validate names and parse values; no side effects. `grid`: `["lr=0.1,0.01", ...]` or
    `{"lr": ["0.1", "0.01"]}`; `fixed`: `[("steps", "10")]` or a dict (values as text)."""
    notebook = resolve_path(notebook)
    declared = notebook_parameters(notebook)
    if isinstance(grid, dict):
        grid_items = [(k, list(v)) for k, v in grid.items()]
    else:
        grid_items = []
        for spec in grid:
            if "=" not in spec:
                raise SweepError(f"--grid expects name=v1,v2,..., got {spec!r}")
            key, values = spec.split("=", 1)
            grid_items.append((key.strip(), split_values(values)))
    fixed_items = list(fixed.items()) if isinstance(fixed, dict) else list(fixed or [])

    names = [k for k, _ in grid_items] + [k for k, _ in fixed_items]
    unknown = [k for k in names if k not in declared]
    if unknown:
        raise SweepError(
            f"unknown parameter(s) {unknown} for {notebook.name}; it declares: {', '.join(declared)}"
        )
    dupes = sorted({k for k in names if names.count(k) > 1})
    if dupes:
        raise SweepError(f"parameter(s) {dupes} given more than once (grid and -p together count)")
    if OUTPUT_DIR_PARAM in names:
        raise SweepError(f"{OUTPUT_DIR_PARAM} is set by the sweep runner (one folder per cell)")

    parsed_grid: dict[str, list[Any]] = {}
    for key, texts in grid_items:
        if not texts or any(t == "" for t in texts):
            raise SweepError(f"--grid {key}: empty value in {texts}")
        values = [parse_value(t, declared[key]) for t in texts]
        ids = [format_value(v) for v in values]
        if len(set(ids)) != len(ids):
            raise SweepError(f"--grid {key}: repeated value in {ids}")
        parsed_grid[key] = values
    parsed_fixed = {k: parse_value(t, declared[k]) for k, t in fixed_items}

    sweep_name = name or notebook.stem
    if not sweep_name or "/" in sweep_name or sweep_name.startswith("."):
        raise SweepError(f"sweep name must be a plain folder name, got {sweep_name!r}")
    sweep_dir = resolve_path(out) / sweep_name
    cells = []
    for combo in itertools.product(*parsed_grid.values()):
        assignment = dict(zip(parsed_grid, combo, strict=True))
        ident = cell_id(assignment)
        cells.append(Cell(ident, {**assignment, **parsed_fixed}, sweep_dir / ident))
    plan = SweepPlan(
        notebook, sweep_name, sweep_dir, parsed_grid, parsed_fixed, cells, OUTPUT_DIR_PARAM in declared
    )
    _check_finished_cells_agree(plan)
    return plan


def _check_finished_cells_agree(plan: SweepPlan) -> None:
    """A finished cell with other parameters (e.g. a different -p) must not be mistaken for this one."""
    for cell in plan.cells:
        done = cell.dir / FINISH_MARKER
        if done.is_file():
            recorded = {k: v for k, v in read_json(done).get("params", {}).items() if k != OUTPUT_DIR_PARAM}
            if recorded != _jsonable(cell.params):
                raise SweepError(
                    f"{cell.dir} finished with parameters {recorded}, not {cell.params}; "
                    "use another --name or --out for a different sweep"
                )


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(params, default=str))


# --------------------------------------------------------------------------------------------------
# executing one cell
# --------------------------------------------------------------------------------------------------
def _move_aside(cell_dir: Path, sweep_dir: Path, why: str) -> Path:
    """Keep an earlier attempt's folder under `.attempts/<cell>/<why>-N` (nothing is deleted)."""
    base = sweep_dir / ATTEMPTS_DIR / cell_dir.name
    base.mkdir(parents=True, exist_ok=True)
    n = 1 + sum(1 for p in base.iterdir() if p.name.startswith(why + "-"))
    target = base / f"{why}-{n}"
    shutil.move(str(cell_dir), str(target))
    return target


def run_cell(
    notebook: str,
    cell_dir: str,
    params: dict[str, Any],
    passes_output_dir: bool,
    timeout: float | None,
    retry_failed: bool,
) -> dict[str, Any]:
    """Claim one cell (`run_lock`), then decide under the lock: skip it when it finished meanwhile, move an
    earlier failed / interrupted attempt aside, execute. Returns the DONE record, with `moved` (the kept
    attempt) when one was moved, or `{"status": "running", "holder": ...}` when a live process holds it."""
    cell, sweep_dir = Path(cell_dir), Path(cell_dir).parent
    try:
        with run_lock(cell):
            state = run_state(cell)
            if state == "running":  # a runner without the lock (older code) is still at it
                return {"status": "running", "holder": f"{cell / 'RUNNING.json'} names a live process"}
            if state == "ok" or (state == "failed" and not retry_failed):
                return {**read_json(cell / FINISH_MARKER), "finished_meanwhile": True}
            moved = _move_aside(cell, sweep_dir, state) if state in ("failed", "interrupted") else None
            record = execute_notebook(notebook, cell, params, passes_output_dir, timeout, locked=True)
            return {**record, "moved": moved and str(moved.relative_to(sweep_dir)), "moved_state": state}
    except RunLocked as exc:
        return {"status": "running", "holder": str(exc)}
    except RunRefused as exc:  # the notebook refused the folder: left as it was, not finished
        return {"status": "refused", "error": str(exc)}


# --------------------------------------------------------------------------------------------------
# the sweep
# --------------------------------------------------------------------------------------------------
@dataclass
class CellResult:
    cell: Cell
    status: str  # ok, failed, skipped (finished earlier), running (held by another process), refused
    wall_s: float | None = None
    error: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


def _finished_result(cell: Cell, status: str) -> CellResult:
    done = read_json(cell.dir / FINISH_MARKER)
    return CellResult(cell, status, done.get("wall_s"), done.get("error"), flat_metrics(cell.dir))


def _scan(plan: SweepPlan, retry_failed: bool, log) -> tuple[dict[str, CellResult], list[Cell]]:
    """Results of the cells that need no run (a quick look without the lock), and the cells to claim."""
    results: dict[str, CellResult] = {}
    todo: list[Cell] = []
    for cell in plan.cells:
        state = run_state(cell.dir)
        if state == "ok" or (state == "failed" and not retry_failed):
            results[cell.id] = _finished_result(cell, "skipped" if state == "ok" else "failed (earlier)")
            log(f"skip  {cell.id}: finished earlier ({state})")
        elif state == "running":
            results[cell.id] = CellResult(cell, "running")
            log(f"skip  {cell.id}: another live process is running it")
        else:
            todo.append(cell)
    return results, todo


def _cell_result(cell: Cell, record: dict[str, Any], log) -> CellResult:
    """What one claimed cell came to, logged."""
    if record["status"] == "running":
        log(f"skip  {cell.id}: {record['holder']}")
        return CellResult(cell, "running")
    if record["status"] == "refused":
        log(f"refused {cell.id}: {record['error']}")
        return CellResult(cell, "refused", error=record["error"])
    if record.get("finished_meanwhile"):
        state = record["status"]
        log(f"skip  {cell.id}: finished meanwhile by another process ({state})")
        return _finished_result(cell, "skipped" if state == "ok" else "failed (earlier)")
    if record.get("moved"):
        log(f"move  {cell.id}: {record['moved_state']} attempt kept in {record['moved']}")
    res = CellResult(
        cell, record["status"], record.get("wall_s"), record.get("error"), flat_metrics(cell.dir)
    )
    extra = f": {res.error}" if res.error else ""
    log(f"{res.status:<5} {cell.id} ({res.wall_s:.1f} s){extra}")
    return res


def run_sweep(
    plan: SweepPlan,
    workers: int = 1,
    retry_failed: bool = False,
    timeout: float | None = None,
    log=print,
) -> list[CellResult]:
    """Execute every cell that has not finished; returns one result per cell in grid order. Each cell is
    claimed under its lock (`run_cell`), so sweeps sharing a folder never run one cell twice."""
    plan.sweep_dir.mkdir(parents=True, exist_ok=True)
    if not (plan.sweep_dir / SWEEP_FILE).is_file():
        write_json(
            plan.sweep_dir / SWEEP_FILE,
            {"notebook": str(plan.notebook), "grid": plan.grid, "fixed": plan.fixed},
        )
    results, todo = _scan(plan, retry_failed, log)
    args = [
        (str(plan.notebook), str(c.dir), c.params, plan.passes_output_dir, timeout, retry_failed)
        for c in todo
    ]
    if workers <= 1 or len(todo) <= 1:
        for cell, a in zip(todo, args, strict=True):
            log(f"run   {cell.id}")
            results[cell.id] = _cell_result(cell, run_cell(*a), log)
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            futures: dict[Future, Cell] = {}
            for cell, a in zip(todo, args, strict=True):
                log(f"run   {cell.id}")
                futures[pool.submit(run_cell, *a)] = cell
            for fut in as_completed(futures):
                results[futures[fut].id] = _cell_result(futures[fut], fut.result(), log)
    return [results[c.id] for c in plan.cells]


SUMMARY_FIRST = ("mask_ap", "mask_iou", "mask_jf", "ate", "depth_abs_rel")


def summary_rows(results: list[CellResult], max_metrics: int = 6) -> list[dict[str, Any]]:
    """One row per cell: status, wall time and up to `max_metrics` metrics, the headline ones first
    (`SUMMARY_FIRST`, for every arm of an ablation: `bce:mask_ap`, ...), then the others in file order."""
    names: list[str] = []
    for r in results:
        names += [k for k in r.metrics if k not in names]

    def rank(name: str) -> int:
        metric = name.rsplit(":", 1)[-1]
        return SUMMARY_FIRST.index(metric) if metric in SUMMARY_FIRST else len(SUMMARY_FIRST)

    names = sorted(names, key=rank)[:max_metrics]
    return [
        {"cell": r.cell.id, "status": r.status, "wall_s": r.wall_s, **{k: r.metrics.get(k) for k in names}}
        for r in results
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m page4d.experiments.sweep", description=__doc__.split("\n")[0])
    p.add_argument("notebook", help="the parameterised notebook (papermill 'parameters' cell)")
    p.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2", help="a swept parameter")
    p.add_argument(
        "-p",
        "--param",
        action="append",
        nargs=2,
        default=[],
        metavar=("NAME", "VALUE"),
        help="fixed for every cell",
    )
    p.add_argument("--out", required=True, help="parent folder; cells go to OUT/<name>/<cell>/")
    p.add_argument("--name", default=None, help="sweep folder name (default: the notebook's stem)")
    p.add_argument("--workers", type=int, default=1, help="notebooks executed at the same time")
    p.add_argument("--retry-failed", action="store_true", help="run failed cells again (old attempt kept)")
    p.add_argument("--timeout", type=float, default=None, help="seconds allowed per notebook cell")
    a = p.parse_args(argv)
    if a.workers < 1:
        p.error("--workers must be >= 1")
    try:
        plan = plan_sweep(a.notebook, a.grid, a.out, [tuple(x) for x in a.param], a.name)
    except ParameterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"sweep {plan.name}: {len(plan.cells)} cell(s) of {plan.notebook.name} -> {plan.sweep_dir}",
        flush=True,
    )
    results = run_sweep(plan, a.workers, a.retry_failed, a.timeout, log=lambda s: print(s, flush=True))
    rows = summary_rows(results)
    write_json(plan.sweep_dir / "summary.json", rows)
    print(format_table(rows, floatfmt=".4g"))
    return 1 if any(r.status.startswith(("failed", "refused")) for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
