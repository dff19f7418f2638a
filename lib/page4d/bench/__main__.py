"""`python -m page4d.bench NAME [--json]`: run a benchmark (or `all`) and print a table or one JSON object."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

import torch

from page4d.profiling import format_machine, machine_info, progress, resolve_timer

from . import BENCHMARKS, format_result, run_benchmark


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf become None, tuples become lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m page4d.bench", description=__doc__)
    parser.add_argument("name", choices=[*BENCHMARKS, "all"])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test; not for figures)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: with the cpu timer, the least noisy on a shared machine)",
    )
    parser.add_argument(
        "--timer", choices=["cpu", "wall"], default=None, help="cpu = process CPU time (default on CPU)"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i] (cuda always uses the wall clock)")
    parser.add_argument(
        "--repeats", type=int, default=None, help="interleaved rounds (default: per benchmark)"
    )
    args = parser.parse_args(argv)

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    timer = resolve_timer(args.timer, args.device)
    names = list(BENCHMARKS) if args.name == "all" else [args.name]
    machine = machine_info(args.device, timer)
    if not args.json:
        print(format_machine(machine), flush=True)
    results: dict[str, Any] = {}
    for name in names:
        overrides: dict[str, Any] = {}
        if name != "notebooks":
            overrides.update(device=args.device, timer=timer)
            if args.repeats is not None:
                overrides["repeats"] = args.repeats
                if name == "masked_attention":
                    overrides["repeats_large"] = args.repeats
        result = run_benchmark(name, quick=args.quick, **overrides)
        results[name] = result
        if not args.json:
            print(f"\n=== {name} ===\n{format_result(name, result)}", flush=True)
        else:
            progress(f"[{name}] done")
    if args.json:
        payload = {"machine": machine, **(results[names[0]] if len(names) == 1 else results)}
        print(json.dumps(_clean(payload), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
