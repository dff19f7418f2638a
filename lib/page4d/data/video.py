"""A video file (`.mp4`, `.mov`, `.avi`, `.mkv`, `.webm`) as one view, decoded with PyAV (bundled FFmpeg).

Frame k of the file (counting from 0, before `every` / `max_frames`) is named ``f"{k:05d}"``, the
numbering SegAnyMo and DAVIS use for frames cut from a video, so GT masks ``00000.png`` ... match.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from page4d.data.frames import check_thinning, scene_from_frames
from page4d.data.layout import SceneFormatError
from page4d.data.scene import Scene

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")


def is_video_file(path: str | Path) -> bool:
    path = Path(path)
    return path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES


def frame_stem(index: int) -> str:
    return f"{index:05d}"


def read_video(
    path: str | Path, every: int = 1, max_frames: int | None = None
) -> tuple[np.ndarray, list[str]]:
    """uint8 frames `[T, H, W, 3]` (every `every`-th, at most `max_frames`) and their stems."""
    path = Path(path)
    check_thinning(every, max_frames)
    frames, stems = [], []
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise SceneFormatError(f"{path}: no video stream")
        for k, frame in enumerate(container.decode(video=0)):
            if k % every:
                continue
            frames.append(frame.to_ndarray(format="rgb24"))
            stems.append(frame_stem(k))
            if max_frames is not None and len(frames) == max_frames:
                break
    if not frames:
        raise SceneFormatError(f"{path}: no frames decoded")
    return np.stack(frames), stems


def load_video(
    path: str | Path,
    image_width: int | None = None,
    image_size: tuple[int, int] | None = None,
    every: int = 1,
    max_frames: int | None = None,
    gt: str | Path | None = None,
) -> Scene:
    """One view named after the file's stem (so a SegAnyMo sequence of that name is found)."""
    path = Path(path)
    frames, stems = read_video(path, every, max_frames)
    return scene_from_frames(
        frames[:, None], [[s] for s in stems], [path.stem], path, f"video {path}", image_width, image_size, gt
    )
