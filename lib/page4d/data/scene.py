"""`Scene`: one multi-view RGB-D sequence with SegAnyMo labels, aligned pixel for pixel.

`load_scene` reads a folder in the layout of layout.py (the real ``mv_scene`` capture or a generated
synthetic scene), applies one `CropResize` to every modality, and returns torch tensors whose
intrinsics describe the returned pixels, so any projection test made on the source data still holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from page4d.data.layout import (
    DEPTHS_DIR,
    EXTRINSICS_DIR,
    IMAGES_DIR,
    INTRINSICS_DIR,
    SceneFormatError,
    SceneLayout,
    read_depth,
    read_extrinsics,
    read_intrinsics,
    read_rgb,
    time_dir_name,
    view_stem,
)
from page4d.data.resize import CropResize, DepthMode, MaskMode, check_patch_multiple
from page4d.data.seganymo import (
    MASK_FRAMES,
    FrameLabels,
    MosegTracks,
    load_instance_ids,
    load_masks,
    load_moseg_tracks,
)

SEGANYMO_DIR = "SegAnyMo"


@dataclass
class Scene:
    """A loaded scene; T and V follow ``times`` and ``views`` (ids as named on disk, in the order asked for).

    images:      [T, V, 3, H, W] float32 in [0, 1]
    depths:      [T, V, H, W] float32 z-depth, 0 = invalid; None for an input without depth
    intrinsics:  [T, V, 3, 3] float32, for the returned H x W pixels (pixel centres at integers); or None
    extrinsics:  [T, V, 3, 4] float32 world-to-camera [R|t], OpenCV axes; or None
    geometry_missing_reason: None when depth and cameras exist, else why geometry terms and metrics
                 are skipped (a frames folder or a video has neither)
    masks:       [T, V, H, W] float32 {0, 1} (1 = dynamic; soft in [0, 1] with mask_mode="area"),
                 or None when no mask file exists at all
    mask_valid:  [T, V] bool, True where a mask frame was read; all False when masks is None
    mask_missing_reason: None when every requested mask exists, else why some or all are missing
    tracks:      per view, SegAnyMo moseg tracks (None for a view without them), or None
    instances:   SAM2 instance ids (only with ``load_instances=True``), else None
    transform:   the crop/resize that maps source pixels to the returned pixels
    frame_names: [T][V] file stems the frames came from (outputs and GT masks are matched by them);
                 None for the multi-view layout, where `frame_name` derives them from the ids
    view_names:  one name per view (a sub-folder's name), or None for the ids' ``view{v}``
    """

    root: Path
    times: list[int]
    views: list[int]
    images: torch.Tensor
    depths: torch.Tensor | None
    intrinsics: torch.Tensor | None
    extrinsics: torch.Tensor | None
    masks: torch.Tensor | None
    mask_valid: torch.Tensor
    mask_missing_reason: str | None
    mask_source: str
    tracks: list[MosegTracks | None] | None
    tracks_missing_reason: str | None
    instances: FrameLabels | None
    transform: CropResize
    geometry_missing_reason: str | None = None
    frame_names: list[list[str]] | None = None
    view_names: list[str] | None = None

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[-2]), int(self.images.shape[-1])

    @property
    def num_times(self) -> int:
        return len(self.times)

    @property
    def num_views(self) -> int:
        return len(self.views)

    @property
    def depth_valid(self) -> torch.Tensor | None:
        return None if self.depths is None else self.depths > 0

    def frame_name(self, ti: int, vi: int) -> str:
        """The file stem of frame (time index ti, view index vi): its source name, else ``time_TT``."""
        if self.frame_names is not None:
            return self.frame_names[ti][vi]
        return time_dir_name(self.times[ti])

    def view_name(self, vi: int) -> str:
        return self.view_names[vi] if self.view_names is not None else view_stem(self.views[vi])


def load_scene(
    root: str | Path,
    times: list[int] | None = None,
    views: list[int] | None = None,
    image_size: tuple[int, int] | None = None,
    seganymo_dir: str | Path | None = None,
    mask_source: str = MASK_FRAMES,
    mask_mode: MaskMode = "nearest",
    depth_mode: DepthMode = "median",
    load_tracks: bool = True,
    load_instances: bool = False,
) -> Scene:
    """Read a scene folder; ``times`` / ``views`` select ids (default: all found on disk).

    image_size: (H, W), multiples of 14, or None for the native size. A different aspect ratio is
    met with a centre crop, never a squash or letterbox; see resize.py for the filters.
    seganymo_dir: defaults to ``root / "SegAnyMo"``; it may live anywhere.
    mask_source: folder inside seganymo_dir with view_V/NNN.png masks (``sam2/exact_masks`` gives
    the noise-free silhouettes of a synthetic scene, ``sam2/initial_preds`` the SAM2 instances > 0).
    """
    layout = SceneLayout.discover(root)
    times = _select(layout.times, times, "time", layout.root)
    views = _select(layout.views, views, "view", layout.root)

    first = layout.path(IMAGES_DIR, times[0], views[0])
    src_hw = read_rgb(first).shape[:2]
    images = np.empty((len(times), len(views), *src_hw, 3), dtype=np.uint8)
    depths = np.empty((len(times), len(views), *src_hw), dtype=np.float32)
    intrinsics = np.empty((len(times), len(views), 3, 3), dtype=np.float32)
    extrinsics = np.empty((len(times), len(views), 3, 4), dtype=np.float32)
    for ti, t in enumerate(times):
        for vi, v in enumerate(views):
            images[ti, vi] = read_rgb(layout.path(IMAGES_DIR, t, v), expect_hw=src_hw)
            depths[ti, vi] = read_depth(layout.path(DEPTHS_DIR, t, v), expect_hw=src_hw)
            intrinsics[ti, vi] = read_intrinsics(layout.path(INTRINSICS_DIR, t, v))
            extrinsics[ti, vi] = read_extrinsics(layout.path(EXTRINSICS_DIR, t, v))

    if image_size is None:
        transform = CropResize.identity(src_hw)
    else:
        transform = CropResize.centered(src_hw, check_patch_multiple(image_size))

    images_t = torch.from_numpy(images).permute(0, 1, 4, 2, 3).float().div_(255.0)
    seganymo = Path(seganymo_dir) if seganymo_dir is not None else layout.root / SEGANYMO_DIR
    masks = load_masks(seganymo, times, views, src_hw, transform, source=mask_source, mode=mask_mode)
    tracks, tracks_reason = (
        load_moseg_tracks(seganymo, times, views, transform)
        if load_tracks
        else (None, "tracks not requested (load_tracks=False)")
    )
    instances = load_instance_ids(seganymo, times, views, src_hw, transform) if load_instances else None

    return Scene(
        root=layout.root,
        times=times,
        views=views,
        images=transform.images(images_t),
        depths=transform.depth(torch.from_numpy(depths), mode=depth_mode),
        intrinsics=transform.intrinsics(torch.from_numpy(intrinsics)),
        extrinsics=torch.from_numpy(extrinsics),
        masks=masks.values,
        mask_valid=masks.valid,
        mask_missing_reason=masks.missing_reason,
        mask_source=mask_source,
        tracks=tracks,
        tracks_missing_reason=tracks_reason,
        instances=instances,
        transform=transform,
    )


def _select(available: list[int], wanted: list[int] | None, what: str, root: Path) -> list[int]:
    if wanted is None:
        return list(available)
    wanted = [int(x) for x in wanted]
    absent = [x for x in wanted if x not in available]
    if absent:
        raise SceneFormatError(f"{root}: {what} ids {absent} not found; available {available}")
    if len(set(wanted)) != len(wanted):
        raise ValueError(f"duplicate {what} ids in {wanted}")
    return wanted
