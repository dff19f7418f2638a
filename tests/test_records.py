"""page4d.records: atomic writes and the never-overwrite rule for run folders."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
import torch
from page4d.records import (
    FINISH_MARKER,
    RunFolderTaken,
    atomic_torch_save,
    changed_fields,
    claim_run_folder,
    field_defaults,
    is_finished,
    mark_finished,
    remove_stale_temp_files,
    run_folder_state,
    write_json,
)


def test_states_and_the_refusal_names_the_folder_and_the_ways_on(tmp_path):
    run = tmp_path / "run"
    assert run_folder_state(run) == "empty" and claim_run_folder(run) == "empty"
    run.mkdir()
    (run / "notes.txt").write_text("not a run file")
    assert claim_run_folder(run) == "empty"
    write_json(run / "config.json", {"a": 1})
    assert run_folder_state(run) == "unfinished"
    with pytest.raises(RunFolderTaken, match="unfinished"):
        claim_run_folder(run)
    mark_finished(run, "train", steps=3)
    assert json.loads((run / FINISH_MARKER).read_text())["kind"] == "train" and is_finished(run)
    with pytest.raises(RunFolderTaken) as exc:
        claim_run_folder(run)
    assert str(run) in str(exc.value) and "--resume" in str(exc.value) and "new --out" in str(exc.value)
    assert claim_run_folder(run, resume=True) == "finished"
    with pytest.raises(RunFolderTaken) as exc:  # a kind of run that cannot be continued (page4d.predict)
        claim_run_folder(run, resume_hint=None)
    assert "--resume" not in str(exc.value) and str(exc.value).endswith("Write this one to a new --out.")


def test_atomic_writes_leave_no_temporary_files_and_replace_whole_files(tmp_path):
    write_json(tmp_path / "a.json", {"x": 1})
    write_json(tmp_path / "a.json", {"x": 2})
    atomic_torch_save({"w": torch.arange(3)}, tmp_path / "c.pt")
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 2}
    assert torch.equal(torch.load(tmp_path / "c.pt", weights_only=True)["w"], torch.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "c.pt"]


def test_a_killed_writer_leaves_only_a_temp_file_which_is_removed(tmp_path):
    (tmp_path / "checkpoint_2.pt").write_bytes(b"complete")
    stale = tmp_path / f".checkpoint_3.pt.tmp-{os.getpid() + 1}"
    stale.write_bytes(b"half")
    assert remove_stale_temp_files(tmp_path) == [stale]
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_2.pt"]


def test_every_kind_of_run_ends_with_the_one_marker(tmp_path):
    """A training run, a notebook execution, an ablation and a pretraining run all finish by writing
    DONE.json last; a training folder from before the marker (summary.json only) still counts."""
    from page4d.notebook.runner import run_state

    legacy = tmp_path / "old_train"
    legacy.mkdir()
    write_json(legacy / "summary.json", {"steps": 3})
    assert is_finished(legacy) and run_folder_state(legacy) == "finished"
    nb = tmp_path / "nb"
    nb.mkdir()
    mark_finished(nb, "notebook", status="failed")
    assert run_state(nb) == "failed" and run_folder_state(nb) == "finished"


def test_two_threads_writing_one_file_do_not_share_a_temporary_file(tmp_path):
    """Two sweeps in one process (threads) both write sweep.json: with one temp name per process, one
    thread's rename took the other's temporary file away (FileNotFoundError)."""
    import threading

    errors = []

    def writer(k):
        try:
            for i in range(300):
                write_json(tmp_path / "shared.json", {"writer": k, "i": i})
        except OSError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert json.loads((tmp_path / "shared.json").read_text())["i"] == 299
    assert not remove_stale_temp_files(tmp_path)


def test_changed_fields_compare_configs_as_json_reads_them_back():
    """A tuple and the list it was written as are the same value; a key on one side only is a change."""
    recorded = json.loads(json.dumps({"size": (112, 154), "steps": 4, "old": 1}))
    assert changed_fields(recorded, {"size": (112, 154), "steps": 4, "old": 1}) == {}
    assert changed_fields(recorded, {"size": (112, 154), "steps": 6, "new": 2}) == {
        "new": (None, 2), "old": (1, None), "steps": (4, 6)
    }  # fmt: skip


def test_a_knob_added_since_a_run_was_recorded_is_no_change_at_its_default_and_a_change_otherwise():
    @dataclasses.dataclass
    class Config:
        steps: int = 4
        sizes: tuple[int, ...] = (1, 2)
        added: int = 1  # a knob the recorded run predates: 1 is what the code did before it

    recorded = {"steps": 4, "sizes": [1, 2]}
    defaults = field_defaults(Config)
    assert defaults == {"steps": 4, "sizes": (1, 2), "added": 1}
    assert changed_fields(recorded, dataclasses.asdict(Config()), defaults) == {}
    assert changed_fields(recorded, dataclasses.asdict(Config(added=2)), defaults) == {"added": (None, 2)}
    assert changed_fields(recorded, dataclasses.asdict(Config()), None) == {"added": (None, 1)}  # strict
    assert changed_fields({**recorded, "added": 2}, dataclasses.asdict(Config()), defaults) == {
        "added": (2, 1)
    }  # recorded at another value: a change whatever the default
