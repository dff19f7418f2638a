"""Dynamic masks for your own clip: `python -m page4d.predict INPUT --out DIR`.

INPUT is a folder of frames, a folder of per-view frame folders, a video file or a scene folder in the
multi-view RGB-D layout (`page4d.data.inputs`). Writes

```
DIR/masks/<view>/<frame stem>.png   uint8 0/255 (P(dynamic) >= threshold), the frame's original size
DIR/prob/<view>/<frame stem>.npy    float16 P(dynamic), the frame's original size
DIR/overlay.mp4                     thresholded mask over the model-size frames (views side by side;
                                    overlay.gif where no H.264 / MPEG-4 encoder exists)
DIR/metrics.json                    with GT (--gt, or an RGB-D scene's SegAnyMo masks): DAVIS J / F
                                    (page4d.scoring.davis) at the GT's resolution, and how they were computed
DIR/run.json                        always: what ran (preset, weights, method, threshold, input, versions,
                                    the command line, the method's notes)
DIR/DONE.json                       written last (`page4d.records.mark_finished`): the run ended
```
Weights: `--checkpoint` takes a file or a shipped checkpoint's name; left out, the preset's shipped
checkpoint is used (`tiny-stream` for `tiny`), and a preset without one is refused. Seeded random
weights only with `--checkpoint random`. Weights made with a tiny-only patch embedding (the shipped
`tiny-pos`, issue 20's `checkpoints/issue20/`, `camera_recipe`'s) are built with it: `--patch-embed
auto`, the default, reads it from the checkpoint's keys (naming one, e.g. `--patch-embed conv_pos`,
checks it). A DIR that already holds a run (finished or interrupted) is refused: every run gets its
own folder. Routine mistakes (a missing file, a bad value, a checkpoint with NaN weights, a taken DIR)
end in one line `page4d.predict: <message>` and exit status 2.
The clip runs through the model in chunks of `--chunk` time steps (all views together; each chunk
is its own forward pass), with a progress bar. Outside the model's centre crop (when the aspect ratio
had to be cut to a multiple of 14) the mask logits are extended from the crop's edge.

`--method attention` takes the masks from the model's global attention instead of its mask head
(VGGT4D's training-free cues, `page4d.inference.motion_cues`; any preset, a plain VGGT too),
thresholded per chunk without GT: `prob` is then `sigmoid(gain * (score - threshold))`, a ranking, not a
calibrated probability. The cues compare time steps, so a chunk of a single step runs together with a
neighbouring step (only its own masks are written), and a clip of one time step is refused.

    python -m page4d.predict clip.mp4 --out outputs/clip --preset page4d_fin10_1b --checkpoint ck.pt
    python -m page4d.predict frames/ --out outputs/t                 # tiny preset, tiny-stream weights
    python -m page4d.predict frames/ --out outputs/f --gt davis/Annotations/480p/bear --image-width 224
    python -m page4d.predict clip.mp4 --out outputs/a --preset vggt_1b --checkpoint vggt.pt --method attention
"""

from __future__ import annotations

import argparse
import math
import platform
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from page4d import __version__, records
from page4d.data import Scene
from page4d.data.annotations import annotation_paths, read_annotation_png
from page4d.data.inputs import input_kind, load_input
from page4d.data.layout import SceneFormatError
from page4d.data.resize import CropResize
from page4d.data.scene import SEGANYMO_DIR
from page4d.data.seganymo import frame_file_name, read_mask_png, view_dir_name
from page4d.devices import PRECISIONS, autocast, check_precision, require_device
from page4d.geometry import depth_to_world_points, relative_to_first_camera
from page4d.inference.extract import mask_probabilities
from page4d.inference.loading import AUTO, load_model, resolve_patch_embed
from page4d.inference.motion_cues import predict_with_attention_masks
from page4d.inference.reconstruction import Reconstruction, chain, reconstruct
from page4d.model import CheckpointError, logits_from_masks, preset, resolve_checkpoint
from page4d.model.checkpoint import SHIPPED_MASK_HEAD_NOTES, SHIPPED_PRESETS, shipped_checkpoint_for
from page4d.model.config import TINY_PATCH_EMBEDS, preset_with_patch_embed
from page4d.records import RunFolderTaken
from page4d.report.reconstruction_files import ReconstructionWriter
from page4d.report.viz import overlay_rgb
from page4d.scoring.davis import frame_j_f, summarize
from page4d.scoring.evaluate import METHODS, check_method
from page4d.scoring.maps import align_to_gt, map_distances
from page4d.scoring.metrics import camera_errors_per_frame

VIDEO_CODECS = ("libx264", "mpeg4")  # the first one PyAV's FFmpeg can encode is used
RANDOM_WEIGHTS = "random"  # --checkpoint random: seeded random weights, only when asked for by name
RUN_FILE = "run.json"
# What makes a folder a predict run (a finished one also holds DONE.json): never written into again.
RUN_FILES = (RUN_FILE, records.METRICS_FILE, "masks/*/*.png", "prob/*/*.npy", "overlay.mp4", "overlay.gif")
# The mistakes a user makes routinely: one line and exit status 2 instead of a traceback.
EXPECTED_ERRORS = (
    FileNotFoundError,
    FileExistsError,
    ValueError,
    CheckpointError,
    SceneFormatError,
    RunFolderTaken,
)


def logits_to_source(logits: torch.Tensor, transform: CropResize) -> torch.Tensor:
    """Patch-grid logits `[..., h, w]` -> P(dynamic) `[..., H0, W0]` on the source frame's pixels.

    Bilinear on the logits over the crop the model saw (then squashed, so p = 0.5 stays where the logit
    is 0), edge-replicated over what the crop cut off.
    """
    lead = logits.shape[:-2]
    x = logits.reshape(-1, 1, *logits.shape[-2:]).float()
    x = F.interpolate(x, size=(transform.crop_h, transform.crop_w), mode="bilinear", align_corners=False)
    h0, w0 = transform.src_hw
    pad = (
        transform.left,
        w0 - transform.left - transform.crop_w,
        transform.top,
        h0 - transform.top - transform.crop_h,
    )
    if any(pad):
        x = F.pad(x, pad, mode="replicate")
    return torch.sigmoid(x).reshape(*lead, h0, w0)


class OverlayVideo:
    """Frames in, `path.mp4` out (H.264 or MPEG-4 via PyAV, encoded as the frames arrive, so a long clip
    is never held in memory), or `path.gif` when neither encoder exists (frames kept until `close`)."""

    def __init__(self, stem: Path, fps: int = 8) -> None:
        codecs = [c for c in VIDEO_CODECS if c in av.codecs_available]
        self.codec = codecs[0] if codecs else None
        self.path = stem.with_suffix(".mp4" if self.codec else ".gif")
        self.fps = fps
        self.frames: list[Image.Image] = []
        self.container = None
        self.stream = None

    def add(self, frame: np.ndarray) -> None:
        h, w = frame.shape[:2]
        frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)))  # yuv420p needs even sizes
        if self.codec is None:
            self.frames.append(Image.fromarray(frame))
            return
        if self.container is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.container = av.open(str(self.path), mode="w")
            self.stream = self.container.add_stream(self.codec, rate=Fraction(self.fps))
            self.stream.height, self.stream.width = frame.shape[:2]
            self.stream.pix_fmt = "yuv420p"
        self.container.mux(self.stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))

    def close(self) -> Path:
        if self.codec is None:
            first, *rest = self.frames
            first.save(self.path, save_all=True, append_images=rest, duration=1000 // self.fps, loop=0)
        else:
            self.container.mux(self.stream.encode())
            self.container.close()
        return self.path


@dataclass
class ChunkRun:
    """How each chunk's forward runs: where its masks come from (`method`), masks given to drive the
    attention bias instead of the head (`given` dynamic logits `[T, V, h, w]`, --mask-from), autocast
    (`precision`) on `device`."""

    method: str = "mask_head"
    given: torch.Tensor | None = None
    precision: str = "fp32"
    device: torch.device = torch.device("cpu")


def chunk_predictions(
    model: torch.nn.Module, images: torch.Tensor, lo: int, stop: int, run: ChunkRun
) -> tuple[dict[str, Any], int, list[str]]:
    """One forward of time steps lo..stop-1 of `images` `[T, V, 3, H, W]`: the model's predictions
    (batch 1, float32, on the CPU; `mask_logits` `[1, t, V, h, w]` from `run.method`), the first time
    step they cover, and notes (e.g. an attention clip without a GT-free threshold).

    `attention` needs two time steps: a one-step chunk runs from the step before it (or, for the first
    step, up to the one after it), and the returned first step says so."""
    hi = stop
    if run.method == "attention" and hi - lo < 2:
        lo = max(0, stop - 2)
        hi = lo + 2
    clip = images[lo:hi][None].to(run.device)
    kwargs = {} if run.given is None else {"given_mask_logits": run.given[lo:hi][None].to(run.device)}
    with torch.no_grad(), autocast(run.device, run.precision):
        if run.method == "mask_head":
            pred, notes = model(clip, **kwargs), []
        else:
            pred = predict_with_attention_masks(model, clip)
            notes = [f"time steps {lo}-{hi - 1}: {note}" for note in pred["attention_notes"]]
    keep = ("pose_enc", "depth", "depth_conf", "mask_logits")
    return {k: pred[k].float().cpu() for k in keep if k in pred}, lo, notes


def time_slice(pred: dict[str, Any], a: int, b: int) -> dict[str, Any]:
    """Time steps a..b-1 of batch-1 multi-view predictions (`[1, T, V, ...]`)."""
    return {k: v[:, a:b] for k, v in pred.items()}


def no_mask_head_message(preset_name: str) -> str:
    return (
        f"preset {preset_name!r} has no mask head, so --method mask_head has no masks to predict; "
        "--method attention works for any preset (VGGT4D's training-free cues from the global attention), "
        "or load VGGT-1B weights into a PAGE-4D preset (e.g. --preset page4d_fin10_1b: its head starts "
        "untrained)"
    )


def require_mask_head(model: torch.nn.Module, preset_name: str) -> None:
    if model.aggregator.spatial_mask_head is None:
        raise ValueError(no_mask_head_message(preset_name))


def check_threshold(threshold: float) -> float:
    """P(dynamic) thresholds live in [0, 1] (NaN is refused too)."""
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be a probability in [0, 1], got {threshold}")
    return float(threshold)


@dataclass
class Weights:
    """What `--checkpoint` resolved to: `source` for `load_model` ("" = seeded random weights)."""

    name: str  # as given, the shipped default's name, or "random"
    path: Path | None  # the file (None for random weights)
    default: bool  # no --checkpoint given: the preset's shipped checkpoint

    @property
    def source(self) -> str:
        return "" if self.path is None else self.name


def resolve_weights(preset_name: str, checkpoint: str | Path | None, method: str) -> Weights:
    """Check the preset and the weights before anything is built (a 1B preset takes seconds and GBs).

    `checkpoint` None: the preset's shipped checkpoint (refused when it has none); `"random"`: seeded
    random weights; else a file or a shipped name, which must exist."""
    cfg = preset(preset_name)  # ValueError for an unknown preset name
    if method == "mask_head" and cfg.mask_head is None:
        raise ValueError(no_mask_head_message(preset_name))
    default = checkpoint is None
    if default:
        checkpoint = shipped_checkpoint_for(preset_name)
        if checkpoint is None:
            shipped = ", ".join(f"{n} (preset {p})" for n, p in SHIPPED_PRESETS.items())
            raise ValueError(
                f"preset {preset_name!r} has no shipped checkpoint (shipped: {shipped}); pass its weights "
                f"with --checkpoint PATH, or --checkpoint {RANDOM_WEIGHTS} for seeded random weights "
                "(whose masks mean nothing)"
            )
    name = str(checkpoint)
    if SHIPPED_PRESETS.get(name, preset_name) != preset_name:  # known without building the model
        raise ValueError(
            f"shipped checkpoint {name!r} loads into preset {SHIPPED_PRESETS[name]!r}, not {preset_name!r}"
        )
    if name == RANDOM_WEIGHTS:
        return Weights(name, None, False)
    if not name:
        raise ValueError(
            f"an empty --checkpoint names no weights: leave it out for the preset's shipped checkpoint, or "
            f"pass --checkpoint {RANDOM_WEIGHTS} for seeded random weights"
        )
    path = resolve_checkpoint(name)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint not found: {path} (shipped checkpoints by name: {', '.join(SHIPPED_PRESETS)}; "
            f"seeded random weights: --checkpoint {RANDOM_WEIGHTS})"
        )
    return Weights(name, path.resolve(), default)


def source_gt(scene: Scene, gt: str | Path | None) -> dict[tuple[int, int], Any]:
    """`{(ti, vi): reader}` of the GT masks at their own (the frames' original) resolution."""
    if gt is not None and scene.frame_names is not None:
        names = [scene.view_name(v) for v in range(scene.num_views)]
        paths = annotation_paths(gt, scene.frame_names, names)
        hw = scene.transform.src_hw
        return {k: (lambda p=p: read_annotation_png(p, hw)) for k, p in paths.items()}
    if scene.frame_names is None and scene.masks is not None:  # RGB-D scene: its SegAnyMo masks
        folder = Path(scene.root) / SEGANYMO_DIR / scene.mask_source
        out = {}
        for ti, t in enumerate(scene.times):
            for vi, v in enumerate(scene.views):
                path = folder / view_dir_name(v) / frame_file_name(t)
                if path.is_file():
                    out[(ti, vi)] = lambda p=path: read_mask_png(p, scene.transform.src_hw).astype(bool)
        return out
    return {}


def write_frame_mask(
    out: Path, scene: Scene, ti: int, vi: int, prob: torch.Tensor, threshold: float
) -> np.ndarray:
    """Write frame (ti, vi)'s P(dynamic) at the source resolution (`prob/<view>/<frame>.npy`, float16)
    and its mask (`masks/<view>/<frame>.png`, 0/255); returns the bool mask `[H, W]`, exactly the one
    a reader gets by thresholding the saved .npy."""
    view, stem = scene.view_name(vi), scene.frame_name(ti, vi)
    p = prob.numpy().astype(np.float16)
    mask = p.astype(np.float32) >= threshold
    for folder in ("masks", "prob"):
        (out / folder / view).mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(out / "masks" / view / f"{stem}.png")
    np.save(out / "prob" / view / f"{stem}.npy", p)
    return mask


def score_frame(scene: Scene, ti: int, vi: int, mask: np.ndarray, reader: Any | None) -> dict[str, Any]:
    """One per-frame DAVIS row (J, F at the GT's size); None scores where the frame has no GT."""
    row = {"sequence": scene.view_name(vi), "frame": scene.frame_name(ti, vi), "J": None, "F": None}
    row["size"] = None
    if reader is not None:
        gt_mask = reader()
        row.update(zip(("J", "F"), frame_j_f(mask, gt_mask), strict=True))
        row["size"] = list(gt_mask.shape)
    return row


def predict_frames(
    model: torch.nn.Module,
    scene: Scene,
    out: Path,
    run: ChunkRun,
    chunk: int,
    threshold: float,
    gt_readers: dict[tuple[int, int], Any],
    writer: ReconstructionWriter | None,
    progress: bool,
) -> tuple[list[dict[str, Any]], list[str], Path]:
    """Every frame's mask and P(dynamic), the overlay video and (with a `writer`) the reconstruction,
    chunk by chunk; returns the per-frame DAVIS rows, the method's notes and the video's path.

    With a writer, each chunk after the first also runs its previous time step, through which its
    cameras and points are chained into the first chunk's world (`reconstruction.chain`)."""
    video = OverlayVideo(out / "overlay")
    rows: list[dict[str, Any]] = []  # per-frame DAVIS scores, computed as the frames go by
    notes: list[str] = []
    previous: Reconstruction | None = None
    bar = tqdm(total=scene.num_times, desc="page4d.predict", unit="step", disable=not progress)
    for start in range(0, scene.num_times, chunk):
        stop = min(start + chunk, scene.num_times)
        chaining = writer is not None and writer.skipped is None and start > 0
        first = start - 1 if chaining else start  # the overlap step fixes the chunk's world
        pred, lo, chunk_notes = chunk_predictions(model, scene.images, first, stop, run)
        notes += chunk_notes
        logits = pred["mask_logits"][0, start - lo : stop - lo]  # [t, V, h, w]
        rows += write_masks(out, scene, video, logits, range(start, stop), threshold, gt_readers)
        if writer is not None and writer.skipped is None and (problem := unusable_cameras(pred)):
            writer.skip(problem + (f" (from time step {start}; earlier steps were written)" if start else ""))
        if writer is not None and writer.skipped is None:
            rec = reconstruct(time_slice(pred, 0, stop - lo), scene.images[lo:stop][None])
            rec = rec if previous is None else chain(previous, rec)  # now exactly steps start..stop-1
            writer.add(rec, range(start, stop))
            previous = rec
        bar.update(stop - start)
    bar.close()
    return rows, notes, video.close()


def unusable_cameras(pred: dict[str, Any]) -> str | None:
    """Why these predictions cannot be reconstructed (None when they can): a model whose camera head
    never trained (e.g. a mask head trained on mask terms only from random weights) predicts no field
    of view, and its cameras mean nothing."""
    if "pose_enc" not in pred or "depth" not in pred:
        return "the model has no camera or depth head"
    fov = pred["pose_enc"][..., 7:9]
    if not bool(torch.isfinite(pred["pose_enc"]).all()) or bool(((fov <= 0) | (fov >= math.pi)).any()):
        return "the model's camera head predicts no valid field of view (its cameras never trained)"
    return None


def write_masks(
    out: Path,
    scene: Scene,
    video: OverlayVideo,
    logits: torch.Tensor,
    times: range,
    threshold: float,
    gt_readers: dict[tuple[int, int], Any],
) -> list[dict[str, Any]]:
    """Masks, P(dynamic) and overlay frames of time steps `times` from their logits `[t, V, h, w]`."""
    prob_model = mask_probabilities(logits, scene.image_size)  # for the overlay video
    prob_source = logits_to_source(logits, scene.transform)
    rows = []
    for k, ti in enumerate(times):
        panels = []
        for vi in range(scene.num_views):
            mask = write_frame_mask(out, scene, ti, vi, prob_source[k, vi], threshold)
            rows.append(score_frame(scene, ti, vi, mask, gt_readers.get((ti, vi))))
            small_gt = None
            if scene.masks is not None and bool(scene.mask_valid[ti, vi]):
                small_gt = scene.masks[ti, vi].numpy() >= 0.5
            rgb = overlay_rgb(scene.images[ti, vi], prob_model[k, vi].numpy() >= threshold, small_gt)
            panels.append((rgb * 255).round().astype(np.uint8))
        video.add(np.concatenate(panels, axis=1))
    return rows


def run_record(
    input: str | Path, kind: str, preset_name: str, weights: Weights, note: str, scene: Scene, **options: Any
) -> dict[str, Any]:
    """run.json: what ran, written before the first mask (a folder with masks always says what made them)."""
    return {
        "command": options.pop("command", None),
        "input": str(input),
        "input_path": str(Path(input).resolve()),
        "input_kind": kind,
        "frames": scene.num_times,
        "views": [scene.view_name(v) for v in range(scene.num_views)],
        "source_size": list(scene.transform.src_hw),
        "model_input_size": list(scene.image_size),
        "preset": preset_name,
        "checkpoint": weights.name,
        "checkpoint_path": None if weights.path is None else str(weights.path),
        "checkpoint_default": weights.default,
        "model": note,
        **options,
        "versions": {"page4d": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "method_notes": [],
    }


def check_request(
    input: str | Path,
    out: Path,
    preset_name: str,
    checkpoint: str | Path | None,
    chunk: int,
    threshold: float,
    method: str,
    device: str,
    patch_embed: str = AUTO,
) -> tuple[Weights, torch.device, str]:
    """Everything a user can get wrong that is cheap to check, before anything is read, built or written:
    values, device, preset, weights, the input's kind, and that `out` holds no run yet."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    check_threshold(threshold)
    check_method(method)
    torch_device = require_device(device)
    weights = resolve_weights(preset_name, checkpoint, method)
    if patch_embed != AUTO:  # refuses a tiny-only variant on another preset (auto: read with the weights)
        preset_with_patch_embed(preset_name, patch_embed)
    kind = input_kind(input)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file, not a folder")
    records.claim_run_folder(out, run_files=RUN_FILES, resume_hint=None, new_hint="a new --out")
    return weights, torch_device, kind


def result_record(
    run: dict[str, Any], scene: Scene, gt: str | Path | None, rows: list[dict[str, Any]], scored: bool
) -> dict[str, Any]:
    """What `predict` returns and metrics.json holds: the run, and when `scored` (GT) the DAVIS scores."""
    keys = ("input", "input_kind", "frames", "views", "source_size", "model_input_size", "model", "preset")
    result: dict[str, Any] = {k: run[k] for k in keys}
    for k in ("checkpoint", "checkpoint_path", "threshold", "method"):
        result[k] = run[k]
    result.update(method_notes=run["method_notes"], chunk=run["chunk"], overlay=run["overlay"])
    result["geometry"] = scene.geometry_missing_reason or "depth and cameras present (not scored here)"
    if scored:
        scores = summarize(rows)
        result = {**{k: scores[k] for k in list(scores) if k not in ("per_frame",)}, **result}
        result["gt"] = str(gt) if gt is not None else str(Path(scene.root) / SEGANYMO_DIR / scene.mask_source)
        result["gt_missing_reason"] = scene.mask_missing_reason
        result["per_frame"] = scores["per_frame"]
    return result


def predict(
    input: str | Path,
    out: str | Path,
    preset: str = "tiny",
    checkpoint: str | Path | None = None,
    gt: str | Path | None = None,
    image_width: int = 518,
    every: int = 1,
    max_frames: int | None = None,
    chunk: int = 8,
    threshold: float = 0.5,
    seed: int = 0,
    progress: bool = True,
    method: str = "mask_head",
    device: str = "cpu",
    command: str | None = None,
    log: Callable[[str], Any] | None = None,
    reconstruction: bool = True,
    depth: bool = True,
    points: bool = True,
    mask_from: str | Path | None = None,
    precision: str = "fp32",
    conf_quantile: float = 0.3,
    patch_embed: str = AUTO,
) -> dict[str, Any]:
    """Run the whole job (see the module docstring); returns what metrics.json holds (or would hold).

    `checkpoint` None = the preset's shipped checkpoint, "random" = seeded random weights. Nothing is
    written before the request, the input and the weights passed their checks; then run.json first,
    DONE.json last. `command`: the command line recorded in run.json; `log`: where the model note goes.
    `reconstruction` (with `depth`, `points`): cameras, depth, point clouds and the static map (see
    `inference.reconstruction.ReconstructionWriter`); with GT geometry, metrics.json scores them.
    `mask_from`: masks (DAVIS-style or SegAnyMo, as `gt`) that drive the attention bias instead of the
    mask head. `precision` bf16 / fp16: autocast for GPU runs of the 1B presets. `patch_embed`: "auto"
    (the checkpoint's keys say; `inference.loading.resolve_patch_embed`) or one to check."""
    started = time.perf_counter()
    out = Path(out)
    weights, torch_device, kind = check_request(
        input, out, preset, checkpoint, chunk, threshold, method, device, patch_embed
    )
    check_precision(precision)
    scene = load_input(input, image_width=image_width, every=every, max_frames=max_frames, gt=gt)
    if method == "attention" and scene.num_times < 2:
        raise ValueError(
            f"--method attention compares time steps; the input has {scene.num_times} (images "
            f"{list(scene.images.shape)})"
        )
    patch_embed = resolve_patch_embed(preset, weights.source, patch_embed)
    model, note = load_model(preset, weights.source, seed, patch_embed)
    model.to(torch_device)
    weights_note = SHIPPED_MASK_HEAD_NOTES.get(weights.name) if method == "mask_head" else None
    for line in (f"model: {note}", f"note: {weights_note}" if weights_note else ""):
        if line and log is not None:
            log(line)
    options = dict(method=method, threshold=float(threshold), gt=gt and str(gt), chunk=chunk, seed=seed)
    options.update(mask_from=mask_from and str(mask_from), precision=precision, conf_quantile=conf_quantile)
    options.update(reconstruction=reconstruction, depth=depth, points=points)
    options.update(image_width=image_width, every=every, max_frames=max_frames, patch_embed=patch_embed)
    run = run_record(
        input, kind, preset, weights, note, scene, command=command, device=str(torch_device), **options
    )
    run["weights_note"] = weights_note
    out.mkdir(parents=True, exist_ok=True)
    records.write_json(out / RUN_FILE, run)
    gt_readers = source_gt(scene, gt)
    given = (
        None
        if mask_from is None
        else given_logits(input, mask_from, scene, model, image_width, every, max_frames)
    )
    chunk_run = ChunkRun(method, given, precision, torch_device)
    writer = (
        ReconstructionWriter(out, scene, threshold, conf_quantile, depth, points) if reconstruction else None
    )
    rows, notes, video_path = predict_frames(
        model, scene, out, chunk_run, chunk, threshold, gt_readers, writer, progress
    )
    run.update(method_notes=notes, overlay=video_path.name)
    result = result_record(run, scene, gt, rows, scored=bool(gt_readers))
    return finish(out, run, result, scene, writer, started)


def finish(
    out: Path, run: dict, result: dict, scene: Scene, writer: ReconstructionWriter | None, started: float
) -> dict[str, Any]:
    """Close the reconstruction (scored against GT geometry when the scene has it), write metrics.json
    when anything was scored, run.json again, and DONE.json last."""
    scored = "J_mean" in result
    if writer is not None and writer.skipped is not None:
        result["reconstruction"] = {"skipped": writer.skipped}
        run["reconstruction_skipped"] = writer.skipped
    elif writer is not None:
        written = writer.close()
        result["reconstruction"] = {"static_map_points": written["static_map_points"]}
        if scene.geometry_missing_reason is None:
            result["geometry_scores"] = reconstruction_scores(writer, scene, written["extrinsics"])
            scored = True
    if scored:
        records.write_json(out / records.METRICS_FILE, result)
    records.write_json(out / RUN_FILE, run)
    wall_s = round(time.perf_counter() - started, 3)
    metrics_file = records.METRICS_FILE if scored else None
    records.mark_finished(out, "predict", status="ok", wall_s=wall_s, metrics_file=metrics_file)
    return result


def given_logits(
    input: str | Path, masks: str | Path, scene: Scene, model: torch.nn.Module, width: int, every: int, limit
) -> torch.Tensor:
    """--mask-from: the given masks (read like --gt, at the model's resolution) as dynamic logits
    `[T, V, h, w]` for the attention bias. Every frame needs one: a frame without a mask would leave its
    bias a guess, so it is refused, naming the frames."""
    if model.aggregator.spatial_mask_head is None:
        raise ValueError("--mask-from drives the mask head's attention bias; this preset has no mask head")
    given = load_input(input, image_width=width, every=every, max_frames=limit, gt=masks)
    if given.masks is None or not bool(given.mask_valid.all()):
        missing = [] if given.masks is None else (~given.mask_valid).nonzero().tolist()
        raise ValueError(f"--mask-from {masks}: no mask for frames (time, view) {missing or 'all'}")
    return logits_from_masks(given.masks, model.cfg.patch_size)


def reconstruction_scores(
    writer: ReconstructionWriter, scene: Scene, extrinsics: torch.Tensor
) -> dict[str, Any]:
    """With GT depth and cameras: depth (median-scaled per clip), every frame's camera errors and ATE,
    and the static map's accuracy / completeness against the GT static surface after the camera
    Sim(3), with and without the mask filter: the measured worth of the mask for the map."""
    gt_ext = relative_to_first_camera(scene.extrinsics.reshape(-1, 3, 4)).reshape(extrinsics.shape)
    cams = camera_errors_per_frame(extrinsics.reshape(-1, 3, 4), gt_ext.reshape(-1, 3, 4))
    out: dict[str, Any] = {
        **(writer.depth_scores() or {"depth": "no GT depth"}),
        "camera_rot_deg": [round(float(x), 3) for x in cams["rot_deg"]],
        "camera_rot_deg_median": float(cams["rot_deg"][1:].median()) if len(cams["rot_deg"]) > 1 else None,
    }
    gt_static = gt_static_points(scene, gt_ext)
    for name in ("static", "unfiltered"):
        pts = writer.static_points(name)[:, :3]
        moved, reason = align_to_gt(pts, extrinsics, gt_ext)
        out[f"map_{name}_kept_points"] = writer.kept[name]
        out[f"map_{name}"] = (
            map_distances(moved, gt_static) if moved is not None and len(pts) else {"reason": reason}
        )
    return out


def gt_static_points(scene: Scene, gt_ext: torch.Tensor, per_frame: int = 20_000) -> np.ndarray:
    """The GT static surface: GT depth unprojected with GT cameras (first camera's world) where the GT
    mask says static (every valid pixel when the scene has no masks), at most `per_frame` per frame."""
    pts = depth_to_world_points(scene.depths, scene.intrinsics, gt_ext.float())  # [T, V, H, W, 3]
    keep = scene.depths > 0
    if scene.masks is not None:
        keep &= ~((scene.masks >= 0.5) & scene.mask_valid[..., None, None])
    rng = np.random.default_rng(0)
    chunks = []
    for ti in range(keep.shape[0]):
        for vi in range(keep.shape[1]):
            xyz = pts[ti, vi][keep[ti, vi]].numpy()
            if len(xyz) > per_frame:
                xyz = xyz[rng.choice(len(xyz), per_frame, replace=False)]
            chunks.append(xyz)
    return np.concatenate(chunks).astype(np.float32)


def probability(text: str) -> float:
    """argparse type of --threshold: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(
            f"{text} is not a probability in [0, 1] (pixels with P(dynamic) at or above it are dynamic)"
        )
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m page4d.predict",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "input", help="frames folder, folder of per-view frame folders, video, or RGB-D scene"
    )
    parser.add_argument("--out", required=True, help="output folder (new, or one without a run in it)")
    parser.add_argument("--preset", default="tiny", help="model preset (tiny, page4d_fin10_1b, ...)")
    parser.add_argument(
        "--checkpoint",
        default=None,
        help=f"weights: a file or a shipped name (default: the preset's shipped checkpoint, tiny-stream "
        f"for tiny); '{RANDOM_WEIGHTS}' = seeded random weights",
    )
    parser.add_argument("--gt", default=None, help="DAVIS-style mask PNGs or SegAnyMo's output folder")
    parser.add_argument("--image-width", type=int, default=518, help="model input width (multiple of 14)")
    parser.add_argument("--every", type=int, default=1, help="take every N-th frame")
    parser.add_argument("--max-frames", type=int, default=None, help="at most this many time steps")
    parser.add_argument("--chunk", type=int, default=8, help="time steps per forward pass")
    parser.add_argument(
        "--threshold", type=probability, default=0.5, help="P(dynamic) at or above = dynamic, in [0, 1]"
    )
    parser.add_argument(
        "--method",
        choices=METHODS,
        default="mask_head",
        help="mask_head: the model's mask head; attention: VGGT4D's training-free attention cues",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (checked before anything runs)")
    parser.add_argument(
        "--precision", choices=PRECISIONS, default="fp32", help="bf16 / fp16: autocast on a GPU"
    )
    parser.add_argument(
        "--mask-from",
        default=None,
        help="masks (DAVIS-style PNGs or SegAnyMo output, as --gt) that drive the attention bias instead of "
        "the mask head",
    )
    parser.add_argument(
        "--no-reconstruction", action="store_true", help="masks only: no cameras / depth / points"
    )
    parser.add_argument("--no-depth", action="store_true", help="no depth/ and depth_conf/ .npy files")
    parser.add_argument(
        "--no-points", action="store_true", help="no per-time-step PLY files (the static map stays)"
    )
    parser.add_argument(
        "--patch-embed",
        choices=(AUTO, *TINY_PATCH_EMBEDS),
        default=AUTO,
        help="the tiny preset's patch embedding the checkpoint was made with; auto: read from its keys",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    return parser


def one_line(err: BaseException) -> str:
    return "; ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__


def interrupted_message(out: str) -> str:
    if records.run_folder_state(out, RUN_FILES) == "empty":
        return f"interrupted before anything was written to {out}"
    return (
        f"interrupted; {out} holds an unfinished run (no {records.FINISH_MARKER}), which is never written "
        "into again: run again with a new --out"
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        result = predict(
            args.input,
            args.out,
            preset=args.preset,
            checkpoint=args.checkpoint,
            gt=args.gt,
            image_width=args.image_width,
            every=args.every,
            max_frames=args.max_frames,
            chunk=args.chunk,
            threshold=args.threshold,
            seed=args.seed,
            progress=not args.no_progress,
            method=args.method,
            device=args.device,
            precision=args.precision,
            mask_from=args.mask_from,
            reconstruction=not args.no_reconstruction,
            depth=not args.no_depth,
            points=not args.no_points,
            patch_embed=args.patch_embed,
            command=shlex.join(["python", "-m", "page4d.predict", *argv]),
            log=print,
        )
    except EXPECTED_ERRORS as err:
        print(f"page4d.predict: {one_line(err)}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print(f"page4d.predict: {interrupted_message(args.out)}", file=sys.stderr)
        raise SystemExit(130) from None
    summary = f"{result['frames']} time steps x {len(result['views'])} views -> {args.out}"
    if "J_mean" in result:
        summary += (
            f"; J {result['J_mean']:.3f} (recall {result['J_recall']:.3f}, decay {result['J_decay']:.3f}),"
            f" F {result['F_mean']:.3f}, J&F {result['JF_mean']:.3f} at {result['resolution']}"
        )
    print(summary)
    return result


if __name__ == "__main__":
    main()
