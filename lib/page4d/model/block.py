"""Pre-norm transformer block with LayerScale, shared by the aggregator, DINOv2 and the camera head."""

from __future__ import annotations

import torch
from torch import nn

from .attention import Attention, RowGatedKeyBias
from .rope import RotaryPositionEmbedding2D


class LayerScale(nn.Module):
    """Per-channel residual scale (`gamma`), initialised small so deep stacks start near identity."""

    def __init__(self, dim: int, init_values: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2 (key names `fc1`, `fc2` as in timm / VGGT)."""

    def __init__(
        self, in_features: int, hidden_features: int, out_features: int | None = None, bias: bool = True
    ):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, out_features or in_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """`x + ls1(attn(norm1(x))) ; x + ls2(mlp(norm2(x)))`."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        init_values: float | None = None,
        qk_norm: bool = False,
        rope: RotaryPositionEmbedding2D | None = None,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qk_norm=qk_norm, rope=rope)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()

    def forward(
        self, x: torch.Tensor, pos: torch.Tensor | None = None, bias: RowGatedKeyBias | None = None
    ) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), pos=pos, bias=bias))
        return x + self.ls2(self.mlp(self.norm2(x)))
