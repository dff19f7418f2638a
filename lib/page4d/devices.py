"""The device a command runs on, checked before anything is built: one clean error instead of torch's.

`torch.device("cuda")` on a CPU-only build (or with no GPU visible) is accepted, and the first tensor
moved there fails deep inside torch (`AttributeError: module 'torch._C' has no attribute
'_cuda_setDevice'`). Every command that takes a `--device` resolves it here:

    device = require_device(args.device)   # torch.device, or ValueError naming what is missing

It also holds the one table of `--precision` values (`PRECISIONS`) and the autocast each one means
(`autocast(device, precision)`), shared by the trainer, `page4d.predict` and the notebooks' forwards.
"""

from __future__ import annotations

import torch

__all__ = ["PRECISIONS", "AUTOCAST_DTYPES", "autocast", "check_precision", "require_device"]

PRECISIONS = ("fp32", "bf16", "fp16")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # fp32: no autocast


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """The autocast context of `precision` on `device` (disabled for fp32)."""
    dtype = AUTOCAST_DTYPES.get(check_precision(precision))
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def _cuda_problem(index: int | None) -> str | None:
    """Why `cuda[:index]` cannot be used here, or None when it can."""
    if not torch.cuda.is_available():
        build = "a CPU-only torch build" if torch.version.cuda is None else "no visible CUDA GPU"
        return f"torch.cuda.is_available() is False ({build}, torch {torch.__version__}); use --device cpu"
    count = torch.cuda.device_count()
    if index is not None and index >= count:
        return f"only {count} CUDA device(s) are visible (cuda:0 .. cuda:{count - 1})"
    return None


def require_device(name: str | torch.device) -> torch.device:
    """`name` ("cpu", "cuda", "cuda:1", "mps") as a `torch.device` this process can use; `ValueError`
    with one line saying why not (unknown name, CUDA or MPS not available, no such GPU index)."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {str(name)!r} is not a device name: use cpu, cuda, cuda:N or mps") from None
    problem = None
    if device.type == "cuda":
        problem = _cuda_problem(device.index)
    elif device.type == "mps" and not torch.backends.mps.is_available():
        problem = "torch.backends.mps.is_available() is False; use --device cpu"
    elif device.type not in ("cpu", "cuda", "mps"):
        problem = "only cpu, cuda and mps are supported"
    if problem:
        raise ValueError(f"device {str(name)!r} cannot be used: {problem}")
    return device
