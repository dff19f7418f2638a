"""The camera recipe (issue 20): three phases in one command, each its module's own run folder, a stopped
recipe continuing where it stopped, a changed one refused, and a card rendered from its JSON."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from page4d.experiments import camera_probe, camera_recipe, pretrain
from page4d.experiments.camera_recipe import CameraRecipe, card_markdown, check_phase, run_recipe
from page4d.model import build_model, load_checkpoint
from page4d.records import ParametersChanged

SMALL = dict(stream_steps=3, rig_steps=2, ramp_steps=1, mono_steps=2, recur_steps=2)


@pytest.fixture
def small_phases(monkeypatch):
    """Phases of a few steps scored on few scenes and clips (the shipped recipe scores 16 and 32)."""
    stream, rig, mono = CameraRecipe.stream, CameraRecipe.rig, CameraRecipe.mono  # recur is mono's, changed
    monkeypatch.setattr(
        CameraRecipe,
        "stream",
        lambda self: dataclasses.replace(stream(self), heldout_scenes=1, train_eval_scenes=1, warmup_steps=1),
    )
    monkeypatch.setattr(
        CameraRecipe, "rig", lambda self, out: dataclasses.replace(rig(self, out), heldout_clips=2, batch=1)
    )
    monkeypatch.setattr(
        CameraRecipe, "mono", lambda self, out: dataclasses.replace(mono(self, out), heldout_clips=2, batch=2)
    )
    monkeypatch.setattr(camera_recipe, "CARD_SCENES", 1)
    monkeypatch.setattr(camera_recipe, "TRAINING_SCENES_SCORED", 1)


def test_the_recipe_runs_its_four_phases_in_order_and_ships_float16_weights_with_their_card(
    tmp_path, small_phases
):
    recipe = CameraRecipe(**SMALL)
    card = run_recipe(recipe, tmp_path / "r", progress=False)
    out = tmp_path / "r"
    # each phase is its module's own finished run, the next one starting from the last one's weights
    assert all((out / phase / "DONE.json").is_file() for phase in ("stream", "rig", "mono", "recur"))
    rig = json.loads((out / "rig" / "probe.json").read_text())["config"]
    mono = json.loads((out / "mono" / "probe.json").read_text())["config"]
    assert rig["init"] == str(out / "stream" / "tiny-pos-stream.pt") and rig["task"] == "rig"
    assert mono["init"] == str(out / "rig" / "weights.pt") and mono["task"] == "rigs+mono"
    assert rig["patch_embed"] == mono["patch_embed"] == "conv_pos" and mono["seed"] == rig["seed"] + 4
    recur = json.loads((out / "recur" / "probe.json").read_text())["config"]
    assert recur["init"] == str(out / "mono" / "weights.pt") and (recur["task"], recur["rig_times"]) == (
        "rigs+mono",
        2,
    )
    saved = torch.load(out / "tiny-pos.pt", weights_only=True)["model"]
    assert all(v.dtype == torch.float16 for v in saved.values() if v.is_floating_point())
    last = torch.load(out / "recur" / "weights.pt", weights_only=True)
    assert all(torch.equal(saved[k], v.half()) for k, v in last.items() if v.is_floating_point())
    model = build_model(pretrain.model_config("conv_pos"))
    assert load_checkpoint(model, out / "tiny-pos.pt").ok  # strict, with the position table
    # the card: its JSON, its rendering, the phases' configs and times, targets beside the floor
    assert json.loads((out / "tiny-pos.json").read_text()) == json.loads(json.dumps(card))
    assert (out / "tiny-pos.md").read_text() == card_markdown(card)
    assert card["model_config_changes"]["patch_embed"] == "conv_pos"
    assert card["phases"]["rig"]["config"] == rig and card["phases"]["stream"]["config"]["steps"] == 3
    assert card["train_seconds"] == pytest.approx(sum(p["train_seconds"] for p in card["phases"].values()))
    assert set(card["targets"]) == {"rpe_rot", "rpe_view_rot", "depth_abs_rel", "depth_delta1"}
    assert card["first_losses"] and card["first_losses"][0]["step"] == 0
    assert len(card["heldout"]["pretrained"]["per_scene"]) == 1 and card["training_scenes"]["per_scene"]
    assert card["command"] == (
        "python -m page4d.experiments.camera_recipe --out DIR --stream-steps 3 --rig-steps 2 "
        "--ramp-steps 1 --mono-steps 2 --recur-steps 2"
    )
    assert card["heldout"]["pretrained"]["camera_floor"]["rpe_view_rot"] > 0  # rigs: the floor turns
    assert (out / "tiny-pos_loss.png").stat().st_size > 0
    with pytest.raises(FileExistsError, match="finished camera recipe"):
        run_recipe(recipe, out, progress=False)


def test_a_stopped_recipe_continues_from_its_finished_phases_and_a_changed_one_is_refused(
    tmp_path, small_phases, monkeypatch
):
    recipe, out = CameraRecipe(**SMALL), tmp_path / "r"
    real_loss = camera_probe.training_loss

    def stop_mono_at_step_1(model, batch, cfg, step, geometry_cfg):
        if cfg.rig_times == 2 and step == 1:  # the last phase, after its first evaluation
            raise KeyboardInterrupt
        return real_loss(model, batch, cfg, step, geometry_cfg)

    monkeypatch.setattr(camera_probe, "training_loss", stop_mono_at_step_1)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe, out, progress=False)
    assert (out / "recur" / "state.pt").is_file() and not (out / "recur" / "DONE.json").exists()
    rig_bytes = (out / "rig" / "probe.json").read_bytes()
    with pytest.raises(ParametersChanged, match="rig_steps"):  # another recipe in the same folder
        run_recipe(dataclasses.replace(recipe, rig_steps=3), out, progress=False)
    monkeypatch.setattr(camera_probe, "training_loss", real_loss)
    streams, probes, real_probe = [], [], camera_recipe.run_probe
    monkeypatch.setattr(pretrain, "pretrain", lambda *a, **k: streams.append(a))

    def probe(cfg, folder, progress=True, resume=False):
        probes.append((folder.name, resume))
        return real_probe(cfg, folder, progress=progress, resume=resume)

    monkeypatch.setattr(camera_recipe, "run_probe", probe)
    card = run_recipe(recipe, out, progress=False)  # the same command again: the last phase goes on
    assert streams == [] and probes == [("recur", True)]
    assert (out / "rig" / "probe.json").read_bytes() == rig_bytes
    recur = json.loads((out / "recur" / "probe.json").read_text())
    assert [e["step"] for e in recur["evaluations"]] == [0, 2] and len(recur["losses"]) == 2
    assert card["phases"]["recur"]["config"]["steps"] == 2 and (out / "DONE.json").is_file()


def test_reuse_copies_the_phases_another_folder_ran_the_same_way_up_to_the_first_that_differs(
    tmp_path, small_phases, monkeypatch
):
    recipe, first = CameraRecipe(**SMALL), tmp_path / "first"
    run_recipe(recipe, first, progress=False)
    ran, real_probe, real_stream = [], camera_recipe.run_probe, pretrain.pretrain

    def probe(cfg, folder, progress=True, resume=False):
        ran.append(folder.name)
        return real_probe(cfg, folder, progress=progress, resume=resume)

    def stream(*args, **kwargs):
        ran.append("stream")
        return real_stream(*args, **kwargs)

    monkeypatch.setattr(camera_recipe, "run_probe", probe)
    monkeypatch.setattr(pretrain, "pretrain", stream)
    longer = dataclasses.replace(recipe, recur_steps=3)  # only the last phase differs
    card = run_recipe(longer, tmp_path / "longer", progress=False, reuse=first)
    assert ran == ["recur"]
    assert card["reused"] == {p: str(first / p) for p in ("stream", "rig", "mono")}
    for phase in ("stream", "rig", "mono"):  # the records as their runs wrote them
        assert (tmp_path / "longer" / phase / "DONE.json").read_bytes() == (
            first / phase / "DONE.json"
        ).read_bytes()
    recur = json.loads((tmp_path / "longer" / "recur" / "probe.json").read_text())["config"]
    assert recur["init"] == str(tmp_path / "longer" / "mono" / "weights.pt") and recur["steps"] == 3
    assert "`--reuse`" in card_markdown(card) and str(first / "rig") in card_markdown(card)
    ran.clear()
    other = dataclasses.replace(recipe, rig_steps=3)
    card = run_recipe(other, tmp_path / "rig3", progress=False, reuse=first)
    assert ran == ["rig", "mono", "recur"] and list(card["reused"]) == ["stream"]  # none after a difference
    assert "`--reuse`" not in card_markdown(json.loads((first / "tiny-pos.json").read_text()))


def test_recur_steps_0_runs_the_three_phases_of_the_first_tiny_pos_and_ships_the_third_s_weights(
    tmp_path, small_phases
):
    card = run_recipe(CameraRecipe(**{**SMALL, "recur_steps": 0}), tmp_path / "r", progress=False)
    out = tmp_path / "r"
    assert list(card["phases"]) == ["stream", "rig", "mono"] and not (out / "recur").exists()
    saved = torch.load(out / "tiny-pos.pt", weights_only=True)["model"]
    last = torch.load(out / "mono" / "weights.pt", weights_only=True)
    assert all(torch.equal(saved[k], v.half()) for k, v in last.items() if v.is_floating_point())
    text = card_markdown(card)
    assert "three phases" in text and "**recur**" not in text and "moves" in text
    with pytest.raises(ValueError, match="recur >= 0"):
        CameraRecipe(recur_steps=-1)


def test_a_phase_folder_made_with_another_config_is_refused_naming_the_field(tmp_path):
    wanted = dataclasses.asdict(CameraRecipe().rig(tmp_path))
    check_phase(tmp_path, json.loads(json.dumps(wanted)), wanted)  # tuples read back as lists: the same
    with pytest.raises(ParametersChanged, match=r"ramp_steps: 600 there, 1200 here"):
        check_phase(tmp_path, {**wanted, "ramp_steps": 600}, wanted)


def test_the_phases_are_the_recorded_commands_of_issue_20_s_chain():
    """Phase 1 is tiny-stream's recipe with the position table, phase 2 the rig probe with its ramp and
    geometry every 4th step, phase 3 rigs+mono (the README's commands, with the recipe's lengths)."""
    r = CameraRecipe()
    stream = r.stream()
    assert (
        dataclasses.replace(stream, name="tiny-stream", steps=6000, patch_embed="conv")
        == (pretrain.RECIPES["tiny-stream"])
    )
    rig, mono = r.rig(Path("o")), r.mono(Path("o"))
    assert (rig.min_deg, rig.max_deg, rig.geometry, rig.w_rotation) == (5, 175, True, 10)
    assert (rig.ramp_steps, rig.geometry_every, rig.batch, rig.lr) == (1200, 4, 8, 1e-3)
    assert (mono.task, mono.seed, mono.lr, mono.geometry_every) == ("rigs+mono", 4, 1e-3, 4)
    recur = r.recur(Path("o"))
    assert rig.rig_times == mono.rig_times == 1 and recur.rig_times == 2  # phase 4's rigs recur
    assert (recur.task, recur.seed, recur.steps) == ("rigs+mono", 11, 500)
    assert recur.init == str(Path("o") / "mono" / "weights.pt")
    assert dataclasses.replace(recur, init=mono.init, steps=750, rig_times=1, seed=4) == mono
    with pytest.raises(ValueError, match="every phase"):
        CameraRecipe(rig_steps=0)


def test_the_card_says_whether_the_recipe_kept_issue_20_s_budget():
    within = camera_recipe.budget_text({"train_seconds": 59.5 * 60, "threads": 1})
    over = camera_recipe.budget_text({"train_seconds": 95 * 60, "threads": 1})
    assert within.startswith("That is within issue 20's budget of 60 minutes")
    assert over.startswith("That is **over** issue 20's budget of 60 minutes") and "1 thread(s)" in over
