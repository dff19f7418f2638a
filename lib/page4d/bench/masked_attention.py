"""Masked global attention: plain SDPA vs four ways of adding PAGE-4D's row-gated key bias.

Global attention runs over N = S * P tokens (P = 256 patches + 1 camera + 4 registers = 261 per frame at
224 x 224); the bias `gain_i * key_bias_j` is non-zero only on the R = 5 * S camera/register query rows.

methods
  plain              `F.scaled_dot_product_attention(q, k, v)` (no bias; the baseline)
  masked_sdpa        this project's `page4d.model.attention.masked_sdpa`: N - R bias-free rows through
                     plain SDPA, the R gated rows through SDPA with a `[B, 1, R, N]` bias
  recompute_rows     the earlier `masked_sdpa`: plain SDPA for all N rows, then the R gated rows again
                     with the `[B, 1, R, N]` bias, scattered over the result (kept here for comparison)
  augmented_channel  the originals' trick: one extra channel on q and k, head dim padded 64 -> 72
  dense_bias         SDPA with the explicit `[B, 1, N, N]` additive mask (built once, outside the timing)

Accuracy: `max_abs_diff` is the largest |output - dense_bias output| over all rows (float32, both via
SDPA); `max_abs_err_f64` compares against a float64 softmax(q k^T / sqrt(d) + bias) v computed
explicitly on every gated row plus `check_rows` random other rows (works where dense does not fit).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from page4d.model.attention import RowGatedKeyBias, augmented_channel_sdpa, masked_sdpa
from page4d.profiling import (
    fmt_bytes,
    median,
    paired_ratio,
    peak_memory,
    progress,
    ratio_spread,
    resolve_timer,
    table,
    time_interleaved,
)

METHODS = ("plain", "masked_sdpa", "recompute_rows", "augmented_channel", "dense_bias")
# (frames, heads): N = 1044, 4176, 16704 tokens; fewer heads at 16k keeps one call near a second or two.
DEFAULT_SIZES = ((4, 16), (16, 16), (64, 2))
QUICK_SIZES = ((2, 2), (4, 1))


def recompute_rows_sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: RowGatedKeyBias
) -> torch.Tensor:
    """The first `masked_sdpa`: every row through plain SDPA, then the gated rows recomputed with the bias."""
    out = F.scaled_dot_product_attention(q, k, v)
    row_bias = (bias.row_gain[:, :, None] * bias.key_bias[:, None, :])[:, None].to(q.dtype)
    out_rows = F.scaled_dot_product_attention(q.index_select(2, bias.rows), k, v, attn_mask=row_bias)
    return out.index_copy(2, bias.rows, out_rows)


def gated_rows(frames: int, tokens_per_frame: int, special: int, device: str = "cpu") -> torch.Tensor:
    """Indices of the camera/register tokens: the first `special` tokens of every frame."""
    return (
        torch.arange(frames, device=device)[:, None] * tokens_per_frame
        + torch.arange(special, device=device)[None, :]
    ).reshape(-1)


def make_problem(
    frames: int,
    heads: int,
    tokens_per_frame: int = 261,
    special: int = 5,
    head_dim: int = 64,
    batch: int = 1,
    device: str = "cpu",
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, RowGatedKeyBias]:
    """Random float32 q, k, v `[B, heads, N, d]` and a bias in the ranges both mask heads produce.

    Gains are uniform in [0, 64] (fin10 uses 1, the official head up to `scale` = 64); key values are
    uniform in [-0.5, 0.5] on patch keys and 0 on camera/register keys, as the heads build them.
    """
    g = torch.Generator().manual_seed(seed)
    n = frames * tokens_per_frame
    q, k, v = (torch.randn(batch, heads, n, head_dim, generator=g).to(device) for _ in range(3))
    rows = gated_rows(frames, tokens_per_frame, special, device)
    key_bias = (torch.rand(batch, frames, tokens_per_frame, generator=g) - 0.5).to(device)
    key_bias[:, :, :special] = 0.0
    row_gain = (torch.rand(batch, rows.numel(), generator=g) * 64).to(device)
    return q, k, v, RowGatedKeyBias(rows=rows, row_gain=row_gain, key_bias=key_bias.reshape(batch, n))


def reference_rows_f64(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: RowGatedKeyBias, rows: torch.Tensor
) -> torch.Tensor:
    """float64 `softmax(q k^T / sqrt(d) + bias) v` for the query rows `rows` only (O(len(rows) * N))."""
    n = q.shape[2]
    gain = bias.key_bias.new_zeros(bias.key_bias.shape[0], n, dtype=torch.float64)
    gain[:, bias.rows] = bias.row_gain.double()
    row_bias = gain[:, rows, None] * bias.key_bias.double()[:, None, :]
    qd, kd, vd = q.index_select(2, rows).double(), k.double(), v.double()
    logits = qd @ kd.transpose(-1, -2) / q.shape[-1] ** 0.5 + row_bias[:, None]
    return logits.softmax(-1) @ vd


def bias_bytes(method: str, batch: int, heads: int, n: int, rows: int, head_dim: int) -> int:
    """Bytes of bias / padding tensors a method materialises (float32), besides q, k, v and the output."""
    if method == "plain":
        return 0
    if method in ("masked_sdpa", "recompute_rows"):
        return 4 * batch * rows * n
    if method == "augmented_channel":
        d_aug = ((head_dim + 1 + 7) // 8) * 8
        return 4 * 3 * batch * heads * n * (d_aug - head_dim)
    if method == "dense_bias":
        return 4 * batch * n * n
    raise ValueError(method)


def method_fns(q, k, v, bias, with_dense: bool) -> dict[str, Any]:
    """One zero-argument call per method on the same q, k, v `[B, heads, N, d]` and row-gated bias;
    `dense_bias` (an explicit N x N additive mask) only where it fits in memory."""
    fns = {
        "plain": lambda: F.scaled_dot_product_attention(q, k, v),
        "masked_sdpa": lambda: masked_sdpa(q, k, v, bias),
        "recompute_rows": lambda: recompute_rows_sdpa(q, k, v, bias),
        "augmented_channel": lambda: augmented_channel_sdpa(q, k, v, bias),
    }
    if with_dense:
        dense = bias.dense(q.shape[2]).to(q.dtype)
        fns["dense_bias"] = lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=dense)
    return fns


def checked_rows(gated: torch.Tensor, n: int, extra: int, seed: int) -> torch.Tensor:
    """Rows the float64 reference checks: every gated row plus `extra` random other rows."""
    g = torch.Generator().manual_seed(seed)
    others = torch.randperm(n, generator=g)[: extra + gated.numel()].to(gated.device)
    return torch.cat([gated, others[~torch.isin(others, gated)][:extra]])


def run(
    sizes: tuple[tuple[int, int], ...] = DEFAULT_SIZES,
    tokens_per_frame: int = 261,
    special: int = 5,
    head_dim: int = 64,
    batch: int = 1,
    repeats: int = 5,
    repeats_large: int = 3,
    large_tokens: int = 8192,
    dense_max_tokens: int = 20_000,
    check_rows: int = 64,
    memory: bool = True,
    device: str = "cpu",
    timer: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Time, memory and accuracy of every method at each (frames, heads) size; ratios vs plain SDPA."""
    timer = resolve_timer(timer, device)
    results = []
    for frames, heads in sizes:
        n = frames * tokens_per_frame
        progress(f"[masked_attention] N={n} tokens, {heads} heads, d={head_dim}")
        q, k, v, bias = make_problem(frames, heads, tokens_per_frame, special, head_dim, batch, device, seed)
        r = bias.rows.numel()
        fns = method_fns(q, k, v, bias, with_dense=n <= dense_max_tokens)
        with torch.no_grad():
            times = time_interleaved(fns, repeats if n < large_tokens else repeats_large, timer, device)
            outputs = {name: fn() for name, fn in fns.items()}
            mem = {name: peak_memory(fn, device) for name, fn in fns.items()} if memory else {}
            check = checked_rows(bias.rows, n, check_rows, seed + 1)
            ref64 = reference_rows_f64(q, k, v, bias, check)
        ref = outputs.get("dense_bias")
        res: dict[str, Any] = {
            "tokens": n,
            "frames": frames,
            "tokens_per_frame": tokens_per_frame,
            "heads": heads,
            "head_dim": head_dim,
            "batch": batch,
            "gated_rows": r,
            "repeats": len(times["plain"]),
            "time_s": {m: median(times[m]) for m in fns},
            "ratio_vs_plain": {m: paired_ratio(times, m, "plain") for m in fns},
            "ratio_spread": {m: ratio_spread(times, m, "plain") for m in fns},
            "extra_memory_bytes": {m: bias_bytes(m, batch, heads, n, r, head_dim) for m in fns},
            "extra_peak_bytes": (
                {m: mem[m]["peak_bytes"] - mem["plain"]["peak_bytes"] for m in fns} if memory else None
            ),
            "peak_bytes": {m: mem[m]["peak_bytes"] for m in fns} if memory else None,
            "max_abs_diff": {
                m: (float((outputs[m] - ref).abs().max()) if ref is not None else None) for m in fns
            },
            "max_abs_err_f64": {
                m: float((outputs[m].index_select(2, check).double() - ref64).abs().max()) for m in fns
            },
            "plain_max_abs_diff_on_gated_rows": float(
                (outputs["plain"].index_select(2, bias.rows).double() - ref64[:, :, :r]).abs().max()
            ),
        }
        results.append(res)
        del outputs, fns, q, k, v
    return {
        "benchmark": "masked_attention",
        "dtype": "float32",
        "timer": timer,
        "note": (
            "ratio_vs_plain = median over interleaved rounds of t_method / t_plain; extra_memory_bytes = "
            "bias/padding tensors the method materialises; extra_peak_bytes = measured peak allocation "
            "minus plain's; max_abs_diff vs dense_bias output (float32), max_abs_err_f64 vs a float64 "
            "reference on all gated rows + random others"
        ),
        "results": results,
    }


def format_result(result: dict[str, Any]) -> str:
    out = []
    for res in result["results"]:
        out.append(
            f"N = {res['tokens']} tokens ({res['frames']} frames x {res['tokens_per_frame']}), "
            f"B={res['batch']}, heads={res['heads']}, d={res['head_dim']}, gated rows R={res['gated_rows']}, "
            f"{res['repeats']} interleaved rounds"
        )
        rows = []
        for m in res["time_s"]:
            diff = res["max_abs_diff"][m]
            rows.append(
                [
                    m,
                    f"{res['time_s'][m] * 1e3:.1f}",
                    f"{res['ratio_vs_plain'][m]:.3f}x",
                    "{q25:.3f}-{q75:.3f}".format(**res["ratio_spread"][m]),
                    f"{res['ratio_spread'][m]['min_over_min']:.3f}x",
                    fmt_bytes(res["extra_memory_bytes"][m]),
                    fmt_bytes(res["extra_peak_bytes"][m]) if res["extra_peak_bytes"] else "-",
                    "-" if diff is None else f"{diff:.1e}",
                    f"{res['max_abs_err_f64'][m]:.1e}",
                ]
            )
        out.append(
            table(
                [
                    "method",
                    "median ms",
                    "vs plain",
                    "IQR",
                    "min/min",
                    "bias bytes",
                    "extra peak",
                    "|diff| dense",
                    "|err| f64",
                ],
                rows,
            )
        )
        out.append(
            "(plain SDPA ignoring the bias is off by "
            f"{res['plain_max_abs_diff_on_gated_rows']:.2e} on gated rows)"
        )
        out.append("")
    return "\n".join(out).rstrip()
