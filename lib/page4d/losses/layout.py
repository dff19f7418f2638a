"""Tensor layouts the loss terms accept, and the checks that refuse anything else.

Per-frame tensors come as ``[B, S, ...]`` or multi-view ``[B, T, V, ...]`` with ``s = t * V + v``;
nothing is reshaped by guessing: a shape that matches neither form raises ``ValueError`` naming the
argument.
"""

from __future__ import annotations

import torch

__all__ = ["frame_lead", "require_bool", "to_layout"]


def require_bool(x: torch.Tensor, name: str) -> None:
    """``ValueError`` unless ``x`` is a bool tensor (validity masks must not be 0/1 floats by accident)."""
    if x.dtype != torch.bool:
        raise ValueError(f"{name} must be a bool tensor, got dtype {x.dtype} (shape {tuple(x.shape)})")


def to_layout(x: torch.Tensor, lead: tuple[int, ...], trailing: tuple[int, ...], name: str) -> torch.Tensor:
    """Bring ``x`` to ``[*lead, *trailing]`` where lead is (B, S) or (B, T, V).

    Accepted: exactly that shape or, when lead is (B, T, V), the flat ``[B, T*V, *trailing]``, which
    is unflattened with ``s = t * V + v``. (A flat lead cannot be split without knowing T and V.)
    """
    want = lead + trailing
    if tuple(x.shape) == want:
        return x
    if len(lead) == 3:
        b, t, v = lead
        if tuple(x.shape) == (b, t * v) + trailing:
            return x.reshape(want)
    raise ValueError(
        f"{name} has shape {tuple(x.shape)}; expected {list(want)}"
        + (f" or {[lead[0], lead[1] * lead[2], *trailing]}" if len(lead) == 3 else "")
    )


def frame_lead(extrinsics: torch.Tensor, name: str = "extrinsics") -> tuple[int, ...]:
    """The per-frame leading dims ``(B, S)`` or ``(B, T, V)`` of world-to-camera extrinsics."""
    if extrinsics.ndim not in (4, 5) or tuple(extrinsics.shape[-2:]) != (3, 4):
        raise ValueError(f"{name} must be [B, S, 3, 4] or [B, T, V, 3, 4], got {tuple(extrinsics.shape)}")
    return tuple(extrinsics.shape[:-2])
