"""Wall time of every notebook in notebooks/*.ipynb at its default parameters, executed with papermill.

Each notebook runs in a fresh `python -m papermill` subprocess (this interpreter, kernel `python3`, working
directory = the notebook's folder) writing its executed copy into a temporary directory, so the source
notebooks are left untouched. The wall time includes kernel start-up. Target: all notebooks <= 5 min.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from page4d.profiling import progress, table

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_DIR = REPO_ROOT / "notebooks"
TARGET_S = 300.0


def run(
    notebook_dir: str | Path = DEFAULT_DIR,
    pattern: str = "*.ipynb",
    kernel: str = "python3",
    timeout_s: float = 900.0,
    target_s: float = TARGET_S,
    **_: Any,
) -> dict[str, Any]:
    notebook_dir = Path(notebook_dir)
    paths = sorted(notebook_dir.glob(pattern)) if notebook_dir.is_dir() else []
    out: dict[str, Any] = {
        "benchmark": "notebooks",
        "timer": "wall",
        "notebook_dir": str(notebook_dir),
        "kernel": kernel,
        "target_s": target_s,
        "notebooks": [],
        "total_s": 0.0,
    }
    if not paths:
        out["note"] = f"no notebooks matching {pattern} in {notebook_dir} (yet)"
        out["within_target"] = None
        return out
    with tempfile.TemporaryDirectory(prefix="page4d_nb_") as tmp:
        for path in paths:
            progress(f"[notebooks] {path.name}")
            cmd = [
                sys.executable,
                "-m",
                "papermill",
                str(path),
                str(Path(tmp) / path.name),
                "--cwd",
                str(path.parent),
                "-k",
                kernel,
                "--no-progress-bar",
            ]
            t0 = time.perf_counter()
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
                ok, tail = proc.returncode == 0, proc.stderr[-2000:]
            except subprocess.TimeoutExpired as e:
                err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
                ok, tail = False, f"timed out after {timeout_s:.0f} s\n{err[-2000:]}"
            wall = time.perf_counter() - t0
            entry: dict[str, Any] = {"name": path.name, "wall_s": wall, "ok": ok}
            if not ok:
                entry["error"] = tail
            out["notebooks"].append(entry)
    out["total_s"] = sum(e["wall_s"] for e in out["notebooks"])
    out["all_ok"] = all(e["ok"] for e in out["notebooks"])
    out["within_target"] = out["total_s"] <= target_s
    return out


def format_result(result: dict[str, Any]) -> str:
    if not result["notebooks"]:
        return result.get("note", "no notebooks")
    rows = [[e["name"], f"{e['wall_s']:.1f}", "ok" if e["ok"] else "FAILED"] for e in result["notebooks"]]
    lines = [
        f"papermill, kernel {result['kernel']}, default parameters",
        table(["notebook", "wall s", "status"], rows),
        f"total {result['total_s']:.1f} s (target <= {result['target_s']:.0f} s: "
        f"{'met' if result['within_target'] else 'MISSED'})",
    ]
    for e in result["notebooks"]:
        if not e["ok"]:
            lines.append(f"--- {e['name']} failed; stderr tail:\n{e['error'][-800:]}")
    return "\n".join(lines)
