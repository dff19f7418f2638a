"""The on-disk layout of a multi-view RGB-D scene, shared by the reader and the synthetic writer.

```
root/images/time_TT/viewV.png   RGB uint8
root/depths/time_TT/viewV.npy   float32 [H, W] z-depth along the optical axis, 0 = invalid
root/intrs/time_TT/viewV.npy    float32 [3, 3] pinhole K, integer pixel coordinates are pixel centres
root/extrs/time_TT/viewV.npy    float32 [3, 4] world-to-camera [R|t], OpenCV axes (x right, y down, z forward)
root/query_points.npy           optional float32 [N, 4] rows (t, X, Y, Z) in world coordinates
root/SegAnyMo/...               dynamic-object pseudo labels, see seganymo.py
```
Time and view ids are read from the names (``time_07`` -> 7, ``view2.png`` -> 2), never assumed, so a
folder with any number of steps or cameras, or with gaps in the numbering, reads the same way.
Every reader here fails with a `SceneFormatError` that names the offending file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGES_DIR = "images"
DEPTHS_DIR = "depths"
INTRINSICS_DIR = "intrs"
EXTRINSICS_DIR = "extrs"
QUERY_POINTS_FILE = "query_points.npy"

_TIME_DIR = re.compile(r"^time_(\d+)$")
_VIEW_FILE = re.compile(r"^view(\d+)\.png$")


class SceneFormatError(ValueError):
    """A scene file is missing, unreadable, or has the wrong shape, dtype or values."""


def time_dir_name(t: int) -> str:
    return f"time_{t:02d}"


def view_stem(v: int) -> str:
    return f"view{v}"


@dataclass(frozen=True)
class SceneLayout:
    """Where every per-(time, view) file of one scene lives; built by `discover` or `standard`."""

    root: Path
    time_dirs: dict[int, str]
    views: list[int]

    @property
    def times(self) -> list[int]:
        return sorted(self.time_dirs)

    @classmethod
    def discover(cls, root: str | Path) -> SceneLayout:
        """Read the time steps from ``images/time_*`` and the views from the files inside them.

        All time folders must hold the same views: a camera that drops out of one step would silently
        shift every later (t, v) index, so it is an error here.
        """
        root = Path(root)
        images = root / IMAGES_DIR
        if not images.is_dir():
            raise SceneFormatError(f"{images}: no images folder; is {root} a scene in the multi-view layout?")
        time_dirs: dict[int, str] = {}
        for entry in sorted(images.iterdir()):
            if entry.name.startswith("."):  # .DS_Store and friends
                continue
            match = _TIME_DIR.match(entry.name)
            # Skipping a misnamed entry would silently drop a time step and shift every later one.
            if not match:
                raise SceneFormatError(f"{entry}: not a time folder name; expected time_TT (e.g. time_02)")
            if not entry.is_dir():  # a plain file, a dangling link or a symlink loop
                raise SceneFormatError(f"{entry}: named like a time folder but is not a folder")
            t = int(match.group(1))
            if t in time_dirs:
                raise SceneFormatError(f"{entry}: time {t} also given by {images / time_dirs[t]}")
            time_dirs[t] = entry.name
        if not time_dirs:
            raise SceneFormatError(f"{images}: no time_TT folders")
        view_sets = {t: _views_in(images / name) for t, name in time_dirs.items()}
        first_t = min(view_sets)
        views = view_sets[first_t]
        if not views:
            raise SceneFormatError(f"{images / time_dirs[first_t]}: no viewV.png files")
        for t, found in view_sets.items():
            if found != views:
                raise SceneFormatError(
                    f"{images / time_dirs[t]}: views {found} differ from {views} in {time_dirs[first_t]}"
                )
        return cls(root=root, time_dirs=time_dirs, views=views)

    @classmethod
    def standard(cls, root: str | Path, times: list[int], views: list[int]) -> SceneLayout:
        """The canonical names (``time_TT``, ``viewV``) that the synthetic writer uses."""
        return cls(root=Path(root), time_dirs={t: time_dir_name(t) for t in times}, views=list(views))

    def path(self, kind: str, t: int, v: int) -> Path:
        """Path of modality ``kind`` (one of the *_DIR names) for time id ``t`` and view id ``v``."""
        suffix = ".png" if kind == IMAGES_DIR else ".npy"
        if t not in self.time_dirs:
            raise SceneFormatError(f"{self.root}: no time {t}; available {self.times}")
        return self.root / kind / self.time_dirs[t] / f"{view_stem(v)}{suffix}"


def _views_in(folder: Path) -> list[int]:
    return sorted(int(m.group(1)) for f in folder.iterdir() if (m := _VIEW_FILE.match(f.name)))


def open_png(path: Path) -> Image.Image:
    """Open and fully decode a PNG; a missing, truncated or non-image file raises naming the path."""
    if not path.is_file():
        raise SceneFormatError(f"{path}: file not found")
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise SceneFormatError(f"{path}: cannot decode PNG ({err})") from err


def read_rgb(path: Path, expect_hw: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 [H, W, 3]. Only RGB files are accepted: a grey or RGBA file here means a wrong folder."""
    image = open_png(path)
    if image.mode != "RGB":
        raise SceneFormatError(f"{path}: image mode {image.mode!r}, expected 'RGB'")
    array = np.asarray(image)
    _check_hw(path, array.shape[:2], expect_hw)
    return array


def read_array(path: Path, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """A float .npy file as float32, with its shape checked and non-finite values refused."""
    if not path.is_file():
        raise SceneFormatError(f"{path}: file not found")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise SceneFormatError(f"{path}: cannot read .npy ({err})") from err
    if shape is not None and array.shape != shape:
        raise SceneFormatError(f"{path}: shape {array.shape}, expected {shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise SceneFormatError(f"{path}: dtype {array.dtype}, expected a float array")
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise SceneFormatError(f"{path}: contains NaN or inf")
    return array


def read_depth(path: Path, expect_hw: tuple[int, int]) -> np.ndarray:
    """float32 [H, W] z-depth; 0 marks invalid pixels, negative values are refused."""
    depth = read_array(path, shape=tuple(expect_hw))
    if (depth < 0).any():
        raise SceneFormatError(f"{path}: negative depth values (min {depth.min()}); 0 is the invalid marker")
    return depth


def read_intrinsics(path: Path) -> np.ndarray:
    K = read_array(path, shape=(3, 3))
    if K[0, 0] <= 0 or K[1, 1] <= 0 or not np.allclose(K[2], [0.0, 0.0, 1.0]):
        raise SceneFormatError(f"{path}: not a pinhole K (fx, fy > 0, last row [0, 0, 1]): {K.tolist()}")
    return K


def read_extrinsics(path: Path) -> np.ndarray:
    """[3, 4] world-to-camera; a [4, 4] file is accepted when its last row is [0, 0, 0, 1]."""
    E = read_array(path)
    if E.shape == (4, 4) and np.allclose(E[3], [0.0, 0.0, 0.0, 1.0]):
        E = E[:3]
    if E.shape != (3, 4):
        raise SceneFormatError(f"{path}: shape {E.shape}, expected (3, 4) world-to-camera [R|t]")
    R = E[:, :3].astype(np.float64)
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-4) or np.linalg.det(R) < 0:
        raise SceneFormatError(f"{path}: rotation block is not a proper rotation (R R^T != I or det < 0)")
    return E


def read_query_points(root: str | Path) -> np.ndarray:
    """float32 [N, 4] rows (t, X, Y, Z); the file is optional in a scene, so absence raises here."""
    return read_array(Path(root) / QUERY_POINTS_FILE)


def _check_hw(path: Path, hw: tuple[int, ...], expect_hw: tuple[int, int] | None) -> None:
    if expect_hw is not None and tuple(hw) != tuple(expect_hw):
        raise SceneFormatError(f"{path}: size (H, W) = {tuple(hw)}, expected {tuple(expect_hw)}")


def write_png(path: Path, array: np.ndarray, palette: list[int] | None = None) -> None:
    """Write uint8 [H, W, 3] as RGB, [H, W] as 'L', or [H, W] as 'P' when a palette is given."""
    if array.dtype != np.uint8:
        raise ValueError(f"{path}: write_png needs uint8, got {array.dtype}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if palette is not None:
        if array.ndim != 2:
            raise ValueError(f"{path}: a palette PNG needs [H, W] ids, got shape {array.shape}")
        image = Image.frombytes("P", (array.shape[1], array.shape[0]), np.ascontiguousarray(array).tobytes())
        image.putpalette(palette)
    else:
        image = Image.fromarray(array)
    # Fixed compression settings keep the bytes a pure function of the pixels (seeded determinism).
    image.save(path, format="PNG", compress_level=6, optimize=False)


def write_array(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.ascontiguousarray(array, dtype=np.float32))
