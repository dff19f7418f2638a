"""VGGT track head: a feature-only DPT at 1/down_ratio resolution feeding the iterative point tracker."""

from __future__ import annotations

import torch
from torch import nn

from .config import TrackHeadConfig
from .dpt_head import DPTHead
from .tracker import TrackPredictor


class TrackHead(nn.Module):
    def __init__(self, dim_in: int, patch_size: int, cfg: TrackHeadConfig) -> None:
        super().__init__()
        self.iters = cfg.iters
        self.feature_extractor = DPTHead(
            dim_in,
            patch_size,
            cfg.features,
            cfg.out_channels,
            cfg.intermediate_layer_idx,
            pos_embed=False,
            feature_only=True,
            down_ratio=cfg.down_ratio,
        )
        self.tracker = TrackPredictor.from_config(cfg)

    def forward(
        self,
        tokens_list: list[torch.Tensor],
        images: torch.Tensor,
        patch_start_idx: int,
        query_points: torch.Tensor,
        iters: int | None = None,
    ):
        """query_points `[B, N, 2]` pixels in frame 0 -> (tracks per iteration `[B,S,N,2]`, vis, conf)."""
        fmaps = self.feature_extractor(tokens_list, images, patch_start_idx)
        return self.tracker(query_points=query_points, fmaps=fmaps, iters=iters or self.iters)
