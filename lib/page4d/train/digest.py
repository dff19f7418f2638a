"""A digest of a model's weights: equal digests mean bit-identical weights.

Why: resumed runs, DDP ranks and paired ablation arms are checked by comparing weights, and those can be
a few GB on a GPU. The digest is computed where the weights live (two integers per tensor reach the
host, never the tensor), exactly and order-independently, so it is deterministic on any device.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

_FINGERPRINT_CHUNK = 1 << 22
_K1, _K2 = 0x5851F42D4C957F2D, 0x14057B7EF767814F


def _tensor_fingerprint(t: torch.Tensor) -> torch.Tensor:
    """Two int64 sums over a tensor's bytes read as 32-bit words w_i, computed where the tensor lives:
    sum(w_i) and sum(w_i * c_i) with odd position-dependent c_i. Integer wrap-around makes them exact and
    order-independent (deterministic on any device); a single changed word always changes the second."""
    raw = t.detach().contiguous().reshape(-1).view(torch.uint8)
    if raw.numel() % 4:
        raw = torch.cat([raw, raw.new_zeros(4 - raw.numel() % 4)])
    words = raw.view(torch.int32)
    total = torch.zeros(2, dtype=torch.int64, device=t.device)
    for lo in range(0, words.numel(), _FINGERPRINT_CHUNK):
        w = words[lo : lo + _FINGERPRINT_CHUNK].to(torch.int64)
        idx = torch.arange(lo, lo + w.numel(), dtype=torch.int64, device=t.device)
        coef = (idx * _K1 + _K2) | 1
        total += torch.stack([w.sum(), (w * coef).sum()])
    return total


def weights_digest(model: nn.Module) -> str:
    """Digest of every state-dict tensor: equal digests mean bit-identical weights.

    Computed on the model's device (the weights are never copied to the host; one pair of integers per
    tensor is): SHA-256 over each tensor's name, dtype, shape and `_tensor_fingerprint`.
    """
    items = list(model.state_dict().items())
    prints = torch.stack([_tensor_fingerprint(t).cpu() for _, t in items]) if items else torch.zeros(0, 2)
    h = hashlib.sha256()
    for (name, t), fp in zip(items, prints.tolist(), strict=True):
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|{fp[0]}|{fp[1]}".encode())
    return h.hexdigest()
