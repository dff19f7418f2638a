"""The ablation as an experiment: paired arms, a `none` that trains, floors, per-seed records that survive
failures and interruptions, and evaluation that reports what it can instead of raising."""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT
from page4d import records
from page4d.data import SyntheticSceneConfig, generate_synthetic_scene, load_scene
from page4d.experiments import ablation, ablation_report
from page4d.experiments.ablation import AblationParams, parse_pos_weight, run_ablation
from page4d.experiments.ablation_stats import summarize_arms
from page4d.model.checkpoint import read_state_dict
from page4d.report import tables
from page4d.scoring.evaluate import evaluate
from page4d.train import TrainConfig, build_training_model

SIZE = (56, 70)


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory) -> Path:
    cfg = SyntheticSceneConfig(
        seed=1,
        times=6,
        views=2,
        height=56,
        width=70,
        orbit_deg_per_step=4.0,
        num_movers=2,
        mover_size=(0.4, 0.5),
    )
    return generate_synthetic_scene(tmp_path_factory.mktemp("scene") / "synthetic", cfg)


def _params(scene_dir: Path, out: Path, **kw) -> AblationParams:
    base = dict(
        train_root=str(scene_dir),
        holdout=2,
        arms=("untrained", "none", "bce"),
        seeds=(0, 1),
        steps=3,
        image_size=SIZE,
        geometry=True,
        trains="mask_head+middle_blocks",
        clip_times=2,
        lr=TrainConfig.lr,
        checkpoint="",
        seeded_mask_head=False,
        output_dir=str(out),
    )
    base.update(kw)
    return AblationParams(**base)


@pytest.fixture(scope="module")
def paired_run(scene_dir, tmp_path_factory) -> dict:
    torch.set_num_threads(1)
    return run_ablation(_params(scene_dir, tmp_path_factory.mktemp("abl") / "run"), progress=False)


def test_arms_of_one_seed_start_from_identical_weights_and_see_the_same_clips(paired_run):
    arms = paired_run["arms"]
    assert list(arms) == ["untrained", "none", "bce"] and not paired_run["failed"]
    for i, seed in enumerate((0, 1)):
        digests = {arm: arms[arm]["per_seed"][i]["init_digest"] for arm in arms}
        assert len(set(digests.values())) == 1, digests
        assert arms["none"]["per_seed"][i]["seed"] == seed
        assert (
            arms["none"]["per_seed"][i]["clip_order_digest"]
            == arms["bce"]["per_seed"][i]["clip_order_digest"]
        )
    assert arms["none"]["per_seed"][0]["init_digest"] != arms["none"]["per_seed"][1]["init_digest"]
    # `none` trains (geometry on); untrained does not
    assert arms["untrained"]["per_seed"][0]["trained_steps"] == 0
    none0 = arms["none"]["per_seed"][0]
    assert none0["trained_steps"] == 3 and none0["final_digest"] != none0["init_digest"]


def test_metrics_json_holds_threshold_free_scores_floors_and_paired_differences(paired_run):
    bce = paired_run["arms"]["bce"]
    for key in ("mask_ap", "mask_iou", "mask_iou_tuned", "mask_p_static", "mask_p_dynamic", "mask_ece"):
        assert all(0.0 <= r[key] <= 1.0 for r in bce["per_seed"]), key
    assert all(r["tuned_threshold"] is not None for r in bce["per_seed"])  # chosen on training frames
    for key in ("ate", "rpe_trans", "rpe_rot", "rpe_view_trans", "rpe_view_rot", "depth_abs_rel"):
        assert all(math.isfinite(r[key]) for r in bce["per_seed"]), key
    floors = paired_run["floors"]
    share = floors["all_dynamic"]["gt_dynamic_share"]
    assert 0 < share < 1
    assert floors["all_dynamic"]["mask_ap"] == pytest.approx(share)  # a constant ranks nothing
    assert floors["all_static"]["mask_iou"] < 0.5 and floors["all_static"]["mask_p_static"] == 0.0
    paired = bce["paired_vs_none"]["mask_ap"]
    assert paired["n"] == 2 and paired["ci95"] is None  # two seeds: values, not an interval
    expected = [
        b["mask_ap"] - n["mask_ap"]
        for b, n in zip(bce["per_seed"], paired_run["arms"]["none"]["per_seed"], strict=True)
    ]
    assert list(paired["per_seed"].values()) == pytest.approx(expected)
    assert "paired_vs_none" not in paired_run["arms"]["untrained"]
    rows = ablation_report.mask_rows(paired_run)
    assert [r["arm"] for r in rows][:3] == ["untrained", "none", "bce"]
    assert any(r["arm"] == "floor: all dynamic" for r in rows)
    assert " / " in rows[2]["AP"]  # per-seed values below 3 seeds
    assert ablation_report.geometry_rows(paired_run)  # geometry trained -> geometry columns


def test_an_arm_gives_the_same_result_whatever_runs_beside_it(paired_run, scene_dir, tmp_path):
    alone = run_ablation(_params(scene_dir, tmp_path / "alone", arms=("bce",), seeds=(0,)), progress=False)
    assert (
        alone["arms"]["bce"]["per_seed"][0]["final_digest"]
        == paired_run["arms"]["bce"]["per_seed"][0]["final_digest"]
    )


def test_none_without_geometry_is_reported_as_untrained(scene_dir, tmp_path):
    out = run_ablation(
        _params(
            scene_dir,
            tmp_path / "run",
            arms=("none", "bce"),
            seeds=(0,),
            geometry=False,
            trains="mask_head",
        ),
        progress=False,
    )
    assert list(out["arms"]) == ["untrained", "bce"]
    assert "reported as 'untrained'" in out["notes"][0]
    assert ablation_report.geometry_rows(out) == []  # no geometry columns when geometry did not train


def test_a_failing_arm_is_recorded_and_the_others_are_kept_then_the_run_resumes(
    scene_dir, tmp_path, monkeypatch
):
    real_train = ablation.train
    calls = []

    def flaky(cfg, *args, **kw):
        calls.append((cfg.arm, cfg.seed))
        if cfg.arm == "bce":
            raise RuntimeError("simulated crash in the bce arm")
        return real_train(cfg, *args, **kw)

    monkeypatch.setattr(ablation, "train", flaky)
    params = _params(scene_dir, tmp_path / "run", arms=("none", "bce"), seeds=(0,))
    out = run_ablation(params, progress=False)
    assert out["failed"] == [
        {"arm": "bce", "seed": 0, "error": "RuntimeError: simulated crash in the bce arm"}
    ]
    assert out["arms"]["none"]["per_seed"] and out["arms"]["bce"]["failed_seeds"] == [0]
    cell = json.loads((tmp_path / "run" / "cells" / "bce_seed0.json").read_text())
    assert cell["status"] == "failed" and "simulated crash" in cell["traceback"]
    # a finished ablation folder is a record: never run into again
    with pytest.raises(FileExistsError, match="never overwritten"):
        run_ablation(params, progress=False)
    # an interrupted one (no DONE.json) resumes: finished cells are read, the missing one runs
    (tmp_path / "run" / "DONE.json").unlink()
    (tmp_path / "run" / "metrics.json").unlink()
    (tmp_path / "run" / "cells" / "bce_seed0.json").unlink()
    calls.clear()
    monkeypatch.setattr(
        ablation, "train", lambda cfg, *a, **k: (calls.append(cfg.arm), real_train(cfg, *a, **k))[1]
    )
    out = run_ablation(params, progress=False)
    assert calls == ["bce"] and not out["failed"]


def test_mask_arms_without_any_gt_fail_before_training(scene_dir, tmp_path, monkeypatch):
    bare = tmp_path / "bare"
    shutil.copytree(scene_dir, bare)
    shutil.rmtree(bare / "SegAnyMo")
    monkeypatch.setattr(ablation, "train", lambda *a, **k: pytest.fail("must not train"))
    refused = r"arm 'bce' on .*bare: this arm has mask terms \('mask_bce',\) but .*mask_frames does not exist"
    with pytest.raises(ValueError, match=refused):
        run_ablation(_params(bare, tmp_path / "run", arms=("none", "bce"), seeds=(0,)), progress=False)


def test_attention_arm_scores_the_starting_model_without_training(scene_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(ablation, "train", lambda *a, **k: pytest.fail("the attention arm must not train"))
    params = _params(scene_dir, tmp_path / "run", arms=("untrained", "attention"), seeds=(0,), steps=2)
    out = run_ablation(params, progress=False)
    assert not out["failed"] and out["baseline"] == "untrained"
    att, unt = out["arms"]["attention"]["per_seed"][0], out["arms"]["untrained"]["per_seed"][0]
    assert att["trained_steps"] == 0 and att["init_digest"] == att["final_digest"] == unt["init_digest"]
    assert (att["mask_method"], unt["mask_method"]) == ("attention", "mask_head")
    for key in ("mask_ap", "mask_iou", "mask_iou_tuned", "mask_p_static", "mask_p_dynamic", "mask_ece"):
        assert 0.0 <= att[key] <= 1.0, key
    assert att["tuned_threshold"] is not None and att["mask_frames"] == unt["mask_frames"] == 4
    assert att["mask_ap"] != unt["mask_ap"]  # another read-out of the same network ...
    paired = out["arms"]["attention"]["paired_vs_untrained"]
    assert paired["depth_abs_rel"]["per_seed"] == {0: 0.0} and paired["ate"]["per_seed"] == {
        0: 0.0
    }  # ... same geometry
    assert (tmp_path / "run" / "predictions" / "attention.npz").is_file()
    # never paired with a trained `none`: it is not a variant of the training
    cells = {
        (arm, 0): records.read_json(tmp_path / "run" / "cells" / f"{arm}_seed0.json")
        for arm in ("untrained", "attention")
    }
    cells[("none", 0)] = cells.pop(("untrained", 0))
    arms = summarize_arms(
        ["none", "attention"], (0,), cells, baseline="none", unpaired=ablation.TRAINING_FREE
    )
    assert "paired_vs_none" not in arms["attention"]
    assert ablation.arm_config("attention") == ("none", True) and ablation.mask_method("bce") == "mask_head"


def test_notebook_03_parameter_defaults_are_the_ablation_defaults():
    """The notebook's `parameters` cell must hold literals (papermill reads them), so it repeats
    AblationParams' defaults (which come from TrainConfig's): converted as the notebook converts them,
    they must be equal."""
    from page4d.notebook.params import notebook_parameters

    declared = notebook_parameters(REPO_ROOT / "notebooks" / "03_ablation_mask_supervision.ipynb")
    nb = {name: ast.literal_eval(p.default) for name, p in declared.items()}

    def ids(text: str) -> list[int] | None:
        return [int(x) for x in text.split(",") if x.strip()] or None

    nb["train_times"], nb["eval_times"] = ids(nb["train_times"]), ids(nb["eval_times"])
    nb["arms"] = tuple(a.strip() for a in nb["arms"].split(","))
    nb["seeds"] = tuple(ids(nb["seeds"]))
    nb["image_size"] = (nb.pop("image_height"), nb.pop("image_width"))
    del nb["threads"]  # the notebook's own: torch's thread count
    defaults = dataclasses.asdict(AblationParams())
    assert {k: defaults[k] for k in nb} == nb
    assert set(defaults) - set(nb) == {"synthetic_seed"}  # not a notebook parameter
    trainer = TrainConfig()
    assert (nb["steps"], nb["trains"]) == (trainer.steps, trainer.trains)
    # a fine-tuning of a pretrained backbone on monocular videos: its own lr and clip length
    assert (nb["lr"], nb["clip_times"]) == (1e-3, 4) and nb["checkpoint"] == "tiny-pos"


def test_pos_weight_parameter():
    assert parse_pos_weight("auto") == "auto" and parse_pos_weight("none") is None
    assert parse_pos_weight("6.5") == 6.5
    with pytest.raises(ValueError, match="pos_weight"):
        parse_pos_weight("-1")
    with pytest.raises(ValueError, match="pos_weight"):
        parse_pos_weight("balanced")


def test_evaluate_scores_what_it_can(scene_dir):
    scene = load_scene(scene_dir, image_size=SIZE)
    torch.manual_seed(0)
    model = build_training_model(TrainConfig())
    # frames without GT: mask metrics over the frames that have it, with the reason
    scene.mask_valid[4] = False
    out = evaluate(model, scene, times=[2, 3, 4, 5], clip_times=2)
    assert out["mask_frames"] == 6 and math.isfinite(out["mask_ap"]) and out["mask_missing_reason"]
    scene.mask_valid[:] = False
    out = evaluate(model, scene, times=[2, 3, 4, 5], clip_times=2)
    assert out["mask_frames"] == 0 and math.isnan(out["mask_ap"]) and out["mask_missing_reason"]

    # predicted cameras collapsed to one pose: NaN plus a reason, never an exception
    class Collapsed(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, images):
            pred = self.inner(images)
            pred["pose_enc"] = torch.zeros_like(pred["pose_enc"])
            pred["pose_enc"][..., 6] = 1.0
            return pred

    out = evaluate(Collapsed(model), scene, times=[0, 1, 2, 3], clip_times=2)
    assert math.isnan(out["ate"]) and "collapsed" in out["trajectory_note"]
    assert math.isfinite(out["depth_abs_rel"])
    # ... and the result says over how many clips each family is, and which were dropped and why
    camera, depth = out["coverage"]["camera"], out["coverage"]["depth"]
    assert (camera["clips"], camera["of"], depth["clips"], depth["of"]) == (0, 2, 2, 2)
    assert [d["times"] for d in camera["dropped"]] == [[0, 1], [2, 3]]
    assert all("collapsed" in d["reason"] for d in camera["dropped"]) and depth["dropped"] == []
    mask = out["coverage"]["mask"]  # no frame has GT now: every clip dropped from the mask metrics
    assert (mask["clips"], mask["frames"], mask["frames_of"]) == (0, 0, 8) and mask["dropped"][0]["reason"]

    # attention masks compare time steps: a clip of one step is refused before anything runs
    with pytest.raises(ValueError, match=r"needs >= 2 time steps per clip; .* leaves \[\[4\]\]"):
        evaluate(model, scene, times=[2, 3, 4], clip_times=2, method="attention")
    with pytest.raises(ValueError, match="unknown mask method 'heads'"):
        evaluate(model, scene, times=[2, 3], clip_times=2, method="heads")


def test_main_refuses_a_finished_run_folder_and_leaves_it_byte_identical(tmp_path, capsys):
    from page4d import main as main_mod

    run = tmp_path / "run"
    run.mkdir()
    (run / "DONE.json").write_text('{"status": "ok"}\n')
    (run / "metrics.json").write_text('{"arms": {}}\n')
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with pytest.raises(SystemExit) as exc:
        main_mod.main(["--out", str(run), "-p", "steps", "1"])
    assert exc.value.code == 2
    assert "never overwritten" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_a_clip_whose_predicted_cameras_collapsed_shows_in_the_tables_counts_and_footnotes(
    scene_dir, tmp_path, monkeypatch
):
    """Held-out clips [2, 3] and [4, 5]; the cameras of [4, 5] collapse to one pose in every arm, so ATE /
    RPE are over 1 clip of 2 -- and the printed tables say so, naming the clip and the reason."""
    real_predict = ablation.predict_scene

    def collapse_last_clip(*args, **kw):
        clips = real_predict(*args, **kw)
        for c in clips:
            if c["times"] == [4, 5]:
                c["pred"]["pose_enc"] = torch.zeros_like(c["pred"]["pose_enc"])
                c["pred"]["pose_enc"][..., 6] = 1.0
        return clips

    monkeypatch.setattr(ablation, "predict_scene", collapse_last_clip)
    params = _params(scene_dir, tmp_path / "run", arms=("untrained", "bce"), seeds=(0,), steps=2, holdout=4)
    metrics = run_ablation(params, progress=False)
    camera = metrics["arms"]["bce"]["coverage"]["camera"]
    assert camera["of"] == 2 and camera["clips"] == [1]
    collapsed = "predicted camera centres collapsed (coincident or collinear); rotation errors kept"
    assert camera["dropped"] == [{"seed": 0, "times": [4, 5], "reason": collapsed}]
    assert math.isfinite(metrics["arms"]["bce"]["ate"])  # scored on the clip that is left
    rows = ablation_report.geometry_rows(metrics)
    assert [(r["n depth"], r["n cameras"]) for r in rows[:2]] == [("clips 2/2", "clips 1/2")] * 2
    assert rows[2]["arm"] == "floor: identity cameras"  # the floor is over every clip's GT
    assert [r["n"] for r in ablation_report.mask_rows(metrics)[:2]] == ["frames 8/8"] * 2
    from page4d import main as main_mod

    text = main_mod.report_text(metrics)
    assert "clips 1/2" in text and "frames 8/8" in text
    footnotes = [line for line in text.splitlines() if line.startswith("dropped from ATE/RPE")]
    assert footnotes == 2 * [  # under the geometry table and under the paired geometry table
        f"dropped from ATE/RPE: clip t=[4, 5] (untrained seed 0, bce seed 0): {collapsed}"
    ]


def test_a_deterministic_arm_prints_one_value_without_plus_minus(scene_dir, tmp_path):
    """From a shared checkpoint the training-free arms start every seed from the same weights and train
    nothing: their seeds repeat one computation. They show one value, no ±, say why, and their paired
    difference is one value without an interval; the trained arm keeps its ± over 3 seeds."""
    params = _params(
        scene_dir,
        tmp_path / "run",
        arms=("untrained", "attention", "bce"),
        seeds=(0, 1, 2),
        steps=2,
        checkpoint="tiny-synthetic",
        geometry=False,
        trains="mask_head",
    )
    metrics = run_ablation(params, progress=False)
    arms = metrics["arms"]
    assert arms["untrained"]["deterministic"] == arms["attention"]["deterministic"] is not None
    assert arms["bce"]["deterministic"] is None
    for arm in ("untrained", "attention"):
        assert arms[arm]["mask_ap_ci95"] is None and arms[arm]["n_values"]["mask_ap"] == 1
    paired = arms["attention"]["paired_vs_untrained"]["mask_ap"]
    assert paired["n"] == 1 and paired["ci95"] is None and paired["deterministic"]
    assert arms["bce"]["paired_vs_untrained"]["mask_ap"]["ci95"] is not None  # 3 seeds of bce vary
    rows = {r["arm"]: r for r in ablation_report.mask_rows(metrics)}
    for arm in ("untrained", "attention"):
        assert rows[arm]["seeds"] == "det." and "±" not in rows[arm]["AP"] and " / " not in rows[arm]["AP"]
        assert rows[arm]["AP"] == f"{arms[arm]['per_seed'][0]['mask_ap']:.3f}"
    assert "±" in rows["bce"]["AP"] and rows["bce"]["seeds"] == 3
    text = ablation_report.mask_table(metrics)
    lines = {line.split()[0]: line for line in text.splitlines()}
    assert "±" not in lines["untrained"] + lines["attention"] and "±" in lines["bce"]
    assert "attention: det. = deterministic (one starting model for every seed and nothing trained): " in text
    paired_text = ablation_report.paired_table(metrics)
    assert paired_text.splitlines()[2].split()[:2] == ["attention", "det."]
    assert "[" not in paired_text.splitlines()[2]  # no interval for a difference of two single values


def test_a_random_init_gives_each_seed_its_own_untrained_model(paired_run):
    untrained = paired_run["arms"]["untrained"]
    assert untrained["deterministic"] is None and len({r["init_digest"] for r in untrained["per_seed"]}) == 2


def test_seed_invariance_and_deterministic_pairs_across_runs():
    from page4d.experiments.ablation_stats import paired_across_runs, seed_invariance

    def rec(seed, digest, ap, steps=0):
        return {"seed": seed, "init_digest": digest, "trained_steps": steps, "mask_ap": ap}

    assert seed_invariance([rec(0, "a", 0.5), rec(1, "a", 0.5)]).startswith("one starting model")
    assert seed_invariance([rec(0, "a", 0.5), rec(1, "b", 0.5)]).endswith("identical values")
    assert seed_invariance([rec(0, "a", 0.5), rec(1, "b", 0.6)]) is None  # other weights, other value
    assert seed_invariance([rec(0, "a", 0.5, 2), rec(1, "a", 0.5, 2)]) is None  # trained: may vary
    assert seed_invariance([rec(0, "a", 0.5)]) is None  # one seed: nothing to vary

    def run(ap):
        per_seed = [{**rec(s, "a", ap), "clip_order_digest": None} for s in (0, 1, 2)]
        return {"arms": {"attention": {"per_seed": per_seed, "deterministic": "one starting model"}}}

    d = paired_across_runs(run(0.2), run(0.25), "attention")["mask_ap"]
    assert d["n"] == 1 and d["ci95"] is None and d["mean"] == pytest.approx(0.05) and d["deterministic"]
    assert ablation_report.difference_text(d) == "+0.050"


def test_one_metrics_reader_flattens_nested_arms_for_the_sweep(paired_run, tmp_path):
    records.write_json(tmp_path / "metrics.json", paired_run)
    flat = tables.flat_metrics(tmp_path)
    assert flat["bce:mask_ap"] == pytest.approx(paired_run["arms"]["bce"]["mask_ap"])
    assert "none:ate" in flat
    assert not [k for k in flat if k.endswith(("_n", "_ci95"))]  # counts and intervals are not metrics
    rows = tables.comparison_rows(records.find_runs(tmp_path).runs)
    assert [r["arm"] for r in rows] == ["untrained", "none", "bce"] and rows[2]["seeds"] == 2


def _run_metrics(values: dict[int, float], digests: dict[int, str]) -> dict:
    per_seed = [{"seed": s, "mask_ap": v, "clip_order_digest": digests[s]} for s, v in values.items()]
    return {"arms": {"bce": {"per_seed": per_seed}}}


def test_two_runs_pair_by_seed_only_when_they_trained_on_the_same_clips():
    from page4d.experiments.ablation_stats import paired_across_runs

    digests = {0: "a", 1: "b", 2: "c"}
    before = _run_metrics({0: 0.5, 1: 0.6, 2: 0.7}, digests)
    after = _run_metrics({0: 0.6, 1: 0.8, 2: 0.7}, digests)
    d = paired_across_runs(before, after, "bce")["mask_ap"]
    assert d["per_seed"] == pytest.approx({0: 0.1, 1: 0.2, 2: 0.0})
    assert d["mean"] == pytest.approx(0.1) and d["n"] == 3
    lo, hi = d["ci95"]  # t(2) = 4.303, sd 0.1, n 3
    assert (hi - lo) / 2 == pytest.approx(4.303 * 0.1 / math.sqrt(3), rel=1e-3)
    rows = ablation_report.across_runs_rows(before, after, ["bce"])
    assert rows[0]["AP"].startswith("+0.100 [")
    with pytest.raises(ValueError, match="seed 1 trained on different clips"):
        paired_across_runs(before, _run_metrics({0: 0.6, 1: 0.8, 2: 0.7}, {**digests, 1: "x"}), "bce")
    with pytest.raises(KeyError, match="arm 'none' is not in the before run"):
        paired_across_runs(before, after, "none")


def test_the_report_command_prints_paired_differences_of_two_run_folders(tmp_path, capsys):
    digests = {0: "a", 1: "b", 2: "c"}
    for name, values in (("random", {0: 0.5, 1: 0.6, 2: 0.7}), ("pretrained", {0: 0.9, 1: 0.9, 2: 0.9})):
        (tmp_path / name).mkdir()
        records.write_json(tmp_path / name / "metrics.json", _run_metrics(values, digests))
    ablation_report.main([str(tmp_path / "random"), str(tmp_path / "pretrained"), "--arms", "bce"])
    out = capsys.readouterr().out
    assert "pretrained - random" in out and "+0.300 [" in out
    assert out.splitlines()[1] == "bce: paired seeds [0, 1, 2]; none left out"
    assert out.splitlines()[4].split()[:3] == ["bce", "seeds", "3"]  # n: the seeds paired
    assert "random: bce: clip counts not recorded" in out  # these metrics.json carry no coverage


# --------------------------------------------------------------------------------------------------
# issue 22: a refusal never marks a run finished; weak cases of the report
# --------------------------------------------------------------------------------------------------
def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_interrupted_ablation_given_other_parameters_is_refused_and_stays_resumable(tmp_path, capsys):
    """Notebook 03 via page4d.main into an interrupted run with one parameter changed: refused, in one
    line naming the change, with the folder left byte for byte as it was (no DONE.json, the partial
    notebook and the dead runner's RUNNING.json untouched), so the right command then resumes it."""
    from page4d import main as main_mod

    run = tmp_path / "run"
    tiny = {"arms": "none", "seeds": "0", "image_height": "28", "image_width": "42", "threads": "1"}
    tiny.update(pool_scenes="2", eval_scenes="1", pool_times="4")
    first = run_ablation(
        AblationParams(
            arms=("none",),
            seeds=(0,),
            steps=1,
            image_size=(28, 42),
            pool_scenes=2,
            eval_scenes=1,
            pool_times=4,
            output_dir=str(run),
        ),
        progress=False,
    )  # what notebook 03 runs with these parameters, stopped before its last cells (no markers below)
    (run / "DONE.json").unlink()
    (run / "metrics.json").unlink()
    (run / "03_ablation_mask_supervision.ipynb").write_text("{}")  # a killed runner's partial notebook
    records.write_json(run / "RUNNING.json", {"pid": 2**22 + 1, "host": "elsewhere", "started": 0})
    before = folder_bytes(run)

    argv = ["--quiet", "--out", str(run), *(x for k, v in tiny.items() for x in ("-p", k, v))]
    with pytest.raises(SystemExit) as exc:
        main_mod.main([*argv, "-p", "steps", "2"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert (
        "holds an unfinished ablation whose cells none_seed0.json were computed with other parameters: "
        in err
    )
    assert "steps 1 -> 2" in err and "nothing was written" in err
    assert folder_bytes(run) == before  # in particular no DONE.json: the run is not marked finished

    assert main_mod.main([*argv, "-p", "steps", "1"]) == 0  # the right command resumes it
    done = json.loads((run / "DONE.json").read_text())
    assert done["status"] == "ok" and not (run / "RUNNING.json").exists()
    metrics = json.loads((run / "metrics.json").read_text())
    kept = first["arms"]["none"]["per_seed"][0]
    assert metrics["arms"]["none"]["per_seed"][0]["final_digest"] == kept["final_digest"]
    assert (
        "ablation [1/1] none seed 0: finished before, read from cells/none_seed0.json"
        in (run / "03_ablation_mask_supervision.ipynb").read_text()
    )


def test_the_runner_leaves_no_finish_marker_for_a_refusal_in_any_notebook(tmp_path):
    import nbformat
    from page4d.notebook import runner

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell("x = 1")
    params.metadata["tags"] = ["parameters"]
    body = "from page4d.records import RunFolderTaken\nraise RunFolderTaken('not in this folder')"
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, tmp_path / "refuses.ipynb")
    with pytest.raises(runner.RunRefused, match="not in this folder"):
        runner.execute_notebook(tmp_path / "refuses.ipynb", tmp_path / "run", {"x": 2})
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == []  # no DONE.json, FAILED.json, ...
    assert not records.is_finished(tmp_path / "run")


def test_the_loss_curve_leaves_out_skipped_steps_instead_of_failing(tmp_path):
    """Mask terms only on clips without GT: those steps have no `loss` (they did not train)."""
    hist = tmp_path / "train" / "bce_seed0" / "history.json"
    hist.parent.mkdir(parents=True)
    records.write_json(hist, [
        {"step": 0, "loss": 0.9, "updated": True},
        {"step": 1, "updated": False, "skip_reason": "no mask GT in this clip and no geometry term"},
        {"step": 2, "loss": 0.7, "updated": True},
    ])  # fmt: skip
    fig = ablation_report.loss_curve_figure(tmp_path)
    (line,) = fig.axes[0].lines
    assert list(line.get_xdata()) == [0, 2] and list(line.get_ydata()) == [0.9, 0.7]
    assert line.get_label() == "bce_seed0 (1 of 3 steps skipped)"


def test_the_report_command_says_which_seeds_it_paired_and_refuses_when_none_are_common(tmp_path, capsys):
    digests = {0: "a", 1: "b", 2: "c", 3: "d"}
    for name, values in (("a", {0: 0.5, 1: 0.6, 2: 0.7}), ("b", {0: 0.9, 1: 0.9, 3: 0.9}), ("c", {3: 0.1})):
        (tmp_path / name).mkdir()
        records.write_json(tmp_path / name / "metrics.json", _run_metrics(values, digests))
    ablation_report.main([str(tmp_path / "a"), str(tmp_path / "b"), "--arms", "bce"])
    out = capsys.readouterr().out
    assert "bce: paired seeds [0, 1]; left out (before only [2], after only [3])" in out
    assert "+0.400 / +0.300" in out  # the two paired seeds' differences
    with pytest.raises(SystemExit) as exc:
        ablation_report.main([str(tmp_path / "a"), str(tmp_path / "c"), "--arms", "bce"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "bce: no seed finished in both runs (before [0, 1, 2], after [3]): nothing to pair" in err


def _answer_metrics(ci: list[float] | None, n: int = 3) -> dict:
    paired = {"mask_ap": {"mean": 0.5, "ci95": ci, "n": n, "per_seed": {}}}
    arms = {"none": {"mask_ap": 0.25}, "bce": {"mask_ap": 0.75, "paired_vs_none": paired}}
    return {"arms": arms, "baseline": "none", "params": {"geometry": False, "seeds": list(range(n))}}


def test_the_closing_answer_says_whether_the_difference_is_settled():
    from page4d.main import answer

    assert answer(_answer_metrics([0.3, 0.7])) == (
        "bce has the best held-out mask AP, 0.750 against 0.250 for none (paired difference +0.500, "
        "95% CI [+0.300, +0.700] over 3 seeds: a real difference)."
    )
    assert "the CI includes 0: not settled" in answer(_answer_metrics([-0.1, 1.1]))
    assert "+0.500 over 2 seed(s), no CI below 3 seeds: too few seeds to tell" in answer(
        _answer_metrics(None, 2)
    )
    alone = _answer_metrics(None)
    del alone["arms"]["none"]
    assert answer(alone) == "bce has the best held-out mask AP (0.750); the baseline none did not run."
    flipped = _answer_metrics(None)
    flipped["arms"]["none"]["mask_ap"] = 0.9
    assert answer(flipped) == "none has the best held-out mask AP (0.900); no arm beat the baseline none."


def test_the_geometry_answer_names_each_settled_difference_against_the_control():
    """With geometry on, the answer starts with the seed's question: against `no_mask` (when it ran),
    which arm's paired CI says better or worse depth / RPE-r / ATE, and how many tests did not settle."""
    from page4d.main import answer, geometry_answer

    def diff(mean, ci):
        return {"mean": mean, "ci95": ci, "n": 5, "per_seed": {}}

    settled = {"depth_abs_rel": diff(-0.02, [-0.03, -0.01]), "rpe_rot": diff(0.4, [0.1, 0.7])}
    settled["ate"] = diff(0.01, [-0.02, 0.04])
    metrics = _answer_metrics([0.3, 0.7])
    metrics["params"]["geometry"] = True
    metrics["arms"]["no_mask"] = {"mask_ap": 0.25, "depth_abs_rel": 0.2, "rpe_rot": 4.0}
    metrics["arms"]["bce"]["paired_vs_no_mask"] = settled
    text = geometry_answer(metrics)
    assert text.startswith("Against no_mask (the same fine-tuning without the attention bias), ")
    assert (
        "bce better depth AbsRel (-0.020, 95% CI [-0.030, -0.010] over 5 seeds; -10.0% of the control's 0.2)"
        in text
    )
    assert "bce worse RPE-r (+0.400" in text and "1 other differences are not settled" in text
    assert answer(metrics).startswith(text + " bce has the best held-out mask AP")
    quiet = {k: diff(0.0, [-1.0, 1.0]) for k in settled}
    metrics["arms"]["bce"]["paired_vs_no_mask"] = quiet
    assert "no arm changes depth AbsRel, RPE-r or ATE beyond its paired 95% CI (3 tests)" in geometry_answer(
        metrics
    )


def test_the_ablation_starts_from_weights_made_with_a_tiny_only_patch_embedding():
    """Issue 20's `conv_pos` weights (in git) reach every arm's model with the default `patch_embed`
    "auto" (read from their keys; the record names the one built), those weights under an explicit
    `conv` are refused naming the option, and a run recorded before the parameter existed keeps its
    digest (so it still resumes)."""
    weights = REPO_ROOT / "checkpoints" / "issue20" / "rig-pos-4800.pt"
    params = ablation.check_checkpoint(AblationParams(checkpoint=str(weights)))
    assert params.patch_embed == "conv_pos"
    for arm in ("no_mask", "bce", "oracle"):
        cfg = ablation.train_config(params, arm, seed=0)
        assert cfg.patch_embed == "conv_pos"
        model = ablation.initial_model(cfg, ablation.arm_setup(arm))
        pos = model.aggregator.patch_embed.pos_embed
        stored = read_state_dict(weights)["aggregator.patch_embed.pos_embed"]
        assert torch.equal(pos, stored.to(pos.dtype))
    explicit = AblationParams(checkpoint=str(weights), patch_embed="conv")
    with pytest.raises(RuntimeError, match=r"(?s)aggregator\.patch_embed\.pos_embed.*--patch-embed"):
        ablation.initial_model(ablation.train_config(ablation.check_checkpoint(explicit), "bce", 0))
    with pytest.raises(ValueError, match="patch_embed must be auto or one of"):
        TrainConfig(patch_embed="dinov2")

    default = ablation._params_record(ablation.check_checkpoint(AblationParams()), "")
    assert default["patch_embed"] == "conv_pos"  # tiny-pos's keys
    stream = AblationParams(checkpoint="tiny-stream")  # the default before tiny-pos: runs keep their digest
    record = ablation._params_record(ablation.check_checkpoint(stream), "")
    assert record["patch_embed"] == "conv"  # tiny-stream's keys
    before = {k: v for k, v in record.items() if k != "patch_embed"}
    assert ablation._params_digest(record) == ablation._params_digest(before)
    assert ablation._params_digest({**record, "patch_embed": "conv_pos"}) != ablation._params_digest(before)


def test_a_checkpoint_path_is_taken_from_the_repo_root_and_a_missing_one_stops_the_run_first(tmp_path):
    """Notebook 03 runs in its own folder: its `checkpoint` path is made absolute from the repository
    root (names and "" stay); a checkpoint that is not there fails before any folder or cell exists."""
    assert ablation.checkpoint_param("tiny-stream") == "tiny-stream" and ablation.checkpoint_param("") == ""
    relative = "checkpoints/issue20/rig-pos-4800.pt"
    assert ablation.checkpoint_param(relative) == str(REPO_ROOT / relative)
    out = tmp_path / "run"
    params = AblationParams(checkpoint=str(tmp_path / "nope.pt"), output_dir=str(out))
    with pytest.raises(FileNotFoundError, match=r"checkpoint not found: .*nope\.pt"):
        run_ablation(params, progress=False)
    assert not out.exists()
