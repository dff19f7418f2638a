"""Frames without geometry: a folder of images (one view) or a folder of such folders (one per view).

```
clip/00000.jpg, clip/00001.jpg, ...             one view, time order = file names in natural order
rig/cam_a/00000.png, rig/cam_b/00000.png, ...   one sub-folder per view (natural order), equal counts;
                                                the k-th file of every view is time step k
```
Natural order compares the numbers in names as numbers: `1.png, 2.png, ..., 10.png` (not 1, 10, 2), and
zero-padded names sort as before. Two names that differ only in how a number is written (`1.png`,
`01.png`) have no order and are refused.
Both give a `Scene` whose depth and cameras are None (`geometry_missing_reason` says so): masks can be
extracted, supervised and scored, geometry terms and metrics are skipped. `scene_from_frames` is the
common builder, also used by the video reader.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from page4d.data.annotations import load_annotation_masks
from page4d.data.layout import SceneFormatError
from page4d.data.resize import CropResize, check_patch_multiple, vggt_size
from page4d.data.scene import Scene

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
NO_GEOMETRY = "{what} has no depth or cameras: geometry terms and depth / pose metrics are skipped"


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def natural_key(name: str) -> tuple:
    """Sort key comparing digit runs as numbers: "frame2" < "frame10"; "01" and "1" get the same key."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name))


def natural_sorted(paths: Sequence[Path], what: str) -> list[Path]:
    """`paths` in natural order of their names; `SceneFormatError` when two names have the same key
    (`1.png` and `01.png`: which comes first is a guess, so the clip's time order would be one)."""
    keys: dict[tuple, Path] = {}
    for p in paths:
        other = keys.setdefault(natural_key(p.name), p)
        if other is not p:
            first, second = sorted((other.name, p.name))
            raise SceneFormatError(
                f"{p.parent}: {what} {first!r} and {second!r} give the same number, so their order is "
                "ambiguous; rename them (e.g. zero-padded 00001.png) so every number appears once"
            )
    return [keys[k] for k in sorted(keys)]


def list_frames(folder: str | Path) -> list[Path]:
    """Image files of a frames folder in natural order (`natural_sorted`); raises when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SceneFormatError(f"{folder}: not a folder")
    files = natural_sorted([p for p in folder.iterdir() if is_image_file(p)], "frames")
    if not files:
        raise SceneFormatError(f"{folder}: no {'/'.join(IMAGE_SUFFIXES)} frames")
    return files


def read_frame(
    path: Path, expect_hw: tuple[int, int] | None = None, size_from: Path | None = None
) -> np.ndarray:
    """uint8 [H, W, 3]. Grey, palette and RGBA files are converted to RGB (a photo may be any of them);
    a frame whose size differs from the first one's is refused, naming both files."""
    try:
        with Image.open(path) as image:
            image.load()
            rgb = image.convert("RGB")
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise SceneFormatError(f"{path}: cannot decode image ({err})") from err
    array = np.asarray(rgb)
    if expect_hw is not None and array.shape[:2] != tuple(expect_hw):
        first = f" (the size of {size_from})" if size_from is not None else ""
        raise SceneFormatError(
            f"{path}: size (H, W) = {array.shape[:2]}, expected {tuple(expect_hw)}{first}; "
            "every frame of a clip must have the same size"
        )
    return array


def model_size(src_hw: tuple[int, int], image_width: int | None, image_size: tuple[int, int] | None) -> tuple:
    """The model input (H, W): `image_size` as given, else VGGT's rule for `image_width`, else native."""
    if image_size is not None:
        return check_patch_multiple(image_size)
    if image_width is not None:
        return vggt_size(src_hw, width=image_width)
    return None


def scene_from_frames(
    frames: np.ndarray,
    frame_names: list[list[str]],
    view_names: list[str],
    root: Path,
    what: str,
    image_width: int | None = None,
    image_size: tuple[int, int] | None = None,
    gt: str | Path | None = None,
) -> Scene:
    """A geometry-free `Scene` from uint8 frames `[T, V, H, W, 3]`.

    The model input size is `image_size` (H, W), or VGGT's preprocessing size for `image_width`
    (W fixed, H keeps the aspect ratio, rounded to a multiple of 14; the small rest is centre-cropped),
    or the native size. `gt`: DAVIS-style annotation PNGs or SegAnyMo's output folder, matched to the
    frames by file stem (see annotations.py); frames without one have no GT.
    """
    t_n, v_n = frames.shape[:2]
    src_hw = (int(frames.shape[2]), int(frames.shape[3]))
    out_hw = model_size(src_hw, image_width, image_size)
    transform = CropResize.identity(src_hw) if out_hw is None else CropResize.centered(src_hw, out_hw)
    images = torch.from_numpy(frames).permute(0, 1, 4, 2, 3).float().div_(255.0)
    if gt is None:
        masks, valid, reason, source = None, torch.zeros(t_n, v_n, dtype=torch.bool), "no GT masks given", ""
    else:
        labels = load_annotation_masks(gt, frame_names, view_names, src_hw)
        masks = None if labels.values is None else transform.masks(labels.values.float())
        valid, reason, source = labels.valid, labels.missing_reason, str(gt)
    return Scene(
        root=Path(root),
        times=list(range(t_n)),
        views=list(range(v_n)),
        images=transform.images(images),
        depths=None,
        intrinsics=None,
        extrinsics=None,
        masks=masks,
        mask_valid=valid,
        mask_missing_reason=reason,
        mask_source=source,
        tracks=None,
        tracks_missing_reason=f"{what} has no SegAnyMo tracks",
        instances=None,
        transform=transform,
        geometry_missing_reason=NO_GEOMETRY.format(what=what),
        frame_names=frame_names,
        view_names=view_names,
    )


def check_thinning(every: int, max_frames: int | None) -> None:
    """The time-step thinning every reader accepts: every `every`-th step (>= 1), at most `max_frames`."""
    if every < 1 or (max_frames is not None and max_frames < 1):
        raise ValueError(f"every must be >= 1 and max_frames >= 1 or None, got {every}, {max_frames}")


def _pick(files: Sequence[Path], every: int, max_frames: int | None) -> list[Path]:
    check_thinning(every, max_frames)
    picked = list(files)[::every]
    return picked if max_frames is None else picked[:max_frames]


def load_frames_folder(
    folder: str | Path,
    image_width: int | None = None,
    image_size: tuple[int, int] | None = None,
    every: int = 1,
    max_frames: int | None = None,
    gt: str | Path | None = None,
) -> Scene:
    """One view: the folder's images in natural order (every `every`-th, at most `max_frames`)."""
    folder = Path(folder)
    files = _pick(list_frames(folder), every, max_frames)
    first = read_frame(files[0])
    frames = np.stack([first] + [read_frame(f, first.shape[:2], files[0]) for f in files[1:]])
    names = [[f.stem] for f in files]
    return scene_from_frames(
        frames[:, None], names, [folder.name], folder, f"frames folder {folder}", image_width, image_size, gt
    )


def view_folders(folder: str | Path) -> list[Path]:
    """Sub-folders of a multi-view frames folder (natural order); raises when there are none."""
    folder = Path(folder)
    views = natural_sorted(
        [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")], "views"
    )
    if not views:
        raise SceneFormatError(f"{folder}: no view sub-folders")
    return views


def load_multiview_frames(
    folder: str | Path,
    image_width: int | None = None,
    image_size: tuple[int, int] | None = None,
    every: int = 1,
    max_frames: int | None = None,
    gt: str | Path | None = None,
) -> Scene:
    """One view per sub-folder, time aligned by position in the naturally sorted file lists (equal counts)."""
    folder = Path(folder)
    views = view_folders(folder)
    per_view = [list_frames(v) for v in views]
    counts = {v.name: len(files) for v, files in zip(views, per_view, strict=True)}
    if len(set(counts.values())) != 1:
        raise SceneFormatError(
            f"{folder}: views have different frame counts {counts}; they must be time aligned"
        )
    per_view = [_pick(files, every, max_frames) for files in per_view]
    first_path = per_view[0][0]
    first = read_frame(first_path)
    hw = first.shape[:2]
    frames = np.stack(
        [
            np.stack([read_frame(files[t], hw, first_path) for files in per_view])
            for t in range(len(per_view[0]))
        ]
    )
    names = [[files[t].stem for files in per_view] for t in range(len(per_view[0]))]
    return scene_from_frames(
        frames,
        names,
        [v.name for v in views],
        folder,
        f"multi-view frames folder {folder}",
        image_width,
        image_size,
        gt,
    )
