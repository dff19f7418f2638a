"""Patch embeddings: a single stride-14 conv (tiny presets), a small conv stem in front of it (a tiny-only
variant, issue 20) or a DINOv2 ViT with register tokens (VGGT-1B)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .block import Block


class ConvPatchEmbed(nn.Module):
    """`[N, 3, H, W]` -> `[N, (H/p)*(W/p), C]` with one `p x p` stride-`p` convolution (key `proj`)."""

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class ConvStemPatchEmbed(nn.Module):
    """`[N, 3, H, W]` -> `[N, (H/p)*(W/p), C]` through two 3x3 convolutions (stride 2, then 1; GELU after
    each) and one `p/2 x p/2` stride-`p/2` patchify convolution (key `proj`).

    Why: the tiny preset's single 14x14 linear patchify turns 588 pixel values into 64 numbers with no
    nonlinearity, where VGGT's patch features come from DINOv2. A convolutional stem ("early
    convolutions", Xiao et al. 2021) gives each patch token local, nonlinear features to match across
    views with, at a small cost beside the blocks. A tiny-only variant: the 1B presets stay DINOv2.
    `channels` are the two 3x3 convolutions' widths.
    """

    def __init__(self, patch_size: int, embed_dim: int, channels: tuple[int, int] = (24, 48)) -> None:
        super().__init__()
        if patch_size % 2:
            raise ValueError(
                f"the conv stem halves the image first, so patch_size must be even, got {patch_size}"
            )
        self.patch_size = patch_size
        c1, c2 = channels
        self.stem = nn.Sequential(
            nn.Conv2d(3, c1, kernel_size=3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv2d(c1, c2, kernel_size=3, stride=1, padding=1),
            nn.GELU(),
        )
        half = patch_size // 2
        self.proj = nn.Conv2d(c2, embed_dim, kernel_size=half, stride=half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.stem(x)).flatten(2).transpose(1, 2)


class DinoV2(nn.Module):
    """DINOv2 ViT with register tokens; returns the final-normed patch tokens `[N, h*w, C]`.

    Key names follow DINOv2 (`cls_token`, `pos_embed`, `register_tokens`, `mask_token`,
    `patch_embed.proj`, `blocks.i`, `norm`) so the VGGT-1B checkpoint loads unchanged.
    """

    def __init__(
        self,
        patch_size: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        num_register_tokens: int,
        pos_embed_img_size: int = 518,
        init_values: float = 1.0,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.num_register_tokens = num_register_tokens
        grid = pos_embed_img_size // patch_size
        self.patch_embed = ConvPatchEmbed(patch_size, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, embed_dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim))
        # Unused at inference (masked-image pretraining only) but part of the checkpoint.
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList(
            [
                Block(embed_dim, num_heads, mlp_ratio=mlp_ratio, init_values=init_values, norm_eps=1e-6)
                for _ in range(depth)
            ]
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        nn.init.normal_(self.register_tokens, std=1e-6)

    def interpolate_pos_embed(
        self, num_patches: int, height: int, width: int, dtype: torch.dtype
    ) -> torch.Tensor:
        """Bicubic (antialiased) resize of the square position grid to `(H/p, W/p)`.

        As in DINOv2, the resize runs in float32 whatever the model dtype, and the table is used as
        stored when the grid already matches.
        """
        stored = self.pos_embed.shape[1] - 1
        if num_patches == stored and height == width:
            return self.pos_embed
        pos = self.pos_embed.float()
        side = int(math.sqrt(stored))
        dim = pos.shape[-1]
        grid = pos[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
        size = (height // self.patch_size, width // self.patch_size)
        grid = F.interpolate(grid, size=size, mode="bicubic", antialias=True)
        grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim)
        return torch.cat([pos[:, :1], grid], dim=1).to(dtype)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        n, _, height, width = images.shape
        x = self.patch_embed(images)
        num_patches = x.shape[1]
        x = torch.cat([self.cls_token.expand(n, -1, -1), x], dim=1)
        x = x + self.interpolate_pos_embed(num_patches, height, width, x.dtype)
        x = torch.cat([x[:, :1], self.register_tokens.expand(n, -1, -1), x[:, 1:]], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 1 + self.num_register_tokens :]
