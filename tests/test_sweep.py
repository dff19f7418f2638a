"""The sweep runner (page4d.experiments.sweep) and the run-folder helpers it builds on (page4d.records,
page4d.report.tables).

Executions use a tiny notebook written into tmp_path: a `parameters` cell and one cell that writes
metrics.json into `output_dir`, raises for `x == fail_on`, and for `x >= gate_from` waits while the
file `gate` exists (so a test can hold a sweep mid-way and kill it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from conftest import REPO_ROOT
from page4d import records
from page4d.experiments import sweep
from page4d.notebook import params as nb_params
from page4d.notebook import runner
from page4d.report import tables

PARAMS_SOURCE = """\
x: int = 1  # the swept value
scale: float = 1.0  # multiplies x
flag: bool = False  # recorded as is
label: str = "a"  # recorded as is
fail_on: int = -1  # raise when x equals this
gate: str = ""  # a file: while it exists, cells with x from gate_from on wait
gate_from: int = 99  # first x that waits for the gate
output_dir: str = ""  # where metrics.json goes"""

BODY_SOURCE = """\
import json, pathlib, time
deadline = time.time() + 120
while gate and x >= gate_from and pathlib.Path(gate).exists() and time.time() < deadline:
    time.sleep(0.1)
if x == fail_on:
    raise ValueError(f"x={x} is the failing value")
out = pathlib.Path(output_dir)
(out / "metrics.json").write_text(json.dumps({"x": x, "y": x * scale, "flag": flag, "label": label}))"""


@pytest.fixture
def notebook(tmp_path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell(PARAMS_SOURCE)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(BODY_SOURCE)]
    path = tmp_path / "tiny.ipynb"
    nbformat.write(nb, path)
    return path


def _cli(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "page4d.experiments.sweep", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        **kw,
    )


# --------------------------------------------------------------------------------------------------
# planning: names, types, cell ids (no execution)
# --------------------------------------------------------------------------------------------------
def test_values_are_parsed_with_the_declared_types(notebook, tmp_path):
    plan = sweep.plan_sweep(
        notebook,
        ["x=1,2", "scale=1e-3", "flag=true,no"],
        tmp_path / "out",
        [("label", "1e-3")],
    )
    assert plan.grid == {"x": [1, 2], "scale": [0.001], "flag": [True, False]}
    assert plan.fixed == {"label": "1e-3"}  # a str parameter stays a string
    assert [c.id for c in plan.cells][:2] == ["x=1,scale=0.001,flag=True", "x=1,scale=0.001,flag=False"]
    assert plan.cells[0].dir == tmp_path / "out" / "tiny" / "x=1,scale=0.001,flag=True"
    assert plan.passes_output_dir
    assert not (tmp_path / "out").exists()  # planning writes nothing
    with pytest.raises(nb_params.ParameterError, match="x \\(int\\): cannot parse '1.5'"):
        sweep.plan_sweep(notebook, ["x=1.5"], tmp_path / "out")
    with pytest.raises(nb_params.ParameterError, match="flag"):
        sweep.plan_sweep(notebook, ["flag=maybe"], tmp_path / "out")


def test_a_parameter_papermill_cannot_read_is_reported(tmp_path):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(
        "steps: int = 3  # number of steps\nlr: float = 0.1  # step size; 0 = frozen"
    )
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "p.ipynb")
    # papermill skips any line with two '=' (here one is in the comment); a sweep must not
    with pytest.raises(nb_params.ParameterError, match=r"cannot read parameter\(s\) \['lr'\]"):
        nb_params.notebook_parameters(tmp_path / "p.ipynb")


def test_split_values_and_cell_ids_escape_separators():
    assert nb_params.split_values("[1,2],[3,4],'a,b'") == ["[1,2]", "[3,4]", "'a,b'"]
    assert sweep.cell_id({"label": "a/b,c=d", "x": 2}) == "label=a%2Fb%2Cc%3Dd,x=2"
    assert len(sweep.cell_id({"label": "z" * 500})) < 200


def test_unknown_or_conflicting_parameters_are_refused_before_anything_runs(notebook, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(sweep.SweepError, match=r"unknown parameter\(s\) \['lr'\]"):
        sweep.plan_sweep(notebook, ["x=1,2", "lr=0.1"], out)
    with pytest.raises(sweep.SweepError, match="more than once"):
        sweep.plan_sweep(notebook, ["x=1"], out, [("x", "2")])
    with pytest.raises(sweep.SweepError, match="set by the sweep runner"):
        sweep.plan_sweep(notebook, ["output_dir=a"], out)
    proc = _cli(str(notebook), "--grid", "x=1,2", "-p", "lerning_rate", "3", "--out", str(out))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "unknown parameter(s) ['lerning_rate']" in err
    assert not out.exists()


# --------------------------------------------------------------------------------------------------
# executing
# --------------------------------------------------------------------------------------------------
def test_grid_runs_every_cell_and_records_a_failure_without_stopping(notebook, tmp_path):
    plan = sweep.plan_sweep(notebook, ["x=1,2,3"], tmp_path / "out", [("fail_on", "2"), ("scale", "0.5")])
    logs: list[str] = []
    results = sweep.run_sweep(plan, workers=2, log=logs.append)
    assert [r.status for r in results] == ["ok", "failed", "ok"]
    ok, failed, last = (c.dir for c in plan.cells)
    done = json.loads((ok / records.FINISH_MARKER).read_text())
    assert done["status"] == "ok" and done["params"] == {
        "x": 1,
        "fail_on": 2,
        "scale": 0.5,
        "output_dir": str(ok),
    }
    assert done["wall_s"] > 0 and (ok / "tiny.ipynb").is_file()
    assert json.loads((last / "metrics.json").read_text())["y"] == 1.5
    assert results[2].metrics == {"x": 3, "y": 1.5}
    failure = json.loads((failed / records.FAILED_FILE).read_text())
    assert failure["ename"] == "ValueError" and "x=2 is the failing value" in failure["evalue"]
    assert any("x=2 is the failing value" in line for line in failure["traceback"])
    assert json.loads((failed / records.FINISH_MARKER).read_text())["status"] == "failed"
    partial = nbformat.read(failed / "tiny.ipynb", as_version=4)  # the partial output notebook
    assert any(o.get("ename") == "ValueError" for c in partial.cells for o in c.get("outputs", []))
    assert not (failed / "metrics.json").exists()

    # a second run redoes nothing; --retry-failed runs only the failed cell, keeping the old attempt
    mtime = (ok / records.FINISH_MARKER).stat().st_mtime_ns
    again = sweep.run_sweep(plan, log=logs.append)
    assert [r.status for r in again] == ["skipped", "failed (earlier)", "skipped"]
    retried = sweep.run_sweep(plan, retry_failed=True, log=logs.append)
    assert [r.status for r in retried] == ["skipped", "failed", "skipped"]
    assert (plan.sweep_dir / ".attempts" / failed.name / "failed-1" / records.FAILED_FILE).is_file()
    assert (ok / records.FINISH_MARKER).stat().st_mtime_ns == mtime

    # the same cells with different fixed parameters are not silently taken as finished
    with pytest.raises(sweep.SweepError, match="finished with parameters"):
        sweep.plan_sweep(notebook, ["x=1,2,3"], tmp_path / "out", [("fail_on", "3"), ("scale", "0.5")])


def test_killed_sweep_resumes_without_redoing_finished_cells(notebook, tmp_path):
    out, gate = tmp_path / "out", tmp_path / "gate"
    gate.write_text("hold")
    args = [
        str(notebook),
        "--grid",
        "x=1,2,3",
        "-p",
        "gate",
        str(gate),
        "-p",
        "gate_from",
        "2",
        "--out",
        str(out),
    ]
    cells = [out / "tiny" / f"x={x}" for x in (1, 2, 3)]
    proc = _cli(*args, start_new_session=True)
    try:
        deadline = time.time() + 90
        while not ((cells[0] / records.FINISH_MARKER).exists() and (cells[1] / runner.RUNNING_FILE).exists()):
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline, "the sweep did not reach its second cell"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the runner and its kernel, mid-way through cell 2
        proc.communicate()
    assert not (cells[1] / records.FINISH_MARKER).exists() and not cells[2].exists()
    first_done = (cells[0] / records.FINISH_MARKER).read_bytes()
    first_mtimes = {p.name: p.stat().st_mtime_ns for p in cells[0].iterdir()}
    assert runner.run_state(cells[1]) == "interrupted"

    gate.unlink()
    proc = _cli(*args)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stdout + stderr
    assert "skip  x=1: finished earlier (ok)" in stdout
    assert "run   x=1" not in stdout and "run   x=2" in stdout and "run   x=3" in stdout
    assert (cells[0] / records.FINISH_MARKER).read_bytes() == first_done
    assert {p.name: p.stat().st_mtime_ns for p in cells[0].iterdir()} == first_mtimes
    for cell in cells[1:]:
        assert json.loads((cell / records.FINISH_MARKER).read_text())["status"] == "ok"
    assert (out / "tiny" / ".attempts" / "x=2" / "interrupted-1").is_dir()
    assert [line.split()[:2] for line in stdout.splitlines()[-3:]] == [
        ["x=1", "skipped"],
        ["x=2", "ok"],
        ["x=3", "ok"],
    ]
    summary = json.loads((out / "tiny" / "summary.json").read_text())
    assert [r["status"] for r in summary] == ["skipped", "ok", "ok"]


# --------------------------------------------------------------------------------------------------
# run folders
# --------------------------------------------------------------------------------------------------
def test_repo_root_and_paths_do_not_depend_on_the_working_directory(tmp_path, monkeypatch):
    assert records.repo_root() == REPO_ROOT
    assert records.repo_root(REPO_ROOT / "lib" / "page4d") == REPO_ROOT
    monkeypatch.chdir(tmp_path)
    assert records.resolve_path("outputs/x") == REPO_ROOT / "outputs" / "x"
    assert records.resolve_path(tmp_path / "y") == tmp_path / "y"
    with pytest.raises(FileNotFoundError, match="no page4d repository"):
        records.repo_root(tmp_path)
    monkeypatch.setenv(records.OUTPUTS_ENV, str(tmp_path / "o"))
    assert records.outputs_root() == tmp_path / "o"


def test_new_run_dirs_are_named_by_time_and_never_shared(tmp_path, monkeypatch):
    now = time.mktime((2026, 1, 2, 3, 4, 5, 0, 0, -1))
    a = records.new_run_dir("extract", parent=tmp_path, now=now)
    b = records.new_run_dir("extract", parent=tmp_path, now=now)
    assert a.name == "20260102-030405_extract" and b.name == "20260102-030405_extract-2"
    with pytest.raises(ValueError):
        records.new_run_dir("a/b", parent=tmp_path)
    monkeypatch.setenv(records.OUTPUTS_ENV, str(tmp_path / "outs"))
    fresh = records.resolve_output_dir("", "overlays")
    assert fresh.parent == tmp_path / "outs" and fresh.name.endswith("_overlays")
    assert records.resolve_output_dir(tmp_path / "given", "x") == tmp_path / "given"


def test_find_runs_and_comparison_rows(tmp_path):
    def put(rel: str, text: str) -> None:
        (tmp_path / rel).mkdir(parents=True)
        (tmp_path / rel / "metrics.json").write_text(text)

    arms = {
        "bce": {"mask_iou": 0.5, "ate": 0.1, "per_seed": [{}, {}], "note": "x"},
        "none": {"mask_iou": 0.2},
    }
    put("r1", json.dumps({"arms": arms, "params": {"steps": 3}}))
    put("sweep/x=1", json.dumps({"mask_iou": 0.3, "flag": True, "bad": float("nan")}))
    (tmp_path / "sweep/x=1" / "DONE.json").write_text(json.dumps({"params": {"x": 1}}))
    put("broken", "{")
    put("sweep/.attempts/x=1/failed-1", json.dumps({"mask_iou": 0.0}))
    (tmp_path / "no_metrics").mkdir()
    scan = records.find_runs(tmp_path)
    assert [r.name for r in scan.runs] == ["r1", "sweep/x=1"]
    assert scan.runs[0].params == {"steps": 3} and scan.runs[1].params == {"x": 1}
    assert [p.name for p, _ in scan.skipped] == ["broken"]
    rows = tables.comparison_rows(scan.runs)
    assert rows == [
        {"run": "r1", "arm": "bce", "mask_iou": 0.5, "ate": 0.1, "seeds": 2},
        {"run": "r1", "arm": "none", "mask_iou": 0.2},
        {"run": "sweep/x=1", "arm": "-", "mask_iou": 0.3},
    ]
    assert tables.metric_columns(rows, preferred=["mask_iou", "depth_abs_rel"]) == ["mask_iou", "ate"]
    assert tables.table_columns(rows, ["ate"]) == ["run", "arm", "ate", "mask_iou", "seeds"]
    assert tables.table_columns(rows[1:]) == ["run", "arm", "mask_iou"]
    with pytest.raises(FileNotFoundError):
        records.find_runs(tmp_path / "absent")


def test_a_finished_cell_with_an_unreadable_metrics_file_says_so(tmp_path):

    (tmp_path / "metrics.json").write_text("{not json")
    assert "unreadable metrics.json" in tables.flat_metrics(tmp_path)["metrics_error"]
    (tmp_path / "metrics.json").write_text("[1, 2]")
    assert "holds a list" in tables.flat_metrics(tmp_path)["metrics_error"]
    (tmp_path / "metrics.json").write_text('{"mask_iou": 0.5, "note": "x", "ok": true}')
    assert tables.flat_metrics(tmp_path) == {"mask_iou": 0.5}


def test_the_summary_shows_an_ablations_headline_metrics_per_arm(tmp_path):
    """Notebook 03's nested metrics.json reaches the sweep summary (the one reader), headline first."""
    cell_dir = tmp_path / "x=1"
    cell_dir.mkdir()
    records.write_json(
        cell_dir / "metrics.json",
        {"arms": {"none": {"mask_ece": 0.3, "mask_ap": 0.2}, "bce": {"mask_ece": 0.1, "mask_ap": 0.9}}},
    )
    cell = sweep.Cell("x=1", {"x": 1}, cell_dir)
    rows = sweep.summary_rows([sweep.CellResult(cell, "ok", 1.0, None, tables.flat_metrics(cell_dir))], 2)
    assert rows == [{"cell": "x=1", "status": "ok", "wall_s": 1.0, "none:mask_ap": 0.2, "bce:mask_ap": 0.9}]


# --------------------------------------------------------------------------------------------------
# two sweeps over one folder (issue 22)
# --------------------------------------------------------------------------------------------------
RACE_PARAMS = """\
x: int = 1  # the swept value
log: str = ""  # every execution appends a line here
output_dir: str = ""  # where metrics.json goes"""

RACE_BODY = """\
import json, os, pathlib, time
with open(log, "a") as fh:
    fh.write(f"{os.getpid()}\\n")
time.sleep(1.0)  # long enough for the other sweep to try the same cell meanwhile
(pathlib.Path(output_dir) / "metrics.json").write_text(json.dumps({"x": x}))"""


def test_two_sweeps_racing_for_one_cell_run_it_once(tmp_path, monkeypatch):
    """Both sweeps look at the cell before either starts it (a barrier in their scan: the window in which
    two unlocked sweeps both saw "new"); the cell's lock lets exactly one execute it, and the other says
    why it skipped it. Without the lock both executed the one cell into the one folder."""
    import threading

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell(RACE_PARAMS)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(RACE_BODY)]
    nbformat.write(nb, tmp_path / "race.ipynb")
    log_file = tmp_path / "executions.log"
    plan = sweep.plan_sweep(tmp_path / "race.ipynb", ["x=1"], tmp_path / "out", [("log", str(log_file))])

    barrier, waited, real_state = threading.Barrier(2, timeout=60), threading.local(), sweep.run_state

    def state_after_both_looked(path):
        state = real_state(path)
        if not getattr(waited, "done", False):
            waited.done = True
            barrier.wait()
        return state

    monkeypatch.setattr(sweep, "run_state", state_after_both_looked)
    results, logs = {}, {"a": [], "b": []}

    def one_sweep(name):
        results[name] = sweep.run_sweep(plan, log=logs[name].append)[0]

    threads = [threading.Thread(target=one_sweep, args=(name,)) for name in logs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert len(log_file.read_text().splitlines()) == 1, "the cell was executed more than once"
    statuses = sorted(r.status for r in results.values())
    assert statuses in (["ok", "running"], ["ok", "skipped"]), statuses
    loser = "a" if results["a"].status != "ok" else "b"
    assert any(
        line.startswith("skip  x=1: ") and ("another live process" in line or "finished meanwhile" in line)
        for line in logs[loser]
    ), logs[loser]
    cell = plan.cells[0].dir
    assert json.loads((cell / records.FINISH_MARKER).read_text())["status"] == "ok"
    assert json.loads((cell / "metrics.json").read_text()) == {"x": 1}
    assert not (cell / records.FAILED_FILE).exists() and not (plan.sweep_dir / sweep.ATTEMPTS_DIR).exists()
    assert not runner.lock_path(cell).exists()  # released


def test_a_cell_held_by_a_live_process_is_refused_and_a_dead_holders_lock_is_taken_over(tmp_path):
    cell = tmp_path / "sweep" / "x=1"
    with runner.run_lock(cell):
        with pytest.raises(
            runner.RunLocked, match=rf"{cell} is being run by another live process \(pid {os.getpid()}"
        ):
            with runner.run_lock(cell):
                pass
        record = sweep.run_cell("unused.ipynb", str(cell), {}, True, None, False)
        assert record["status"] == "running" and "another live process" in record["holder"]
    # a lock file left by a killed holder (its flock died with it) does not block
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from page4d.notebook import runner\n"
         "with runner.run_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)", str(cell)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(runner.RunLocked, match=rf"pid {holder.pid} on"):
            with runner.run_lock(cell):
                pass
    finally:
        holder.kill()
        holder.wait()
    assert runner.lock_path(cell).exists()  # left behind by the killed holder
    with runner.run_lock(cell):
        pass


def test_page4d_main_into_a_folder_another_process_is_running_is_refused(tmp_path, capsys):
    from page4d import main as main_mod

    run = tmp_path / "run"
    with runner.run_lock(run):
        with pytest.raises(SystemExit) as exc:
            main_mod.main(["--out", str(run), "-p", "steps", "1"])
    assert exc.value.code == 2
    assert f"{run} is being run by another live process (pid {os.getpid()}" in capsys.readouterr().err
    assert not run.exists()
