"""VGGT camera head: iterative refinement of the `absT_quaR_FoV` pose encoding from camera tokens.

Encoding (9 numbers per frame): translation t (3), quaternion xyzw (4), field of view (fov_h, fov_w), for
a world-to-camera OpenCV extrinsic. Each iteration embeds the previous (detached) estimate, modulates the
normalised camera tokens with adaLN (shift, scale, gate), runs the trunk and adds a delta.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .block import Block, Mlp
from .config import CameraHeadConfig

POSE_ENCODING_DIM = 9


def _activate(x: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "linear":
        return x
    if kind == "relu":
        return F.relu(x)
    if kind == "exp":
        return torch.exp(x)
    if kind == "inv_log":
        return torch.sign(x) * torch.expm1(torch.abs(x))
    raise ValueError(f"unknown pose activation {kind!r}")


class CameraHead(nn.Module):
    def __init__(self, dim_in: int, cfg: CameraHeadConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.trunk = nn.Sequential(
            *[Block(dim_in, cfg.num_heads, cfg.mlp_ratio, cfg.init_values) for _ in range(cfg.trunk_depth)]
        )
        self.token_norm = nn.LayerNorm(dim_in)
        self.trunk_norm = nn.LayerNorm(dim_in)
        self.empty_pose_tokens = nn.Parameter(torch.zeros(1, 1, POSE_ENCODING_DIM))
        self.embed_pose = nn.Linear(POSE_ENCODING_DIM, dim_in)
        self.poseLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim_in, 3 * dim_in))
        self.adaln_norm = nn.LayerNorm(dim_in, elementwise_affine=False, eps=1e-6)
        self.pose_branch = Mlp(dim_in, dim_in // 2, POSE_ENCODING_DIM)

    def activate(self, enc: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                _activate(enc[..., :3], self.cfg.trans_act),
                _activate(enc[..., 3:7], self.cfg.quat_act),
                _activate(enc[..., 7:], self.cfg.fl_act),
            ],
            dim=-1,
        )

    def forward(self, tokens_list: list[torch.Tensor]) -> list[torch.Tensor]:
        """tokens_list: aggregator outputs `[B, S, P, 2C]`; returns one `[B, S, 9]` encoding per iteration."""
        tokens = self.token_norm(tokens_list[-1][:, :, 0])
        b, s, _ = tokens.shape
        estimate = None
        encodings = []
        for _ in range(self.cfg.num_iterations):
            if estimate is None:
                cond = self.embed_pose(self.empty_pose_tokens.expand(b, s, -1))
            else:
                estimate = estimate.detach()
                cond = self.embed_pose(estimate)
            shift, scale, gate = self.poseLN_modulation(cond).chunk(3, dim=-1)
            modulated = gate * (self.adaln_norm(tokens) * (1 + scale) + shift) + tokens
            delta = self.pose_branch(self.trunk_norm(self.trunk(modulated)))
            estimate = delta if estimate is None else estimate + delta
            encodings.append(self.activate(estimate))
        return encodings
