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
```
The clip runs through the model in chunks of `--chunk` time steps (all views together; each chunk
is its own forward pass), with a progress bar. Outside the model's centre crop (when the aspect ratio
had to be cut to a multiple of 14) the mask logits are extended from the crop's edge.

`--method attention` takes the masks from the model's global attention instead of its mask head
(VGGT4D's training-free cues, `page4d.inference.motion_cues`; any preset, a plain VGGT too),
thresholded per chunk without GT: `prob` is then `sigmoid(gain * (score - threshold))`, a ranking, not a
calibrated probability. The cues compare time steps, so a chunk of a single step runs together with a
neighbouring step (only its own masks are written), and a clip of one time step is refused.

    python -m page4d.predict clip.mp4 --out outputs/clip --preset page4d_fin10_1b --checkpoint ck.pt
    python -m page4d.predict frames/ --out outputs/f --gt davis/Annotations/480p/bear --image-width 224
    python -m page4d.predict clip.mp4 --out outputs/a --preset vggt_1b --checkpoint vggt.pt --method attention
"""

from __future__ import annotations

import argparse
import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from page4d.data import Scene
from page4d.data.annotations import annotation_paths, read_annotation_png
from page4d.data.inputs import input_kind, load_input
from page4d.data.resize import CropResize
from page4d.data.scene import SEGANYMO_DIR
from page4d.data.seganymo import frame_file_name, read_mask_png, view_dir_name
from page4d.inference.extract import mask_probabilities
from page4d.inference.loading import load_model
from page4d.inference.motion_cues import attention_motion_cues
from page4d.report.viz import overlay_rgb
from page4d.scoring.davis import frame_j_f, summarize
from page4d.scoring.evaluate import METHODS, check_method

VIDEO_CODECS = ("libx264", "mpeg4")  # the first one PyAV's FFmpeg can encode is used


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


def chunk_mask_logits(
    model: torch.nn.Module, images: torch.Tensor, start: int, stop: int, method: str
) -> tuple[torch.Tensor, list[str]]:
    """Patch-grid logits `[stop - start, V, h, w]` of time steps start..stop-1 of `images` `[T, V, 3, H, W]`,
    and notes (e.g. an attention clip without a GT-free threshold, reported as all static).

    `attention` needs two time steps: a chunk of one step runs with a neighbouring step as context (the
    one before it, or after it for the first) and keeps only its own logits.
    """
    with torch.no_grad():
        if method == "mask_head":
            return model(images[start:stop][None])["mask_logits"][0], []
        lo, hi = start, stop
        if hi - lo < 2:
            lo = max(0, stop - 2)
            hi = lo + 2
        cues = attention_motion_cues(model, images[lo:hi][None])
        notes = [f"time steps {lo}-{hi - 1}: {note}" for note in cues.notes]
        return cues.logits[0, start - lo : stop - lo], notes


def require_mask_head(model: torch.nn.Module, preset_name: str) -> None:
    if model.aggregator.spatial_mask_head is None:
        raise ValueError(
            f"preset {preset_name!r} has no mask head, so there are no masks to predict; load VGGT-1B "
            "weights into a PAGE-4D preset instead (e.g. --preset page4d_fin10_1b: its head starts untrained)"
        )


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


def predict(
    input: str | Path,
    out: str | Path,
    preset: str = "tiny",
    checkpoint: str | Path = "",
    gt: str | Path | None = None,
    image_width: int = 518,
    every: int = 1,
    max_frames: int | None = None,
    chunk: int = 8,
    threshold: float = 0.5,
    seed: int = 0,
    progress: bool = True,
    method: str = "mask_head",
) -> dict[str, Any]:
    """Run the whole job (see the module docstring); returns what metrics.json holds (or would hold)."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    check_method(method)
    out = Path(out)
    kind = input_kind(input)
    scene = load_input(input, image_width=image_width, every=every, max_frames=max_frames, gt=gt)
    if method == "attention" and scene.num_times < 2:
        raise ValueError(
            f"--method attention compares time steps; the input has {scene.num_times} (images "
            f"{list(scene.images.shape)})"
        )
    model, note = load_model(preset, checkpoint, seed)
    if method == "mask_head":
        require_mask_head(model, preset)
    gt_readers = source_gt(scene, gt)
    video = OverlayVideo(out / "overlay")
    rows: list[dict[str, Any]] = []  # per-frame DAVIS scores, computed as the frames go by
    notes: list[str] = []
    bar = tqdm(total=scene.num_times, desc="page4d.predict", unit="step", disable=not progress)
    for start in range(0, scene.num_times, chunk):
        stop = min(start + chunk, scene.num_times)
        logits, chunk_notes = chunk_mask_logits(model, scene.images, start, stop, method)  # [t, V, h, w]
        notes += chunk_notes
        prob_model = mask_probabilities(logits, scene.image_size)  # for the overlay video
        prob_source = logits_to_source(logits, scene.transform)
        for k, ti in enumerate(range(start, stop)):
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
        bar.update(stop - start)
    bar.close()
    video_path = video.close()
    result: dict[str, Any] = {
        "input": str(input),
        "input_kind": kind,
        "frames": scene.num_times,
        "views": [scene.view_name(v) for v in range(scene.num_views)],
        "source_size": list(scene.transform.src_hw),
        "model_input_size": list(scene.image_size),
        "model": note,
        "preset": preset,
        "checkpoint": str(checkpoint),
        "threshold": threshold,
        "method": method,
        "method_notes": notes,
        "chunk": chunk,
        "overlay": video_path.name,
        "geometry": scene.geometry_missing_reason or "depth and cameras present (not scored here)",
    }
    if gt_readers:
        scores = summarize(rows)
        result = {**{k: scores[k] for k in list(scores) if k not in ("per_frame",)}, **result}
        result["gt"] = str(gt) if gt is not None else str(Path(scene.root) / SEGANYMO_DIR / scene.mask_source)
        result["gt_missing_reason"] = scene.mask_missing_reason
        result["per_frame"] = scores["per_frame"]
        (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "input", help="frames folder, folder of per-view frame folders, video, or RGB-D scene"
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--preset", default="tiny", help="model preset (tiny, page4d_fin10_1b, ...)")
    parser.add_argument("--checkpoint", default="", help="weights file (empty: seeded random weights)")
    parser.add_argument("--gt", default=None, help="DAVIS-style mask PNGs or SegAnyMo's output folder")
    parser.add_argument("--image-width", type=int, default=518, help="model input width (multiple of 14)")
    parser.add_argument("--every", type=int, default=1, help="take every N-th frame")
    parser.add_argument("--max-frames", type=int, default=None, help="at most this many time steps")
    parser.add_argument("--chunk", type=int, default=8, help="time steps per forward pass")
    parser.add_argument("--threshold", type=float, default=0.5, help="P(dynamic) at or above = dynamic")
    parser.add_argument(
        "--method",
        choices=METHODS,
        default="mask_head",
        help="mask_head: the model's mask head; attention: VGGT4D's training-free attention cues",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
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
    )
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
