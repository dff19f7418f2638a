"""2D rotary position embedding (RoPE) on patch-grid coordinates, as in VGGT.

Half of each head's channels rotate with the patch row, the other half with the patch column.
Special tokens (camera, registers) sit at position (0, 0) and patches at (row + 1, col + 1), so the
special tokens see an identity rotation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def patch_positions(
    batch: int, grid_h: int, grid_w: int, num_special: int, device: torch.device
) -> torch.Tensor:
    """Integer (row, col) positions for `[special tokens, patches]`, shape `[batch, num_special + h*w, 2]`."""
    rows = torch.arange(grid_h, device=device)
    cols = torch.arange(grid_w, device=device)
    grid = torch.cartesian_prod(rows, cols) + 1
    special = torch.zeros(num_special, 2, dtype=grid.dtype, device=device)
    return torch.cat([special, grid], dim=0).unsqueeze(0).expand(batch, -1, -1)


class RotaryPositionEmbedding2D(nn.Module):
    """Applies 2D RoPE to `[B, heads, N, head_dim]` with positions `[B, N, 2]` (row, col)."""

    def __init__(self, frequency: float = 100.0) -> None:
        super().__init__()
        self.frequency = frequency
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def _tables(self, dim: int, length: int, device: torch.device, dtype: torch.dtype):
        key = (dim, length, device, dtype)
        if key not in self._cache:
            # The original builds the angle table in float32 and only then casts: kept so float64
            # runs reproduce the reference numbers bit for bit.
            exponents = torch.arange(0, dim, 2, device=device).float() / dim
            inv_freq = 1.0 / (self.frequency**exponents)
            angles = torch.outer(torch.arange(length, device=device, dtype=inv_freq.dtype), inv_freq)
            angles = torch.cat([angles, angles], dim=-1).to(dtype)
            self._cache[key] = (angles.cos(), angles.sin())
        return self._cache[key]

    @staticmethod
    def _rotate_half(x: torch.Tensor) -> torch.Tensor:
        first, second = x.chunk(2, dim=-1)
        return torch.cat([-second, first], dim=-1)

    def _rotate(
        self, x: torch.Tensor, pos: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> torch.Tensor:
        cos_p = F.embedding(pos, cos)[:, None]
        sin_p = F.embedding(pos, sin)[:, None]
        return x * cos_p + self._rotate_half(x) * sin_p

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        if positions.ndim != 3 or positions.shape[-1] != 2:
            raise ValueError(f"positions must be [B, N, 2], got {tuple(positions.shape)}")
        half = x.shape[-1] // 2
        cos, sin = self._tables(half, int(positions.max()) + 1, x.device, x.dtype)
        rows, cols = x.chunk(2, dim=-1)
        return torch.cat(
            [
                self._rotate(rows, positions[..., 0], cos, sin),
                self._rotate(cols, positions[..., 1], cos, sin),
            ],
            dim=-1,
        )
