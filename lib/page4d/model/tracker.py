"""VGGT's track predictor: iterative refinement of query-point tracks over a frame sequence.

Mounted by the track head as ``track_head.tracker``; its parameter names follow the released
``BaseTrackerPredictor`` so VGGT-1B checkpoints load unchanged.

One refinement step, for every (track n, frame s):

    token = [ fourier(flow) (float32) | flow/518 | flow/518 | corr_mlp(local correlation) | track feature ]
            + sincos grid embedding at the query point (float32 table, sampled in float32)
            + query_ref_token[0] on the query frame, query_ref_token[1] on every other frame

The update transformer turns the [B, N, S, 3C+4] tokens into a coordinate delta (2) and a feature
delta (C); the query frame's coordinate is pinned to the query point after every step.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .block import Mlp
from .config import TrackHeadConfig
from .tracker_blocks import (
    CorrelationPyramid,
    UpdateTransformer,
    flow_fourier_embedding,
    grid_sincos_embedding,
    sample_at_points,
)

__all__ = ["TrackPredictor"]


class TrackPredictor(nn.Module):
    """Query points + per-frame feature maps -> tracks, visibility and confidence in every frame.

    Args:
        stride: pixels of the input image per feature-map cell (VGGT: 2, the DPT down ratio).
        corr_levels: correlation pyramid levels (VGGT-1B: 7).
        corr_radius: correlation window radius r, window (2r+1)^2 (VGGT-1B: 4).
        latent_dim: channels C of the feature maps and track features (VGGT-1B: 128); multiple of 4.
        hidden_size: width of the update transformer and of the correlation MLP (VGGT-1B: 384).
        depth: number of time blocks (and of space blocks when ``use_spaceatt``) (VGGT-1B: 6).
        max_scale: divisor for the raw flow channels (518, VGGT's training resolution).
        predict_conf: also predict a per-point confidence.
        use_spaceatt: attention across tracks through virtual tracks.
    """

    def __init__(
        self,
        stride: int,
        corr_levels: int,
        corr_radius: int,
        latent_dim: int,
        hidden_size: int,
        depth: int,
        max_scale: int = 518,
        predict_conf: bool = True,
        use_spaceatt: bool = True,
    ) -> None:
        super().__init__()
        if latent_dim % 4 != 0:
            # flow embedding needs latent_dim/2 even; the grid embedding needs (3C+4) % 4 == 0.
            raise ValueError(f"latent_dim must be a multiple of 4, got {latent_dim}")
        self.stride = stride
        self.corr_levels = corr_levels
        self.corr_radius = corr_radius
        self.latent_dim = latent_dim
        self.hidden_size = hidden_size
        self.max_scale = max_scale
        self.predict_conf = predict_conf

        self.flows_emb_dim = latent_dim // 2
        # fourier(flow) 2*(C/2) + raw flow twice (4) + correlation embedding C + track feature C.
        self.transformer_dim = 3 * latent_dim + 4

        corr_dim = corr_levels * (2 * corr_radius + 1) ** 2
        self.corr_mlp = Mlp(corr_dim, hidden_size, latent_dim)
        # Row 0 marks the query frame, row 1 every other frame.
        self.query_ref_token = nn.Parameter(torch.randn(1, 2, self.transformer_dim))
        self.updateformer = UpdateTransformer(
            input_dim=self.transformer_dim,
            hidden_size=hidden_size,
            output_dim=latent_dim + 2,
            time_depth=depth,
            space_depth=depth if use_spaceatt else 0,
        )
        self.fmap_norm = nn.LayerNorm(latent_dim)
        self.ffeat_norm = nn.GroupNorm(1, latent_dim)
        self.ffeat_updater = nn.Sequential(nn.Linear(latent_dim, latent_dim), nn.GELU())
        self.vis_predictor = nn.Sequential(nn.Linear(latent_dim, 1))
        if predict_conf:
            self.conf_predictor = nn.Sequential(nn.Linear(latent_dim, 1))

    def _check_inputs(self, query_points: Tensor, fmaps: Tensor, iters: int) -> None:
        if query_points.dim() != 3 or query_points.shape[-1] != 2:
            raise ValueError(f"query_points must be [B, N, 2], got shape {tuple(query_points.shape)}")
        if fmaps.dim() != 5:
            raise ValueError(f"fmaps must be [B, S, C, HH, WW], got shape {tuple(fmaps.shape)}")
        if fmaps.shape[0] != query_points.shape[0]:
            raise ValueError(
                f"batch mismatch: query_points {tuple(query_points.shape)} vs fmaps {tuple(fmaps.shape)}"
            )
        if fmaps.shape[2] != self.latent_dim:
            raise ValueError(
                f"fmaps {tuple(fmaps.shape)} has {fmaps.shape[2]} channels, tracker expects {self.latent_dim}"
            )
        if iters < 1:
            raise ValueError(f"iters must be >= 1, got {iters}")

    @classmethod
    def from_config(cls, cfg: TrackHeadConfig) -> TrackPredictor:
        """The tracker of a `TrackHeadConfig` (VGGT's TrackHead passes exactly these)."""
        return cls(
            stride=cfg.stride,
            corr_levels=cfg.corr_levels,
            corr_radius=cfg.corr_radius,
            latent_dim=cfg.latent_dim,
            hidden_size=cfg.hidden_size,
            depth=cfg.tracker_depth,
            predict_conf=cfg.predict_conf,
        )

    def forward(
        self, query_points: Tensor, fmaps: Tensor, iters: int, apply_sigmoid: bool = True
    ) -> tuple[list[Tensor], Tensor, Tensor | None]:
        """Track the query points through all frames.

        Args:
            query_points: [B, N, 2] (x, y) in input-image pixels, on frame 0.
            fmaps: [B, S, C, HH, WW] feature maps, one cell per ``stride`` image pixels.
            iters: refinement steps.
            apply_sigmoid: return probabilities (True) or logits for vis / conf.

        Returns:
            coord_preds: ``iters`` tensors [B, S, N, 2] in input-image pixels (frame 0 = query).
            vis: [B, S, N] visibility.
            conf: [B, S, N] confidence, or None without ``predict_conf``.
        """
        self._check_inputs(query_points, fmaps, iters)
        batch, num_points, _ = query_points.shape
        _, frames, channels, height, width = fmaps.shape

        fmaps = self.fmap_norm(fmaps.permute(0, 1, 3, 4, 2)).permute(0, 1, 4, 2, 3)

        # Work in feature-map cells; every frame starts at the query location.
        query_cells = query_points / float(self.stride)
        query_coords = query_cells.reshape(batch, 1, num_points, 2)
        coords = query_coords.repeat(1, frames, 1, 1)
        query_track_feat = sample_at_points(fmaps[:, 0], query_cells)  # [B, N, C]
        track_feats = query_track_feat.unsqueeze(1).repeat(1, frames, 1, 1)  # [B, S, N, C]

        pyramid = CorrelationPyramid(fmaps, self.corr_levels, self.corr_radius)

        # Positional term: float32 table sampled at float32-rounded query cells (reference arithmetic);
        # it depends only on the query, so it is the same for every step.
        pos_table = grid_sincos_embedding(self.transformer_dim, height, width).to(query_points.device)
        pos_at_query = sample_at_points(pos_table.expand(batch, -1, -1, -1), query_cells)
        pos_at_query = pos_at_query.reshape(batch * num_points, 1, self.transformer_dim)

        frame_tokens = torch.cat(
            [self.query_ref_token[:, :1], self.query_ref_token[:, 1:2].expand(-1, frames - 1, -1)], dim=1
        )  # [1, S, D]

        coord_preds = []
        for _ in range(iters):
            coords = coords.detach()

            corr = pyramid.sample(track_feats, coords)  # [B, S, N, L*(2r+1)^2]
            corr = corr.permute(0, 2, 1, 3).reshape(batch * num_points, frames, -1)
            corr_emb = self.corr_mlp(corr)

            flows = (coords - coords[:, :1]).permute(0, 2, 1, 3).reshape(batch * num_points, frames, 2)
            # torch.cat promotes the float32 Fourier block back to the flows' dtype.
            flow_emb = torch.cat(
                [
                    flow_fourier_embedding(flows, self.flows_emb_dim),
                    flows / self.max_scale,
                    flows / self.max_scale,
                ],
                dim=-1,
            )

            feats_flat = track_feats.permute(0, 2, 1, 3).reshape(batch * num_points, frames, channels)
            tokens = torch.cat([flow_emb, corr_emb, feats_flat], dim=2)
            tokens = tokens + pos_at_query
            tokens = tokens + frame_tokens.to(tokens.dtype)

            delta = self.updateformer(tokens.reshape(batch, num_points, frames, self.transformer_dim))
            delta = delta.reshape(batch * num_points * frames, channels + 2)
            delta_coords, delta_feats = delta[:, :2], delta[:, 2:]

            feats_flat = feats_flat.reshape(batch * num_points * frames, channels)
            feats_flat = self.ffeat_updater(self.ffeat_norm(delta_feats)) + feats_flat
            track_feats = feats_flat.reshape(batch, num_points, frames, channels).permute(0, 2, 1, 3)

            moved = coords + delta_coords.reshape(batch, num_points, frames, 2).permute(0, 2, 1, 3)
            # The query frame is pinned to the (non-detached) query point.
            coords = torch.cat([query_coords, moved[:, 1:]], dim=1)
            coord_preds.append(coords * self.stride)

        feats_flat = track_feats.reshape(batch * frames * num_points, channels)
        vis = self.vis_predictor(feats_flat).reshape(batch, frames, num_points)
        conf = None
        if self.predict_conf:
            conf = self.conf_predictor(feats_flat).reshape(batch, frames, num_points)
        if apply_sigmoid:
            vis = torch.sigmoid(vis)
            conf = torch.sigmoid(conf) if conf is not None else None
        return coord_preds, vis, conf
