"""One geometric transform (centre crop, then resize) applied identically to every modality.

The original loader letterboxed images but squashed masks and depth, so labels no longer lay on the
pixels they describe. Here a single `CropResize` maps source pixels to output pixels and every
modality (images, masks, depth, intrinsics, 2D tracks) goes through that same map:

- Pixel convention: integer coordinates are pixel centres (OpenCV). A source coordinate x maps to
  ``x' = (x - left + 0.5) * sx - 0.5`` with ``sx = W / crop_w``; the intrinsics follow from that
  (``fx' = fx * sx``, ``cx' = (cx - left + 0.5) * sx - 0.5``).
- Aspect ratio: a centre crop to the target ratio, then a resize. Never squash, never letterbox.
- Images: exact area (box) filter per downscaled axis, bicubic per upscaled axis.
- Masks: nearest (the source pixel whose centre is closest to the output centre), or ``"area"``
  for soft masks (fraction of dynamic source area).
- Depth: valid-aware lower median over the source pixels whose centres fall inside the output pixel
  (nearest when none does). An output pixel is valid when at least half its samples are, and its value
  is always one measured sample: invalid zeros are never mixed in and no value is invented across a
  depth edge (a mean there creates "flying" points between foreground and background). This is the
  same rule used to make the 2x downscaled ``mv_scene`` copy, so it reproduces that copy exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

PATCH_SIZE = 14

MaskMode = Literal["nearest", "area"]
DepthMode = Literal["median", "nearest"]


def check_patch_multiple(size_hw: tuple[int, int], patch: int = PATCH_SIZE) -> tuple[int, int]:
    """Return (H, W) as ints, raising when either is not a positive multiple of the ViT patch size."""
    H, W = (int(s) for s in size_hw)
    if H <= 0 or W <= 0 or H % patch or W % patch:
        raise ValueError(f"image_size (H, W) = ({H}, {W}) must be positive multiples of {patch}")
    return H, W


def vggt_size(src_hw: tuple[int, int], width: int = 518, patch: int = PATCH_SIZE) -> tuple[int, int]:
    """VGGT's preprocessing size: W = ``width``, H = ``width * h / w`` rounded to a multiple of ``patch``.

    (240, 320) -> (392, 518) with the default; ``width=224`` gives (168, 224) for CPU runs.
    """
    h, w = src_hw
    if width % patch:
        raise ValueError(f"width {width} must be a multiple of {patch}")
    H = max(patch, round(width * h / w / patch) * patch)
    return H, width


@dataclass(frozen=True)
class CropResize:
    """Centre crop ``[top:top+crop_h, left:left+crop_w]`` of a ``src_hw`` frame, resized to ``out_hw``."""

    src_hw: tuple[int, int]
    out_hw: tuple[int, int]
    top: int
    left: int
    crop_h: int
    crop_w: int

    @classmethod
    def identity(cls, src_hw: tuple[int, int]) -> CropResize:
        h, w = src_hw
        return cls(src_hw=(h, w), out_hw=(h, w), top=0, left=0, crop_h=h, crop_w=w)

    @classmethod
    def centered(cls, src_hw: tuple[int, int], out_hw: tuple[int, int]) -> CropResize:
        """Largest centred crop with the target aspect ratio (to the nearest pixel), then resize."""
        h, w = (int(s) for s in src_hw)
        H, W = (int(s) for s in out_hw)
        if w * H > W * h:  # source is wider than the target: cut columns
            crop_h, crop_w = h, min(w, round(h * W / H))
        else:  # source is taller (or equal): cut rows
            crop_h, crop_w = min(h, round(w * H / W)), w
        return cls(
            src_hw=(h, w),
            out_hw=(H, W),
            top=(h - crop_h) // 2,
            left=(w - crop_w) // 2,
            crop_h=crop_h,
            crop_w=crop_w,
        )

    @property
    def scale(self) -> tuple[float, float]:
        """(sy, sx): output pixels per source pixel along each axis."""
        return self.out_hw[0] / self.crop_h, self.out_hw[1] / self.crop_w

    @property
    def is_identity(self) -> bool:
        return (
            self.crop_h == self.out_hw[0] == self.src_hw[0]
            and self.crop_w == self.out_hw[1] == self.src_hw[1]
        )

    def pixel_affine(self) -> torch.Tensor:
        """[3, 3] float64 A with ``[u', v', 1] = A [u, v, 1]`` (pixel-centre convention); ``K' = A K``."""
        sy, sx = self.scale
        return torch.tensor(
            [
                [sx, 0.0, (0.5 - self.left) * sx - 0.5],
                [0.0, sy, (0.5 - self.top) * sy - 0.5],
                [0.0, 0.0, 1.0],
            ],
            dtype=torch.float64,
        )

    def intrinsics(self, K: torch.Tensor) -> torch.Tensor:
        """K [..., 3, 3] of the source frame -> K of the output frame (same dtype)."""
        return (self.pixel_affine() @ K.to(torch.float64)).to(K.dtype)

    def points(self, xy: torch.Tensor) -> torch.Tensor:
        """Pixel coordinates [..., 2] (x = column, y = row) -> output pixels. Points may leave the image."""
        sy, sx = self.scale
        x = (xy[..., 0] - self.left + 0.5) * sx - 0.5
        y = (xy[..., 1] - self.top + 0.5) * sy - 0.5
        return torch.stack([x, y], dim=-1)

    def images(self, images: torch.Tensor) -> torch.Tensor:
        """Float images [..., C, h, w] -> [..., C, H, W] (area down / bicubic up), clamped to [0, 1]."""
        self._check(images, "images")
        if self.is_identity:
            return images
        out = self._separable(self._crop(images), _image_weights)
        return out.clamp_(0.0, 1.0)

    def masks(self, masks: torch.Tensor, mode: MaskMode = "nearest") -> torch.Tensor:
        """Masks or label maps [..., h, w]. ``nearest`` keeps the values (ids stay ids); ``area`` gives
        the dynamic fraction of each output pixel (float) for soft supervision."""
        self._check(masks, "masks")
        if self.is_identity:
            return masks
        if mode == "nearest":
            iy = _nearest_index(self.crop_h, self.out_hw[0]) + self.top
            ix = _nearest_index(self.crop_w, self.out_hw[1]) + self.left
            return masks[..., iy, :][..., ix]
        if mode == "area":
            return self._separable(self._crop(masks.float()), _area_weights)
        raise ValueError(f"mask mode {mode!r}; expected 'nearest' or 'area'")

    def depth(self, depth: torch.Tensor, mode: DepthMode = "median") -> torch.Tensor:
        """Depth [..., h, w] with 0 = invalid -> [..., H, W]; see the module docstring for ``median``."""
        self._check(depth, "depth")
        if self.is_identity:
            return depth
        if mode == "nearest":
            return self.masks(depth, mode="nearest")
        if mode != "median":
            raise ValueError(f"depth mode {mode!r}; expected 'median' or 'nearest'")
        iy, oky = _footprint(self.crop_h, self.out_hw[0])
        ix, okx = _footprint(self.crop_w, self.out_hw[1])
        # One [..., H, W] tensor per footprint slot; invalid or padding samples become +inf so that a
        # sort puts them last and the lower median of the n valid ones is entry (n - 1) // 2.
        samples, n_valid, n_inside = [], 0, 0
        for a in range(iy.shape[1]):
            rows = depth[..., iy[:, a] + self.top, :]
            for b in range(ix.shape[1]):
                sample = rows[..., ix[:, b] + self.left]
                inside = oky[:, a, None] & okx[None, :, b]
                valid = (sample > 0) & inside
                samples.append(torch.where(valid, sample, torch.full_like(sample, float("inf"))))
                n_valid = n_valid + valid.int()
                n_inside = n_inside + inside.int()
        _sort_in_place(samples)
        pick = (n_valid - 1) // 2
        lower_median = torch.zeros_like(samples[0])
        for k, sample in enumerate(samples):
            lower_median = torch.where(pick == k, sample, lower_median)
        keep = (n_valid > 0) & (2 * n_valid >= n_inside)
        return torch.where(keep, lower_median, torch.zeros_like(lower_median))

    def _check(self, x: torch.Tensor, name: str) -> None:
        if tuple(x.shape[-2:]) != tuple(self.src_hw):
            raise ValueError(f"{name}: trailing size {tuple(x.shape[-2:])} != transform source {self.src_hw}")

    def _crop(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., self.top : self.top + self.crop_h, self.left : self.left + self.crop_w]

    def _separable(self, x: torch.Tensor, weights) -> torch.Tensor:
        # Dense [n_out, n_in] matrices: BLAS beats a few-tap gather on CPU at these sizes.
        wy = weights(self.crop_h, self.out_hw[0]).to(x.dtype)
        wx = weights(self.crop_w, self.out_hw[1]).to(x.dtype)
        return wy @ x @ wx.T


def _sort_in_place(values: list[torch.Tensor]) -> None:
    """Elementwise ascending sort across a short list of tensors (odd-even transposition network)."""
    n = len(values)
    for round_ in range(n):
        for i in range(round_ % 2, n - 1, 2):
            lo = torch.minimum(values[i], values[i + 1])
            values[i + 1] = torch.maximum(values[i], values[i + 1])
            values[i] = lo


@lru_cache(maxsize=64)
def _area_weights(n_in: int, n_out: int) -> torch.Tensor:
    """[n_out, n_in] exact box filter: output pixel i averages source span [i, i+1) / s by overlap."""
    edges = np.arange(n_out + 1, dtype=np.float64) * (n_in / n_out)
    lo, hi = edges[:-1, None], edges[1:, None]
    k = np.arange(n_in, dtype=np.float64)[None, :]
    overlap = np.clip(np.minimum(hi, k + 1) - np.maximum(lo, k), 0.0, None)
    return torch.from_numpy(overlap / overlap.sum(1, keepdims=True)).float()


@lru_cache(maxsize=64)
def _image_weights(n_in: int, n_out: int) -> torch.Tensor:
    """Area weights when shrinking this axis; bicubic (torch, half-pixel centres) when enlarging.

    The bicubic matrix is read off by interpolating an identity: interpolation is linear, so column j
    of the result is the weight every output pixel gives to source pixel j.
    """
    if n_out <= n_in:
        return _area_weights(n_in, n_out)
    eye = torch.eye(n_in, dtype=torch.float64)[None, None]
    w = F.interpolate(eye, size=(n_out, n_in), mode="bicubic", align_corners=False)[0, 0]
    return w.float()


@lru_cache(maxsize=64)
def _nearest_index(n_in: int, n_out: int) -> torch.Tensor:
    """Source index whose centre is nearest to each output centre: floor((i + 0.5) * n_in / n_out)."""
    i = np.arange(n_out, dtype=np.float64)
    return torch.from_numpy(np.clip(np.floor((i + 0.5) * n_in / n_out), 0, n_in - 1).astype(np.int64))


@lru_cache(maxsize=64)
def _footprint(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per output pixel, the source pixels whose centres lie in its span, padded to a common width.

    Output pixel i covers source coordinates [i / s - 0.5, (i + 1) / s - 0.5) (centre convention,
    s = n_out / n_in). When that holds no centre (upscaling) the nearest source pixel is used.
    Returns indices [n_out, k] and a bool [n_out, k] marking the real (non-padding) entries.
    """
    ratio = n_in / n_out
    rows = []
    for i in range(n_out):
        first = int(np.ceil(i * ratio - 0.5))
        last = int(np.ceil((i + 1) * ratio - 0.5))  # exclusive
        first, last = max(first, 0), min(last, n_in)
        if last <= first:
            nearest = min(int(np.floor((i + 0.5) * ratio)), n_in - 1)
            first, last = nearest, nearest + 1
        rows.append(range(first, last))
    k = max(len(r) for r in rows)
    index = np.zeros((n_out, k), dtype=np.int64)
    ok = np.zeros((n_out, k), dtype=bool)
    for i, r in enumerate(rows):
        index[i, : len(r)] = list(r)
        index[i, len(r) :] = r[-1]
        ok[i, : len(r)] = True
    return torch.from_numpy(index), torch.from_numpy(ok)
