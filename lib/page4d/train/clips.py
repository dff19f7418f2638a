"""Which clips a run trains on, and in which order.

A clip is `clip_times` consecutive time steps of one scene, every view: the model sees images
`[B=1, T=clip_times, V, 3, H, W]`. `training_clips` lists every clip of the training times (of one
scene, or of each scene in a pretraining pool), after checking that an arm with mask terms has SegAnyMo
GT to learn from (`mask_gt_check`: better to refuse before training than to fail after). `ClipOrder`
draws one clip per step from a seeded stream that DDP ranks split between them, as a function of the
step alone, so a resumed run continues the same order. Geometry terms need depth and cameras
(`geometry_check`), which frames folders and videos do not have.
"""

from __future__ import annotations

import random

from page4d.data import Scene
from page4d.losses import LossConfig


def clip_starts(num_times: int, clip_times: int) -> list[int]:
    """First indices (into the training times) of every clip of `clip_times` consecutive steps
    (`clip_times` 0: one clip, the whole scene)."""
    if clip_times == 0:
        return [0]
    if clip_times > num_times:
        raise ValueError(f"clip_times {clip_times} exceeds the {num_times} training time steps")
    return list(range(num_times - clip_times + 1))


class ClipOrder:
    """Which clip each rank trains on at each step: one seeded stream of draws (uniform, with
    replacement) shared by every rank, split like DistributedSampler splits its order: at step k, rank r
    takes draw `k * world + r`, so the ranks never share a position of the stream. A pure function of
    (seed, step, rank, world), so a resumed run continues the same order; with one process it is exactly
    the order earlier versions drew (`random.Random(seed * 1000).choice` per step). `stream=True`: draw
    k is clip k (a stream of fresh scenes, one scene per clip, is then seen in order, each once)."""

    def __init__(
        self, num_clips: int, seed: int, rank: int = 0, world: int = 1, stream: bool = False
    ) -> None:
        self.num_clips, self.seed, self.rank, self.world, self.stream = num_clips, seed, rank, world, stream
        self._rng = random.Random(seed * 1000)
        self._drawn = 0
        self._last = -1

    def clip(self, step: int) -> int:
        target = step * self.world + self.rank
        if self.stream:  # clip k at draw k: a stream of fresh scenes, each seen once (then wrapping)
            return target % self.num_clips
        if target < self._drawn - 1:
            self._rng, self._drawn = random.Random(self.seed * 1000), 0
        while self._drawn <= target:
            self._last = self._rng.choice(range(self.num_clips))
            self._drawn += 1
        return self._last


def clip_for_step(num_clips: int, step: int, seed: int, rank: int = 0, world: int = 1) -> int:
    """Index of the clip rank `rank` trains on at `step` (see `ClipOrder`)."""
    return ClipOrder(num_clips, seed, rank, world).clip(step)


def training_clips(
    scenes: list[Scene], train_times: list[int] | None, clip_times: int, loss_cfg: LossConfig
) -> list[tuple[int, list[int]]]:
    """Every training clip as (scene index, its time ids): `clip_times` consecutive steps of
    `train_times` (one scene) or of each scene's own times (a pool). Checks first that the times exist
    and that an arm with mask terms has GT somewhere (`mask_gt_check`)."""
    if not scenes:
        raise ValueError("train() needs at least one scene")
    if train_times is not None and len(scenes) > 1:
        raise ValueError(f"train_times selects time steps of one scene; got a pool of {len(scenes)} scenes")
    clips: list[tuple[int, list[int]]] = []
    errors = []
    for i, sc in enumerate(scenes):
        times = list(sc.times if train_times is None else train_times)
        missing = [t for t in times if t not in sc.times]
        if missing:
            raise ValueError(f"train_times {missing} are not in the scene (has {sc.times})")
        geometry_check(loss_cfg, sc)
        try:
            mask_gt_check(loss_cfg, sc, times)
        except ValueError as err:  # a pool needs GT in at least one scene, not in every one
            errors.append(err)
        length = clip_times or len(times)
        clips += [(i, times[s : s + length]) for s in clip_starts(len(times), clip_times)]
    if len(errors) == len(scenes):
        raise errors[0]
    return clips


def mask_gt_check(loss_cfg: LossConfig, scene: Scene, times: list[int]) -> None:
    """An arm with mask terms needs SegAnyMo GT on at least one training frame; raise before training."""
    if not (loss_cfg.use_seganymo_mask and loss_cfg.mask_terms_enabled):
        return
    if scene.masks is None:
        reason = scene.mask_missing_reason or "the scene has no SegAnyMo masks"
        raise ValueError(
            f"this arm has mask terms {loss_cfg.mask_terms_enabled} but {reason}; use arm 'none'"
        )
    rows = [scene.times.index(t) for t in times]
    if not bool(scene.mask_valid[rows].any()):
        raise ValueError(
            f"this arm has mask terms {loss_cfg.mask_terms_enabled} but no training time step {times} has a "
            "SegAnyMo mask; use arm 'none' or other train_times"
        )


def geometry_check(loss_cfg: LossConfig, scene: Scene) -> None:
    """Geometry terms need depth and cameras (a frames folder or a video has neither); raise before
    training instead of at the first step."""
    if loss_cfg.geometry_enabled and scene.geometry_missing_reason:
        raise ValueError(
            f"geometry terms are on but {scene.geometry_missing_reason}; train the mask terms only "
            "(loss_overrides=NO_GEOMETRY, the CLI's --no-geometry, automatic in python -m page4d.train)"
        )
