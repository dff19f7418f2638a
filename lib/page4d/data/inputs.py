"""Any input `page4d.predict` and notebook 02 accept, recognised by what is on disk, as one `Scene`.

- a scene folder in the multi-view RGB-D layout (`images/time_TT/viewV.png`, see layout.py)
- a folder of frames (`*.jpg` / `*.png`): one view         (frames.py)
- a folder of frame folders: one view each, time aligned   (frames.py)
- a video file (`.mp4` ...)                                 (video.py)
"""

from __future__ import annotations

from pathlib import Path

from page4d.data.frames import check_thinning, is_image_file, load_frames_folder, load_multiview_frames
from page4d.data.layout import IMAGES_DIR, SceneFormatError, SceneLayout, read_rgb
from page4d.data.resize import vggt_size
from page4d.data.scene import Scene, load_scene
from page4d.data.video import VIDEO_SUFFIXES, is_video_file, load_video

INPUT_KINDS = ("rgbd_scene", "frames", "multiview_frames", "video")


def input_kind(path: str | Path) -> str:
    """One of INPUT_KINDS; raises with what was found when the path is none of them."""
    path = Path(path)
    if is_video_file(path):
        return "video"
    if not path.is_dir():
        what = "not found" if not path.exists() else f"not a folder or a {'/'.join(VIDEO_SUFFIXES)} video"
        raise SceneFormatError(f"{path}: {what}")
    if (path / IMAGES_DIR).is_dir() and any(
        p.name.startswith("time_") for p in (path / IMAGES_DIR).iterdir()
    ):
        return "rgbd_scene"
    entries = [p for p in path.iterdir() if not p.name.startswith(".")]
    if any(is_image_file(p) for p in entries):
        return "frames"
    if any(p.is_dir() and any(is_image_file(f) for f in p.iterdir()) for p in entries):
        return "multiview_frames"
    raise SceneFormatError(
        f"{path}: no frames (*.jpg / *.png), no frame sub-folders and no images/time_TT layout found"
    )


def load_input(
    path: str | Path,
    image_width: int | None = None,
    image_size: tuple[int, int] | None = None,
    every: int = 1,
    max_frames: int | None = None,
    gt: str | Path | None = None,
) -> Scene:
    """Read `path` as whatever it is (see `input_kind`).

    Size: `image_size` (H, W) if given, else VGGT's rule for `image_width`, else native. `gt`: a folder
    of DAVIS-style PNGs or SegAnyMo's output; an RGB-D scene brings its own SegAnyMo folder instead.
    `every` / `max_frames` thin the time steps of any kind.
    """
    kind = input_kind(path)
    if kind == "video":
        return load_video(path, image_width, image_size, every, max_frames, gt)
    if kind == "frames":
        return load_frames_folder(path, image_width, image_size, every, max_frames, gt)
    if kind == "multiview_frames":
        return load_multiview_frames(path, image_width, image_size, every, max_frames, gt)
    if gt is not None:
        raise ValueError(f"{path} is an RGB-D scene: its masks come from its SegAnyMo folder, not --gt")
    layout = SceneLayout.discover(path)
    if image_size is None and image_width is not None:
        src_hw = read_rgb(layout.path(IMAGES_DIR, layout.times[0], layout.views[0])).shape[:2]
        image_size = vggt_size(src_hw, width=image_width)
    check_thinning(every, max_frames)
    times = layout.times[::every][:max_frames]
    return load_scene(path, times=times, image_size=image_size, load_tracks=False)
