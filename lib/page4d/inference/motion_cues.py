"""Training-free dynamic masks from a frozen model's global attention (VGGT4D, arXiv 2511.19971).

VGGT4D observes that VGGT's global-attention layers, trained on static scenes only, already tell moving
patches apart: take the q and k each global block attends with (after qk-norm and RoPE), compare a target
frame's patch tokens with the patch tokens of its temporal neighbours through *Gram* similarities
(q.q and k.k within one feature space, besides the attention's own q.k), reduce them over a window,
and combine shallow, middle and deep layers into one dynamic saliency per patch. No weights change.

The recipe below is that of VGGT4D's released code (its `dynamic_mask.py`), which the paper groups into
shallow, middle and deep cues. What is computed (per target frame f, one band of layers at a time; i, j
index *patch* tokens only -- camera and register tokens are left out on both sides, as there):

    G[i, j] = mean over layers l, heads h and source frames s of  <a_f[l, h, i], b_s[l, h, j]>
    mean[i] = mean_j G[i, j]            (how much the token resembles its neighbours, on average)
    spread[i] = std_j G[i, j]           (how selective that resemblance is over the neighbours' patches)

with (a, b) = (q, q), (k, k) or (q, k); G is averaged over layers, heads and sources *before* the spread
is taken, as in the released code (whose unbiased std differs from ours by a constant factor that the
normalisation removes). The five cues, each min-max normalised over the frame's patches, multiply into
the score (then normalised again):

    shallow band:  (1 - mean of k.k) * spread of q.k
    middle band:   (1 - mean of q.q)
    deep band:     mean of q.q * (1 - spread of q.q over the `deep_spread` layers)

Layer bands: VGGT (24 global blocks) uses the released code's indices, shallow (0,), middle 3..7,
deep 17..21 and 18..19 for the deep spread. The `tiny` preset (6 blocks) keeps their relative depth as
far as 6 blocks allow: shallow (0,), middle (1, 2), deep (4, 5) and (4, 5) for the spread (one block
is a sixth of the depth, so 18..19 cannot be singled out); for other depths give the bands.

The mask without ground truth (:func:`clip_threshold`): the scores are upsampled bilinearly to the image
and VGGT4D's adaptive multi-Otsu picks the threshold -- Otsu with 2, 3 and 4 classes, keep the class count
whose class means are most spread out (variance of the class means / sqrt(classes)) and take its highest
threshold. :func:`scores_to_logits` turns a score into `gain * (score - threshold)`: affine, so the
upsampled logit is >= 0 exactly where the upsampled score reaches the threshold, `sigmoid(logit) >= 0.5`
is the GT-free mask and the ranking (AP) is the score's own.

Where this differs from VGGT4D, and why:

- Multi-view clips `[B, T, V]`: the sources of frame (t, v) are *all views* of the time steps t + o
  (o in `time_offsets`, inside the clip), never the other views of the same instant: those see a mover
  at the same 3D place, so their similarity says nothing about motion. VGGT4D is monocular (V = 1).
- `time_offsets` default to +-1, 2, 3 (six neighbours, as VGGT4D's +-2, 4, 6 on 30 fps video): our
  clips are few, already sub-sampled time steps (the ablation evaluates clips of 2).
  `VGGT4D_TIME_OFFSETS` holds the paper's offsets for video.
- The threshold is chosen per clip (every frame of the clip pooled), VGGT4D's over the whole sequence.
- Skipped: the k-means smoothing of the score over 64 clusters of patch-embedding features (an extra
  clustering step with its own randomness; it changes the ranking the AP measures) and the
  projection-gradient refinement (a second forward plus depth, cameras and gradients per frame: not
  cheap). Also out of scope: VGGT4D's second pass, which feeds the masks back into VGGT's early layers
  for better cameras and depth. A model with a PAGE-4D mask head runs as it is, its own attention bias
  included (the bias acts on camera/register query rows; the patch q/k read here feel it only through
  the blocks after it).
- `sigmoid(logit)` is not a calibrated probability: the calibration metrics (ECE, mean P(dynamic) per
  class) depend on `logit_gain`; AP, the mask and IoU do not.

Memory: the observer keeps the patch q (and k where a cue needs it) of the observed global blocks,
`[B, S, heads, h*w, head_dim]` per layer (linear in the frames, like the activations). The quadratic
Gram maps `[h*w, h*w]` exist only for `frames_per_chunk` target frames at a time, summed over layers,
heads and sources as they are made; chunking changes nothing in the result.

    cues = attention_motion_cues(model, images)            # images [B, T, V, 3, H, W] in [0, 1]
    cues.scores, cues.logits                               # [B, T, V, h, w]; cues.factors: the five cues
    pred = predict_with_attention_masks(model, images)     # the model's outputs, mask_logits from attention
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from page4d.model.attention import observe_qk
from page4d.model.network import PAGE4DModel, validate_images

VGGT4D_TIME_OFFSETS = (-6, -4, -2, 2, 4, 6)  # the released code's window, for ~30 fps video
NORM_EPS = 1e-6  # the released code's guard in every min-max normalisation

# depth -> (shallow, middle, deep, deep_spread) global-block bands
LAYER_BANDS: dict[int, tuple[tuple[int, ...], ...]] = {
    24: ((0,), (3, 4, 5, 6, 7), (17, 18, 19, 20, 21), (18, 19)),
    6: ((0,), (1, 2), (4, 5), (4, 5)),
}


@dataclass(frozen=True)
class Cue:
    """One factor of the score: a statistic of a Gram map over one band, high or low for movers.

    pair: which vectors of the target frame (first letter) meet which of the sources (second letter).
    """

    band: str  # "shallow", "middle", "deep" or "deep_spread" (a field of MotionCueConfig)
    pair: str  # "qq", "kk" or "qk"
    statistic: str  # "mean" or "spread"
    dynamic_is_high: bool  # True: the factor is the normalised statistic; False: 1 minus it


CUES: dict[str, Cue] = {
    "shallow_kk_mean": Cue("shallow", "kk", "mean", dynamic_is_high=False),
    "shallow_qk_spread": Cue("shallow", "qk", "spread", dynamic_is_high=True),
    "middle_qq_mean": Cue("middle", "qq", "mean", dynamic_is_high=False),
    "deep_qq_mean": Cue("deep", "qq", "mean", dynamic_is_high=True),
    "deep_qq_spread": Cue("deep_spread", "qq", "spread", dynamic_is_high=False),
}


@dataclass(frozen=True)
class MotionCueConfig:
    """Global-block bands (indices into the aggregator's global blocks), the temporal window and the
    threshold. `MotionCueConfig.for_depth(model.cfg.depth)` gives the bands described in the module doc.

    time_offsets: time steps (relative to the target) whose frames, all views, are its sources.
    max_classes: the adaptive multi-Otsu tries 2..max_classes classes (VGGT4D: 4).
    otsu_bins: histogram bins of the Otsu search (VGGT4D / scikit-image: 256).
    logit_gain: `logit = logit_gain * (score - threshold)`; only the calibration metrics depend on it.
    frames_per_chunk: target frames whose Gram maps are formed at once (memory only; same result).
    """

    shallow: tuple[int, ...]
    middle: tuple[int, ...]
    deep: tuple[int, ...]
    deep_spread: tuple[int, ...]
    time_offsets: tuple[int, ...] = (-3, -2, -1, 1, 2, 3)
    max_classes: int = 4
    otsu_bins: int = 256
    logit_gain: float = 10.0
    frames_per_chunk: int = 1

    def __post_init__(self) -> None:
        for name in ("shallow", "middle", "deep", "deep_spread"):
            band = getattr(self, name)
            if not band or len(set(band)) != len(band) or min(band) < 0:
                raise ValueError(f"MotionCueConfig.{name} must be distinct block indices >= 0, got {band}")
        offsets = self.time_offsets
        if not offsets or 0 in offsets or len(set(offsets)) != len(offsets):
            raise ValueError(f"time_offsets must be distinct non-zero time steps, got {offsets}")
        if self.max_classes < 2:
            raise ValueError(f"max_classes must be >= 2, got {self.max_classes}")
        if self.otsu_bins < self.max_classes:
            raise ValueError(f"otsu_bins ({self.otsu_bins}) must be >= max_classes ({self.max_classes})")
        if not self.logit_gain > 0:
            raise ValueError(f"logit_gain must be > 0, got {self.logit_gain}")
        if self.frames_per_chunk < 1:
            raise ValueError(f"frames_per_chunk must be >= 1, got {self.frames_per_chunk}")

    @classmethod
    def for_depth(cls, depth: int, **changes: Any) -> MotionCueConfig:
        """The bands for a model with `depth` global blocks (24: VGGT4D's, 6: the tiny preset's)."""
        if depth not in LAYER_BANDS:
            raise ValueError(
                f"no default layer bands for depth {depth} (known: {sorted(LAYER_BANDS)}); "
                "give shallow, middle, deep and deep_spread explicitly"
            )
        shallow, middle, deep, deep_spread = LAYER_BANDS[depth]
        return replace(cls(shallow, middle, deep, deep_spread), **changes)

    def band(self, name: str) -> tuple[int, ...]:
        bands = {"shallow": self.shallow, "middle": self.middle, "deep": self.deep}
        return {**bands, "deep_spread": self.deep_spread}[name]

    def q_layers(self) -> tuple[int, ...]:
        """Blocks whose q some cue reads."""
        return tuple(sorted({i for c in CUES.values() if "q" in c.pair for i in self.band(c.band)}))

    def k_layers(self) -> tuple[int, ...]:
        """Blocks whose k some cue reads (the shallow band only)."""
        return tuple(sorted({i for c in CUES.values() if "k" in c.pair for i in self.band(c.band)}))

    def check_depth(self, depth: int) -> None:
        bad = [i for i in (*self.q_layers(), *self.k_layers()) if i >= depth]
        if bad:
            raise ValueError(f"MotionCueConfig uses global blocks {sorted(set(bad))}; the model has {depth}")


@dataclass
class MotionCues:
    """The attention cues of a clip (h, w: the patch grid).

    scores:     [B, T, V, h, w] dynamic saliency in [0, 1] (min-max normalised per frame).
    thresholds: [B] the GT-free threshold on `scores` of each clip (adaptive multi-Otsu).
    logits:     [B, T, V, h, w] `gain * (scores - threshold)`: >= 0 exactly on the GT-free mask.
    factors:    {cue name: [B, T, V, h, w]} each normalised statistic *before* the "1 -" of the cues
                whose statistic is low for movers (see `CUES`).
    notes:      why a clip has no Otsu threshold (its scores are constant), else empty.
    """

    scores: torch.Tensor
    thresholds: torch.Tensor
    logits: torch.Tensor
    factors: dict[str, torch.Tensor]
    config: MotionCueConfig
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------
# statistics of hand-made or recorded q / k
# --------------------------------------------------------------------------------------------------
def window_weights(num_times: int, num_views: int, time_offsets: tuple[int, ...]) -> torch.Tensor:
    """`[S, S]` (S = T*V, s = t*V + v) averaging weights: row (t, v) spreads 1 evenly over every view of
    the time steps t + o (o in `time_offsets`) inside the clip. Raises when a frame has no such step."""
    s = num_times * num_views
    weights = torch.zeros(s, s, dtype=torch.float64)
    for t in range(num_times):
        times = [t + o for o in time_offsets if 0 <= t + o < num_times]
        if not times:
            raise ValueError(
                f"time step {t} of a clip with T={num_times} time steps x V={num_views} views has no "
                f"other time step at offsets {time_offsets}: the attention cues compare each frame with "
                "frames of other time steps"
            )
        cols = torch.tensor([u * num_views + v for u in times for v in range(num_views)])
        weights[t * num_views : (t + 1) * num_views, cols] = 1.0 / len(cols)
    return weights


def gram_window_statistics(
    target: torch.Tensor, sources: torch.Tensor, weights: torch.Tensor, spread: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Mean and spread over j of `G[i, j] = mean_{l, h, s} <target[l, h, i], sources[s, l, h, j]>`.

    target: `[B, n, L, H, P, d]` the n target frames' vectors of one band (L layers, H heads, P patches);
    sources: `[B, S, L, H, P, d]` every frame's vectors; weights: `[n, S]` each row the target's source
    average (rows sum to 1, see :func:`window_weights`). Returns mean `[B, n, P]` and spread `[B, n, P]`
    (population std over j; None unless `spread`).

    The average over sources is taken on the vectors first (G is linear in them), so only one `[P, P]`
    map per target frame is ever formed, and none for the mean (`mean_j G = <target_i, mean_j source_j>`).
    """
    if target.ndim != 6 or sources.ndim != 6 or target.shape[2:] != sources.shape[2:]:
        raise ValueError(
            f"target [B, n, L, H, P, d] and sources [B, S, L, H, P, d] must agree in L, H, P, d; got "
            f"{tuple(target.shape)} and {tuple(sources.shape)}"
        )
    if weights.shape != (target.shape[1], sources.shape[1]):
        raise ValueError(
            f"weights must be [n, S] = {[target.shape[1], sources.shape[1]]}, got {tuple(weights.shape)}"
        )
    layers, heads = target.shape[2], target.shape[3]
    weights = weights.to(device=sources.device, dtype=sources.dtype)
    src_mean = torch.einsum("ns,bslhpd->bnlhpd", weights, sources)
    scale = 1.0 / (layers * heads)
    mean = torch.einsum("bnlhid,bnlhd->bni", target, src_mean.mean(dim=-2)) * scale
    if not spread:
        return mean, None
    gram = torch.einsum("bnlhid,bnlhjd->bnij", target, src_mean) * scale  # [B, n, P, P]
    return mean, gram.std(dim=-1, correction=0)


def normalize_per_frame(x: torch.Tensor) -> torch.Tensor:
    """Min-max over the last dim (a frame's patches), with VGGT4D's guard: a constant frame gives 0."""
    lo = x.amin(dim=-1, keepdim=True)
    hi = x.amax(dim=-1, keepdim=True)
    return (x - lo) / (hi - lo + NORM_EPS)


def motion_cues_from_qk(
    q: dict[int, torch.Tensor],
    k: dict[int, torch.Tensor],
    num_times: int,
    num_views: int,
    grid_hw: tuple[int, int],
    cfg: MotionCueConfig,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Dynamic scores from per-layer patch q / k: `q[layer]`, `k[layer]` `[B, S, H, h*w, d]` (S = T*V,
    time outer; k only for `cfg.k_layers()`). Returns scores `[B, T, V, h, w]` in [0, 1] and the
    normalised statistic of every cue in `CUES`, same shape. Computes in at least float32."""
    missing = [f"q{i}" for i in cfg.q_layers() if i not in q]
    missing += [f"k{i}" for i in cfg.k_layers() if i not in k]
    if missing:
        raise ValueError(f"motion_cues_from_qk needs the patch tensors {missing}")
    first = q[cfg.q_layers()[0]]
    b, s, _, p, _ = first.shape
    h, w = grid_hw
    if s != num_times * num_views or p != h * w:
        raise ValueError(
            f"q tensors [B, S, H, P, d] = {tuple(first.shape)} do not match T={num_times} x V={num_views} "
            f"frames of a {h} x {w} patch grid"
        )
    dtype = torch.promote_types(first.dtype, torch.float32)
    weights = window_weights(num_times, num_views, cfg.time_offsets)

    def stack(tensors: dict[int, torch.Tensor], band: tuple[int, ...]) -> torch.Tensor:
        return torch.stack([tensors[i].to(dtype) for i in band], dim=2)  # [B, S, L, H, P, d]

    factors: dict[str, torch.Tensor] = {}
    for name, cue in CUES.items():
        band = cfg.band(cue.band)
        target = stack(q if cue.pair[0] == "q" else k, band)
        sources = stack(q if cue.pair[1] == "q" else k, band)
        parts = []
        for start in range(0, s, cfg.frames_per_chunk):
            stop = min(start + cfg.frames_per_chunk, s)
            mean, spread = gram_window_statistics(
                target[:, start:stop], sources, weights[start:stop], spread=cue.statistic == "spread"
            )
            parts.append(mean if cue.statistic == "mean" else spread)
        factors[name] = normalize_per_frame(torch.cat(parts, dim=1))
    score = torch.ones_like(factors[next(iter(CUES))])
    for name, cue in CUES.items():
        score = score * (factors[name] if cue.dynamic_is_high else 1.0 - factors[name])
    score = normalize_per_frame(score)

    def grid(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(b, num_times, num_views, h, w)

    return grid(score), {name: grid(x) for name, x in factors.items()}


# --------------------------------------------------------------------------------------------------
# the GT-free threshold
# --------------------------------------------------------------------------------------------------
def multi_otsu_thresholds(values: np.ndarray, classes: int, bins: int = 256) -> np.ndarray | None:
    """Otsu's thresholds for `classes` classes (scikit-image's `threshold_multiotsu` convention).

    Histogram of `bins` equal bins over [min, max]; the classes are runs of bins, each holding at least
    one value, chosen to maximise the between-class variance (sum over classes of count * mean^2), by
    dynamic programming over the bin boundaries. Each threshold is the centre of the last bin of the
    class below it. None when fewer than `classes` bins are occupied (e.g. a constant input).
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = float(values.min()), float(values.max())
    if not hi > lo:
        return None
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    cum_n = np.concatenate([[0.0], np.cumsum(counts)])
    cum_m = np.concatenate([[0.0], np.cumsum(counts * centres)])
    n = cum_n[None, :] - cum_n[:, None]  # [a, b]: values in bins a..b-1
    m = cum_m[None, :] - cum_m[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = np.where(n > 0, m**2 / n, -np.inf)  # empty or reversed runs are not classes
    best = gain[0]  # best[b]: bins 0..b-1 as one class
    cuts = []
    for _ in range(classes - 1):
        total = best[:, None] + gain  # [a, b]: bins 0..a-1 split before, a..b-1 one more class
        cuts.append(np.argmax(total, axis=0))
        best = total[cuts[-1], np.arange(bins + 1)]
    if not np.isfinite(best[bins]):
        return None
    bounds, end = [], bins
    for cut in reversed(cuts):
        end = int(cut[end])
        bounds.append(end)
    return centres[np.array(bounds[::-1]) - 1]


def clip_threshold(values: torch.Tensor, max_classes: int = 4, bins: int = 256) -> float | None:
    """VGGT4D's adaptive multi-Otsu over all `values` of a clip: for 2..max_classes classes take Otsu's
    thresholds, split the values (a value at a threshold goes up), score the split by the variance of the
    class means over sqrt(classes), and return the highest threshold of the best split. None when no
    split exists (constant scores)."""
    flat = values.detach().double().cpu().numpy().ravel()
    best_score, best = -np.inf, None
    for classes in range(2, max_classes + 1):
        thresholds = multi_otsu_thresholds(flat, classes, bins)
        if thresholds is None:
            continue
        regions = np.digitize(flat, thresholds)
        sizes = np.bincount(regions, minlength=classes)
        if (sizes == 0).any():  # a threshold between two occupied bins' centres can empty a class
            continue
        means = np.bincount(regions, weights=flat, minlength=classes) / sizes
        score = float(np.var(means)) / np.sqrt(classes)
        if score > best_score:
            best_score, best = score, float(thresholds[-1])
    return best


def scores_to_logits(
    scores: torch.Tensor, image_hw: tuple[int, int], cfg: MotionCueConfig
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Per clip b: the threshold of `scores[b]` `[T, V, h, w]` upsampled bilinearly to `image_hw` (as
    `upsample_mask_logits` will upsample the logits), then `logits = gain * (scores - threshold)`.
    Returns logits `[B, T, V, h, w]`, thresholds `[B]` and notes. A clip with constant scores has no
    threshold: it gets 1 (nothing above the normalised maximum: all static) and a note."""
    if scores.ndim != 5:
        raise ValueError(f"scores must be [B, T, V, h, w], got {tuple(scores.shape)}")
    thresholds, notes = [], []
    for b in range(scores.shape[0]):
        flat = scores[b].reshape(-1, 1, *scores.shape[-2:])
        up = F.interpolate(flat, size=tuple(image_hw), mode="bilinear", align_corners=False)
        thr = clip_threshold(up, cfg.max_classes, cfg.otsu_bins)
        if thr is None:
            notes.append(f"clip {b}: constant attention scores, no Otsu threshold: all static")
            thr = 1.0
        thresholds.append(thr)
    thr_t = torch.tensor(thresholds, dtype=scores.dtype, device=scores.device)
    return cfg.logit_gain * (scores - thr_t[:, None, None, None, None]), thr_t, notes


# --------------------------------------------------------------------------------------------------
# a model's global blocks
# --------------------------------------------------------------------------------------------------
class GlobalQKRecorder:
    """Observer for `observe_qk` on global blocks: keeps each observed block's patch q (and k for
    `k_layers`) as `[B, S, heads, h*w, head_dim]` (special tokens dropped), detached."""

    def __init__(
        self,
        q_layers: tuple[int, ...],
        k_layers: tuple[int, ...],
        num_frames: int,
        tokens_per_frame: int,
        patch_start_idx: int,
    ) -> None:
        self.q_layers, self.k_layers = frozenset(q_layers), frozenset(k_layers)
        self.num_frames, self.tokens_per_frame, self.patch_start_idx = (
            num_frames,
            tokens_per_frame,
            patch_start_idx,
        )
        self.q: dict[int, torch.Tensor] = {}
        self.k: dict[int, torch.Tensor] = {}

    def __call__(self, layer: int, q: torch.Tensor, k: torch.Tensor) -> None:
        b, heads, n, d = q.shape
        s, p = self.num_frames, self.tokens_per_frame
        if n != s * p:
            raise ValueError(
                f"global block {layer}: q has {n} tokens, expected S*P = {s}*{p} (S frames of P tokens)"
            )
        if layer in self.q or layer in self.k:
            raise RuntimeError(f"global block {layer} was observed twice in one forward")

        def patches(x: torch.Tensor) -> torch.Tensor:
            x = x.detach().reshape(b, heads, s, p, d)[:, :, :, self.patch_start_idx :]
            return x.permute(0, 2, 1, 3, 4).contiguous()

        if layer in self.q_layers:
            self.q[layer] = patches(q)
        if layer in self.k_layers:
            self.k[layer] = patches(k)


def _time_view_images(images: torch.Tensor) -> torch.Tensor:
    """`[B, T, V, 3, H, W]` as is; `[B, S, 3, H, W]` / `[S, 3, H, W]` as a single view (V = 1)."""
    if images.ndim == 4:
        images = images[None]
    if images.ndim == 5:
        images = images[:, :, None]
    return images


@contextmanager
def record_global_qk(
    model: PAGE4DModel, images: torch.Tensor, cfg: MotionCueConfig
) -> Iterator[GlobalQKRecorder]:
    """While the block runs, every forward of `model`'s global blocks in `cfg`'s bands on `images`
    `[B, T, V, 3, H, W]` is recorded into the yielded `GlobalQKRecorder` (outputs are unchanged)."""
    cfg.check_depth(model.cfg.depth)
    _, t, v, _, h, w = images.shape
    patch = model.cfg.patch_size
    start = model.cfg.patch_start_idx
    recorder = GlobalQKRecorder(
        cfg.q_layers(), cfg.k_layers(), t * v, start + (h // patch) * (w // patch), start
    )
    blocks = model.aggregator.global_blocks
    layers = {i: blocks[i].attn for i in sorted(recorder.q_layers | recorder.k_layers)}
    with observe_qk(layers, recorder):
        yield recorder
    absent = sorted((recorder.q_layers - set(recorder.q)) | (recorder.k_layers - set(recorder.k)))
    if absent:
        raise RuntimeError(f"global blocks {absent} did not run in the observed forward")


def _check_clip(images: torch.Tensor, patch_size: int) -> None:
    validate_images(images, patch_size)
    if images.ndim != 6:
        raise ValueError(f"images must be [B, T, V, 3, H, W], got {tuple(images.shape)}")
    if images.shape[1] < 2:
        raise ValueError(
            f"attention cues compare each frame with frames of other time steps; images "
            f"{list(images.shape)} have a single time step (T=1)"
        )


def _cues(
    model: PAGE4DModel, images: torch.Tensor, rec: GlobalQKRecorder, cfg: MotionCueConfig
) -> MotionCues:
    _, t, v, _, h, w = images.shape
    patch = model.cfg.patch_size
    scores, factors = motion_cues_from_qk(rec.q, rec.k, t, v, (h // patch, w // patch), cfg)
    logits, thresholds, notes = scores_to_logits(scores, (h, w), cfg)
    return MotionCues(scores, thresholds, logits, factors, cfg, notes)


def default_config(model: PAGE4DModel) -> MotionCueConfig:
    """`MotionCueConfig.for_depth` of the model's number of global blocks."""
    return MotionCueConfig.for_depth(model.cfg.depth)


@torch.no_grad()
def attention_motion_cues(
    model: PAGE4DModel, images: torch.Tensor, cfg: MotionCueConfig | None = None
) -> MotionCues:
    """The cues of a clip: images `[B, T, V, 3, H, W]` in [0, 1] (or `[B, S, 3, H, W]`: one view), T >= 2.
    Runs only the aggregator (no heads); `cfg` defaults to `MotionCueConfig.for_depth(depth)`."""
    cfg = cfg or default_config(model)
    images = _time_view_images(images)
    _check_clip(images, model.cfg.patch_size)
    b, t, v = images.shape[:3]
    with record_global_qk(model, images, cfg) as rec:
        model.aggregator(images.reshape(b, t * v, *images.shape[3:]), keep_layers=frozenset())
    return _cues(model, images, rec, cfg)


def attention_mask_logits(
    model: PAGE4DModel, images: torch.Tensor, cfg: MotionCueConfig | None = None
) -> torch.Tensor:
    """`[B, T, V, h, w]` logits, 0 at the clip's GT-free threshold (see :func:`attention_motion_cues`)."""
    return attention_motion_cues(model, images, cfg).logits


@torch.no_grad()
def predict_with_attention_masks(
    model: PAGE4DModel, images: torch.Tensor, cfg: MotionCueConfig | None = None
) -> dict[str, Any]:
    """One full forward (`model(images)`, heads included) with the global blocks observed: the model's
    prediction dict with `mask_logits` `[B, T, V, h, w]` replaced by (or, without a mask head, set to)
    the attention logits, plus `attention_scores` `[B, T, V, h, w]`, `attention_thresholds` `[B]` and
    `attention_notes` (clips without a GT-free threshold). Everything else is the model's own."""
    cfg = cfg or default_config(model)
    images = _time_view_images(images)
    _check_clip(images, model.cfg.patch_size)
    with record_global_qk(model, images, cfg) as rec:
        pred = model(images)
    cues = _cues(model, images, rec, cfg)
    return {
        **pred,
        "mask_logits": cues.logits,
        "attention_scores": cues.scores,
        "attention_thresholds": cues.thresholds,
        "attention_notes": cues.notes,
    }
