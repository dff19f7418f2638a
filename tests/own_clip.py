"""A small "own video" made from a synthetic scene: frames folders, an .mp4 and DAVIS-style GT.

```
root/rig/cam0/00000.png ...   two views (the scene's views 0 and 1), T frames each
root/clip.mp4                 view 0 encoded with PyAV (H.264 where available)
root/gt/cam0/00000.png ...    palette PNGs (DAVIS style: object id 1), frame GAP left out
```
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from page4d.data import SyntheticSceneConfig, generate_synthetic_scene
from PIL import Image

T, H, W = 6, 70, 98
GAP = 3  # this frame has no GT mask
DAVIS_PALETTE = [0, 0, 0, 128, 0, 0] + [0] * (256 * 3 - 6)


def write_palette_png(path: Path, mask: np.ndarray) -> None:
    image = Image.fromarray(mask.astype(np.uint8), mode="P")
    image.putpalette(DAVIS_PALETTE)
    image.save(path)


def write_mp4(path: Path, frames: list[np.ndarray], fps: int = 8) -> None:
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode())


def make_clip(root: Path) -> Path:
    scene = generate_synthetic_scene(
        root / "scene", SyntheticSceneConfig(seed=0, times=T, views=2, height=H, width=W)
    )
    video_frames = []
    for v in (0, 1):
        (root / "rig" / f"cam{v}").mkdir(parents=True)
        (root / "gt" / f"cam{v}").mkdir(parents=True)
        for t in range(T):
            rgb = np.asarray(Image.open(scene / "images" / f"time_{t:02d}" / f"view{v}.png"))
            Image.fromarray(rgb).save(root / "rig" / f"cam{v}" / f"{t:05d}.png")
            if v == 0:
                video_frames.append(rgb)
            exact = np.asarray(
                Image.open(scene / "SegAnyMo" / "sam2" / "exact_masks" / f"view_{v}" / f"{t:03d}.png")
            )
            if t != GAP:
                write_palette_png(root / "gt" / f"cam{v}" / f"{t:05d}.png", exact > 0)
    write_mp4(root / "clip.mp4", video_frames)
    return root
