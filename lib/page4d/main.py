"""The README's main job: the mask-supervision ablation (notebook 03) on built-in synthetic data.

Executes `notebooks/03_ablation_mask_supervision.ipynb` with the project's one notebook runner into a
new run folder under `outputs/` (the executed notebook, metrics.json, figures, per-run checkpoints),
printing one line as each (arm, seed) starts and ends (its time and held-out scores); then prints the
mask table with its floors, the geometry table, the paired differences against `none` (`untrained` when
geometry is off), and a closing summary: the answer in one sentence, where the figures are, what to
run next.
No external data or weights: the notebook generates its synthetic scene. A folder that already holds a
finished run is refused (runs are records), and so is an interrupted one given other parameters (it
stays unfinished, so the right command resumes it); the exit status is non-zero when the notebook or
any (arm, seed) failed.

    python -m page4d.main                      # default parameters
    python -m page4d.main -p steps 50 -p seeds 0,1,2 -p train_root ../shared/data/mv_scene
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from page4d import records
from page4d.experiments import ablation, ablation_report
from page4d.notebook.params import ParameterError, parse_overrides
from page4d.notebook.runner import FinishedRunError, execute_notebook
from page4d.records import RunFolderTaken
from page4d.report.tables import format_table

NOTEBOOK = "notebooks/03_ablation_mask_supervision.ipynb"


def run(overrides: dict[str, str], out_dir: Path | None = None, quiet: bool = False) -> dict:
    """Validate the overrides against the notebook's parameters, execute it (passing on the ablation's
    progress lines as they come, unless `quiet`), print the tables and the closing summary, return
    metrics.json."""
    notebook = records.repo_root() / NOTEBOOK
    params = parse_overrides(notebook, overrides)
    run_dir = out_dir if out_dir is not None else records.new_run_dir("ablation")
    if not quiet:
        print(f"notebook 03 -> {run_dir}: one line per (arm, seed) as it starts and ends", flush=True)
    t0 = time.perf_counter()
    record = execute_notebook(notebook, run_dir, params, pass_output_dir=True, echo=None if quiet else echo)
    if record["status"] != "ok":
        raise RuntimeError(f"notebook 03 failed ({record.get('error')}); see {Path(run_dir) / 'FAILED.json'}")
    metrics = records.read_json(Path(run_dir) / records.METRICS_FILE)
    print(f"\nablation finished in {time.perf_counter() - t0:.0f} s; run folder: {run_dir}")
    print(report_text(metrics))
    print(closing_summary(metrics, Path(run_dir)))
    return metrics


def echo(line: str) -> None:
    """The notebook's output lines that `page4d.main` shows while it runs: the ablation's progress."""
    if line.startswith(ablation.PROGRESS_PREFIX):
        print(line, flush=True)


def report_text(metrics: dict) -> str:
    """What the main job prints: setup line, mask table with floors, geometry table, paired differences;
    each table with its `n` (frames / clips scored of evaluated) and footnotes (dropped clips and why,
    deterministic arms)."""
    used = metrics["params"]
    if "pool" in used:
        pool = used["pool"]
        data = (
            f"fine-tuned on {len(pool['train_seeds'])} generated dynamic videos, scored on "
            f"{len(pool['eval_seeds'])} others (moving pixels {pool['eval_moving_share']:.0%})"
        )
    else:
        data = f"train times {used['train_times_used']}  |  held-out eval times {used['eval_times_used']}"
    lines = [
        f"{data}  |  from {used['checkpoint'] or 'random init'}  |  seeds {list(used['seeds'])}  |  "
        f"steps {used['steps']}  |  geometry {used['geometry']}",
        *metrics.get("notes", []),
        "",
        "held-out mask metrics (mean ±95% CI half-width from 3 seeds on, else per-seed values; "
        "n = frames with GT scored / evaluated):",
        ablation_report.mask_table(metrics),
    ]
    sections = [
        (
            "held-out depth and cameras (n = clips scored / evaluated):",
            ablation_report.geometry_table(metrics),
        )
    ]
    for baseline in metrics.get("baselines", [metrics["baseline"]]):
        sections += [
            (
                f"paired difference arm - {baseline}, mask metrics (mean [95% CI]):",
                ablation_report.paired_table(metrics, baseline=baseline),
            ),
            (
                f"paired difference arm - {baseline}, geometry (mean [95% CI]):",
                ablation_report.paired_table(metrics, geometry=True, baseline=baseline),
            ),
        ]
    if ablation_report.geometry_trained(metrics):
        frames = ablation_report.camera_frame_rows(metrics)
        sections.append(
            (
                "every frame's camera rotation error vs the first frame (deg; median over seeds and clips):",
                format_table(frames),
            )
        )
    for title, text in sections:
        if text:  # geometry tables only when geometry trained; paired ones only with a baseline
            lines += ["", title, text]
    for failure in metrics.get("failed", []):
        lines.append(f"FAILED {failure['arm']} seed {failure['seed']}: {failure['error']}")
    return "\n".join(lines)


def _difference(d: dict | None) -> tuple[str, bool | None]:
    """A paired difference as text, and whether its 95% CI excludes 0 (None: no CI, too few seeds)."""
    if not d or d.get("mean") is None or not math.isfinite(d["mean"]):
        return "no paired difference", None
    if d.get("ci95") is None:
        return f"{d['mean']:+.3f} over {d['n']} seed(s), no CI below 3 seeds", None
    lo, hi = d["ci95"]
    return f"{d['mean']:+.3f}, 95% CI [{lo:+.3f}, {hi:+.3f}] over {d['n']} seeds", lo > 0 or hi < 0


VERDICTS = {True: "a real difference", False: "the CI includes 0: not settled", None: "too few seeds to tell"}


# (metric, name, +1 when higher is better): what the geometry answer reads
GEOMETRY_ANSWER = (("depth_abs_rel", "depth AbsRel", -1), ("rpe_rot", "RPE-r", -1), ("ate", "ATE", -1))


def geometry_answer(metrics: dict) -> str | None:
    """The seed's question in one sentence: against the control (`no_mask` when it ran: the same
    fine-tuning without the bias; else the baseline), which arm's paired 95% CI says better or worse
    depth AbsRel, RPE-r or ATE. None without geometry or without a control."""
    if not metrics["params"].get("geometry"):
        return None
    arms = metrics["arms"]
    control = ablation.NO_MASK if ablation.NO_MASK in arms else metrics["baseline"]
    found, unsettled = [], 0
    for arm, entry in arms.items():
        paired = entry.get(f"paired_vs_{control}")
        if not paired:
            continue
        for key, name, sign in GEOMETRY_ANSWER:
            text, real = _difference(paired.get(key))
            if real:
                better = sign * paired[key]["mean"] > 0
                size = _relative(paired[key]["mean"], arms[control].get(key))
                found.append(f"{arm} {'better' if better else 'worse'} {name} ({text}{size})")
            else:
                unsettled += 1
    if not found and not unsettled:
        return None
    head = f"Against {control}" + (
        " (the same fine-tuning without the attention bias)" if control == ablation.NO_MASK else ""
    )
    if not found:
        return (
            f"{head}, no arm changes depth AbsRel, RPE-r or ATE beyond its paired 95% CI ({unsettled} tests)."
        )
    return (
        f"{head}, the paired 95% CIs say: "
        + "; ".join(found)
        + f"; {unsettled} other differences are not settled."
    )


def _relative(difference: float, reference: float | None) -> str:
    """How large a difference is against the control's own value: a settled but tiny change says so."""
    if not isinstance(reference, float) or not math.isfinite(reference) or reference == 0:
        return ""
    return f"; {difference / abs(reference):+.1%} of the control's {reference:.3g}"


def answer(metrics: dict) -> str:
    """The experiment's answer: with geometry, `geometry_answer` (the seed's question, depth and
    cameras); then which arm has the best held-out mask AP, by how much over the baseline (paired, with
    its CI) and what that says."""
    geometry = geometry_answer(metrics)
    masks = mask_answer(metrics)
    return f"{geometry} {masks}" if geometry else masks


def mask_answer(metrics: dict) -> str:
    """Which arm has the best held-out mask AP, by how much over the baseline (paired, with its CI);
    with geometry, the same arm's ATE difference."""
    arms, baseline = metrics["arms"], metrics["baseline"]
    aps = {a: e.get("mask_ap") for a, e in arms.items() if isinstance(e.get("mask_ap"), float)}
    aps = {a: v for a, v in aps.items() if math.isfinite(v)}
    if not aps:
        return "no arm has a held-out mask AP (no GT masks on the evaluation frames?)."
    best = max(aps, key=aps.get)
    if baseline not in aps:
        return f"{best} has the best held-out mask AP ({aps[best]:.3f}); the baseline {baseline} did not run."
    if best == baseline:
        return f"{best} has the best held-out mask AP ({aps[best]:.3f}); no arm beat the baseline {baseline}."
    paired = arms[best].get(f"paired_vs_{baseline}") or {}
    text, real = _difference(paired.get("mask_ap"))
    sentence = (
        f"{best} has the best held-out mask AP, {aps[best]:.3f} against {aps[baseline]:.3f} for {baseline} "
        f"(paired difference {text}: {VERDICTS[real]})"
    )
    if metrics["params"].get("geometry") and paired.get("ate"):
        text, real = _difference(paired["ate"])
        sentence += f"; on the cameras, ATE {best} - {baseline} is {text}: {VERDICTS[real]}"
    return sentence + "."


def closing_summary(metrics: dict, run_dir: Path) -> str:
    """What the main job ends with: the answer, where the figures are, and what to run next."""
    figures = sorted(p.name for p in run_dir.glob("*.png"))
    seeds = list(metrics["params"]["seeds"])
    best = max(metrics["arms"], key=lambda a: _finite(metrics["arms"][a].get("mask_ap")))
    checkpoint = run_dir / "train" / f"{ablation.safe(best)}_seed{seeds[0]}" / "checkpoint.pt"
    lines = [
        "",
        f"Answer: {answer(metrics)}",
        f"Figures: {', '.join(figures) or 'none'} in {run_dir} (and every table in "
        f"{Path(NOTEBOOK).name} there; the numbers in {records.METRICS_FILE}).",
        "Next:",
    ]
    if len(seeds) < 3:
        lines.append(f"  more seeds for 95% CIs: python -m page4d.main -p seeds 0,1,2 (this run: {seeds})")
    lines.append(
        "  one setting changed (e.g. -p checkpoint tiny-synthetic), then the paired difference of the two "
        "runs: python -m page4d.experiments.ablation_report THIS_RUN OTHER_RUN --arms bce"
    )
    if checkpoint.is_file():
        lines.append(
            f"  {best}'s head on a clip of your own: python -m page4d.predict CLIP --out DIR --checkpoint "
            f"{checkpoint}"
        )
    lines.append("  train on your own clip: README, 'Your own clip, start to finish'")
    return "\n".join(lines)


def _finite(x: object) -> float:
    return x if isinstance(x, float) and math.isfinite(x) else float("-inf")


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
    parser.add_argument("--quiet", action="store_true", help="no progress lines while the notebook runs")
    args = parser.parse_args(argv)
    try:
        metrics = run(dict(args.param), args.out, args.quiet)
    except (ParameterError, FinishedRunError, RunFolderTaken) as err:
        parser.error(str(err))
    return 1 if metrics.get("failed") else 0


if __name__ == "__main__":
    sys.exit(main())
