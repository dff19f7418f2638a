"""Can the camera path learn a relative rotation at all? A probe with known answers (two frames; rigs).

`tiny-stream`'s camera head predicts the identity (issue 20): the question this answers is whether that
is the data and recipe, or whether the network at this size and budget cannot pick up the cue. The
probe trains the camera loss alone on clips of two frames, each clip from a new room, and scores
held-out clips against the identity floor (predicting "frame 1 is frame 0"):

- ``task="shift"``: frame 1 is frame 0's rendering cropped `shift` pixels further right (uniform in
  +-`max_shift_px`, both crops of one wider rendering). The only thing that differs between the two
  frames is a global image translation, the easiest relative-pose cue there is. Its label is the pan
  that moves the image centre by `shift` pixels, a yaw of ``atan(shift / f)`` (exact at the centre; the
  crop is a translation, not a homography, so elsewhere it is a small-angle approximation).
- ``task="pan"``: a rendered camera panning in place by +-`min_deg`..`max_deg` (exact label; fixed
  field of view, no jitter, no movers): the same cue with perspective.
- ``task="rig"``: two cameras of a static rig looking at the room centre from azimuths
  `min_deg`..`max_deg` apart (either order) and different heights: what the pretraining card's
  view-RPE-r scores. The views move as well as turn, so the translation term has a target too.
  `ramp_steps` widens the training gaps from `min_deg` to `max_deg` over that many steps (a
  curriculum from the pan-sized gaps the camera path has learnt to the rig's); held-out clips always
  draw the full range.
- ``task="rig+pan"``: rig clips on even steps, pans of 1-20 degrees on odd ones (both scored): the
  card's temporal pairs are small turns, its view pairs wide gaps; rigs alone forget the small turns.
- ``task="rigs"``: the pretraining card's own rigs: 2..`max_views` cameras (the count fixed within a
  step, cycling over steps; held-out clips have `max_views`) with neighbouring azimuth gaps of 20-90
  degrees in random order, heights up to 1 m apart and a random field of view (50-80 degrees), as
  `scene_stream` draws them; every view after the first is scored. ``"rigs+pan"``: with pans on
  odd steps, as ``rig+pan``.
- ``task="rigs+mono"``: the card's rigs on even steps and, on odd ones, its static monocular moves
  (`mono_clip`: orbit, pan or dolly of up to 6 degrees per step with hand-held jitter, 4 frames, drawn
  by `scene_stream`): the card's temporal pairs are these moves, which pans alone do not stand for.
  `rig_times` T shows each training rig at T time steps (T copies of its views: a static rig's frames
  recur, as in the stream's rigs); the held-out rigs stay at one.

Two options isolate what could make it hard: `whole_patches` (shifts by whole 14-px patches, so frame 1's
patch tokens are exactly frame 0's moved sideways: nothing to match but identical tokens) and
`fixed_clips` (the control: the same few clips every step, also scored as `train_*`: can the network
fit them at all?).

Training: AdamW at `lr` (linear warm-up over 50 steps), `batch` clips per step, camera loss only with
the rotation term weighted `w_rotation` (the translation of a pan or crop is zero; the field of view is
fixed, so nothing else competes with the rotation's gradient). `geometry` also keeps the depth and
point losses on: camera-only training of every weight costs depth (AbsRel 0.079 -> 0.106 measured).
The two DPT heads are two thirds of a step on CPU, so `geometry_every` N keeps them on every N-th step
only; the steps between run the aggregator and the camera head alone (`camera_predictions`, about 3x
cheaper), as does every evaluation.
`rotation_target` "chordal" compares rotation matrices in place of VGGT's quaternions (no double-cover
cut; `LossConfig.rotation_target`). `w_correspondence` adds the cross-view patch-matching term
(`losses.correspondence`) on block pair `correspondence_layer`'s patch tokens, and every evaluation
scores how well those tokens find their GT matches (`match_top1`, also by gap: `matching_scores`);
`rescore` scores a recorded run's checkpoints again with today's evaluation.
Every `eval_every` steps the held-out clips (seeds no training clip draws) give the median rotation
error of frame 1 next to the identity floor (the median GT rotation) and the `skill`
``1 - error / floor``: 0 is "learnt nothing", 1 exact; per frame also whether it turned to the right
side and how far (`turns_agree`, `rmse_by_side`: a wrong-side pair is 100+ degrees off).

    python -m page4d.experiments.camera_probe --out outputs/probe_shift --task shift --steps 400
    python -m page4d.experiments.camera_probe --out outputs/probe_pan --task pan --init tiny-stream
    python -m page4d.experiments.camera_probe --out outputs/probe_rig --task rig --init tiny-stream \
        --min-deg 5 --max-deg 175 --ramp-steps 2000 --geometry

The run folder holds `probe.json` (the config, every evaluation and every step's training loss, written
atomically after each evaluation), `weights.pt` with `save_weights` (those of the latest evaluation, so
a stopped run can be scored with `page4d.experiments.backbone_score`), and `DONE.json` once finished;
a folder that holds a run is refused, never overwritten; `--resume` continues an interrupted one from its
last evaluation (`state.pt`: weights, optimiser and record), as if never stopped. With `minutes` the
run stops at the first evaluation past that budget (`stopped_by_minutes` names its step), so arms
compared at equal time get equal time.
Shapes: a clip is images `[S, 3, H, W]`, extrinsics `[S, 3, 4]` (frame 0 the identity), intrinsics
`[S, 3, 3]`, depths `[S, H, W]` (S = 2; a rig's views for `rigs`; 4 for a monocular move); a batch
stacks `batch` clips of one kind in front.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from page4d.cli_args import DefaultsHelpFormatter, add_options, from_args, knob
from page4d.data import SyntheticSceneConfig, render_synthetic_scene
from page4d.data.synthetic import scene_in_memory
from page4d.devices import require_device
from page4d.experiments import pretrain
from page4d.experiments.scene_stream import StreamRecipe, draw_scene_config, first_placeable, rig_azimuths
from page4d.geometry import relative_to_first_camera, rotation_angle, rotation_axis_sine
from page4d.losses import LossConfig, compute_total_loss
from page4d.losses.correspondence import correspondence_loss, match_accuracy, patch_matches
from page4d.records import (
    ParametersChanged,
    atomic_torch_save,
    changed_fields,
    claim_run_folder,
    field_defaults,
    mark_finished,
    write_json,
)
from page4d.scoring.evaluate import pose_encoding_to_extrinsics
from page4d.scoring.metrics import camera_errors_per_frame

HELDOUT_SEED_BASE = 700_000_000  # held-out clips; training clip k of a run draws seed `seed * 10^6 + k`
IMAGE_SIZE = StreamRecipe().image_size  # the pretraining stream's renderings
WARMUP_STEPS = 50
PATCH = pretrain.model_config().patch_size  # the network the probe trains
DEPTH = pretrain.model_config().depth


@dataclass
class ProbeConfig:
    """One probe run (see the module docstring); each field is an option of the command."""

    task: str = knob(
        "shift",
        "shift: a cropped image translation; pan: a rendered pan; rig: two views of a static rig; "
        "rig+pan: rigs and pans (1-20 deg) on alternate steps; rigs: the card's rigs of 2..max_views "
        "cameras; rigs+pan: those and pans on alternate steps; rigs+mono: those and the card's static "
        "monocular moves on alternate steps",
        choices=("shift", "pan", "rig", "rig+pan", "rigs", "rigs+pan", "rigs+mono"),
    )
    init: str = knob("random", "random (the pretraining's seeded initialisation) or a checkpoint name/path")
    patch_embed: str = knob(
        "conv",
        "the network's patch embedding (pretrain's --patch-embed): conv, or a tiny-only conv_stem / conv_pos",
        choices=pretrain.TINY_PATCH_EMBEDS,
    )
    steps: int = knob(400, "optimiser steps")
    batch: int = knob(8, "clips per step, each from a new room")
    lr: float = knob(1e-3, "peak AdamW learning rate")
    w_rotation: float = knob(10.0, "weight of the rotation term in the camera loss (translation: 1)")
    max_shift_px: int = knob(42, "shift task: largest crop offset in pixels (3 patches)")
    min_deg: float = knob(5.0, "pan / rig task: smallest pan or azimuth gap per clip (degrees)")
    max_deg: float = knob(20.0, "pan / rig task: largest pan or azimuth gap per clip (degrees)")
    max_views: int = knob(4, "rigs task: most cameras of a rig (the held-out rigs have this many)")
    rig_times: int = knob(
        1,
        "rigs task: each training rig's views shown at this many time steps (a static rig: the same images "
        "again, each at its first time's pose); the held-out rigs keep one",
    )
    ramp_steps: int = knob(0, "rig task: widen the training gaps from min_deg to max_deg over N steps")
    rotation_target: str = knob(
        "canonical",
        "the camera loss's rotation term: canonical (VGGT's quaternion L1 with the rig fix) or chordal "
        "(rotation matrices, no double-cover cut; tiny preset only, LossConfig.rotation_target)",
        choices=("canonical", "chordal"),
    )
    w_correspondence: float = knob(
        0.0,
        "weight of the cross-view patch-matching term (losses.correspondence: InfoNCE of each patch token "
        "against the other frames' at its GT match; 0: off)",
    )
    correspondence_layer: int = knob(
        2, "the aggregator block pair whose patch tokens the matching term trains and evaluations score"
    )
    geometry: bool = knob(False, "also train the depth and point losses (keeps depth while cameras train)")
    geometry_every: int = knob(
        1,
        "with geometry: the depth and point losses on every N-th step only; the others train the "
        "camera alone and skip the two DPT heads (about 3x cheaper on CPU)",
    )
    whole_patches: bool = knob(
        False, "shift task: offsets in whole patches, so frame 1's patch tokens are frame 0's moved sideways"
    )
    fixed_clips: int = knob(
        0, "train on these many fixed clips instead of new rooms (0: new rooms; the control)"
    )
    fov_deg: float = knob(65.0, "horizontal field of view of every rendering")
    heldout_clips: int = knob(32, "held-out clips scored at every evaluation")
    eval_every: int = knob(50, "evaluate every N steps (and after the last)")
    seed: int = knob(0, "seeds the initialisation and the training clips")
    threads: int = knob(1, "torch CPU threads")
    device: str = knob("cpu", "cpu or cuda")
    save_weights: bool = knob(False, "also write the trained model's weights (weights.pt, float32)")
    workers: int = knob(
        0, "render the training clips in N worker processes, ahead of the step (0: in the training process)"
    )
    minutes: float = knob(
        0.0,
        "stop at the first evaluation after this many minutes of training (0: run all the steps); "
        "runs compared at equal time get equal budgets",
    )

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch < 1 or self.heldout_clips < 1 or self.eval_every < 1:
            raise ValueError(f"bad probe sizes: {self}")
        if not 0 < self.max_shift_px < IMAGE_SIZE[1] // 2:
            raise ValueError(f"max_shift_px {self.max_shift_px} outside 1..{IMAGE_SIZE[1] // 2 - 1}")
        if self.whole_patches and self.max_shift_px < PATCH:
            raise ValueError(f"whole_patches needs max_shift_px >= {PATCH}, got {self.max_shift_px}")
        if self.fixed_clips < 0:
            raise ValueError(f"fixed_clips must be >= 0, got {self.fixed_clips}")
        limit = 180 if self.task.startswith("rig") else 90
        if not 0 <= self.min_deg <= self.max_deg < limit:
            raise ValueError(f"need 0 <= min_deg <= max_deg < {limit}, got {self.min_deg}, {self.max_deg}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if self.max_views < 2:
            raise ValueError(f"max_views must be >= 2, got {self.max_views}")
        if self.rig_times < 1 or (self.rig_times > 1 and "rigs" not in self.task):
            raise ValueError(
                f"rig_times must be >= 1, and > 1 only with a rigs task: {self.rig_times}, {self.task}"
            )
        if self.ramp_steps < 0:
            raise ValueError(f"ramp_steps must be >= 0, got {self.ramp_steps}")
        if self.minutes < 0:
            raise ValueError(f"minutes must be >= 0, got {self.minutes}")
        if self.geometry_every < 1:
            raise ValueError(f"geometry_every must be >= 1, got {self.geometry_every}")
        if self.w_correspondence < 0:
            raise ValueError(f"w_correspondence must be >= 0, got {self.w_correspondence}")
        if not 0 <= self.correspondence_layer < DEPTH:
            raise ValueError(f"correspondence_layer {self.correspondence_layer} outside 0..{DEPTH - 1}")


def _room(
    seed: int, width: int, fov_deg: float, times: int = 1, pan_deg: float = 0.0
) -> SyntheticSceneConfig:
    """A static room (no movers) seen by one camera, panning `pan_deg` per step over `times` steps."""
    rng = np.random.default_rng([seed, 3])

    def draw() -> SyntheticSceneConfig:
        return SyntheticSceneConfig(
            seed=seed,
            height=IMAGE_SIZE[0],
            width=width,
            times=times,
            views=1,
            fov_deg=fov_deg,
            camera_radius=float(rng.uniform(3.0, 3.8)),
            camera_height=float(rng.uniform(1.2, 2.4)),
            look_at_height=float(rng.uniform(0.2, 0.8)),
            camera_motion="pan",
            orbit_deg_per_step=pan_deg,
            num_movers=0,
            num_static_boxes=int(rng.integers(2, 5)),
            num_static_spheres=int(rng.integers(0, 2)),
            tracks_per_mover=0,
            query_points_per_step=0,
        )

    return first_placeable(draw, f"probe room {seed}")


def yaw_extrinsics(yaw: float) -> torch.Tensor:
    """`[2, 3, 4]` world-to-camera: frame 0 the identity, frame 1 turned right by `yaw` radians about
    the camera's y axis (OpenCV: x right, y down, so a right turn moves the image content left)."""
    c, s = math.cos(yaw), math.sin(yaw)
    turned = torch.tensor([[c, 0.0, -s, 0.0], [0.0, 1.0, 0.0, 0.0], [s, 0.0, c, 0.0]])
    return torch.stack([torch.eye(3, 4), turned])


def shift_clip(seed: int, cfg: ProbeConfig) -> dict[str, torch.Tensor]:
    """Two crops of one wider rendering, `shift` px apart: frame 1 shows what lies `shift` px to the
    right of frame 0's view, as after a right turn of ``atan(shift / f)``."""
    width = IMAGE_SIZE[1]
    scene = scene_in_memory(render_synthetic_scene(_room(seed, width + 2 * cfg.max_shift_px, cfg.fov_deg)))
    shift = int(np.random.default_rng([seed, 5]).integers(-cfg.max_shift_px, cfg.max_shift_px + 1))
    if cfg.whole_patches:
        shift = int(np.trunc(shift / PATCH)) * PATCH
    x0, x1 = cfg.max_shift_px, cfg.max_shift_px + shift
    image, depth, k = scene.images[0, 0], scene.depths[0, 0], scene.intrinsics[0, 0].clone()
    k[0, 2] -= x0  # both crops keep the wide rendering's focal length, centred on their own window
    return {
        "images": torch.stack([image[:, :, x0 : x0 + width], image[:, :, x1 : x1 + width]]),
        "depths": torch.stack([depth[:, x0 : x0 + width], depth[:, x1 : x1 + width]]),
        "intrinsics": torch.stack([k, k]),
        "extrinsics": yaw_extrinsics(math.atan2(shift, float(k[0, 0]))),
    }


def pan_clip(seed: int, cfg: ProbeConfig) -> dict[str, torch.Tensor]:
    """A rendered camera panning once by a random +-`min_deg`..`max_deg` (the generator's exact poses,
    expressed relative to frame 0)."""
    rng = np.random.default_rng([seed, 5])
    deg = float(rng.uniform(cfg.min_deg, cfg.max_deg)) * float(rng.choice([-1.0, 1.0]))
    return camera_frames(_room(seed, IMAGE_SIZE[1], cfg.fov_deg, 2, deg))


def camera_frames(room: SyntheticSceneConfig) -> dict[str, torch.Tensor]:
    """One camera (view 0) over the room's time steps, rendered: `[T, ...]` images, depths, intrinsics,
    and the extrinsics relative to frame 0 (the clip of the pan and monocular-move tasks)."""
    scene = scene_in_memory(render_synthetic_scene(room))
    return {
        "images": scene.images[:, 0],
        "depths": scene.depths[:, 0],
        "intrinsics": scene.intrinsics[:, 0],
        "extrinsics": relative_to_first_camera(scene.extrinsics[:, 0].double()).float(),
    }


def rig_frames(room: SyntheticSceneConfig) -> dict[str, torch.Tensor]:
    """A rig's views at its first time step, rendered: `[V, ...]` images, depths, intrinsics, and the
    extrinsics relative to view 0 (the clip the rig tasks train and score on)."""
    scene = scene_in_memory(render_synthetic_scene(room))
    return {
        "images": scene.images[0],
        "depths": scene.depths[0],
        "intrinsics": scene.intrinsics[0],
        "extrinsics": relative_to_first_camera(scene.extrinsics[0].double()).float(),
    }


def rig_clip(seed: int, cfg: ProbeConfig, widest: float | None = None) -> dict[str, torch.Tensor]:
    """Two views of a static rig, their azimuths a random `min_deg`..`widest` apart (default
    `max_deg`), in random order, at heights up to 0.5 m apart; poses relative to view 0."""
    rng = np.random.default_rng([seed, 5])
    gap = float(rng.uniform(cfg.min_deg, cfg.max_deg if widest is None else widest))
    first = float(rng.uniform(0.0, 360.0))
    azimuths = (first, first + gap) if rng.random() < 0.5 else (first + gap, first)
    height = float(rng.uniform(1.2, 2.4))
    room = dataclasses.replace(
        _room(seed, IMAGE_SIZE[1], cfg.fov_deg),
        views=2,
        camera_motion="orbit",
        view_azimuths_deg=azimuths,
        view_heights=tuple(height + float(x) for x in rng.uniform(-0.25, 0.25, size=2)),
    )
    return rig_frames(room)


def rigs_clip(seed: int, cfg: ProbeConfig, views: int) -> dict[str, torch.Tensor]:
    """One static rig of `views` cameras drawn as the pretraining stream draws its rigs
    (`scene_stream.rig_azimuths`: neighbouring gaps of 20-90 degrees, random order; heights up to
    1 m apart; field of view 50-80 degrees), one time step; poses relative to view 0."""
    rng = np.random.default_rng([seed, 5])
    height = float(rng.uniform(1.2, 2.4))
    room = dataclasses.replace(
        _room(seed, IMAGE_SIZE[1], float(rng.uniform(50.0, 80.0))),
        views=views,
        camera_motion="orbit",
        camera_height=height,
        view_azimuths_deg=rig_azimuths(rng, views),
        view_heights=tuple(height + float(x) for x in rng.uniform(-0.5, 0.5, size=views)),
    )
    return rig_frames(room)


def repeat_times(clip: dict[str, torch.Tensor], times: int) -> dict[str, torch.Tensor]:
    """A static rig's clip `[V, ...]` shown at `times` time steps: `[times * V, ...]`, time-major.

    Why: the stream shows its rigs at two time steps, so its clips hold identical frames; a probe whose
    rigs hold none teaches nothing about them, and `tiny-pos` turned identical frames by 17-21 degrees.
    Nothing moves, so each later copy has its first time's images, depths and poses (frame `V` is frame
    0 again: the identity relative to it)."""
    return {key: torch.cat([value] * times) for key, value in clip.items()}


MONO_MOVES = StreamRecipe(static_share=1.0, monocular_share=1.0, mono_times=(4, 4))  # rigs+mono's odd steps


def mono_clip(seed: int) -> dict[str, torch.Tensor]:
    """A static monocular move of 4 frames drawn as the pretraining stream draws them (orbit, pan or
    dolly, up to 6 degrees per step, hand-held jitter, field of view 50-80: `MONO_MOVES`, scene `seed`
    of that recipe); poses relative to frame 0."""
    return camera_frames(draw_scene_config(MONO_MOVES, seed))


def rig_views(cfg: ProbeConfig, step: int | None) -> int:
    """The rigs task's camera count at `step`: 2..max_views in turn (None, held out: max_views)."""
    return cfg.max_views if step is None else 2 + step % (cfg.max_views - 1)


def widest_gap(cfg: ProbeConfig, step: int | None) -> float:
    """The rig task's largest training gap at `step` (None: held-out clips, the full range)."""
    if step is None or cfg.ramp_steps == 0:
        return cfg.max_deg
    return cfg.min_deg + (cfg.max_deg - cfg.min_deg) * min(1.0, (step + 1) / cfg.ramp_steps)


PAN_BESIDE_RIGS = (1.0, 20.0)  # task rig+pan: its pan steps' range (min/max_deg are the rigs' gaps)


def clip_kind(cfg: ProbeConfig, step: int | None) -> str:
    """Which clips step `step` draws (None: the held-out clips): the task's own, or for `A+B` tasks A on
    even steps and B on odd ones (`rig+pan`: a rig's views turn about the room, a pan turns in place;
    `rigs+mono`: the card's rigs and its monocular moves; its temporal pairs are small moves, its view
    pairs wide rig gaps)."""
    if "+" not in cfg.task:
        return cfg.task
    even, odd = cfg.task.split("+")
    return odd if step is not None and step % 2 else even


def make_batch(
    seeds: range | list[int], cfg: ProbeConfig, step: int | None = None, kind: str | None = None
) -> dict[str, torch.Tensor]:
    """The clips of `seeds` stacked: every tensor gets a leading `[len(seeds)]`. `step` sets the rig
    curriculum's widest gap and, for `rig+pan`, the kind of clip (None: held-out, the full range);
    `kind` overrides the kind."""
    kind = kind or clip_kind(cfg, step)
    if kind == "rig":
        clips = [rig_clip(seed, cfg, widest_gap(cfg, step)) for seed in seeds]
    elif kind == "rigs":
        clips = [rigs_clip(seed, cfg, rig_views(cfg, step)) for seed in seeds]
        if step is not None and cfg.rig_times > 1:
            clips = [repeat_times(clip, cfg.rig_times) for clip in clips]
    elif kind == "mono":
        clips = [mono_clip(seed) for seed in seeds]
    elif kind == "pan" and cfg.task.endswith("+pan"):
        pans = dataclasses.replace(cfg, min_deg=PAN_BESIDE_RIGS[0], max_deg=PAN_BESIDE_RIGS[1])
        clips = [pan_clip(seed, pans) for seed in seeds]
    else:
        make = shift_clip if kind == "shift" else pan_clip
        clips = [make(seed, cfg) for seed in seeds]
    return {key: torch.stack([c[key] for c in clips]) for key in clips[0]}


def score(pose_enc: torch.Tensor, extrinsics: torch.Tensor) -> dict[str, float]:
    """The rotation error of every frame after the first (relative to frame 0) against the identity
    floor, over a batch of clips.

    pose_enc `[N, S, 9]`, extrinsics `[N, S, 3, 4]` (S = 2 for the two-frame tasks, the rig's views for
    `rigs`). Returns the medians (degrees) over all N * (S - 1) frames of the predicted rotation's
    error and of the GT rotation itself (the error of predicting the identity), `skill = 1 - error /
    floor`, and every frame's two angles in clip order (`error_deg`, `gt_deg`: a record can then be
    split by the size of the rotation, e.g. a rig's small and large gaps) with whether it turned to
    the right side (`same_turn`, `turns_agree`) and how far the prediction turned (`pred_deg`: a head
    that cannot tell a wide pair from a narrow one turns both by the same amount)."""
    errors, floor, same_turn, predicted = [], [], [], []
    for pred, gt in zip(pose_enc.float().cpu(), extrinsics.cpu(), strict=True):
        pred_ext = pose_encoding_to_extrinsics(pred)
        errors += camera_errors_per_frame(pred_ext, gt)["rot_deg"][1:].tolist()
        floor += torch.rad2deg(rotation_angle(gt[1:, :3, :3].double())).tolist()
        turned = relative_to_first_camera(pred_ext.double())[1:, :3, :3]
        same_turn += turns_agree(turned, relative_to_first_camera(gt.double())[1:, :3, :3]).tolist()
        predicted += torch.rad2deg(rotation_angle(turned)).tolist()
    error, identity = float(np.median(errors)), float(np.median(floor))
    return {
        "rot_deg_median": error,
        "identity_floor_deg": identity,
        "skill": 1.0 - error / identity,
        "error_deg": [round(e, 3) for e in errors],
        "gt_deg": [round(g, 3) for g in floor],
        "same_turn": same_turn,
        "pred_deg": [round(p, 3) for p in predicted],
        "turn_slope": turn_slope(predicted, floor),
    }


def turn_slope(pred_deg: Sequence[float], gt_deg: Sequence[float]) -> float:
    """The least-squares slope of how far each frame turned in the prediction against the GT's turn.

    Threshold-free, and blind to a constant: a head that turns every pair by the same amount (it
    learnt the mean turn, not the pixels) scores 0 however its median error moves against the identity
    floor; one that turns each pair by its GT angle scores 1. A rank correlation would not do: it
    orders the hundredths of a degree by which a nearly constant head varies, and swings by +-0.6.
    NaN for fewer than 2 frames or GT turns all alike."""
    pred, gt = np.asarray(pred_deg, dtype=float), np.asarray(gt_deg, dtype=float)
    if pred.shape != gt.shape:
        raise ValueError(f"pred_deg and gt_deg differ in length: {pred.shape} vs {gt.shape}")
    if gt.size < 2 or np.ptp(gt) == 0:
        return math.nan
    centred = gt - gt.mean()
    return float((centred * (pred - pred.mean())).sum() / (centred**2).sum())


def turns_agree(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Whether each predicted turn away from frame 0 goes to the same side as the GT's: the two
    rotations' axes (scaled by the sine of their angles, `rotation_axis_sine`) point into the same
    half-space. A head that cannot tell a wide left turn from a right one is right half the time; its
    error then says nothing about why. pred, gt: rotations relative to frame 0 `[..., 3, 3]`; returns
    bool `[...]` (False for no turn: it is to no side)."""
    return (rotation_axis_sine(pred) * rotation_axis_sine(gt)).sum(-1) > 0


class TrainingClips(torch.utils.data.Dataset):
    """Step k's training batch, rendered wherever the loader runs it: a batch depends on the step
    alone, so worker processes render exactly the clips the training process would (on a GPU the
    in-process renderer would leave the device waiting: it is 14-20 % of a CPU step)."""

    def __init__(self, cfg: ProbeConfig) -> None:
        self.cfg = cfg

    def __len__(self) -> int:
        return self.cfg.steps

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        return make_batch(training_seeds(self.cfg, step), self.cfg, step)


def training_batches(cfg: ProbeConfig, first: int = 0) -> Iterator[dict[str, torch.Tensor]]:
    """Every step's batch in order from step `first`: rendered in `cfg.workers` processes (two steps
    ahead each), or in this one (0 workers). (With `fixed_clips`, `run_probe` repeats the one batch it
    scores.)"""
    if cfg.workers == 0:
        return (make_batch(training_seeds(cfg, step), cfg, step) for step in range(first, cfg.steps))
    clips = torch.utils.data.Subset(TrainingClips(cfg), range(first, cfg.steps))
    loader = torch.utils.data.DataLoader(
        clips, batch_size=None, shuffle=False, num_workers=cfg.workers, prefetch_factor=2
    )
    return iter(loader)


GAP_EDGES = (0.0, 45.0, 90.0, 135.0, 180.0)  # the rig task's rotation sizes, split for reporting


def by_rotation_size(scores: dict[str, Any], edges: tuple[float, ...] = GAP_EDGES) -> list[dict[str, Any]]:
    """`score`'s clips split by the size of their GT rotation (`edges`, degrees): per bin the count, the
    median GT rotation (the identity floor there), the median error and the skill. A model that only
    learnt the mean rotation, or only its direction, shows it here: skill below 0 on small rotations.
    With `same_turn` scored, also the share of turns to the right side (0.5: it cannot tell) and the
    median predicted turn (`pred_deg_median`; against the floor, the GT's median)."""
    gt, err = np.asarray(scores["gt_deg"]), np.asarray(scores["error_deg"])
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (gt >= lo) & (gt < hi)
        if inside.any():
            floor, error = float(np.median(gt[inside])), float(np.median(err[inside]))
            rows.append(
                {"from_deg": lo, "to_deg": hi, "clips": int(inside.sum()), "floor_deg": floor,
                 "error_deg": error, "skill": 1.0 - error / floor}
            )  # fmt: skip
            if "same_turn" in scores:  # older records lack one or both
                rows[-1]["same_turn_share"] = float(np.asarray(scores["same_turn"])[inside].mean())
            if "pred_deg" in scores:
                rows[-1]["pred_deg_median"] = float(np.median(np.asarray(scores["pred_deg"])[inside]))
    return rows


def rmse_by_side(scores: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The RMSE of `score`'s rotation errors (degrees) over all frames and split by whether the turn
    went to the right side (`same_turn`). The card's view-RPE-r is an RMSE: a few pairs turned the wrong
    way (100+ degrees off) rule it however precise the rest are, and this says which of the two is
    missing. Returns {"all" | "right_side" | "wrong_side": {"pairs", "rmse_deg"}} (NaN for no pair)."""
    err, same = np.asarray(scores["error_deg"], dtype=float), np.asarray(scores["same_turn"], dtype=bool)
    out = {}
    for name, chosen in (("all", np.ones_like(same)), ("right_side", same), ("wrong_side", ~same)):
        picked = err[chosen]
        rmse = float(np.sqrt(np.mean(picked**2))) if picked.size else math.nan
        out[name] = {"pairs": int(picked.size), "rmse_deg": rmse}
    return out


def training_seeds(cfg: ProbeConfig, step: int) -> range:
    """The clips of a step: `batch` new rooms (seeds `seed * 10^6 + step * batch ...`), or with
    `fixed_clips` the same first `fixed_clips` rooms every step (the control: can it fit them?)."""
    first = cfg.seed * 1_000_000
    if cfg.fixed_clips:
        return range(first, first + cfg.fixed_clips)
    return range(first + step * cfg.batch, first + (step + 1) * cfg.batch)


def probe_model(cfg: ProbeConfig) -> torch.nn.Module:
    """The pretraining's seeded initialisation, with `cfg.init`'s weights loaded unless it is random."""
    return pretrain.starting_model(cfg.seed, cfg.init, cfg.patch_embed)


def run_probe(
    cfg: ProbeConfig, out: str | Path, progress: bool = True, resume: bool = False
) -> dict[str, Any]:
    """Train and score the probe into the new run folder `out`; returns the record `probe.json` holds.
    `resume` continues an interrupted run in `out` from its last evaluation (`state.pt`: the weights,
    the optimiser and the record; a step's clips depend on the step alone, so the run goes on as if
    never stopped), and refuses one recorded with another config."""
    out = Path(out)
    claim_run_folder(out, resume=resume, run_files=("probe.json",), resume_hint="--resume")
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    device = require_device(cfg.device)
    model = probe_model(cfg).to(device).train()
    geometry_cfg = LossConfig(
        use_seganymo_mask=False, use_depth=cfg.geometry, use_point=cfg.geometry,
        rotation_target=cfg.rotation_target, cam_w_rotation=cfg.w_rotation,
    )  # fmt: skip
    optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    first, record, before = _probe_start(cfg, out, model, optimiser, resume)
    scored = heldout_sets(cfg)
    if cfg.fixed_clips:  # the control trains on the same clips every step, and scores them too
        scored["train_"] = make_batch(training_seeds(cfg, 0), cfg)
        batches: Iterator[dict[str, torch.Tensor]] = itertools.repeat(scored["train_"], cfg.steps)
    else:
        batches = training_batches(cfg, first)
    start = time.perf_counter() - before
    for step in range(first, cfg.steps + 1):
        if (step % cfg.eval_every == 0 or step == cfg.steps) and not (
            step == first and record["evaluations"]
        ):
            result = {"step": step, "seconds": round(time.perf_counter() - start, 1)}
            result.update(_evaluate(model, scored, device, cfg.correspondence_layer))
            record["evaluations"].append(result)
            _save_state(model, optimiser, step, record, time.perf_counter() - start, out, cfg.save_weights)
            if progress:
                print(_progress_line(result), flush=True)
            if cfg.minutes and result["seconds"] >= 60 * cfg.minutes and step < cfg.steps:
                record["stopped_by_minutes"] = step  # the budget ran out: this evaluation is the last
                break
        if step == cfg.steps:
            break
        for group in optimiser.param_groups:
            group["lr"] = cfg.lr * min(1.0, (step + 1) / WARMUP_STEPS)
        batch = {k: v.to(device) for k, v in next(batches).items()}
        loss, matching = training_loss(model, batch, cfg, step, geometry_cfg)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        record["losses"].append(round(float(loss.detach()), 6))  # every step's, for a replay
        if matching is not None:
            record.setdefault("correspondence", []).append(matching)
    record["train_seconds"] = time.perf_counter() - start
    write_json(out / "probe.json", record)
    mark_finished(out, "camera_probe", final=record["evaluations"][-1])
    return record


def _probe_start(
    cfg: ProbeConfig, out: Path, model: torch.nn.Module, optimiser: torch.optim.Optimizer, resume: bool
) -> tuple[int, dict[str, Any], float]:
    """(first step, record, seconds already trained): a new run's, or with `resume` the interrupted
    run's last evaluation restored from `state.pt` (none there: a new run)."""
    fresh: dict[str, Any] = {"config": dataclasses.asdict(cfg), "evaluations": [], "losses": []}
    if not (resume and (out / STATE_FILE).is_file()):
        return 0, fresh, 0.0
    state = torch.load(out / STATE_FILE, map_location="cpu", weights_only=True)
    changed = changed_fields(state["record"]["config"], fresh["config"], field_defaults(ProbeConfig))
    if changed:
        raise ParametersChanged(
            f"{out} holds a probe run with another config ({', '.join(changed)} differ): resume it with "
            "its own options, or write this one to a new --out"
        )
    model.load_state_dict(state["model"])
    optimiser.load_state_dict(state["optimiser"])
    return state["step"], state["record"], state["seconds"]


NO_MASKS = {"masks": None, "mask_valid": None}  # the probe supervises no mask


def heldout_sets(cfg: ProbeConfig) -> dict[str, dict[str, torch.Tensor]]:
    """The clips every evaluation scores, by key prefix: the task's own ("", seeds no training clip
    draws) and, for `A+B` tasks, B's held out too ("pan_" or "mono_")."""
    base = HELDOUT_SEED_BASE
    sets = {"": make_batch(range(base, base + cfg.heldout_clips), cfg)}
    if "+" in cfg.task:
        odd = cfg.task.split("+")[1]
        sets[odd + "_"] = make_batch(range(base, base + cfg.heldout_clips), cfg, kind=odd)
    return sets


def rescore(cfg: ProbeConfig, weights: list[str | Path]) -> list[dict[str, Any]]:
    """A recorded run's checkpoints scored again with today's evaluation (e.g. `match_top1`, which
    older records lack): `cfg` is the run's config (its task, held-out clips and layer), `weights` its
    checkpoints; one evaluation per checkpoint, as `probe.json` holds them (the held-out clips are
    rendered once; scored on the CPU, whatever device the run trained on)."""
    torch.set_num_threads(cfg.threads)
    sets = heldout_sets(cfg)
    results = []
    for path in weights:
        model = probe_model(dataclasses.replace(cfg, init=str(path)))
        results.append(
            {"weights": str(path), **_evaluate(model, sets, torch.device("cpu"), cfg.correspondence_layer)}
        )
    return results


def geometry_step(cfg: ProbeConfig, step: int) -> bool:
    """Whether training step `step` also trains depth and points (`geometry`, every `geometry_every`-th)."""
    return cfg.geometry and step % cfg.geometry_every == 0


def camera_predictions(
    model: torch.nn.Module, images: torch.Tensor, token_layers: frozenset[int] = frozenset()
) -> dict[str, Any]:
    """The camera head's `pose_enc_list` alone: the aggregator keeps only the last layer (the one the
    camera head reads) and those of `token_layers`, and the depth and point heads do not run. They are
    two thirds of a training step on CPU (their convolutions), so a camera-only step is about 3x
    cheaper than `model(images)`. images: `[B, S, 3, H, W]`; returns {"pose_enc_list": list of
    `[B, S, 9]`, "aggregated_tokens_list": `[B, S, P, 2C]` per block pair (None where not kept),
    "patch_start_idx"}, the keys `model(images, return_internals=True)` uses."""
    out = model.aggregator(images, keep_layers=token_layers | {model.cfg.depth - 1})
    return {
        "pose_enc_list": model.camera_head(out.tokens),
        "aggregated_tokens_list": out.tokens,
        "patch_start_idx": out.patch_start_idx,
    }


def training_loss(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    cfg: ProbeConfig,
    step: int,
    geometry_cfg: LossConfig,
) -> tuple[torch.Tensor, float | None]:
    """Step `step`'s loss: the camera loss (with depth and points on geometry steps) plus, with
    `w_correspondence`, the patch-matching term on layer `correspondence_layer`'s tokens. Returns the
    loss and the matching term's value (None when off; NaN for a batch without a match)."""
    layers = frozenset({cfg.correspondence_layer}) if cfg.w_correspondence else frozenset()
    if geometry_step(cfg, step):
        predictions = model(batch["images"], return_internals=True)
        loss_cfg = geometry_cfg
    else:
        predictions = camera_predictions(model, batch["images"], layers)
        loss_cfg = dataclasses.replace(geometry_cfg, use_depth=False, use_point=False)
    loss = compute_total_loss(predictions, {**batch, **NO_MASKS}, loss_cfg)["loss"]
    if not cfg.w_correspondence:
        return loss, None
    matching, count = correspondence_loss(
        patch_tokens(predictions, cfg.correspondence_layer), patch_matches(
            batch["depths"], batch["intrinsics"], batch["extrinsics"], PATCH
        )
    )  # fmt: skip
    return loss + cfg.w_correspondence * matching, round(float(matching.detach()), 6) if count else math.nan


def patch_tokens(predictions: dict[str, Any], layer: int) -> torch.Tensor:
    """The patch tokens `[B, S, P, 2C]` of block pair `layer` (camera and register tokens dropped)."""
    return predictions["aggregated_tokens_list"][layer][:, :, predictions["patch_start_idx"] :]


STATE_FILE = "state.pt"  # the last evaluation's weights, optimiser and record: what --resume continues


def _save_state(
    model: torch.nn.Module,
    optimiser: torch.optim.Optimizer,
    step: int,
    record: dict[str, Any],
    seconds: float,
    out: Path,
    save_weights: bool,
) -> None:
    """At every evaluation: `state.pt` (what `--resume` continues from), `probe.json` and, with
    `save_weights`, `weights.pt`: the whole model, float32 (load_checkpoint reads it), so a long run can
    be stopped and scored; `probe.json`'s last evaluation says which step they are."""
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    state = {"model": weights, "optimiser": optimiser.state_dict(), "step": step, "record": record}
    atomic_torch_save({**state, "seconds": seconds}, out / STATE_FILE)
    if save_weights:
        atomic_torch_save(weights, out / "weights.pt")
    write_json(out / "probe.json", record)


def _evaluate(
    model: torch.nn.Module, scored: dict[str, dict], device: torch.device, layer: int
) -> dict[str, float]:
    """`score` of every set of clips in `scored`, its keys prefixed with the set's name, and how well
    layer `layer`'s patch tokens find their GT matches in the other frames (`match_top1`)."""
    model.eval()
    result = {}
    with torch.no_grad():
        for prefix, clips in scored.items():
            clips = {k: v.to(device) for k, v in clips.items()}
            predictions = camera_predictions(model, clips["images"], frozenset({layer}))
            result.update(
                {
                    prefix + k: v
                    for k, v in score(predictions["pose_enc_list"][-1], clips["extrinsics"]).items()
                }
            )
            result.update({prefix + k: v for k, v in matching_scores(predictions, clips, layer).items()})
    model.train()
    return result


def matching_scores(
    predictions: dict[str, Any], clips: dict[str, torch.Tensor], layer: int
) -> dict[str, Any]:
    """How well layer `layer`'s patch tokens find their GT matches in the other frames of `clips`:
    `match_top1` over all ordered frame pairs, and `match_top1_by_gap` split by how far the two frames
    turned from each other (`GAP_EDGES`; NaN for a bin without pairs). Chance is 1 in 88."""
    tokens = patch_tokens(predictions, layer)
    matches = patch_matches(clips["depths"], clips["intrinsics"], clips["extrinsics"], PATCH)
    rot = clips["extrinsics"][..., :3, :3].double()
    gap = torch.rad2deg(rotation_angle(rot[:, None] @ rot[:, :, None].transpose(-1, -2)))  # [N, S, S]
    by_gap = [
        match_accuracy(tokens, matches, (gap >= lo) & (gap < hi))
        for lo, hi in zip(GAP_EDGES[:-1], GAP_EDGES[1:], strict=True)
    ]
    return {"match_top1": match_accuracy(tokens, matches), "match_top1_by_gap": [round(a, 4) for a in by_gap]}


def _progress_line(result: dict[str, Any]) -> str:
    line = (
        f"step {result['step']}: rotation error {result['rot_deg_median']:.2f} deg (median), identity "
        f"floor {result['identity_floor_deg']:.2f}, skill {result['skill']:+.3f}"
    )
    if "train_skill" in result:
        line += f"; on the clips it trains on: skill {result['train_skill']:+.3f}"
    for odd, name in (("pan", "pans"), ("mono", "monocular moves")):
        if f"{odd}_skill" in result:
            line += (
                f"; {name}: {result[f'{odd}_rot_deg_median']:.2f} / {result[f'{odd}_identity_floor_deg']:.2f}"
            )
    bins = "; ".join(
        f"{b['from_deg']:.0f}-{b['to_deg']:.0f} deg: {b['error_deg']:.1f} / {b['floor_deg']:.1f} "
        f"(turned {b.get('pred_deg_median', math.nan):.0f}, "
        f"side right {b.get('same_turn_share', math.nan):.0%})"
        for b in by_rotation_size(result)
    )
    if "match_top1" in result:  # older records lack it
        line += f"; patches matched across views {result['match_top1']:.0%}"
        if "match_top1_by_gap" in result:
            line += " (by gap " + " / ".join(f"{a:.0%}" for a in result["match_top1_by_gap"]) + ")"
    if "turn_slope" in result:  # older records lack it
        line += f"; predicted turn vs GT turn: slope {result['turn_slope']:+.3f}"
    line += f" [{result['seconds']:.0f} s]\n  by rotation size, error / floor: {bins}"
    if "same_turn" in result:
        all_, right, wrong = rmse_by_side(result).values()
        line += (
            f"\n  RMSE {all_['rmse_deg']:.1f} deg; turned the right way {right['pairs']} "
            f"(RMSE {right['rmse_deg']:.1f}), the wrong way {wrong['pairs']} (RMSE {wrong['rmse_deg']:.1f})"
        )
    return line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m page4d.experiments.camera_probe",
        description=__doc__.split("\n\n")[0],
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("--out", required=True, help="new run folder")
    parser.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    add_options(parser, ProbeConfig)
    args = parser.parse_args(argv)
    run_probe(from_args(ProbeConfig, args), args.out, resume=args.resume)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
