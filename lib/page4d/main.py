"""The README's main job: the mask-supervision ablation (notebook 03) on built-in synthetic data.

Executes `notebooks/03_ablation_mask_supervision.ipynb` with the project's one notebook runner into a
new run folder under `outputs/` (the executed notebook, metrics.json, figures, per-run checkpoints) and
prints the mask table with its floors, the geometry table, and the paired differences against `none`
(`untrained` when geometry is off).
No external data or weights: the notebook generates its synthetic scene. A folder that already holds a
finished run is refused (runs are records); the exit status is non-zero when the notebook or any
(arm, seed) failed.

    python -m page4d.main                      # default parameters
    python -m page4d.main -p steps 50 -p seeds 0,1,2 -p train_root ../shared/data/mv_scene
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from page4d import records
from page4d.experiments import ablation_report
from page4d.notebook.params import ParameterError, parse_overrides
from page4d.notebook.runner import FinishedRunError, RunLocked, execute_notebook

NOTEBOOK = "notebooks/03_ablation_mask_supervision.ipynb"


def run(overrides: dict[str, str], out_dir: Path | None = None, quiet: bool = False) -> dict:
    """Validate the overrides against the notebook's parameters, execute it, return metrics.json."""
    notebook = records.repo_root() / NOTEBOOK
    params = parse_overrides(notebook, overrides)
    run_dir = out_dir if out_dir is not None else records.new_run_dir("ablation")
    t0 = time.perf_counter()
    record = execute_notebook(notebook, run_dir, params, pass_output_dir=True, progress=not quiet)
    if record["status"] != "ok":
        raise RuntimeError(f"notebook 03 failed ({record.get('error')}); see {Path(run_dir) / 'FAILED.json'}")
    metrics = records.read_json(Path(run_dir) / records.METRICS_FILE)
    print(f"\nablation finished in {time.perf_counter() - t0:.0f} s; run folder: {run_dir}")
    print(report_text(metrics))
    return metrics


def report_text(metrics: dict) -> str:
    """What the main job prints: setup line, mask table with floors, geometry table, paired differences;
    each table with its `n` (frames / clips scored of evaluated) and footnotes (dropped clips and why,
    deterministic arms)."""
    used = metrics["params"]
    lines = [
        f"train times {used['train_times_used']}  |  held-out eval times {used['eval_times_used']}  |  "
        f"seeds {list(used['seeds'])}  |  steps {used['steps']}  |  geometry {used['geometry']}",
        *metrics.get("notes", []),
        "",
        "held-out mask metrics (mean ±95% CI half-width from 3 seeds on, else per-seed values; "
        "n = frames with GT scored / evaluated):",
        ablation_report.mask_table(metrics),
    ]
    baseline = metrics["baseline"]
    for title, text in (
        (
            "held-out depth and cameras (n = clips scored / evaluated):",
            ablation_report.geometry_table(metrics),
        ),
        (
            f"paired difference arm - {baseline}, mask metrics (mean [95% CI]):",
            ablation_report.paired_table(metrics),
        ),
        (
            f"paired difference arm - {baseline}, geometry (mean [95% CI]):",
            ablation_report.paired_table(metrics, geometry=True),
        ),
    ):
        if text:  # geometry tables only when geometry trained; paired ones only with a baseline
            lines += ["", title, text]
    for failure in metrics.get("failed", []):
        lines.append(f"FAILED {failure['arm']} seed {failure['seed']}: {failure['error']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "-p",
        "--param",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="notebook parameter override (repeatable)",
    )
    parser.add_argument("--out", type=Path, default=None, help="run folder (default: a new one in outputs/)")
    parser.add_argument("--quiet", action="store_true", help="no papermill progress bar")
    args = parser.parse_args(argv)
    try:
        metrics = run(dict(args.param), args.out, args.quiet)
    except (ParameterError, FinishedRunError, RunLocked) as err:
        parser.error(str(err))
    return 1 if metrics.get("failed") else 0


if __name__ == "__main__":
    sys.exit(main())
