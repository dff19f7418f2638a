"""DPT heads (dense prediction transformer decoder) for depth, world points and track features.

Four aggregator layers are projected to feature maps at 4x, 2x, 1x and 1/2x the patch grid, fused
coarse-to-fine with residual conv units, upsampled to the image (or image / down_ratio) and decoded.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def uv_grid(width: int, height: int, aspect_ratio: float, dtype: torch.dtype, device) -> torch.Tensor:
    """`[H, W, 2]` pixel-centre coordinates spanning a unit-diagonal box of the given aspect ratio."""
    diag = (aspect_ratio**2 + 1.0) ** 0.5
    span_x, span_y = aspect_ratio / diag, 1.0 / diag
    xs = torch.linspace(
        -span_x * (width - 1) / width, span_x * (width - 1) / width, width, dtype=dtype, device=device
    )
    ys = torch.linspace(
        -span_y * (height - 1) / height, span_y * (height - 1) / height, height, dtype=dtype, device=device
    )
    uu, vv = torch.meshgrid(xs, ys, indexing="xy")
    return torch.stack([uu, vv], dim=-1)


def sincos_embed(dim: int, pos: torch.Tensor, omega_0: float = 100.0) -> torch.Tensor:
    """1-D sin/cos embedding of positions `[M]` -> `[M, dim]`: (sin of all frequencies, cos of all).

    Frequencies `1 / omega_0^(k / (dim/2))`, k < dim/2, and angles in float64; returned in float32 as
    in VGGT (kept for exact reproduction). The tracker's grid embedding is the same with base 10000.
    """
    omega = torch.arange(dim // 2, dtype=torch.float64, device=pos.device) / (dim / 2.0)
    omega = 1.0 / omega_0**omega
    angles = torch.outer(pos.reshape(-1).double(), omega)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1).float()


def grid_position_embedding(x: torch.Tensor, image_w: int, image_h: int, ratio: float = 0.1) -> torch.Tensor:
    """Adds VGGT's fixed sin/cos embedding of the normalised pixel grid to `[N, C, h, w]` features."""
    n, c, h, w = x.shape
    grid = uv_grid(w, h, image_w / image_h, x.dtype, x.device).reshape(-1, 2)
    emb = torch.cat([sincos_embed(c // 2, grid[:, 0]), sincos_embed(c // 2, grid[:, 1])], dim=-1)
    emb = (emb.reshape(h, w, c) * ratio).permute(2, 0, 1)[None]
    # float32 table: exact for float32/64 models; rounded to the model dtype for bf16/fp16 ones
    return x + emb.to(x.dtype)


def activate_head(
    out: torch.Tensor, activation: str, conf_activation: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """`[N, D+1, H, W]` -> (values `[N, H, W, D]`, confidence `[N, H, W]`)."""
    fmap = out.permute(0, 2, 3, 1)
    values, conf = fmap[..., :-1], fmap[..., -1]
    if activation == "exp":
        values = torch.exp(values)
    elif activation == "inv_log":
        values = torch.sign(values) * torch.expm1(torch.abs(values))
    elif activation == "norm_exp":
        d = values.norm(dim=-1, keepdim=True).clamp(min=1e-8)
        values = values / d * torch.expm1(d)
    elif activation == "relu":
        values = F.relu(values)
    elif activation == "sigmoid":
        values = torch.sigmoid(values)
    elif activation != "linear":
        raise ValueError(f"unknown DPT activation {activation!r}")
    if conf_activation == "expp1":
        conf = 1 + conf.exp()
    elif conf_activation == "expp0":
        conf = conf.exp()
    elif conf_activation == "sigmoid":
        conf = torch.sigmoid(conf)
    else:
        raise ValueError(f"unknown confidence activation {conf_activation!r}")
    return values, conf


class ResidualConvUnit(nn.Module):
    """`relu(x) + conv2(relu(conv1(relu(x))))`.

    The original applies an in-place ReLU to its input before the skip connection, so the skip carries
    `relu(x)`, not `x`; written out explicitly here (autograd-safe, same numbers).
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        return self.conv2(F.relu(self.conv1(x))) + x


class FeatureFusionBlock(nn.Module):
    """Adds a (refined) skip feature, refines, upsamples (bilinear, align_corners) and projects 1x1."""

    def __init__(self, features: int, has_residual: bool = True) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, 1)
        self.resConfUnit1 = ResidualConvUnit(features) if has_residual else None
        self.resConfUnit2 = ResidualConvUnit(features)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None, size=None) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        if size is None:
            size = (x.shape[-2] * 2, x.shape[-1] * 2)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class DPTHead(nn.Module):
    def __init__(
        self,
        dim_in: int,
        patch_size: int,
        features: int,
        out_channels: tuple[int, ...],
        intermediate_layer_idx: tuple[int, ...],
        output_dim: int = 4,
        activation: str = "inv_log",
        conf_activation: str = "expp1",
        pos_embed: bool = True,
        feature_only: bool = False,
        down_ratio: int = 1,
        frames_chunk_size: int = 8,
    ) -> None:
        super().__init__()
        if len(out_channels) != 4 or len(intermediate_layer_idx) != 4:
            raise ValueError("DPT needs exactly 4 out_channels and 4 intermediate layers")
        self.patch_size = patch_size
        self.intermediate_layer_idx = tuple(intermediate_layer_idx)
        self.activation, self.conf_activation = activation, conf_activation
        self.pos_embed, self.feature_only, self.down_ratio = pos_embed, feature_only, down_ratio
        self.frames_chunk_size = frames_chunk_size
        self.norm = nn.LayerNorm(dim_in)
        self.projects = nn.ModuleList([nn.Conv2d(dim_in, oc, 1) for oc in out_channels])
        self.resize_layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(out_channels[0], out_channels[0], 4, stride=4),
                nn.ConvTranspose2d(out_channels[1], out_channels[1], 2, stride=2),
                nn.Identity(),
                nn.Conv2d(out_channels[3], out_channels[3], 3, stride=2, padding=1),
            ]
        )
        scratch = nn.Module()
        for i, oc in enumerate(out_channels, start=1):
            setattr(scratch, f"layer{i}_rn", nn.Conv2d(oc, features, 3, padding=1, bias=False))
        scratch.refinenet1 = FeatureFusionBlock(features)
        scratch.refinenet2 = FeatureFusionBlock(features)
        scratch.refinenet3 = FeatureFusionBlock(features)
        scratch.refinenet4 = FeatureFusionBlock(features, has_residual=False)
        if feature_only:
            scratch.output_conv1 = nn.Conv2d(features, features, 3, padding=1)
        else:
            scratch.output_conv1 = nn.Conv2d(features, features // 2, 3, padding=1)
            scratch.output_conv2 = nn.Sequential(
                nn.Conv2d(features // 2, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, output_dim, 1)
            )
        self.scratch = scratch

    def forward(self, tokens_list: list[torch.Tensor], images: torch.Tensor, patch_start_idx: int):
        """Returns `[B, S, C, H/r, W/r]` features (feature_only) or (values `[B,S,H,W,D]`, conf `[B,S,H,W]`).

        Frames are decoded in chunks of `frames_chunk_size` to bound memory; every op is per frame.
        """
        s = images.shape[1]
        chunk = self.frames_chunk_size or s
        parts = [
            self._decode(tokens_list, images, patch_start_idx, i, min(i + chunk, s))
            for i in range(0, s, chunk)
        ]
        if self.feature_only:
            return torch.cat(parts, dim=1)
        return torch.cat([v for v, _ in parts], dim=1), torch.cat([c for _, c in parts], dim=1)

    def _decode(self, tokens_list, images, patch_start_idx: int, start: int, end: int):
        b, _, _, h, w = images.shape
        s = end - start
        gh, gw = h // self.patch_size, w // self.patch_size
        feats = []
        for j, layer in enumerate(self.intermediate_layer_idx):
            x = tokens_list[layer][:, start:end, patch_start_idx:]
            x = self.norm(x.reshape(b * s, -1, x.shape[-1]))
            x = x.permute(0, 2, 1).reshape(b * s, -1, gh, gw)
            x = self.projects[j](x)
            if self.pos_embed:
                x = grid_position_embedding(x, w, h)
            feats.append(self.resize_layers[j](x))
        sc = self.scratch
        l1, l2, l3, l4 = (getattr(sc, f"layer{i + 1}_rn")(f) for i, f in enumerate(feats))
        out = sc.refinenet4(l4, size=l3.shape[2:])
        out = sc.refinenet3(out, l3, size=l2.shape[2:])
        out = sc.refinenet2(out, l2, size=l1.shape[2:])
        out = sc.output_conv1(sc.refinenet1(out, l1))
        size = (int(gh * self.patch_size / self.down_ratio), int(gw * self.patch_size / self.down_ratio))
        out = F.interpolate(out, size=size, mode="bilinear", align_corners=True)
        if self.pos_embed:
            out = grid_position_embedding(out, w, h)
        if self.feature_only:
            return out.reshape(b, s, *out.shape[1:])
        values, conf = activate_head(sc.output_conv2(out), self.activation, self.conf_activation)
        return values.reshape(b, s, *values.shape[1:]), conf.reshape(b, s, *conf.shape[1:])
