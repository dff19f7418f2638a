"""PAGE-4D dynamic-mask heads: per-patch logits that bias camera/register attention away from motion.

Both heads read the patch tokens after an early frame block (detached by default, as in the originals)
and return a `MaskHeadOutput`. Its `dynamic_logits` follow this project's sign rule:
`sigmoid(dynamic_logits)` is the per-patch suppression probability the attention actually uses, so a BCE
target of 1 (= dynamic) strengthens suppression. The raw conv-stack output stays in `raw_logits`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attention import RowGatedKeyBias
from .config import MaskHeadConfig


@dataclass
class MaskHeadOutput:
    """What a mask head produced for one forward pass.

    raw_logits: `[B*S, 1, h, w]` output of the head's conv stack (`m_logit` in the originals); None
        when the dynamic logits were given instead of predicted (`bias_from_dynamic_logits`).
    head_input: `[B*S, C, h, w]` tensor fed to the conv stack (None likewise).
    dynamic_logits: `[B, S, 1, h, w]`, `sigmoid(.)` = suppression probability (1 = dynamic).
    query_gain: `[B, S*P]` per-query-row gain r_i (non-zero on camera/register rows only).
    key_bias: `[B, S*P]` per-key value c_j (zero on camera/register keys).
    """

    raw_logits: torch.Tensor | None
    head_input: torch.Tensor | None
    dynamic_logits: torch.Tensor
    query_gain: torch.Tensor
    key_bias: torch.Tensor

    def attention_bias(
        self, patch_start: int, tokens_per_frame: int, all_rows: bool = False
    ) -> RowGatedKeyBias:
        """The `RowGatedKeyBias` for global attention over `S*P` tokens (rows = special tokens; every token
        with `all_rows`, an experiment's variant, never the originals': see `Fin10MaskHead.all_rows`)."""
        b, n = self.query_gain.shape
        if all_rows:
            rows = torch.arange(n, device=self.query_gain.device)
            return RowGatedKeyBias(
                rows=rows, row_gain=torch.ones_like(self.query_gain), key_bias=self.key_bias
            )
        frames = n // tokens_per_frame
        rows = (
            torch.arange(frames, device=self.query_gain.device)[:, None] * tokens_per_frame
            + torch.arange(patch_start, device=self.query_gain.device)[None, :]
        ).reshape(-1)
        return RowGatedKeyBias(rows=rows, row_gain=self.query_gain[:, rows], key_bias=self.key_bias)


def _patch_grid(tokens: torch.Tensor, patch_start: int, grid_h: int, grid_w: int) -> torch.Tensor:
    """`[B, S, P, C]` tokens -> `[B*S, C, h, w]` patch feature map."""
    b, s, p, c = tokens.shape
    if p - patch_start != grid_h * grid_w:
        raise ValueError(f"{p - patch_start} patch tokens do not form a {grid_h}x{grid_w} grid")
    return tokens.reshape(b * s, p, c)[:, patch_start:].transpose(1, 2).reshape(b * s, c, grid_h, grid_w)


def _special_rows(b: int, s: int, p: int, patch_start: int, value, like: torch.Tensor) -> torch.Tensor:
    gain = like.new_zeros(b, s, p)
    gain[:, :, :patch_start] = value
    return gain.reshape(b, s * p)


class Fin10MaskHead(nn.Module):
    """MV_PAGE4D's `SpatialMaskHead_IMP`: depthwise 3x3 -> GELU -> depthwise 3x3 -> GELU -> 1x1.

    Attention bias: `c_j = soft_mask_bias * clamp(alpha * sigmoid(-m_j / tau), 0, 1)` on patch keys, applied
    with gain 1 on camera/register rows. A large `m` means "keep", so the dynamic logit is `-m / tau`.

    `all_rows` (an attribute, False as in the original; not a weight): apply the bias to every query row,
    patch tokens too, for experiments that ask whether a mask helps when the whole global attention of
    the masked blocks ignores movers (`experiments.ablation`'s `oracle_hard_all`).
    """

    def __init__(self, dim: int, cfg: MaskHeadConfig) -> None:
        super().__init__()
        self.head0 = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1, groups=dim),
            nn.GELU(),
            nn.Conv2d(dim, dim, 3, padding=1, groups=dim),
            nn.GELU(),
            nn.Conv2d(dim, 1, 1),
        )
        self.alpha_logit = nn.Parameter(torch.tensor(float(cfg.alpha_init)).log())
        self.tau_logit = nn.Parameter(torch.tensor(float(cfg.tau_init)).log())
        self.soft_mask_bias = cfg.soft_mask_bias
        self.all_rows = False
        self.eps = 1e-6

    def temperature(self) -> torch.Tensor:
        return torch.clamp(F.softplus(self.tau_logit) + self.eps, min=1e-3)

    def set_reach(self, reach: float) -> None:
        """Make the key bias reach `-reach` on a fully dynamic key at the current alpha, instead of the
        original's `alpha * soft_mask_bias` (-0.35 at initialisation): for experiments asking what a
        stronger bias would do. A setting, not a weight (checkpoints do not carry it)."""
        self.soft_mask_bias = -reach / float(self.alpha().detach())

    def alpha(self) -> torch.Tensor:
        """`softplus(alpha_logit) + eps`. `alpha_logit` starts at `log(alpha_init)`, so the default
        `alpha_init=1.0` gives alpha = softplus(0) = ln 2 ~ 0.693 at initialisation, as in the original
        (not 1: the key bias then reaches at most 0.693 * |soft_mask_bias|)."""
        return F.softplus(self.alpha_logit) + self.eps

    def forward(self, tokens: torch.Tensor, patch_start: int, grid_h: int, grid_w: int) -> MaskHeadOutput:
        b, s, p, _ = tokens.shape
        head_input = _patch_grid(tokens, patch_start, grid_h, grid_w)
        raw = self.head0(head_input)
        dynamic = -raw / self.temperature()
        out = self.bias_from_dynamic_logits(dynamic.reshape(b, s, grid_h, grid_w), p, patch_start)
        out.raw_logits, out.head_input = raw, head_input
        return out

    def bias_from_dynamic_logits(self, dynamic: torch.Tensor, p: int, patch_start: int) -> MaskHeadOutput:
        """The attention bias this head applies for dynamic logits `[B, S, h, w]` (predicted by the
        head, or given: GT masks for an oracle, a user's masks), exactly as from its own prediction."""
        b, s, grid_h, grid_w = dynamic.shape
        suppress = torch.sigmoid(dynamic).reshape(b, s, grid_h * grid_w)
        key_bias = dynamic.new_zeros(b, s, p)
        key_bias[:, :, patch_start:] = torch.clamp(self.alpha() * suppress, 0.0, 1.0) * self.soft_mask_bias
        return MaskHeadOutput(
            raw_logits=None,
            head_input=None,
            dynamic_logits=dynamic.reshape(b, s, 1, grid_h, grid_w),
            query_gain=_special_rows(b, s, p, patch_start, 1.0, dynamic),
            key_bias=key_bias.reshape(b, s * p),
        )


def hold_schedule(step: float, hold_start: int, hold_end: int) -> float:
    """PAGE-4D's gain schedule: 1 before `hold_start`, cosine decay to 0 at `hold_end`, 0 after."""
    if step < hold_start:
        return 1.0
    if step >= hold_end:
        return 0.0
    u = (step - hold_start) / float(hold_end - hold_start)
    return 0.5 * (1.0 + math.cos(math.pi * u))


class OfficialMaskHead(nn.Module):
    """PAGE-4D release head: per-channel spatial standardisation, depthwise 3x3 -> GELU -> 1x1 (K) -> GELU
    -> 1x1, then `m = sigmoid(x + mean_c(standardised)) - 0.5` on patch keys with gain `scale * schedule`.

    `m` near +0.5 means "attend more", so the dynamic logit is minus the pre-sigmoid value. The schedule
    step advances once per training-mode forward, exactly as in the release. One deliberate difference: the
    release also sets `requires_grad=False` on the head once the gain reaches 0; here the head stays
    trainable (mask supervision can still train it, and the zero gain already removes its effect).
    The presets hold the full gain forever (`hold_start = hold_end = 2**31 - 1`); set both to schedule it.
    The step counter is a registered (non-persistent) int64 buffer: it moves with the model, is left alone
    by dtype casts, and a trainer checkpoint saves and restores it; released state dicts do not carry it.
    """

    def __init__(self, dim: int, cfg: MaskHeadConfig) -> None:
        super().__init__()
        k = cfg.pointwise_channels
        self.head0 = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1, groups=dim),
            nn.GELU(),
            nn.Conv2d(dim, k, 1),
            nn.GELU(),
            nn.Conv2d(k, 1, 1),
        )
        self.scale = cfg.scale
        self.hold_start = cfg.hold_start
        self.hold_end = cfg.hold_end
        self.register_buffer("schedule_step", torch.zeros((), dtype=torch.long), persistent=False)

    def gain(self) -> float:
        return hold_schedule(float(self.schedule_step), self.hold_start, self.hold_end) * self.scale

    @staticmethod
    def standardize(x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(2, 3), keepdim=True)
        std = x.std(dim=(2, 3), keepdim=True).clamp(min=1e-6)
        return (x - mean) / std

    def forward(self, tokens: torch.Tensor, patch_start: int, grid_h: int, grid_w: int) -> MaskHeadOutput:
        if self.training:
            self.schedule_step += 1
        b, s, p, _ = tokens.shape
        head_input = self.standardize(_patch_grid(tokens, patch_start, grid_h, grid_w))
        raw = self.head0(head_input)
        pre = raw + head_input.mean(dim=1, keepdim=True).detach()
        out = self.bias_from_dynamic_logits((-pre).reshape(b, s, grid_h, grid_w), p, patch_start)
        out.raw_logits, out.head_input = raw, head_input
        return out

    def bias_from_dynamic_logits(self, dynamic: torch.Tensor, p: int, patch_start: int) -> MaskHeadOutput:
        """The attention bias for dynamic logits `[B, S, h, w]` (see `Fin10MaskHead`'s): `m = sigmoid(-d)
        - 0.5` on patch keys with this head's gain on camera/register rows."""
        b, s, grid_h, grid_w = dynamic.shape
        keep = (torch.sigmoid(-dynamic) - 0.5).reshape(b, s, grid_h * grid_w)
        key_bias = dynamic.new_zeros(b, s, p)
        key_bias[:, :, patch_start:] = keep
        return MaskHeadOutput(
            raw_logits=None,
            head_input=None,
            dynamic_logits=dynamic.reshape(b, s, 1, grid_h, grid_w),
            query_gain=_special_rows(b, s, p, patch_start, self.gain(), dynamic),
            key_bias=key_bias.reshape(b, s * p),
        )


def build_mask_head(dim: int, cfg: MaskHeadConfig) -> nn.Module:
    if cfg.variant == "fin10":
        return Fin10MaskHead(dim, cfg)
    if cfg.variant == "official":
        return OfficialMaskHead(dim, cfg)
    raise ValueError(f"unknown mask head variant {cfg.variant!r}")
