"""Executing a parameterised notebook into a run folder: the one runner behind `page4d.main` and the sweep.

A run folder is a record (papermill's convention): the executed notebook with its injected parameters,
whatever the notebook writes (metrics.json, figures), and a marker:

- `RUNNING.json` while it executes (pid, host); a leftover one from a dead process marks an
  interrupted run.
- `.<run folder name>.lock` beside the folder, while a process holds the run (`run_lock`): claiming a run
  is one atomic `flock`, so two processes (two sweeps over one grid, say) never execute one run folder
  at once; the second is refused with `RunLocked`, naming the holder. The kernel drops the lock of a
  killed process, so a lock never outlives its holder (a leftover file of a killed one is taken over).
- `DONE.json` when the execution ended: `status` "ok" or "failed", parameters, wall time. A folder with
  DONE.json is finished and is never executed into again. A notebook that *refuses* the folder (e.g.
  an interrupted ablation re-run with other parameters) ends with no DONE.json and the runner's files
  as they were (`RunRefused`): the right command still runs afterwards.
- `FAILED.json` (failed executions only): the error and the kernel's traceback, beside the partial
  output notebook.

Notebooks execute with kernel `python3` and working directory = the notebook's folder (as nbval and
nbconvert do); they resolve their own paths from the repository root (`page4d.records`).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from page4d.records import (
    FAILED_FILE,
    FINISH_MARKER,
    METRICS_FILE,
    REFUSALS,
    RunFolderTaken,
    atomic_write_bytes,
    mark_finished,
    read_json,
    write_json,
)

RUNNING_FILE = "RUNNING.json"
LOCK_SUFFIX = ".lock"
OUTPUT_DIR_PARAM = "output_dir"
KERNEL_NAME = "python3"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # colour codes in kernel tracebacks


class FinishedRunError(FileExistsError):
    """The folder already holds a finished run (runs are records: never overwritten)."""


class RunLocked(RunFolderTaken):
    """Another live process holds the run folder's lock (it is executing into it right now)."""


class RunRefused(RunFolderTaken):
    """The notebook refused to run in the folder (it raised one of `page4d.records.REFUSALS`); the
    folder was left as it was, and no DONE.json marks it finished."""


def lock_path(run_dir: str | Path) -> Path:
    """The lock of a run folder: beside it (the sweep may move the folder itself aside under the lock)."""
    run_dir = Path(run_dir)
    return run_dir.parent / f".{run_dir.name}{LOCK_SUFFIX}"


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {info['pid']} on {info['host']} since {info['started']}"
    except (ValueError, KeyError, OSError):
        return "a process that is just starting"


@contextmanager
def run_lock(run_dir: str | Path) -> Iterator[Path]:
    """Hold `run_dir`'s lock for the block, or raise `RunLocked` at once when a live process holds it.

    One `flock(LOCK_EX | LOCK_NB)` on `.<name>.lock` decides, atomically, who runs the folder. The file
    is unlinked on release; a process that locked the unlinked file retries on the new one."""
    path = lock_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise RunLocked(
                f"{run_dir} is being run by another live process ({holder}); not running it twice"
            ) from None
        try:
            current = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)
    try:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        os.ftruncate(fd, 0)
        os.pwrite(
            fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": stamp}).encode(), 0
        )
        yield path
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_state(run_dir: Path) -> str:
    """ "ok" / "failed" (finished), "running" (a live process holds it), "interrupted", or "new"."""
    if (run_dir / FINISH_MARKER).is_file():
        return str(read_json(run_dir / FINISH_MARKER).get("status", "ok"))
    running = run_dir / RUNNING_FILE
    if running.is_file():
        try:
            info = read_json(running)
        except ValueError:
            return "interrupted"
        if info.get("host") == socket.gethostname() and _pid_alive(int(info.get("pid", -1))):
            return "running"
        return "interrupted"
    return "interrupted" if run_dir.exists() else "new"


def execute_notebook(
    notebook: str | Path,
    run_dir: str | Path,
    params: dict[str, Any],
    pass_output_dir: bool = True,
    timeout: float | None = None,
    progress: bool = False,
    locked: bool = False,
    echo: Callable[[str], Any] | None = None,
) -> dict[str, Any]:
    """Run the notebook once into `run_dir` and return its DONE record. Holds the folder's `run_lock`
    while it runs (`locked=True`: the caller already holds it), so a second process is refused
    (`RunLocked`); refuses (FinishedRunError) a folder that holds a finished run; never raises for a
    failing notebook: the failure is recorded in FAILED.json / DONE.json and returned (status "failed").

    A notebook that *refuses* to run in the folder (it raised one of `page4d.records.REFUSALS`, e.g.
    `ParametersChanged` for an interrupted ablation given other parameters) is not a failure: nothing is
    recorded, the runner's own files are put back as they were, and `RunRefused` is raised.
    `echo`: called with every line the notebook prints to stdout, as it prints it (`page4d.main` passes
    the ablation's progress lines on)."""
    if not locked:
        with run_lock(run_dir):
            return execute_notebook(
                notebook, run_dir, params, pass_output_dir, timeout, progress, locked=True, echo=echo
            )
    nb, out = Path(notebook), Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    if (out / FINISH_MARKER).exists():
        raise FinishedRunError(
            f"{out} already holds a finished run ({FINISH_MARKER}); a finished run is never overwritten: "
            "choose a new output folder"
        )
    injected = dict(params)
    if pass_output_dir:
        injected[OUTPUT_DIR_PARAM] = str(out)
    output_notebook = out / nb.name
    before = _snapshot(out, (RUNNING_FILE, output_notebook.name))
    started = time.time()
    write_json(out / RUNNING_FILE, {"pid": os.getpid(), "host": socket.gethostname(), "started": started})
    record: dict[str, Any] = {
        "status": "ok",
        "params": injected,
        "notebook": str(nb),
        "output_notebook": output_notebook.name,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
    }
    failure = _papermill(nb, output_notebook, injected, timeout, progress, echo)
    if failure is not None and failure["ename"] in REFUSALS:
        _restore(out, before)
        raise RunRefused(failure["evalue"])
    record["wall_s"] = round(time.time() - started, 3)
    if (out / METRICS_FILE).is_file():
        record["metrics_file"] = METRICS_FILE
    if failure is not None:
        record.update(status="failed", error=f"{failure['ename']}: {failure['evalue']}")
        write_json(out / FAILED_FILE, {**failure, "wall_s": record["wall_s"]})
    mark_finished(out, "notebook", **record)
    (out / RUNNING_FILE).unlink(missing_ok=True)
    return record


def _papermill(
    nb: Path,
    output_notebook: Path,
    injected: dict[str, Any],
    timeout: float | None,
    progress: bool,
    echo: Callable[[str], Any] | None,
) -> dict[str, Any] | None:
    """Execute with papermill; None when every cell ran, else the failure (error, cell, traceback)."""
    import papermill

    try:
        papermill.execute_notebook(
            str(nb),
            str(output_notebook),
            parameters=injected,
            kernel_name=KERNEL_NAME,
            cwd=str(nb.parent),
            progress_bar=progress,
            request_save_on_cell_execute=True,
            execution_timeout=timeout,
            stdout_file=None if echo is None else LineEcho(echo),
        )
    except Exception as exc:  # a failing notebook is a result: recorded, returned, never dropped
        return {
            "error": type(exc).__name__,
            "ename": getattr(exc, "ename", type(exc).__name__),
            "evalue": getattr(exc, "evalue", str(exc)),
            "cell_index": getattr(exc, "cell_index", None),
            "traceback": [
                _ANSI.sub("", line)
                for line in (getattr(exc, "traceback", None) or traceback.format_exception(exc))
            ],
            "params": injected,
        }
    return None


def _snapshot(folder: Path, names: tuple[str, ...]) -> dict[str, bytes | None]:
    """The bytes of the runner's own files in `folder` (None: absent), to put back after a refusal."""
    return {name: (folder / name).read_bytes() if (folder / name).is_file() else None for name in names}


def _restore(folder: Path, before: dict[str, bytes | None]) -> None:
    for name, data in before.items():
        if data is None:
            (folder / name).unlink(missing_ok=True)
        else:
            atomic_write_bytes(folder / name, data)


class LineEcho:
    """A file-like sink for the kernel's stdout (papermill's `stdout_file`): calls `echo` with each
    complete line as it arrives."""

    def __init__(self, echo: Callable[[str], Any]) -> None:
        self.echo, self.pending = echo, ""

    def write(self, text: str) -> None:
        *lines, self.pending = (self.pending + text).split("\n")
        for line in lines:
            self.echo(line)

    def flush(self) -> None:
        pass
