"""Benchmarks for what PAGE-4D's mask costs (issue #6): `python -m page4d.bench NAME [--json]`.

NAME is one of `BENCHMARKS` or `all`. Every benchmark measures its variants side by side in one
process (interleaved rounds, paired medians; see `page4d.profiling`) and reports ratios, so the
figures mean something on a busy shared machine. Results and methods: bench/RESULTS.md.
"""

from __future__ import annotations

from typing import Any

from page4d.profiling import machine_info

from . import (
    ablation_budget,
    data_io,
    frames_scaling,
    long_sequence,
    mask_export,
    masked_attention,
    notebooks,
    patch_embeddings,
    train_step,
)

BENCHMARKS = {
    "mask_export": mask_export,
    "masked_attention": masked_attention,
    "train_step": train_step,
    "frames_scaling": frames_scaling,
    "notebooks": notebooks,
    "ablation": ablation_budget,
    "long_sequence": long_sequence,
    "data": data_io,
    "patch_embeddings": patch_embeddings,
}

# seconds-scale sizes for tests and `--quick` smoke runs (not for figures)
QUICK: dict[str, dict[str, Any]] = {
    "mask_export": dict(models=("tiny",), frames=2, image_size=56, repeats=2),
    "masked_attention": dict(sizes=((2, 2), (4, 1)), tokens_per_frame=66, repeats=2, repeats_large=1),
    "train_step": dict(frames=2, image_size=56, repeats=2),
    "frames_scaling": dict(frames=(1, 2, 4), image_size=56, repeats=2),
    "notebooks": dict(),
    "ablation": dict(seeds=(0,), steps=2, image_size=(56, 70), pool_scenes=2, eval_scenes=1, pool_times=4),
    "long_sequence": dict(frames=(2, 4), image_size=(56, 70), repeats=1),
    "data": dict(repeats=1, synthetic={"times": 2, "views": 2, "height": 56, "width": 70}),
    "patch_embeddings": dict(frames=2, image_size=(56, 70), repeats=2),
}


def run_benchmark(name: str, quick: bool = False, **overrides: Any) -> dict[str, Any]:
    """Run one benchmark (keyword arguments go to its `run`) and return its result dict."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; choose one of {sorted(BENCHMARKS)} or 'all'")
    kwargs = dict(QUICK[name]) if quick else {}
    kwargs.update(overrides)
    return BENCHMARKS[name].run(**kwargs)


def format_result(name: str, result: dict[str, Any]) -> str:
    return BENCHMARKS[name].format_result(result)


__all__ = ["BENCHMARKS", "QUICK", "format_result", "machine_info", "run_benchmark"]
