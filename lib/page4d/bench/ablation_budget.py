"""Wall time of the main job's ablation (notebook 03's defaults) against its 10-minute budget on 2 cores.

Runs `page4d.experiments.ablation.run_ablation` with `AblationParams()` (the defaults `make run`
uses: issue 20's answer from the shipped `tiny-pos`, fine-tuned on generated dynamic videos with geometry
on, arms untrained / attention / no_mask / none / bce / bce_noisy / attention_forcing / oracle, 3 seeds)
into a temporary folder and
reports the total, the share spent training each arm and evaluating, and whether the budget holds. Wall clock,
since that is what a user waits for; run it on an otherwise idle machine.
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

import torch

from page4d.profiling import progress, table

BUDGET_S = 600.0


def run(budget_s: float = BUDGET_S, threads: int = 2, **params: Any) -> dict[str, Any]:
    from page4d.experiments.ablation import AblationParams, run_ablation

    params = {k: v for k, v in params.items() if k not in ("device", "timer", "repeats")}
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with tempfile.TemporaryDirectory(prefix="page4d_ablation_") as tmp:
            cfg = AblationParams(output_dir=f"{tmp}/run", **params)
            progress(
                f"[ablation] arms {cfg.arms}, seeds {cfg.seeds}, {cfg.steps} steps, geometry {cfg.geometry}"
            )
            t0 = time.perf_counter()
            metrics = run_ablation(cfg, progress=False)
            total = time.perf_counter() - t0
    finally:
        torch.set_num_threads(previous)
    cells = [
        {"arm": arm, "seed": r["seed"], "seconds": r["seconds"], "trained_steps": r["trained_steps"]}
        for arm, entry in metrics["arms"].items()
        for r in entry["per_seed"]
    ]
    return {
        "benchmark": "ablation",
        "timer": "wall",
        "threads": threads,
        "arms": list(metrics["arms"]),
        "seeds": list(cfg.seeds),
        "steps": cfg.steps,
        "geometry": cfg.geometry,
        "cells": cells,
        "total_s": total,
        "budget_s": budget_s,
        "within_budget": total <= budget_s,
        "failed": metrics["failed"],
    }


def format_result(result: dict[str, Any]) -> str:
    rows = [
        [c["arm"], str(c["seed"]), str(c["trained_steps"]), f"{c['seconds']:.1f}"] for c in result["cells"]
    ]
    return "\n".join(
        [
            f"run_ablation at notebook 03's defaults ({result['steps']} steps, "
            f"geometry {result['geometry']}, {result['threads']} threads)",
            table(["arm", "seed", "steps", "seconds"], rows),
            f"total {result['total_s']:.1f} s (budget <= {result['budget_s']:.0f} s: "
            f"{'met' if result['within_budget'] else 'MISSED'})",
        ]
    )
