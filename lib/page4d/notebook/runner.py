"""Executing a parameterised notebook into a run folder: the one runner behind `page4d.main` and the sweep.

A run folder is a record (papermill's convention): the executed notebook with its injected parameters,
whatever the notebook writes (metrics.json, figures), and a marker:

- `RUNNING.json` while it executes (pid, host); a leftover one from a dead process marks an
  interrupted run.
- `DONE.json` when the execution ended: `status` "ok" or "failed", parameters, wall time. A folder with
  DONE.json is finished and is never executed into again.
- `FAILED.json` (failed executions only): the error and the kernel's traceback, beside the partial
  output notebook.

Notebooks execute with kernel `python3` and working directory = the notebook's folder (as nbval and
nbconvert do); they resolve their own paths from the repository root (`page4d.records`).
"""

from __future__ import annotations

import os
import re
import socket
import time
import traceback
from pathlib import Path
from typing import Any

from page4d.records import FAILED_FILE, FINISH_MARKER, METRICS_FILE, mark_finished, read_json, write_json

RUNNING_FILE = "RUNNING.json"
OUTPUT_DIR_PARAM = "output_dir"
KERNEL_NAME = "python3"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # colour codes in kernel tracebacks


class FinishedRunError(FileExistsError):
    """The folder already holds a finished run (runs are records: never overwritten)."""


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
) -> dict[str, Any]:
    """Run the notebook once into `run_dir` and return its DONE record. Refuses (FinishedRunError) a
    folder that holds a finished run; never raises for a failing notebook: the failure is recorded in
    FAILED.json / DONE.json and returned (status "failed")."""
    import papermill

    nb, out = Path(notebook), Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    if (out / FINISH_MARKER).exists():
        raise FinishedRunError(
            f"{out} already holds a finished run ({FINISH_MARKER}); a finished run is never overwritten: "
            "choose a new output folder"
        )
    started = time.time()
    write_json(out / RUNNING_FILE, {"pid": os.getpid(), "host": socket.gethostname(), "started": started})
    injected = dict(params)
    if pass_output_dir:
        injected[OUTPUT_DIR_PARAM] = str(out)
    output_notebook = out / nb.name
    record: dict[str, Any] = {
        "status": "ok",
        "params": injected,
        "notebook": str(nb),
        "output_notebook": output_notebook.name,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
    }
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
        )
    except Exception as exc:  # a failing notebook is a result: recorded, returned, never dropped
        record["status"] = "failed"
        failure = {
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
        record["error"] = f"{failure['ename']}: {failure['evalue']}"
    record["wall_s"] = round(time.time() - started, 3)
    if (out / METRICS_FILE).is_file():
        record["metrics_file"] = METRICS_FILE
    if record["status"] == "failed":
        write_json(out / FAILED_FILE, {**failure, "wall_s": record["wall_s"]})
    mark_finished(out, "notebook", **record)
    (out / RUNNING_FILE).unlink(missing_ok=True)
    return record
