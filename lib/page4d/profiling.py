"""Profiling instruments: machine description, interleaved timing, peak memory, tables. `page4d.bench`
and the notebooks' cost tables (`page4d.inference.extract`) both measure with them.

Timing. Every benchmark times its variants *side by side in one process*: one warm-up call each, then
`repeats` rounds that call every variant once, alternating the order (A B C, C B A, ...) so slow drifts
and order effects cancel. A ratio is the median over rounds of `t_variant / t_baseline` within the same
round (paired), which is far less sensitive to other processes than comparing two separate runs.

Clocks. `timer="cpu"` (the default on CPU) reads `time.process_time()`: the CPU seconds this process
spent, which a busy shared machine disturbs much less than wall time. It is only clean with one
intra-op thread (with several, OpenMP spin-waiting is counted too), so the CLI sets one thread unless
told otherwise. `timer="wall"` reads `time.perf_counter()`; on CUDA the device is synchronised around
each call and the wall clock is always used.

Memory. On CPU, `peak_memory` runs the call once under `torch.profiler` with `profile_memory=True` and
replays the allocator's `[memory]` events (+bytes on allocation, -bytes on free) in time order: the
peak of that running sum is the most bytes the call held at once *through PyTorch's CPU allocator*
above what existed before it (like `torch.cuda.max_memory_allocated()`; Python objects and kernel
stack buffers are not included, pages returned to the OS are irrelevant). `retained_bytes` is the sum
at the end, i.e. what the returned value keeps alive. On CUDA the allocator's own peak counters are used.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

TIMERS = ("cpu", "wall")


def resolve_timer(timer: str | None, device: str) -> str:
    """The clock actually used: `wall` on CUDA, otherwise `timer` (default `cpu`)."""
    if torch.device(device).type == "cuda":
        return "wall"
    timer = timer or "cpu"
    if timer not in TIMERS:
        raise ValueError(f"timer must be one of {TIMERS}, got {timer!r}")
    return timer


def _clock(timer: str) -> Callable[[], float]:
    return time.process_time if timer == "cpu" else time.perf_counter


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def machine_info(device: str = "cpu", timer: str | None = None) -> dict[str, Any]:
    """Where and how the figures were measured (printed with every benchmark)."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    info: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "mem_total_bytes": _mem_total_bytes(),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "device": device,
        "timer": resolve_timer(timer, device),
    }
    if torch.device(device).type == "cuda":
        info["cuda_device"] = torch.cuda.get_device_name(device)
        info["cuda_version"] = torch.version.cuda
    return info


def format_machine(info: dict[str, Any]) -> str:
    mem = info.get("mem_total_bytes")
    lines = [
        f"date      {info['date']}",
        f"machine   {info['platform']} | {info['cpu_model']} | cpu_count {info['cpu_count']} "
        f"(usable {info['cpus_usable']}) | RAM {fmt_bytes(mem) if mem else '?'}",
        f"torch     {info['torch']} (python {info['python']}) | intra-op threads {info['torch_threads']} "
        f"| interop {info['torch_interop_threads']} | device {info['device']}"
        + (f" ({info['cuda_device']})" if "cuda_device" in info else ""),
        f"timer     {info['timer']} | load average at start {info['load_average']}",
    ]
    return "\n".join(lines)


def time_interleaved(
    fns: dict[str, Callable[[], Any]],
    repeats: int,
    timer: str = "cpu",
    device: str = "cpu",
    warmup: int = 1,
) -> dict[str, list[float]]:
    """Seconds per call for every variant, variants interleaved within each round (order alternates)."""
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    clock = _clock(resolve_timer(timer, device))
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    _sync(device)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            _sync(device)
            t0 = clock()
            out = fns[name]()
            _sync(device)
            times[name].append(clock() - t0)
            del out
    return times


def paired_ratio(times: dict[str, list[float]], name: str, baseline: str) -> float:
    """Median over rounds of `t[name] / t[baseline]` (both measured in the same round)."""
    return statistics.median(a / b for a, b in zip(times[name], times[baseline], strict=True))


def ratio_spread(times: dict[str, list[float]], name: str, baseline: str) -> dict[str, float]:
    """Robustness of a ratio: quartiles of the per-round ratios and min(t[name]) / min(t[baseline])
    (the least-disturbed call of each; on a loaded machine it is often the steadier figure)."""
    ratios = sorted(a / b for a, b in zip(times[name], times[baseline], strict=True))
    q = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1 else [ratios[0]] * 3
    return {"q25": q[0], "q75": q[2], "min_over_min": min(times[name]) / min(times[baseline])}


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def _profiler_memory_events(prof) -> list[tuple[int, int]]:
    events = prof.profiler.kineto_results.events()
    out = []
    for e in events:
        if e.name() == "[memory]" and str(e.device_type()).endswith("CPU"):
            out.append((e.start_ns(), e.nbytes()))
    out.sort(key=lambda x: x[0])
    return out


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 (the profiler's C++ start/stop log lines cannot be turned off)."""
    fd = 2
    sys.stderr.flush()
    try:
        saved, devnull = os.dup(fd), os.open(os.devnull, os.O_WRONLY)
    except OSError:
        yield
        return
    os.dup2(devnull, fd)
    try:
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


def peak_memory(fn: Callable[[], Any], device: str = "cpu") -> dict[str, int]:
    """`{"peak_bytes", "retained_bytes"}` of one call of `fn`, above what was allocated before it."""
    if torch.device(device).type == "cuda":
        _sync(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        out = fn()
        _sync(device)
        result = {
            "peak_bytes": torch.cuda.max_memory_allocated(device) - base,
            "retained_bytes": torch.cuda.memory_allocated(device) - base,
        }
        del out
        return result
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
    del out
    running = peak = 0
    for _, nbytes in _profiler_memory_events(prof):
        running += nbytes
        peak = max(peak, running)
    return {"peak_bytes": int(peak), "retained_bytes": int(running)}


def saved_tensor_bytes(fn: Callable[[], Any], exclude: Sequence[torch.Tensor] = ()) -> int:
    """Bytes of distinct storages autograd saves for backward while `fn` runs (parameters excluded)."""
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in skip:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(seen.values())


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    sign = "-" if n < 0 else ""
    n = abs(float(n))
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{sign}{n:.0f} {unit}" if unit == "B" else f"{sign}{n:.1f} {unit}"
        n /= 1024
    return f"{sign}{n:.1f} GiB"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain fixed-width text table."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def progress(msg: str) -> None:
    """Progress goes to stderr so `--json` keeps stdout to exactly one JSON object."""
    print(msg, file=sys.stderr, flush=True)
