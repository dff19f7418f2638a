"""Building blocks of VGGT's iterative point tracker (CoTracker / VGGSfM lineage).

Everything here serves :class:`page4d.model.tracker.TrackPredictor`:

- point sampling with VGGT's pixel-coordinate convention (``align_corners=True``),
- the two sinusoidal embeddings (a float32 grid embedding of the query location, a float32 Fourier
  embedding of the flow), whose float32 rounding is part of the released model's arithmetic,
- the correlation pyramid that scores every frame's feature map against the current track features,
- the update transformer that alternates attention over time (per track) with attention over tracks
  (per frame) routed through a small set of learned "virtual" tracks.

Attribute names of the ``nn.Module`` classes are fixed by the released checkpoints (including the
misspelt ``virual_tracks``); everything else is local.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .block import Mlp
from .dpt_head import sincos_embed

__all__ = [
    "CorrelationPyramid",
    "CrossAttentionBlock",
    "SelfAttentionBlock",
    "UpdateTransformer",
    "flow_fourier_embedding",
    "grid_sincos_embedding",
    "sample_at_points",
    "sample_bilinear",
]


# --------------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------------


def sample_bilinear(values: Tensor, points: Tensor, padding_mode: str = "border") -> Tensor:
    """Bilinearly sample ``values`` at pixel coordinates, VGGT's ``grid_sample`` wrapper.

    values: [B, C, H, W]; points: [B, Ho, Wo, 2] as (x, y) in pixels, 0 = centre of the first pixel,
    W-1 = centre of the last (``align_corners=True``). Returns [B, C, Ho, Wo].

    Two details copied on purpose because they change numbers / gradients:
    - the points are detached and cast to ``values.dtype`` first, so sampling a float32 map with
      float64 points rounds the points to float32 (this happens for the positional embedding);
    - normalisation is ``points * (2 / max(size - 1, 1)) - 1`` in that order, in ``values.dtype``.
    """
    if values.dim() != 4:
        raise ValueError(f"sample_bilinear expects values [B, C, H, W], got shape {tuple(values.shape)}")
    if points.dim() != 4 or points.shape[-1] != 2:
        raise ValueError(f"sample_bilinear expects points [B, Ho, Wo, 2], got shape {tuple(points.shape)}")
    points = points.detach().to(device=values.device, dtype=values.dtype)
    height, width = values.shape[-2:]
    # Python-double scale, rounded once to the working dtype, exactly as the reference builds it.
    scale = torch.tensor(
        [2 / max(width - 1, 1), 2 / max(height - 1, 1)], device=points.device, dtype=points.dtype
    )
    grid = points * scale
    grid = grid - 1
    return F.grid_sample(values, grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)


def sample_at_points(feature_map: Tensor, points: Tensor) -> Tensor:
    """One feature vector per point, border-padded.

    feature_map: [B, C, H, W]; points: [B, R, 2] pixel (x, y). Returns [B, R, C] in the map's dtype.
    """
    if points.dim() != 3 or points.shape[-1] != 2:
        raise ValueError(f"sample_at_points expects points [B, R, 2], got shape {tuple(points.shape)}")
    sampled = sample_bilinear(feature_map, points.unsqueeze(2), padding_mode="border")  # [B, C, R, 1]
    return sampled.squeeze(-1).transpose(1, 2)


# --------------------------------------------------------------------------------------------------
# Sinusoidal embeddings
# --------------------------------------------------------------------------------------------------


def grid_sincos_embedding(dim: int, height: int, width: int) -> Tensor:
    """Fixed 2-D sin/cos embedding of every cell of an ``height x width`` grid -> [1, dim, H, W] float32.

    The first half of the channels encodes the column (x), the second half the row (y); each half
    is (sin..., cos...) of ``dim/4`` frequencies ``1 / 10000^(k / (dim/4))`` (the 1-D embedding of the
    DPT heads, :func:`~page4d.model.dpt_head.sincos_embed`, with base 10000). Computed in float64 and
    then **rounded to float32**: the released model always used a float32 table, whatever the working
    precision.
    """
    if dim % 4 != 0:
        raise ValueError(f"grid_sincos_embedding needs dim divisible by 4, got {dim}")
    rows = torch.arange(height, dtype=torch.float32)
    cols = torch.arange(width, dtype=torch.float32)
    grid_y, grid_x = torch.meshgrid(rows, cols, indexing="ij")  # [H, W] each
    emb_x = sincos_embed(dim // 2, grid_x.reshape(-1), omega_0=10000.0)
    emb_y = sincos_embed(dim // 2, grid_y.reshape(-1), omega_0=10000.0)
    emb = torch.cat([emb_x, emb_y], dim=1)  # [H*W, dim] float32
    return emb.reshape(height, width, dim).permute(2, 0, 1).unsqueeze(0)


def flow_fourier_embedding(flows: Tensor, channels: int) -> Tensor:
    """Fourier features of 2-D displacements -> float32 [..., 2 * channels].

    flows: [..., 2] (dx, dy) in feature-map pixels. Per axis, ``channels`` values interleaved as
    (sin f0, cos f0, sin f1, cos f1, ...), with f_k = 2k * (1000 / channels) (float32 frequencies,
    linear, not geometric -- that is the released model). x block first, then y.

    The angles and sin/cos are evaluated in the promoted dtype (float64 for float64 flows) and the
    result is **stored as float32**, because the reference writes them into float32 buffers.
    """
    if flows.shape[-1] != 2:
        raise ValueError(f"flow_fourier_embedding expects [..., 2] flows, got shape {tuple(flows.shape)}")
    if channels % 2 != 0:
        raise ValueError(f"flow_fourier_embedding needs an even channel count, got {channels}")
    freqs = torch.arange(0, channels, 2, device=flows.device, dtype=torch.float32) * (1000.0 / channels)
    angles = flows.unsqueeze(-1) * freqs  # [..., 2, channels/2]
    interleaved = torch.stack([torch.sin(angles), torch.cos(angles)], dim=-1)  # [..., 2, channels/2, 2]
    return interleaved.flatten(-3).to(torch.float32)


# --------------------------------------------------------------------------------------------------
# Transformer pieces
# --------------------------------------------------------------------------------------------------


class SelfAttentionBlock(nn.Module):
    """Pre-norm self-attention + MLP, with the residual taken from the *normalised* input.

    Unlike a standard pre-norm block, ``x`` is replaced by ``norm1(x)`` before the attention residual
    (``x = n + attn(n)``), so the un-normalised stream never reaches the output. Copied as is.
    x: [batch, tokens, hidden] -> same shape.
    """

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size)
        self.norm2 = nn.LayerNorm(hidden_size)
        self.attn = nn.MultiheadAttention(hidden_size, num_heads, batch_first=True)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm1(x)
        x = x + self.attn(x, x, x, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class CrossAttentionBlock(nn.Module):
    """Queries ``x`` attend to ``context``; same normalised-residual quirk as :class:`SelfAttentionBlock`.

    x: [batch, Nq, hidden]; context: [batch, Nk, hidden] -> [batch, Nq, hidden].
    """

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size)
        self.norm_context = nn.LayerNorm(hidden_size)
        self.norm2 = nn.LayerNorm(hidden_size)
        self.cross_attn = nn.MultiheadAttention(hidden_size, num_heads, batch_first=True)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        x = self.norm1(x)
        context = self.norm_context(context)
        x = x + self.cross_attn(x, context, context, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class UpdateTransformer(nn.Module):
    """Predicts per-track, per-frame updates from the tracker's token grid ("EfficientUpdateFormer").

    Why virtual tracks: full attention across N tracks costs O(N^2) per frame; instead each space
    step lets ``num_virtual_tracks`` learned tokens gather from all tracks, talk among themselves and
    broadcast back, which is O(N * V).

    Layout per space step (frame-wise, tracks as the sequence):
    virtual <- cross-attend(points); virtual <- self-attend; points <- cross-attend(virtual).
    A space step follows time block ``i`` whenever ``i % (time_depth // space_depth) == 0``.

    x: [B, N, S, input_dim] -> [B, N, S, output_dim].
    """

    def __init__(
        self,
        input_dim: int,
        hidden_size: int,
        output_dim: int,
        time_depth: int,
        space_depth: int,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        num_virtual_tracks: int = 64,
    ) -> None:
        super().__init__()
        if space_depth > time_depth:
            raise ValueError(f"space_depth ({space_depth}) cannot exceed time_depth ({time_depth})")
        self.num_virtual_tracks = num_virtual_tracks
        self.use_space = space_depth > 0
        self.space_every = time_depth // space_depth if self.use_space else 0

        self.input_norm = nn.LayerNorm(input_dim)
        self.input_transform = nn.Linear(input_dim, hidden_size)
        self.output_norm = nn.LayerNorm(hidden_size)
        self.flow_head = nn.Linear(hidden_size, output_dim)

        self.time_blocks = nn.ModuleList(
            [SelfAttentionBlock(hidden_size, num_heads, mlp_ratio) for _ in range(time_depth)]
        )
        if self.use_space:
            # Name (sic) fixed by the released checkpoints.
            self.virual_tracks = nn.Parameter(torch.randn(1, num_virtual_tracks, 1, hidden_size))
            self.space_virtual_blocks = nn.ModuleList(
                [SelfAttentionBlock(hidden_size, num_heads, mlp_ratio) for _ in range(space_depth)]
            )
            self.space_point2virtual_blocks = nn.ModuleList(
                [CrossAttentionBlock(hidden_size, num_heads, mlp_ratio) for _ in range(space_depth)]
            )
            self.space_virtual2point_blocks = nn.ModuleList(
                [CrossAttentionBlock(hidden_size, num_heads, mlp_ratio) for _ in range(space_depth)]
            )
        self._init_weights()

    def _init_weights(self) -> None:
        """Xavier-uniform linears with zero bias; tiny flow head so untrained updates start near zero."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.flow_head.weight, std=0.001)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"UpdateTransformer expects [B, N, S, C], got shape {tuple(x.shape)}")
        tokens = self.input_transform(self.input_norm(x))
        skip = tokens
        batch, num_points, num_frames, hidden = tokens.shape

        if self.use_space:
            virtual = self.virual_tracks.repeat(batch, 1, num_frames, 1)
            tokens = torch.cat([tokens, virtual], dim=1)
        num_tokens = tokens.shape[1]

        space_idx = 0
        for i, time_block in enumerate(self.time_blocks):
            # Attention along time: one sequence of S frames per (batch, track).
            tokens = time_block(tokens.reshape(batch * num_tokens, num_frames, hidden))
            tokens = tokens.reshape(batch, num_tokens, num_frames, hidden)
            if self.use_space and i % self.space_every == 0:
                # Attention across tracks: one sequence of tracks per (batch, frame).
                per_frame = tokens.permute(0, 2, 1, 3).reshape(batch * num_frames, num_tokens, hidden)
                points, virtual = per_frame[:, :num_points], per_frame[:, num_points:]
                virtual = self.space_virtual2point_blocks[space_idx](virtual, points)
                virtual = self.space_virtual_blocks[space_idx](virtual)
                points = self.space_point2virtual_blocks[space_idx](points, virtual)
                per_frame = torch.cat([points, virtual], dim=1)
                tokens = per_frame.reshape(batch, num_frames, num_tokens, hidden).permute(0, 2, 1, 3)
                space_idx += 1

        tokens = tokens[:, :num_points] + skip
        return self.flow_head(self.output_norm(tokens))


# --------------------------------------------------------------------------------------------------
# Correlation
# --------------------------------------------------------------------------------------------------


class CorrelationPyramid:
    """Multi-scale local correlation between track features and every frame's feature map.

    Level l is the (layer-normed) feature map average-pooled ``l`` times by 2 (floor for odd sizes).
    For each track and frame, the full correlation map ``<f_track, F(p)> / sqrt(C)`` is built per
    level and bilinearly sampled (zero padding) on a ``(2r+1) x (2r+1)`` window around the current
    position, scaled by ``2^-l``.

    Window layout quirk (kept for checkpoint compatibility): flattened window index ``a*(2r+1) + b``
    holds the offset **x = a - r, y = b - r** -- the *slow* index moves along x, i.e. the window is
    transposed relative to a row-major image patch.

    fmaps: [B, S, C, H, W]. Not an ``nn.Module``: it holds no weights, only this call's pyramid.
    """

    def __init__(self, fmaps: Tensor, num_levels: int, radius: int) -> None:
        if fmaps.dim() != 5:
            raise ValueError(f"CorrelationPyramid expects fmaps [B, S, C, H, W], got {tuple(fmaps.shape)}")
        self.radius = radius
        self.levels = [fmaps]
        batch, frames, channels = fmaps.shape[:3]
        current = fmaps
        for _ in range(num_levels - 1):
            pooled = F.avg_pool2d(current.reshape(batch * frames, channels, *current.shape[-2:]), 2, stride=2)
            current = pooled.reshape(batch, frames, channels, *pooled.shape[-2:])
            self.levels.append(current)
        steps = torch.linspace(-radius, radius, 2 * radius + 1, device=fmaps.device, dtype=fmaps.dtype)
        slow, fast = torch.meshgrid(steps, steps, indexing="ij")
        self.window = torch.stack([slow, fast], dim=-1)  # [2r+1, 2r+1, 2] as (x, y) offsets

    def sample(self, track_feats: Tensor, coords: Tensor) -> Tensor:
        """track_feats: [B, S, N, C]; coords: [B, S, N, 2] level-0 pixels -> [B, S, N, L * (2r+1)^2]."""
        batch, frames, num_points, channels = track_feats.shape
        side = 2 * self.radius + 1
        window = self.window.to(device=coords.device, dtype=coords.dtype).view(1, side, side, 2)
        centres = coords.reshape(batch * frames * num_points, 1, 1, 2)
        per_level = []
        for level, fmap in enumerate(self.levels):
            height, width = fmap.shape[-2:]
            corr = torch.matmul(track_feats, fmap.reshape(batch, frames, channels, height * width))
            corr = corr / math.sqrt(channels)  # [B, S, N, H*W]
            grid = centres / (2**level) + window
            sampled = sample_bilinear(
                corr.reshape(batch * frames * num_points, 1, height, width), grid, padding_mode="zeros"
            )
            per_level.append(sampled.reshape(batch, frames, num_points, side * side))
        return torch.cat(per_level, dim=-1)
