"""Statistics of an ablation over seeds: per-seed values, means, and paired differences with a 95% CI.

Arms of one seed start from the same weights and see the same clips, so the honest comparison is the
*paired* difference arm - baseline per seed; its mean and a t-interval over seeds say whether an
effect is larger than the seed-to-seed noise. Below `MIN_SEEDS_FOR_CI` seeds a t-interval is
meaningless (t = 12.7 at two seeds), so only the values are reported (the CI is None).

An arm that cannot vary with the seed -- training-free from one shared starting model, e.g. the
``attention`` arm from a checkpoint -- is *deterministic*: its seeds repeat one computation, so it has
one value and no interval (``deterministic`` says why), and a paired difference between two such arms
is one value too. Each arm also carries ``coverage``: per seed, over how many clips (and frames) each
family of metrics is and which clips were dropped and why (`page4d.scoring.evaluate`).

    arms = summarize_arms(["none", "bce"], seeds=(0, 1, 2), cells=..., baseline="none")
    arms["bce"]["paired_vs_none"]["mask_ap"]  # {"mean", "ci95": [lo, hi] or None, "n", "per_seed"}
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from page4d.scoring.evaluate import COVERAGE_FAMILIES, GEOMETRY_KEYS, MASK_KEYS

METRIC_KEYS = (*MASK_KEYS, *GEOMETRY_KEYS, "camera_rot_deg_median")
MIN_SEEDS_FOR_CI = 3


def mean_ci95(values: Sequence[float]) -> tuple[float, list[float] | None, int]:
    """Mean, the 95% t-interval ``[lo, hi]`` (None below `MIN_SEEDS_FOR_CI` values) and the count of
    finite values (NaNs -- metrics that could not be measured -- are left out)."""
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if arr.size == 0:
        return float("nan"), None, 0
    mean = float(arr.mean())
    if arr.size < MIN_SEEDS_FOR_CI:
        return mean, None, int(arr.size)
    half = float(stats.t.ppf(0.975, arr.size - 1) * arr.std(ddof=1) / math.sqrt(arr.size))
    return mean, [mean - half, mean + half], int(arr.size)


def summarize_arms(
    arms: Sequence[str],
    seeds: Sequence[int],
    cells: dict[tuple[str, int], dict[str, Any]],
    baseline: str = "none",
    unpaired: Sequence[str] = (),
    controls: Sequence[str] = (),
) -> dict[str, dict[str, Any]]:
    """metrics.json's ``arms``: per arm ``per_seed`` (every finished cell: seed, init digest, results),
    for each metric ``<key>`` (mean over seeds) and ``<key>_ci95`` ([lo, hi] or None), ``n_values``
    {metric: seeds with a finite value; 1 for a deterministic arm}, ``seeds`` (finished), ``failed_seeds``,
    ``deterministic`` (why the seeds cannot vary, or None: `seed_invariance`), ``coverage``
    (`arm_coverage`) and -- for every arm but the baseline, when the baseline ran --
    ``paired_vs_<baseline>``: {metric: {"mean", "ci95", "n", "per_seed"}} of arm - baseline (not for
    the `unpaired` arms, e.g. the untrained reference, which is not a variant of the training); the
    same ``paired_vs_<control>`` for each of `controls` that ran (e.g. `no_mask`, a second baseline)."""
    out: dict[str, dict[str, Any]] = {}
    for arm in arms:
        per_seed = [_seed_record(cells[(arm, s)], s) for s in seeds if _finished(cells.get((arm, s)))]
        entry: dict[str, Any] = {
            "per_seed": per_seed,
            "seeds": [r["seed"] for r in per_seed],
            "failed_seeds": [s for s in seeds if (arm, s) in cells and cells[(arm, s)]["status"] != "ok"],
            "deterministic": seed_invariance(per_seed),
            "coverage": arm_coverage(per_seed),
            "n_values": {},
        }
        values = per_seed[:1] if entry["deterministic"] else per_seed
        for key in METRIC_KEYS:
            mean, ci, n = mean_ci95([r.get(key, float("nan")) for r in values])
            entry[key] = mean
            entry[f"{key}_ci95"] = ci
            entry["n_values"][key] = n
        out[arm] = entry
    for reference in (baseline, *controls):
        if reference not in out:
            continue
        base = {r["seed"]: r for r in out[reference]["per_seed"]}
        for arm, entry in out.items():
            if arm == reference or (arm in unpaired and reference not in unpaired):
                continue
            one_value = bool(entry["deterministic"] and out[reference]["deterministic"])
            entry[f"paired_vs_{reference}"] = paired_differences(entry["per_seed"], base, one_value)
    return out


def _finished(cell: dict[str, Any] | None) -> bool:
    return cell is not None and cell["status"] == "ok"


def _seed_record(cell: dict[str, Any], seed: int) -> dict[str, Any]:
    return {
        **cell["result"],
        "seed": seed,
        "init_digest": cell["init_digest"],
        "final_digest": cell.get("final_digest"),
        "clip_order_digest": cell.get("clip_order_digest"),
        "trained_steps": cell["trained_steps"],
        "seconds": cell["seconds"],
    }


def seed_invariance(per_seed: list[dict[str, Any]]) -> str | None:
    """Why an arm's seeds cannot give different values, or None when they can.

    Only an arm that trained nothing can be deterministic: then its value is a function of the starting
    weights alone, so seeds that share one starting model (a checkpoint) repeat one computation; and
    seeds whose starting models differ only where this read-out does not look give identical values
    for every metric. Below 2 seeds there is nothing to vary."""
    if len(per_seed) < 2 or any(r.get("trained_steps", 0) != 0 for r in per_seed):
        return None
    if len({r.get("init_digest") for r in per_seed}) == 1:
        return "one starting model for every seed and nothing trained"
    first = per_seed[0]
    if all(_same(r.get(k), first.get(k)) for r in per_seed[1:] for k in METRIC_KEYS):
        return "nothing trained and every seed gives identical values"
    return None


def _same(a: Any, b: Any) -> bool:
    both_nan = isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
    return both_nan or a == b


def arm_coverage(per_seed: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Per metric family (mask, depth, camera): ``of`` (clips evaluated), ``clips`` (scored, one per
    seed in ``seeds`` order), for masks ``frames`` / ``frames_of``, and ``dropped`` [{"seed", "times",
    "reason"}]. None when the results carry no coverage (a metrics.json written before it existed)."""
    if not per_seed or any("coverage" not in r for r in per_seed):
        return None
    out = {}
    for family in COVERAGE_FAMILIES:
        entries = [r["coverage"][family] for r in per_seed]
        summary: dict[str, Any] = {"of": entries[0]["of"], "clips": [e["clips"] for e in entries]}
        if "frames" in entries[0]:
            summary["frames"] = [e["frames"] for e in entries]
            summary["frames_of"] = entries[0]["frames_of"]
        summary["dropped"] = [
            {"seed": r["seed"], **d} for r, e in zip(per_seed, entries, strict=True) for d in e["dropped"]
        ]
        out[family] = summary
    return out


def paired_differences(
    per_seed: list[dict[str, Any]], baseline: dict[int, dict[str, Any]], one_value: bool = False
) -> dict[str, Any]:
    """arm - baseline per seed (seeds both finished), with mean and 95% CI, for every metric.

    `one_value`: both arms are deterministic (`seed_invariance`), so every seed gives the same
    difference; it is reported once (the first paired seed's), without an interval and with
    ``"deterministic": True``, instead of as n identical samples with a zero-width CI."""
    out = {}
    for key in METRIC_KEYS:
        diffs = {
            r["seed"]: r[key] - baseline[r["seed"]][key]
            for r in per_seed
            if r["seed"] in baseline and key in r and key in baseline[r["seed"]]
        }
        diffs = {s: d for s, d in diffs.items() if math.isfinite(d)}
        if one_value:
            diffs = dict(list(diffs.items())[:1])
        mean, ci, n = mean_ci95(list(diffs.values()))
        out[key] = {"mean": mean, "ci95": ci, "n": n, "per_seed": diffs}
        if one_value:
            out[key]["deterministic"] = True
    return out


def paired_across_runs(before: dict[str, Any], after: dict[str, Any], arm: str) -> dict[str, Any]:
    """`after[arm]` - `before[arm]` per seed, for two ablations (metrics.json) that differ in one setting
    (e.g. the initial weights), with mean and 95% CI per metric as in `paired_differences`.

    Seeds pair only when they trained on the same clips: a seed whose `clip_order_digest` differs
    between the runs raises (the runs then differ in more than the setting compared).
    """
    for metrics, which in ((before, "before"), (after, "after")):
        if arm not in metrics["arms"]:
            raise KeyError(f"arm {arm!r} is not in the {which} run (has {sorted(metrics['arms'])})")
    base = {r["seed"]: r for r in before["arms"][arm]["per_seed"]}
    rows = after["arms"][arm]["per_seed"]
    for r in rows:
        b = base.get(r["seed"])
        if b is not None and b.get("clip_order_digest") != r.get("clip_order_digest"):
            raise ValueError(
                f"seed {r['seed']} trained on different clips in the two runs "
                f"({b.get('clip_order_digest')} vs {r.get('clip_order_digest')}): not a paired comparison"
            )
    one_value = bool(before["arms"][arm].get("deterministic") and after["arms"][arm].get("deterministic"))
    return paired_differences(rows, base, one_value)
