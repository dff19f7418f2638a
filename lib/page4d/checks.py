"""Argument checks shared by geometry, losses and metrics: loud ``ValueError`` naming the argument.

A wrong type or a NaN that slips into a loss or a metric corrupts every number downstream without a
trace, so the public functions check their inputs with these two and say which argument was bad.
"""

from __future__ import annotations

import torch

__all__ = ["require_finite", "require_tensor"]


def require_tensor(x: object, name: str) -> torch.Tensor:
    """``x`` itself if it is a ``torch.Tensor``; otherwise ``ValueError`` naming ``name`` and the type."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def require_finite(x: torch.Tensor, name: str) -> None:
    """``ValueError`` with the count of NaN/inf entries when a floating-point ``x`` holds any."""
    if x.is_floating_point() and not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} (shape {tuple(x.shape)}) contains {bad} non-finite values (NaN/inf)")
