"""Cross-view patch matching: a contrastive term that teaches a frame's patch tokens to find the tokens
of the same surface in the other frames of the clip.

Why it exists: the camera probe (issue 20) found that the tiny network learns *how far* two rig views
turned within a few hundred steps but not *which way* for wide pairs (135-180 degrees: right side 23-72%
of the time, never better than chance), and that a fifth of held-out view pairs come out turned the
wrong way. Which way a view turned is written in which patches of one view reappear where in the other;
the camera token can only read that through global attention if matching patch tokens attend to each
other. VGGT gets such features from its DINOv2 stem and trains a tracking head on them; the tiny preset
has a one-conv stem and no track head. This term supervises the matching directly, from the GT depth
and poses the generator already has (InfoNCE over patches, as in dense contrastive correspondence
learning), and is a tiny-only training aid: it adds no weight to the network.

    match[b, s, t, i] = the patch of frame t in which patch i of frame s's centre pixel lands (its GT
                        depth unprojected, projected into t, seen there: depths agree), or -1
    loss = mean over matched (b, s, t, i), s != t, of
           cross_entropy(cos(token[b, s, i], token[b, t, :]) / temperature, match[b, s, t, i])

Shapes: depths `[B, S, H, W]` (0 = invalid), intrinsics `[B, S, 3, 3]`, extrinsics `[B, S, 3, 4]`
(world-to-camera, any common world), tokens `[B, S, P, C]` with P = (H // patch) * (W // patch) patch
tokens in row-major order (no camera or register tokens).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from page4d.checks import require_tensor
from page4d.geometry import depth_to_world_points, project_points, sample_nearest

__all__ = ["DEPTH_REL_TOL", "TEMPERATURE", "correspondence_loss", "match_accuracy", "patch_matches"]

DEPTH_REL_TOL = 0.05  # a projected centre is seen by the other frame when the depths agree this well
TEMPERATURE = 0.1  # of the cosine similarities fed to the softmax over the other frame's patches


def patch_matches(
    depths: torch.Tensor,
    intrinsics: torch.Tensor,
    extrinsics: torch.Tensor,
    patch: int,
    depth_rel_tol: float = DEPTH_REL_TOL,
) -> torch.Tensor:
    """GT patch correspondences between every ordered pair of frames of each clip.

    Patch i = (row r, column c) of frame s stands for its centre pixel (u = c * patch + patch // 2,
    v likewise; pixel centres at integers). Its depth is unprojected to the world, projected into
    frame t and kept when it lands inside t's patch grid, in front of t, and t's own depth there agrees
    within `depth_rel_tol` (not occluded). Returns long `[B, S, S, P]`: the index of the patch of t it
    lands in, -1 for no match and on the diagonal s = t."""
    d = require_tensor(depths, "depths")
    if d.ndim != 4:
        raise ValueError(f"depths must be [B, S, H, W], got {tuple(d.shape)}")
    b, s, h, w = d.shape
    if tuple(intrinsics.shape) != (b, s, 3, 3) or tuple(extrinsics.shape) != (b, s, 3, 4):
        raise ValueError(
            f"intrinsics {tuple(intrinsics.shape)} / extrinsics {tuple(extrinsics.shape)} must be "
            f"[{b}, {s}, 3, 3] / [{b}, {s}, 3, 4] for depths {tuple(d.shape)}"
        )
    gh, gw = h // patch, w // patch
    rows = torch.arange(gh, device=d.device) * patch + patch // 2
    cols = torch.arange(gw, device=d.device) * patch + patch // 2

    def centres(x: torch.Tensor) -> torch.Tensor:  # [B, S, H, W, ...] -> [B, S, gh, gw, ...]
        return x[:, :, rows][:, :, :, cols]

    world = centres(depth_to_world_points(d, intrinsics, extrinsics))  # [B, S, gh, gw, 3]
    valid_src = (centres(d) > 0).reshape(b, 1, s * gh * gw)
    points = world.reshape(b, 1, s * gh * gw, 3).expand(b, s, s * gh * gw, 3)  # every target sees all
    uv, z = project_points(points, intrinsics, extrinsics)  # [B, S_t, S_s * P, 2], [B, S_t, S_s * P]
    seen_depth, inside = sample_nearest(d, uv)
    col = torch.floor(uv[..., 0] + 0.5).long()
    row = torch.floor(uv[..., 1] + 0.5).long()
    on_grid = inside & (col < gw * patch) & (row < gh * patch)
    visible = (z > 0) & (seen_depth > 0) & ((z - seen_depth).abs() <= depth_rel_tol * z)
    index = (row.clamp(min=0) // patch) * gw + col.clamp(min=0) // patch
    match = torch.where(on_grid & visible & valid_src, index, torch.full_like(index, -1))
    match = match.reshape(b, s, s, gh * gw).transpose(1, 2)  # [B, S_s, S_t, P]
    eye = torch.eye(s, dtype=torch.bool, device=d.device)[None, :, :, None]
    return match.masked_fill(eye, -1)


def correspondence_loss(
    tokens: torch.Tensor, matches: torch.Tensor, temperature: float = TEMPERATURE
) -> tuple[torch.Tensor, int]:
    """InfoNCE of every matched patch against all patches of the other frame (see the module docstring).

    tokens `[B, S, P, C]` (patch tokens only), matches long `[B, S, S, P]` from `patch_matches`.
    Returns the mean loss over matched patches and their count. A batch with no match at all (no
    frame sees another's surface) returns a zero that keeps the graph and count 0: the caller records
    the count, so the state is explicit rather than a silent zero."""
    logits = _cosines(tokens, matches) / temperature  # [B, S, S, P, P]
    target = matches.reshape(-1)
    count = int((target >= 0).sum())
    if count == 0:
        return logits.sum() * 0.0, 0
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target, ignore_index=-1, reduction="sum")
    return loss / count, count


def match_accuracy(tokens: torch.Tensor, matches: torch.Tensor, pairs: torch.Tensor | None = None) -> float:
    """Share of matched patches whose most similar patch in the other frame (cosine) is the GT match:
    how well the tokens already find each other (NaN without a match). Shapes as `correspondence_loss`;
    `pairs` (bool `[B, S, S]`) counts only those ordered frame pairs (e.g. the wide ones)."""
    best = _cosines(tokens, matches).argmax(-1)  # [B, S, S, P]
    chosen = matches >= 0
    if pairs is not None:
        chosen = chosen & pairs[..., None]
    return float((best[chosen] == matches[chosen]).float().mean()) if chosen.any() else float("nan")


def _cosines(tokens: torch.Tensor, matches: torch.Tensor) -> torch.Tensor:
    """The cosine of every patch token of frame s to every patch token of frame t, `[B, S, S, P, P]`
    (tokens `[B, S, P, C]`), once `matches` is checked to be the `[B, S, S, P]` that goes with them."""
    t = require_tensor(tokens, "tokens")
    if t.ndim != 4 or tuple(matches.shape) != (t.shape[0], t.shape[1], t.shape[1], t.shape[2]):
        raise ValueError(
            f"tokens must be [B, S, P, C] and matches [B, S, S, P] of the same B, S, P; got "
            f"{tuple(t.shape)} and {tuple(matches.shape)}"
        )
    unit = F.normalize(t.float(), dim=-1)
    return torch.einsum("bsic,btjc->bstij", unit, unit)
