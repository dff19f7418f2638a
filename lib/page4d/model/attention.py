"""Multi-head attention with qk-norm, RoPE and PAGE-4D's row-gated key bias.

PAGE-4D biases the attention logits of global blocks as `q.k / sqrt(d) + r_i * c_j`: a per-query gain
`r_i` (non-zero only on camera/register rows) times a per-key value `c_j` (from the mask head, zero on
special keys). The originals realised this by appending a channel to q and k and padding the head
dimension to a multiple of 8. Here the rows are split: the N - R bias-free rows run through plain SDPA
and only the R gated rows (R = 5 per frame) get an explicit bias of shape `[B, 1, R, N]`, so memory stays
O(R * N) = O(S * N) instead of O(N^2) and no row is computed twice (see lib/page4d/bench/masked_attention.py).

Any layer can be watched: `observe_qk` hands the q and k it is about to attend with (after qk-norm and
RoPE) to a callback for the duration of a `with` block (VGGT4D's motion cues read them from the global
blocks, see `page4d.inference.motion_cues`). Unobserved, the cost is one attribute test per call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .rope import RotaryPositionEmbedding2D


@dataclass
class RowGatedKeyBias:
    """Additive logit bias `gain[b, i] * key_bias[b, j]`, non-zero only on the query rows `rows`.

    rows: `[R]` distinct indices into the N tokens; row_gain: `[B, R]`; key_bias: `[B, N]`.
    """

    rows: torch.Tensor
    row_gain: torch.Tensor
    key_bias: torch.Tensor

    def dense(self, num_tokens: int) -> torch.Tensor:
        """The explicit `[B, 1, N, N]` bias (reference and tests only: O(N^2) memory)."""
        gain = self.key_bias.new_zeros(self.key_bias.shape[0], num_tokens)
        gain[:, self.rows] = self.row_gain
        return (gain[:, :, None] * self.key_bias[:, None, :])[:, None]


def masked_sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: RowGatedKeyBias | None
) -> torch.Tensor:
    """SDPA over `[B, heads, N, d]`; rows listed in `bias` get `gain_i * key_bias_j` added to their logits.

    The bias-free rows and the gated rows are two separate SDPA calls (gathered with `index_select`,
    scattered back with `index_copy_`), so each row is computed once; the only bias tensor is `[B,1,R,N]`.
    The complement of `rows` comes from a stable argsort, which needs no host-device synchronisation.
    """
    if bias is None:
        return F.scaled_dot_product_attention(q, k, v)
    n, r = q.shape[2], bias.rows.numel()
    row_bias = (bias.row_gain[:, :, None] * bias.key_bias[:, None, :])[:, None].to(q.dtype)
    out_rows = _biased_rows_sdpa(q.index_select(2, bias.rows), k, v, row_bias)
    if r == n:
        return out_rows.new_empty(out_rows.shape).index_copy_(2, bias.rows, out_rows)
    gated = torch.zeros(n, dtype=torch.uint8, device=q.device).index_fill_(0, bias.rows, 1)
    if gated.device.type == "cpu" and int(gated.sum()) != r:
        raise ValueError(f"RowGatedKeyBias.rows must be {r} distinct indices below {n}")
    other = torch.argsort(gated, stable=True)[: n - r]
    out_other = F.scaled_dot_product_attention(q.index_select(2, other), k, v)
    out = out_other.new_empty(*q.shape[:-1], v.shape[-1])
    return out.index_copy_(2, other, out_other).index_copy_(2, bias.rows, out_rows)


def explicit_biased_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """`softmax(q k^T / sqrt(d) + bias) v` written out in float32 (differentiable in every input)."""
    logits = (q.float() @ k.float().transpose(-1, -2)) * q.shape[-1] ** -0.5 + bias.float()
    return (logits.softmax(-1) @ v.float()).to(v.dtype)


def _biased_rows_sdpa(q_rows: torch.Tensor, k: torch.Tensor, v: torch.Tensor, row_bias: torch.Tensor):
    """Attention of the R gated rows with their `[B, 1, R, N]` bias.

    CUDA's memory-efficient kernel rejects some shapes in backward ("LSE is not correctly aligned"):
    when the bias itself needs a gradient (the mask head is training) the R rows are computed explicitly
    in float32 (O(R * N) memory, like the bias); otherwise R is padded with zero rows to a multiple of 32.
    """
    if not q_rows.is_cuda:
        return F.scaled_dot_product_attention(q_rows, k, v, attn_mask=row_bias)
    if row_bias.requires_grad:
        return explicit_biased_attention(q_rows, k, v, row_bias)
    r = q_rows.shape[2]
    pad = (-r) % 32
    out = F.scaled_dot_product_attention(
        F.pad(q_rows, (0, 0, 0, pad)), k, v, attn_mask=F.pad(row_bias, (0, 0, 0, pad))
    )
    return out[:, :, :r]


def augmented_channel_sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: RowGatedKeyBias
) -> torch.Tensor:
    """The originals' formulation (one extra channel, head dim padded to a multiple of 8); for benchmarks."""
    b, h, n, d = q.shape
    gain = q.new_zeros(b, n)
    gain[:, bias.rows] = bias.row_gain.to(q.dtype)
    d_aug = ((d + 1 + 7) // 8) * 8
    pad = d_aug - d - 1
    q_aug = torch.cat(
        [
            q * (d_aug / d) ** 0.5,
            (gain * d_aug**0.5)[:, None, :, None].expand(b, h, n, 1),
            q.new_zeros(b, h, n, pad),
        ],
        dim=-1,
    )
    k_aug = torch.cat(
        [k, bias.key_bias.to(q.dtype)[:, None, :, None].expand(b, h, n, 1), k.new_zeros(b, h, n, pad)], dim=-1
    )
    v_aug = torch.cat([v, v.new_zeros(b, h, n, d_aug - d)], dim=-1)
    return F.scaled_dot_product_attention(q_aug, k_aug, v_aug)[..., :d]


QKObserver = Callable[[torch.Tensor, torch.Tensor], None]


class Attention(nn.Module):
    """`qkv` projection, optional per-head LayerNorm on q and k, optional 2D RoPE, SDPA, output projection.

    `qk_observer` (None unless set by :func:`observe_qk`) is called as `observer(q, k)` with the
    `[B, heads, N, head_dim]` tensors the attention uses; it must not modify them in place.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        qk_norm: bool = False,
        rope: RotaryPositionEmbedding2D | None = None,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = nn.LayerNorm(self.head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.rope = rope
        self.qk_observer: QKObserver | None = None

    def forward(
        self, x: torch.Tensor, pos: torch.Tensor | None = None, bias: RowGatedKeyBias | None = None
    ) -> torch.Tensor:
        """x: `[B, N, C]`; pos: `[B, N, 2]` (needed with RoPE); returns `[B, N, C]`."""
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.rope is not None:
            if pos is None:
                raise ValueError("this attention layer uses RoPE and needs token positions")
            q, k = self.rope(q, pos), self.rope(k, pos)
        if self.qk_observer is not None:
            self.qk_observer(q, k)
        if x.is_cuda:
            # views of the fused qkv projection: the memory-efficient kernel's backward needs dense heads
            q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        out = masked_sdpa(q, k, v, bias)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


@contextmanager
def observe_qk(
    layers: Mapping[int, Attention], observer: Callable[[int, torch.Tensor, torch.Tensor], None]
) -> Iterator[None]:
    """Inside the block, every forward of `layers[i]` first calls `observer(i, q, k)` with its q and k
    `[B, heads, N, head_dim]` after qk-norm and RoPE (exactly what SDPA receives). Outputs are unchanged
    as long as the observer only reads them. On exit (also on an error) the layers are unobserved again.

    Refuses a layer that already has an observer: two nested observations would silently replace each other.
    """
    busy = sorted(i for i, attn in layers.items() if attn.qk_observer is not None)
    if busy:
        raise RuntimeError(
            f"attention layers {busy} already have a q/k observer; nested observation is refused"
        )
    for i, attn in layers.items():
        attn.qk_observer = partial(observer, i)
    try:
        yield
    finally:  # restores the layers; the error itself propagates
        for attn in layers.values():
            attn.qk_observer = None
