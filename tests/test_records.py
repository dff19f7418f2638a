"""page4d.records: atomic writes and the never-overwrite rule for run folders."""

from __future__ import annotations

import json
import os

import pytest
import torch
from page4d.records import (
    RunFolderTaken,
    atomic_torch_save,
    claim_run_folder,
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
    write_json(run / "summary.json", {"done": True})
    with pytest.raises(RunFolderTaken) as exc:
        claim_run_folder(run)
    assert str(run) in str(exc.value) and "--resume" in str(exc.value) and "new --out" in str(exc.value)
    assert claim_run_folder(run, resume=True) == "finished"


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
