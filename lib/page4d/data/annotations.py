"""DAVIS-style annotation PNGs (and SegAnyMo's output, which uses the same format) as dynamic masks.

```
gt/<frame stem>.png            one view: one PNG per frame, named like the frame it annotates
gt/<view name>/<frame stem>.png   several views (or a DAVIS `Annotations/480p` folder: one sub-folder
                                  per sequence, picked by the frames folder's name)
sam2dir/initial_preds/<seq>/...   SegAnyMo's output (see seganymo_output.py)
```
Palette ('P') or grey ('L', e.g. 0/255) PNGs; any value > 0 is dynamic (DAVIS object ids all count).
A frame without a PNG has no GT (``valid = False``); a PNG for a frame that was not loaded is ignored
(e.g. with ``--every 2``). A colour (RGB) mask, a mask of another size than its frame, or a folder in
which no PNG matches any frame is an error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from page4d.data.layout import SceneFormatError, open_png
from page4d.data.seganymo import FrameLabels
from page4d.data.seganymo_output import is_seganymo_output, sequence_folder

MASK_MODES = ("P", "L", "1", "I", "I;16")


def read_annotation_png(path: Path, expect_hw: tuple[int, int] | None = None) -> np.ndarray:
    """bool [H, W], True = dynamic (any value > 0)."""
    image = open_png(path)
    if image.mode in ("RGB", "RGBA", "LA"):
        raise SceneFormatError(
            f"{path}: mask saved as {image.mode} (colour); save masks as palette 'P' or grey 'L' PNGs "
            "(DAVIS annotations are palette PNGs)"
        )
    if image.mode not in MASK_MODES:
        raise SceneFormatError(f"{path}: mask mode {image.mode!r}, expected one of {MASK_MODES}")
    array = np.asarray(image)
    if expect_hw is not None and array.shape != tuple(expect_hw):
        raise SceneFormatError(
            f"{path}: mask size (H, W) = {array.shape}, but its frame is {tuple(expect_hw)}; "
            "masks must have the frames' original resolution"
        )
    return array > 0


def view_annotation_folders(gt: str | Path, view_names: list[str]) -> list[Path]:
    """The folder holding each view's PNGs (see the module docstring for the accepted arrangements)."""
    gt = Path(gt)
    if not gt.is_dir():
        raise SceneFormatError(f"{gt}: GT mask folder not found")
    if is_seganymo_output(gt):
        if len(view_names) == 1:
            return [
                sequence_folder(
                    gt, view_names[0] if (gt / "initial_preds" / view_names[0]).is_dir() else None
                )
            ]
        return [sequence_folder(gt, name) for name in view_names]
    if len(view_names) == 1 and not (gt / view_names[0]).is_dir():
        return [gt]
    missing = [name for name in view_names if not (gt / name).is_dir()]
    if missing:
        raise SceneFormatError(f"{gt}: no mask sub-folder for views {missing} (one per view, named like it)")
    return [gt / name for name in view_names]


def annotation_paths(
    gt: str | Path, frame_names: list[list[str]], view_names: list[str]
) -> dict[tuple[int, int], Path]:
    """`{(time index, view index): PNG}` for every loaded frame that has an annotation."""
    folders = view_annotation_folders(gt, view_names)
    found = {}
    for vi, folder in enumerate(folders):
        for ti, names in enumerate(frame_names):
            path = folder / f"{names[vi]}.png"
            if path.is_file():
                found[(ti, vi)] = path
    if not found:
        sample = sorted(p.name for p in folders[0].iterdir())[:3]
        raise SceneFormatError(
            f"{gt}: no mask PNG is named like a frame (frames e.g. {frame_names[0][0]!r}, "
            f"{folders[0]} holds e.g. {sample})"
        )
    return found


def load_annotation_masks(
    gt: str | Path, frame_names: list[list[str]], view_names: list[str], src_hw: tuple[int, int]
) -> FrameLabels:
    """Masks `[T, V, H, W]` uint8 {0, 1} at the frames' resolution, with per-frame validity."""
    paths = annotation_paths(gt, frame_names, view_names)
    t_n, v_n = len(frame_names), len(view_names)
    values = np.zeros((t_n, v_n, *src_hw), dtype=np.uint8)
    valid = np.zeros((t_n, v_n), dtype=bool)
    for (ti, vi), path in paths.items():
        values[ti, vi] = read_annotation_png(path, src_hw)
        valid[ti, vi] = True
    reason = None
    if not valid.all():
        missing = [
            f"{view_names[vi]}/{frame_names[ti][vi]}" for ti, vi in zip(*np.nonzero(~valid), strict=True)
        ]
        shown = ", ".join(missing[:6]) + (" ..." if len(missing) > 6 else "")
        reason = f"{len(missing)} of {valid.size} frames have no mask in {gt}: {shown}"
    return FrameLabels(values=torch.from_numpy(values), valid=torch.from_numpy(valid), missing_reason=reason)
