"""SegAnyMo's own output folder for a clip (as its `sam2/run_sam2.py` writes it), found and read.

```
<sam2dir>/initial_preds/<sequence>/<frame stem>.png    palette PNG of SAM2 object ids (DAVIS palette),
                                                       0 = background, any id > 0 = a moving object
<sam2dir>/final_res/<sequence>/video/*.mp4             preview videos (not read here)
<motion_seg_dir>/<sequence>/dynamic_traj.npy ...       the dynamic tracks (see seganymo.py for their arrays)
```
`<sequence>` is the name of the frames folder SegAnyMo ran on and every frame stem is the stem of the
frame it segments, so masks are matched to frames by name. (The MV_PAGE4D arrangement inside a scene,
`SegAnyMo/sam2/mask_frames/view_V/NNN.png`, is read by seganymo.py instead.)
"""

from __future__ import annotations

from pathlib import Path

from page4d.data.layout import SceneFormatError

INITIAL_PREDS_DIR = "initial_preds"


def is_seganymo_output(path: str | Path) -> bool:
    return (Path(path) / INITIAL_PREDS_DIR).is_dir()


def sequence_folder(root: str | Path, sequence: str | None) -> Path:
    """`root/initial_preds/<sequence>`; without a name (or when it is absent) the only sequence there."""
    preds = Path(root) / INITIAL_PREDS_DIR
    found = sorted(p.name for p in preds.iterdir() if p.is_dir())
    if sequence is not None and sequence in found:
        return preds / sequence
    if len(found) == 1 and sequence is None:
        return preds / found[0]
    wanted = f"sequence {sequence!r}" if sequence is not None else "one sequence"
    raise SceneFormatError(f"{preds}: expected {wanted}, found sequences {found}")
