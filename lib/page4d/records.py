"""Run folders are records: written atomically, never overwritten once finished.

A reader (or a killed writer) never sees half a file: every write goes to a temporary file in the same
folder, is flushed to disk and then renamed over the target (`os.replace` is atomic on POSIX).

A run folder is *finished* when it holds its finish marker (`summary.json` by default) and *unfinished*
when it holds any other run file (a config, a history, a checkpoint) but no marker. Writing a new run
into either is refused; the two ways on are to continue it (`--resume`) or to pick another folder:

    from page4d.records import claim_run_folder, atomic_write_json

    state = claim_run_folder(out, resume=args.resume)  # "empty" / "unfinished" / "finished", or raises
    atomic_write_json(out / "config.json", config)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "RunFolderTaken",
    "RUN_FILES",
    "FINISH_MARKER",
    "run_folder_state",
    "claim_run_folder",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_torch_save",
    "remove_stale_temp_files",
]

FINISH_MARKER = "summary.json"
RUN_FILES = ("config.json", "history.json", "summary.json", "metrics.json", "checkpoint*.pt")
TEMP_TAG = ".tmp-"


class RunFolderTaken(RuntimeError):
    """Raised instead of writing a new run into a folder that already holds one."""


def run_folder_state(path: str | Path, marker: str = FINISH_MARKER, run_files=RUN_FILES) -> str:
    """ "empty" (missing, or no run file in it), "unfinished" (run files, no marker) or "finished"."""
    path = Path(path)
    if not path.is_dir():
        return "empty"
    if (path / marker).is_file():
        return "finished"
    if any(p.is_file() for pattern in run_files for p in path.glob(pattern)):
        return "unfinished"
    return "empty"


def claim_run_folder(
    path: str | Path,
    resume: bool = False,
    marker: str = FINISH_MARKER,
    run_files=RUN_FILES,
    resume_hint: str = "--resume",
    new_hint: str = "a new --out",
) -> str:
    """Check that a run may write into `path` before anything is written; returns the folder's state.

    Without `resume`, a folder that already holds a run (finished or not) raises `RunFolderTaken`, whose
    message names the folder and the two ways on. With `resume`, any state is accepted (the caller
    continues what is there, or starts fresh in an empty folder).
    """
    path = Path(path)
    state = run_folder_state(path, marker, run_files)
    if state == "empty" or resume:
        return state
    what = "a finished run" if state == "finished" else "an unfinished run (no " + marker + ")"
    raise RunFolderTaken(
        f"refusing to write into {path}: it already holds {what}, and run folders are never "
        f"overwritten. Continue that run with {resume_hint}, or write this one to {new_hint}."
    )


def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}{TEMP_TAG}{os.getpid()}")


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` through a flushed temporary file and an atomic rename."""
    path = Path(path)
    tmp = _temp_path(path)
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any, indent: int = 1) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """`torch.save` to a temporary file, then rename: a checkpoint on disk is always complete."""
    path = Path(path)
    tmp = _temp_path(path)
    with open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def remove_stale_temp_files(path: str | Path) -> list[Path]:
    """Delete temporary files a killed writer left in `path` (they never replaced a real file)."""
    stale = [p for p in Path(path).glob(f".*{TEMP_TAG}*") if p.is_file()]
    for p in stale:
        p.unlink()
    return stale
