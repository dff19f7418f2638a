"""MoRe's attention forcing: the camera/register tokens should not look at what moves.

PAGE-4D steers its camera and register tokens away from moving patches through an additive attention
bias learnt by the mask head. MoRe (CVPR 2026) supervises that attention itself: in the global blocks
the bias acts on, the softmax weight that each camera/register query row puts on GT-dynamic patch keys
is a loss. That weight is what moves a camera estimate towards a mover, so this term targets the
phenomenon directly, whichever way (bias, q/k of the middle blocks) the network finds to lower it.

    mass[b, r] = sum_j softmax_j(q_r . k_j / sqrt(d) + bias_rj) * dynamic_j     (mean over heads)
    loss = mean over masked blocks, batch and rows of mass

q and k are each block's own (after qk-norm and RoPE, as `page4d.model.attention.observe_qk` hands them
over); the bias is the block's `RowGatedKeyBias` (None where the bias is off: then plain softmax).
Only the R special rows are computed: O(R * N) memory, like the bias itself.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from page4d.checks import require_tensor

__all__ = ["camera_attention_on_dynamic", "attention_forcing_loss", "dynamic_keys"]


def dynamic_keys(patch_masks: torch.Tensor, patch_start: int) -> torch.Tensor:
    """Per-key dynamic weight `[B, S*P]` from patch-grid masks `[B, S, h, w]` (1 = dynamic, soft allowed):
    camera/register keys are never dynamic."""
    m = require_tensor(patch_masks, "patch_masks")
    if m.ndim != 4:
        raise ValueError(f"patch_masks must be [B, S, h, w], got {tuple(m.shape)}")
    b, s, h, w = m.shape
    special = m.new_zeros(b, s, patch_start)
    return torch.cat([special, m.reshape(b, s, h * w)], dim=-1).reshape(b, -1)


def camera_attention_on_dynamic(
    q: torch.Tensor, k: torch.Tensor, rows: torch.Tensor, keys: torch.Tensor, bias=None
) -> torch.Tensor:
    """Attention mass `[B, R]` that query rows `rows` put on dynamic keys (mean over heads).

    q, k: `[B, heads, N, d]`; rows: `[R]` token indices (camera/register tokens of every frame);
    keys: `[B, N]` dynamic weight per key; bias: the block's `RowGatedKeyBias` whose rows are `rows`
    (or None)."""
    if q.ndim != 4 or k.shape != q.shape:
        raise ValueError(f"q and k must both be [B, heads, N, d], got {tuple(q.shape)} and {tuple(k.shape)}")
    if tuple(keys.shape) != (q.shape[0], q.shape[2]):
        raise ValueError(f"keys must be [B, N] = {[q.shape[0], q.shape[2]]}, got {list(keys.shape)}")
    logits = (q.index_select(2, rows).float() @ k.float().transpose(-1, -2)) * q.shape[-1] ** -0.5
    if bias is not None:
        if not torch.equal(bias.rows, rows):
            raise ValueError("the bias gates other rows than the ones asked for")
        logits = logits + (bias.row_gain[:, :, None] * bias.key_bias[:, None, :])[:, None].float()
    return (logits.softmax(-1) * keys[:, None, None, :].float()).sum(-1).mean(1)


def attention_forcing_loss(
    qk: Mapping[int, tuple[torch.Tensor, torch.Tensor]],
    rows: torch.Tensor,
    keys: torch.Tensor,
    biases: Mapping[int, object] | None = None,
) -> torch.Tensor:
    """Mean attention mass on dynamic keys over the observed blocks `qk` {block: (q, k)}."""
    if not qk:
        raise ValueError("attention forcing needs the q/k of at least one masked global block")
    masses = [
        camera_attention_on_dynamic(q, k, rows, keys, (biases or {}).get(i)) for i, (q, k) in qk.items()
    ]
    return torch.stack([m.mean() for m in masses]).mean()
