"""The README's main job: the mask-supervision ablation (notebook 03) on built-in synthetic data.

Executes `notebooks/03_ablation_mask_supervision.ipynb` with papermill into a new run folder under
`outputs/` (the executed notebook, metrics.json, figures, per-run checkpoints) and prints the summary.
No external data or weights: the notebook generates its synthetic scene.

    python -m page4d.main                      # default parameters
    python -m page4d.main -p steps 50 -p seeds 0,1,2 -p train_root ../shared/data/mv_scene
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from page4d import ablation, runs
from page4d.sweep import SweepError, notebook_parameters, parse_value

NOTEBOOK = "notebooks/03_ablation_mask_supervision.ipynb"


def run(overrides: dict[str, str], out_dir: Path | None = None, quiet: bool = False) -> dict:
    """Validate the overrides against the notebook's parameters, execute it, return metrics.json."""
    import papermill

    notebook = runs.repo_root() / NOTEBOOK
    declared = notebook_parameters(notebook)
    unknown = sorted(set(overrides) - set(declared))
    if unknown:
        raise SweepError(
            f"unknown parameter(s) {unknown} for {notebook.name}; it declares {sorted(declared)}"
        )
    params = {name: parse_value(text, declared[name]) for name, text in overrides.items()}
    run_dir = out_dir if out_dir is not None else runs.new_run_dir("ablation")
    run_dir.mkdir(parents=True, exist_ok=True)
    params["output_dir"] = str(run_dir.resolve())
    t0 = time.perf_counter()
    papermill.execute_notebook(
        str(notebook),
        str(run_dir / notebook.name),
        parameters=params,
        cwd=str(runs.repo_root()),
        progress_bar=not quiet,
    )
    metrics = runs.read_json(run_dir / "metrics.json")
    print(f"\nablation finished in {time.perf_counter() - t0:.0f} s; run folder: {run_dir}")
    used = metrics["params"]
    print(
        f"train times {used['train_times_used']}  |  held-out eval times {used['eval_times_used']}  |  "
        f"seeds {list(used['seeds'])}  |  steps {used['steps']}"
    )
    print(runs.format_table(ablation.summary_rows(metrics)))
    print("\nheld-out mask IoU per view:")
    print(runs.format_table(ablation.per_view_rows(metrics)))
    return metrics


def main(argv: list[str] | None = None) -> None:
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
        run(dict(args.param), args.out, args.quiet)
    except SweepError as err:
        parser.error(str(err))


if __name__ == "__main__":
    main()
