"""SegAnyMo pseudo labels: SAM2 dynamic masks, SAM2 instance ids and moseg 2D tracks.

```
SegAnyMo/sam2/mask_frames/view_V/NNN.png     'L' PNG {0, 255}, 255 = dynamic; NNN = time id
SegAnyMo/sam2/initial_preds/view_V/NNN.png   'P' PNG instance ids, 0 = background
SegAnyMo/sam2/exact_masks/view_V/NNN.png     (synthetic scenes only) noise-free silhouettes, as mask_frames
SegAnyMo/moseg/view_V/dynamic_traj.npy       float32 [2, N, T] x (column) / y (row) in pixels
SegAnyMo/moseg/view_V/dynamic_visibility.npy bool [N, T]
SegAnyMo/moseg/view_V/dynamic_confidences.npy float32 [N, T]; column k of all three is time id k
```
Missing ground truth is an explicit state, never an all-zero mask: a missing SegAnyMo folder gives
``values=None`` plus a reason, a missing frame gives ``valid[t, v] = False`` (its slot holds 0 but is
not ground truth). A file that exists but cannot be read, or has the wrong size or values, raises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from page4d.data.layout import SceneFormatError, open_png
from page4d.data.resize import CropResize, MaskMode

MASK_FRAMES = "sam2/mask_frames"
INITIAL_PREDS = "sam2/initial_preds"
EXACT_MASKS = "sam2/exact_masks"
MOSEG = "moseg"

_VIEW_DIR = re.compile(r"^view_(\d+)$")
_FRAME_FILE = re.compile(r"^(\d+)\.png$")


def view_dir_name(v: int) -> str:
    return f"view_{v}"


def frame_file_name(t: int) -> str:
    return f"{t:03d}.png"


@dataclass
class FrameLabels:
    """Per-(t, v) label maps where only some frames may exist.

    values: [T, V, H, W] (float32 {0, 1} masks, or int64 instance ids) or None when nothing was found.
    valid: [T, V] bool, True where the frame was read from a file.
    missing_reason: None when every frame exists, else a sentence the caller can print.
    """

    values: torch.Tensor | None
    valid: torch.Tensor
    missing_reason: str | None


@dataclass
class MosegTracks:
    """SegAnyMo 2D tracks of dynamic points for one view, in output pixels of the scene's transform.

    xy: [T, N, 2] float32 (x = column, y = row); points may lie slightly outside the image.
    visible: [T, N] bool. confidence: [T, N] float32 in [0, 1].
    """

    xy: torch.Tensor
    visible: torch.Tensor
    confidence: torch.Tensor


def read_mask_png(path: Path, expect_hw: tuple[int, int]) -> np.ndarray:
    """uint8 [H, W] in {0, 1} (1 = dynamic).

    'L' files must hold only 0 and 255 (a soft or 0/1 file is refused rather than guessed at);
    'P' files are instance maps and any id > 0 counts as dynamic; '1' files are taken as they are.
    """
    image = open_png(path)
    array = np.asarray(image)
    if array.shape[:2] != tuple(expect_hw):
        raise SceneFormatError(f"{path}: mask size (H, W) = {array.shape[:2]}, expected {tuple(expect_hw)}")
    if image.mode == "L":
        bad = (array != 0) & (array != 255)
        if bad.any():
            raise SceneFormatError(
                f"{path}: mask values {np.unique(array[bad])[:8].tolist()} outside {{0, 255}}"
            )
        return (array == 255).astype(np.uint8)
    if image.mode == "P":
        return (array > 0).astype(np.uint8)
    if image.mode == "1":
        return array.astype(np.uint8)
    if image.mode in ("RGB", "RGBA"):
        raise SceneFormatError(
            f"{path}: mask saved as {image.mode} (colour); "
            "save it as a grey 'L' {0, 255} or palette 'P' PNG"
        )
    raise SceneFormatError(f"{path}: mask mode {image.mode!r}, expected 'L' {{0, 255}}, 'P' or '1'")


def read_instance_png(path: Path, expect_hw: tuple[int, int]) -> np.ndarray:
    """int64 [H, W] instance ids (0 = background) from a palette or grey PNG."""
    image = open_png(path)
    if image.mode not in ("P", "L"):
        raise SceneFormatError(f"{path}: instance map mode {image.mode!r}, expected 'P' or 'L'")
    array = np.asarray(image)
    if array.shape != tuple(expect_hw):
        raise SceneFormatError(f"{path}: size (H, W) = {array.shape[:2]}, expected {tuple(expect_hw)}")
    return array.astype(np.int64)


def _frame_paths(folder: Path, times: list[int], views: list[int]) -> dict[tuple[int, int], Path]:
    """Existing frame files by (time id, view id); names are parsed, so NNN may have any width."""
    found: dict[tuple[int, int], Path] = {}
    wanted_t, wanted_v = set(times), set(views)
    for view_dir in folder.iterdir():
        m = _VIEW_DIR.match(view_dir.name)
        if not (m and view_dir.is_dir() and int(m.group(1)) in wanted_v):
            continue
        v = int(m.group(1))
        for f in view_dir.iterdir():
            fm = _FRAME_FILE.match(f.name)
            if fm and int(fm.group(1)) in wanted_t:
                key = (int(fm.group(1)), v)
                if key in found:
                    raise SceneFormatError(f"{f}: frame (t={key[0]}, view {v}) also given by {found[key]}")
                found[key] = f
    return found


def _read_frames(
    folder: Path,
    times: list[int],
    views: list[int],
    src_hw: tuple[int, int],
    reader,
    what: str,
) -> tuple[np.ndarray | None, np.ndarray, str | None]:
    valid = np.zeros((len(times), len(views)), dtype=bool)
    if not folder.is_dir():
        return None, valid, f"no {what}: folder {folder} does not exist"
    paths = _frame_paths(folder, times, views)
    if not paths:
        return (
            None,
            valid,
            f"no {what}: {folder} holds no view_V/NNN.png frames for times {times}, views {views}",
        )
    first = next(iter(paths.values()))
    sample = reader(first, src_hw)
    values = np.zeros((len(times), len(views), *src_hw), dtype=sample.dtype)
    for ti, t in enumerate(times):
        for vi, v in enumerate(views):
            path = paths.get((t, v))
            if path is not None:
                values[ti, vi] = sample if path == first else reader(path, src_hw)
                valid[ti, vi] = True
    missing = [
        f"{view_dir_name(v)}/{frame_file_name(t)}"
        for ti, t in enumerate(times)
        for vi, v in enumerate(views)
        if not valid[ti, vi]
    ]
    reason = None
    if missing:
        shown = ", ".join(missing[:6]) + (" ..." if len(missing) > 6 else "")
        reason = f"{len(missing)} of {valid.size} {what} frames missing in {folder}: {shown}"
    return values, valid, reason


def load_masks(
    seganymo_dir: str | Path,
    times: list[int],
    views: list[int],
    src_hw: tuple[int, int],
    transform: CropResize,
    source: str = MASK_FRAMES,
    mode: MaskMode = "nearest",
) -> FrameLabels:
    """Dynamic masks [T, V, H, W] float32 (1 = dynamic) after ``transform``, with per-frame validity."""
    folder = Path(seganymo_dir) / source
    values, valid, reason = _read_frames(folder, times, views, src_hw, read_mask_png, f"{source} mask")
    if values is None:
        return FrameLabels(values=None, valid=torch.from_numpy(valid), missing_reason=reason)
    masks = transform.masks(torch.from_numpy(values).float(), mode=mode)
    return FrameLabels(values=masks, valid=torch.from_numpy(valid), missing_reason=reason)


def load_instance_ids(
    seganymo_dir: str | Path,
    times: list[int],
    views: list[int],
    src_hw: tuple[int, int],
    transform: CropResize,
    source: str = INITIAL_PREDS,
) -> FrameLabels:
    """SAM2 instance ids [T, V, H, W] int64 (nearest-resized). Ids are per view, not matched across views."""
    folder = Path(seganymo_dir) / source
    values, valid, reason = _read_frames(
        folder, times, views, src_hw, read_instance_png, f"{source} instance"
    )
    if values is None:
        return FrameLabels(values=None, valid=torch.from_numpy(valid), missing_reason=reason)
    ids = transform.masks(torch.from_numpy(values), mode="nearest")
    return FrameLabels(values=ids, valid=torch.from_numpy(valid), missing_reason=reason)


def load_moseg_tracks(
    seganymo_dir: str | Path,
    times: list[int],
    views: list[int],
    transform: CropResize,
) -> tuple[list[MosegTracks | None] | None, str | None]:
    """Tracks per requested view (None for a view without a moseg folder), plus a reason if any are missing.

    Column k of the moseg arrays is time id k, so the requested time ids select columns.
    """
    root = Path(seganymo_dir) / MOSEG
    if not root.is_dir():
        return None, f"no moseg tracks: folder {root} does not exist"
    tracks: list[MosegTracks | None] = []
    missing = []
    for v in views:
        folder = root / view_dir_name(v)
        if not folder.is_dir():
            tracks.append(None)
            missing.append(folder.name)
            continue
        tracks.append(_read_view_tracks(folder, times, transform))
    reason = f"no moseg tracks for {', '.join(missing)} in {root}" if missing else None
    return tracks, reason


def _read_view_tracks(folder: Path, times: list[int], transform: CropResize) -> MosegTracks:
    traj_path = folder / "dynamic_traj.npy"
    vis_path = folder / "dynamic_visibility.npy"
    conf_path = folder / "dynamic_confidences.npy"
    traj = _load_npy(traj_path)
    vis = _load_npy(vis_path)
    conf = _load_npy(conf_path)
    if traj.ndim != 3 or traj.shape[0] != 2:
        raise SceneFormatError(f"{traj_path}: shape {traj.shape}, expected (2, N, T)")
    n, n_cols = traj.shape[1:]
    for path, array in ((vis_path, vis), (conf_path, conf)):
        if array.shape != (n, n_cols):
            raise SceneFormatError(
                f"{path}: shape {array.shape}, expected {(n, n_cols)} to match {traj_path.name}"
            )
    if vis.dtype != np.bool_:
        raise SceneFormatError(f"{vis_path}: dtype {vis.dtype}, expected bool")
    if max(times) >= n_cols:
        raise SceneFormatError(f"{traj_path}: {n_cols} time columns, but time id {max(times)} was requested")
    cols = np.asarray(times)
    xy = torch.from_numpy(np.ascontiguousarray(traj[:, :, cols].transpose(2, 1, 0))).float()  # [T, N, 2]
    return MosegTracks(
        xy=transform.points(xy),
        visible=torch.from_numpy(np.ascontiguousarray(vis[:, cols].T)),
        confidence=torch.from_numpy(np.ascontiguousarray(conf[:, cols].T)).float(),
    )


def _load_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise SceneFormatError(f"{path}: file not found")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise SceneFormatError(f"{path}: cannot read .npy ({err})") from err
