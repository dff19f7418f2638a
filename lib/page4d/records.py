"""Run folders are records: where they live, how they are named, written atomically, never
overwritten once finished, and read back.

Every path a notebook, the sweep runner or a command writes is resolved from one root (the repository,
found by `repo_root`), never from the kernel's working directory, so notebooks run from any folder.

A reader (or a killed writer) never sees half a file: every write goes to a temporary file in the same
folder, is flushed to disk and then renamed over the target (`os.replace` is atomic on POSIX).

Every kind of run (a training run, an ablation, a notebook execution, a sweep cell, a pretraining run)
ends the same way: its own files first (`summary.json`, `metrics.json`, a card ...), then
`mark_finished` writes the one finish marker, `DONE.json` (what kind of run, when, its closing record).
A run folder is *finished* when it holds that marker and *unfinished* when it holds any other run
file (a config, a history, a checkpoint) but no marker. Writing a new run
into either is refused; the two ways on are to continue it (`--resume`) or to pick another folder:

    state = claim_run_folder(out, resume=args.resume)  # "empty" / "unfinished" / "finished", or raises
    write_json(out / "config.json", config)
    run = resolve_output_dir("", "extract")            # <repo>/outputs/20260101-120000_extract/
    runs = find_runs(outputs_root())                   # every folder below with a metrics.json
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "RunFolderTaken",
    "ParametersChanged",
    "REFUSALS",
    "RUN_FILES",
    "FINISH_MARKER",
    "mark_finished",
    "is_finished",
    "run_folder_state",
    "claim_run_folder",
    "atomic_write_bytes",
    "atomic_write_text",
    "write_json",
    "read_json",
    "atomic_torch_save",
    "remove_stale_temp_files",
]

FINISH_MARKER = "DONE.json"  # the one "this run is finished" file of every run folder
# Training runs written before the marker was unified ended with summary.json: still finished records.
LEGACY_FINISH_MARKERS = ("summary.json",)
RUN_FILES = ("config.json", "history.json", "summary.json", "metrics.json", "checkpoint*.pt", "RUNNING.json")
TEMP_TAG = ".tmp-"


class RunFolderTaken(RuntimeError):
    """Raised instead of writing a new run into a folder that already holds one: a refusal, which leaves
    the folder exactly as it was. A runner that sees one (`page4d.notebook.runner`, also from inside a
    notebook's kernel, by the class name: `REFUSALS`) must not mark the folder finished either."""


class ParametersChanged(RunFolderTaken):
    """An unfinished run folder holds results computed with other parameters: resuming it with these
    would mix two experiments in one record."""


# Class names of the refusals (as a notebook's kernel reports them): `RunFolderTaken` and its subclasses.
REFUSALS = ("RunFolderTaken", "ParametersChanged", "RunLocked")


def mark_finished(path: str | Path, kind: str, **record: Any) -> Path:
    """Write the finish marker `DONE.json` into the run folder `path`: call it last, after every other
    file of the run. `kind` names the run ("train", "ablation", "notebook", "pretrain"); `record` is
    the run's closing record (status, parameters, wall time ...)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    return write_json(Path(path) / FINISH_MARKER, {"kind": kind, "finished": stamp, **record})


def is_finished(path: str | Path) -> bool:
    """Whether the run folder holds the finish marker (or a training run's pre-DONE.json summary)."""
    path = Path(path)
    return any((path / m).is_file() for m in (FINISH_MARKER, *LEGACY_FINISH_MARKERS))


def run_folder_state(path: str | Path, run_files=RUN_FILES) -> str:
    """ "empty" (missing, or no run file in it), "unfinished" (run files, no marker) or "finished"."""
    path = Path(path)
    if not path.is_dir():
        return "empty"
    if is_finished(path):
        return "finished"
    if any(p.is_file() for pattern in run_files for p in path.glob(pattern)):
        return "unfinished"
    return "empty"


def claim_run_folder(
    path: str | Path,
    resume: bool = False,
    run_files=RUN_FILES,
    resume_hint: str | None = "--resume",
    new_hint: str = "a new --out",
) -> str:
    """Check that a run may write into `path` before anything is written; returns the folder's state.

    Without `resume`, a folder that already holds a run (finished or not) raises `RunFolderTaken`, whose
    message names the folder and the ways on (`resume_hint=None`: a kind of run that cannot be continued,
    so the only way on is `new_hint`). With `resume`, any state is accepted (the caller continues what is
    there, or starts fresh in an empty folder).
    """
    path = Path(path)
    state = run_folder_state(path, run_files)
    if state == "empty" or resume:
        return state
    what = "a finished run" if state == "finished" else "an unfinished run (no " + FINISH_MARKER + ")"
    way_on = f"Continue that run with {resume_hint}, or write" if resume_hint else "Write"
    raise RunFolderTaken(
        f"refusing to write into {path}: it already holds {what}, and run folders are never "
        f"overwritten. {way_on} this one to {new_hint}."
    )


def _temp_path(path: Path) -> Path:
    """Unique per writer: two threads of one process writing the same file must not share a temp file."""
    return path.with_name(f".{path.name}{TEMP_TAG}{os.getpid()}-{threading.get_ident()}")


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


OUTPUTS_ENV = "PAGE4D_OUTPUTS"  # overrides <repo>/outputs (tests point it at a temporary folder)
METRICS_FILE = "metrics.json"
FAILED_FILE = "FAILED.json"
RUN_NAME_TIME_FORMAT = "%Y%m%d-%H%M%S"


def _is_repo_root(path: Path) -> bool:
    return (path / "pyproject.toml").is_file() and (path / "lib" / "page4d").is_dir()


def repo_root(start: str | Path | None = None) -> Path:
    """The repository root: the nearest folder above `start` (default: this file, then the working
    directory) holding `pyproject.toml` and `lib/page4d/`. Raises when there is none."""
    candidates = [Path(start)] if start is not None else [Path(__file__), Path.cwd()]
    for c in candidates:
        c = c.resolve()
        for p in (c, *c.parents):
            if _is_repo_root(p):
                return p
    raise FileNotFoundError(
        f"no page4d repository (pyproject.toml + lib/page4d/) above {', '.join(map(str, candidates))}"
    )


def outputs_root() -> Path:
    """`$PAGE4D_OUTPUTS` if set, else `<repo>/outputs` (git-ignored)."""
    env = os.environ.get(OUTPUTS_ENV)
    return Path(env).resolve() if env else repo_root() / "outputs"


def resolve_path(path: str | Path) -> Path:
    """An absolute path; a relative one is taken relative to the repository root (not the cwd)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (repo_root() / p).resolve()


def new_run_dir(label: str, parent: str | Path | None = None, now: float | None = None) -> Path:
    """Create and return `<parent>/<YYYYmmdd-HHMMSS>_<label>` (parent defaults to `outputs_root()`).

    The folder is created exclusively: a second run started in the same second gets a `-2`, `-3`
    ... suffix instead of sharing (and overwriting) the first one's folder.
    """
    if not label or any(c in label for c in '/\\:*?"<>|'):
        raise ValueError(f"run label must be a non-empty plain name, got {label!r}")
    base = Path(parent) if parent is not None else outputs_root()
    base.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime(RUN_NAME_TIME_FORMAT, time.localtime(now))
    for n in range(1, 1000):
        path = base / (f"{stamp}_{label}" if n == 1 else f"{stamp}_{label}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a new run folder for {label!r} in {base}")


def resolve_output_dir(output_dir: str | Path, label: str) -> Path:
    """A notebook's `output_dir` parameter: empty = a new run folder under `outputs_root()`,
    otherwise that folder (relative = from the repository root), created if absent."""
    if not str(output_dir):
        return new_run_dir(label)
    path = resolve_path(output_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def display_path(path: str | Path) -> str:
    """A path as a reader should see it in a committed notebook: relative to the repository root when
    inside it (no machine-specific prefix), else as given."""
    p, root = Path(path).resolve(), repo_root()
    return p.relative_to(root).as_posix() if p.is_relative_to(root) else str(path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy / torch scalars and arrays
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def write_json(path: str | Path, obj: Any) -> Path:
    """The one JSON writer of run records: indented, atomic (a reader never sees half a file); paths,
    numpy and torch values are converted."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def changed_fields(
    recorded: dict[str, Any], wanted: dict[str, Any], defaults: dict[str, Any] | None = None
) -> dict[str, tuple[Any, Any]]:
    """{key: (recorded, wanted)} for every key whose value differs between a run's recorded config and
    the one asked for now (a key on one side only counts), compared as JSON reads them back, so a tuple
    and the list it was written as are the same: what a resume refuses with `ParametersChanged`.

    `defaults` (a config class's `field_defaults`): a key the record lacks whose wanted value is its
    default is not a change. A knob added after a run was recorded defaults to what the code did before
    it existed, so that run (recorded without it) still resumes and is still adopted; asked for at
    another value, it is a change."""
    then, now = json.loads(json.dumps(recorded)), json.loads(json.dumps(wanted))
    known = json.loads(json.dumps(defaults or {}))
    keys = sorted(then.keys() | now.keys())
    added_at_default = {k for k in now.keys() - then.keys() if k in known and now[k] == known[k]}
    return {
        k: (then.get(k), now.get(k)) for k in keys if then.get(k) != now.get(k) and k not in added_at_default
    }


def field_defaults(cls: type) -> dict[str, Any]:
    """{field: default} of a config dataclass (fields without a default left out): `changed_fields`'s
    `defaults`."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


# --------------------------------------------------------------------------------------------------
# reading finished runs
# --------------------------------------------------------------------------------------------------
@dataclass
class RunRecord:
    """One run folder with a metrics.json. `name` is its path relative to the scanned root."""

    path: Path
    name: str
    metrics: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunScan:
    runs: list[RunRecord]
    skipped: list[tuple[Path, str]]  # folders with an unreadable metrics.json, and why


def find_runs(root: str | Path) -> RunScan:
    """Every folder below `root` (any depth, so sweep cells count) holding a `metrics.json`, sorted
    by relative path. Unreadable or non-object files are reported in `skipped`, never fatal."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"runs root {root} is not a folder")
    runs, skipped = [], []
    for metrics_path in sorted(root.rglob(METRICS_FILE)):
        folder = metrics_path.parent
        if any(part.startswith(".") for part in folder.relative_to(root).parts):
            continue
        try:
            metrics = read_json(metrics_path)
        except (OSError, json.JSONDecodeError) as exc:
            skipped.append((folder, f"{type(exc).__name__}: {exc}"))
            continue
        if not isinstance(metrics, dict):
            skipped.append((folder, f"metrics.json holds a {type(metrics).__name__}, not an object"))
            continue
        params = metrics.get("params")
        if not isinstance(params, dict) and (folder / FINISH_MARKER).is_file():
            try:
                params = read_json(folder / FINISH_MARKER).get("params")
            except (OSError, json.JSONDecodeError):
                params = None
        name = folder.relative_to(root).as_posix() or "."
        runs.append(RunRecord(folder, name, metrics, params if isinstance(params, dict) else {}))
    return RunScan(runs, skipped)
