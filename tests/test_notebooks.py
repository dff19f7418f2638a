"""Notebooks 01-05 tested as code.

- nbval: the committed notebooks whose text outputs are the same on any CPU (shapes, keys, rounded
  metrics of fixed computations) re-execute and must match, with notebooks/sanitize.cfg for volatile
  text. Run as a pytest subprocess per notebook, with PAGE4D_OUTPUTS pointing at a temporary folder
  (no run folders left in the repo). Notebooks 03 and 04 show training outcomes, which depend on the
  CPU's SIMD path and BLAS build: they are not compared by nbval; pytest asserts on what they record
  (notebook 02's score cells, from a head it trains, carry NBVAL_IGNORE_OUTPUT for the same reason;
  notebook 05's plotly figure, whose JSON holds every plotted coordinate to the last float digit, and its
  static-map count, decided by P(dynamic) values near the threshold, carry it too).
- papermill: each notebook executes into tmp_path with small parameters, and the values it records
  (summary.json / metrics.json / figures) are checked.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import papermill
import pytest
from conftest import REPO_ROOT

NOTEBOOKS = REPO_ROOT / "notebooks"
SANITIZE = NOTEBOOKS / "sanitize.cfg"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ALL_NOTEBOOKS = [
    "01_extract_mask_logits.ipynb",
    "02_mask_overlays.ipynb",
    "03_ablation_mask_supervision.ipynb",
    "04_compare_runs.ipynb",
    "05_reconstruction_4d.ipynb",
]
NBVAL_NOTEBOOKS = [*ALL_NOTEBOOKS[:2], "05_reconstruction_4d.ipynb"]


FLOORS = {
    "all_dynamic": {"mask_iou": 0.18, "mask_jf": 0.09, "mask_frames": 16, "gt_dynamic_share": 0.18},
    "all_static": {"mask_iou": 0.0, "mask_jf": 0.0, "mask_frames": 16, "gt_dynamic_share": 0.18},
}


def write_example_runs(root: Path) -> Path:
    """Three run folders as notebooks 03 and 02 write them, plus one with a broken metrics.json.

    Notebook 04's stored outputs were produced from exactly these, without the broken one (keep them in
    sync): the 3-seed ablation has 95% CIs, both ablations their floors.
    """

    def arm(iou: float, jf: float, abs_rel: float, seeds: int) -> dict:
        means = {
            "mask_iou": iou,
            "mask_jf": jf,
            "depth_abs_rel": abs_rel,
            "depth_delta1": 1.0 - abs_rel,
            "ate": 0.05 + abs_rel / 10,
            "rpe_trans": 0.01 + abs_rel / 20,
            "rpe_rot": 0.5 + abs_rel,
        }
        cis = {f"{k}_ci95": ([v - 0.02, v + 0.02] if seeds >= 3 else None) for k, v in means.items()}
        return {**means, **cis, "per_seed": [{"seed": s} for s in range(seeds)], "deterministic": None}

    def write(rel: str, metrics: object, text: str | None = None) -> None:
        folder = root / rel
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "metrics.json").write_text(text if text is not None else json.dumps(metrics, indent=2))

    write(
        "20260101-120000_ablation",
        {
            "arms": {
                "no_mask_loss": arm(0.21, 0.25, 0.31, 2),
                "bce": arm(0.48, 0.44, 0.30, 2),
                "bce_boundary_temporal": arm(0.55, 0.53, 0.29, 2),
            },
            "floors": FLOORS,
            "params": {"steps": 40, "seeds": [0, 1]},
        },
    )
    write(
        "20260102-090000_ablation",
        {
            "arms": {"bce": arm(0.51, 0.47, 0.28, 3)},
            "floors": FLOORS,
            "params": {"steps": 80, "seeds": [0, 1, 2]},
        },
    )
    write(
        "sweeps/02_mask_overlays/threshold=0.4",
        {"mask_iou": 0.33, "mask_boundary_f": 0.29, "mask_jf": 0.31, "threshold": 0.4, "params": {}},
    )
    write("20260103-000000_broken", None, text="{not json")
    return root


def _env(outputs: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PAGE4D_OUTPUTS"] = str(outputs)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


@pytest.mark.parametrize("name", NBVAL_NOTEBOOKS)
def test_committed_outputs_match_a_fresh_run_nbval(name, tmp_path):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert nb.metadata.kernelspec.name == "python3"
    stored = [c for c in nb.cells if c.cell_type == "code" and c.get("execution_count") and c.get("outputs")]
    assert len(stored) >= 3, (
        f"{name}: commit it executed (outputs + execution counts), nbval checks nothing else"
    )
    outputs = write_example_runs(tmp_path / "outputs") if name.startswith("04") else tmp_path / "outputs"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--nbval",
            str(NOTEBOOKS / name),
            "--nbval-sanitize-with",
            str(SANITIZE),
            "--nbval-kernel-name",
            "python3",
        ],
        cwd=tmp_path,
        env=_env(outputs),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"nbval failed for {name}:\n{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}"


@pytest.mark.parametrize("name", ALL_NOTEBOOKS)
def test_committed_notebooks_keep_their_figures_and_no_machine_paths(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    figures = [o for o in outputs if {"image/png", "image/jpeg"} & set(o.get("data", {}))]
    assert figures, f"{name}: committed without its figures"
    text = json.dumps(outputs)
    for bad in ("/tmp/", "/work/", "/home/", "VBox(children=", "JSONDecodeError"):
        assert bad not in text, f"{name}: stored output contains {bad!r}"


@pytest.mark.parametrize("name", ALL_NOTEBOOKS)
def test_parameters_are_annotated_and_readable_by_papermill(name):
    from page4d.notebook.params import notebook_parameters

    params = notebook_parameters(NOTEBOOKS / name)  # raises for a line papermill would skip
    assert "output_dir" in params
    for p in params.values():
        assert p.type_name in ("int", "float", "bool", "str"), (p.name, p.type_name)
        assert p.help, f"{name}: parameter {p.name} has no comment"


def _execute(name: str, tmp_path: Path, **params) -> Path:
    out_dir = tmp_path / "run"
    papermill.execute_notebook(
        str(NOTEBOOKS / name),
        str(tmp_path / name),
        parameters={"output_dir": str(out_dir), **params},
        kernel_name="python3",
        cwd=str(tmp_path),  # any working directory: notebooks resolve paths from the repo root
        progress_bar=False,
    )
    return out_dir


def _is_png(path: Path) -> bool:
    """A readable PNG of a real figure: at least 200x150 pixels and not one flat colour."""
    from PIL import Image

    if not path.is_file() or path.read_bytes()[:8] != PNG_MAGIC:
        return False
    with Image.open(path) as im:
        grey = np.asarray(im.convert("L"), dtype=np.float32)
    return im.size[0] >= 200 and im.size[1] >= 150 and float(grey.std()) > 5


def test_extract_notebook_records_keys_sign_check_and_figures(tmp_path, monkeypatch):
    monkeypatch.setenv("PAGE4D_OUTPUTS", str(tmp_path / "no_runs"))  # no ablation checkpoint: quick head
    run = _execute("01_extract_mask_logits.ipynb", tmp_path, num_times=2, num_views=2, timing_repeats=1)
    summary = json.loads((run / "summary.json").read_text())
    assert "trained here" in summary["model"]  # by default a head that learnt something, not random weights
    keys = {row["key"]: row["shape"] for row in summary["shapes"]}
    assert keys["mask_logits"] == "[1, 2, 2, 8, 11]"
    assert keys["depth"] == "[1, 2, 2, 112, 154, 1]"
    for key in ("pose_enc", "world_points", "aggregated_tokens_list", "mask_head.key_bias"):
        assert key in keys
    check = summary["sign_check"]
    assert check["max_abs_diff"] < 1e-6
    assert check["most_dynamic_patch_gets_lowest_bias"] is True
    variants = [r["variant"] for r in summary["export_cost"]]
    assert variants == ["no mask head", "mask_logits", "+ internals"]
    assert summary["export_cost"][1]["mask_logits_bytes"] == 2 * 2 * 8 * 11 * 4
    assert _is_png(run / "mask_logits_patch_grid.png") and _is_png(run / "mask_probability_image.png")
    import torch

    saved = torch.load(run / "mask_logits.pt", weights_only=True)
    assert list(saved["mask_logits"].shape) == [2, 2, 8, 11] and saved["times"] == [4, 5]  # held out
    prob = saved["mask_logits"].sigmoid()
    assert float(prob.max() - prob.min()) > 0.5, "the default maps should show a mask, not a flat field"


def test_overlay_notebook_records_scores_and_figures(tmp_path, monkeypatch):
    monkeypatch.setenv("PAGE4D_OUTPUTS", str(tmp_path / "no_runs"))  # no ablation checkpoint: quick head
    run = _execute("02_mask_overlays.ipynb", tmp_path, num_times=2, num_views=1, threshold=0.4)
    metrics = json.loads((run / "metrics.json").read_text())
    per_frame = json.loads((run / "mask_scores.json").read_text())
    assert metrics["threshold"] == 0.4
    assert len(per_frame) == 2 and {r["time"] for r in per_frame} == {4, 5}  # held out from the training
    ious = [r["IoU"] for r in per_frame]
    assert metrics["mask_iou"] == pytest.approx(sum(ious) / len(ious))
    assert 0.0 <= metrics["mask_jf"] <= 1.0
    assert metrics["mask_iou"] > 0.1, "the default model should be a trained one, not an untrained 0.000"
    assert "trained here" in metrics["model"]
    for name in ("overlays.png", "scores.png", "probability_overlay.png"):
        assert _is_png(run / name), name


def test_overlay_notebook_takes_a_frames_folder_without_gt(tmp_path, monkeypatch):
    from page4d.data import SyntheticSceneConfig, generate_synthetic_scene

    monkeypatch.setenv("PAGE4D_OUTPUTS", str(tmp_path / "no_runs"))
    scene = generate_synthetic_scene(
        tmp_path / "s", SyntheticSceneConfig(times=3, views=1, height=56, width=70)
    )
    frames = tmp_path / "clip"
    frames.mkdir()
    for t in range(3):
        (frames / f"{t:05d}.png").write_bytes((scene / "images" / f"time_{t:02d}" / "view0.png").read_bytes())
    run = _execute(
        "02_mask_overlays.ipynb", tmp_path, input=str(frames), image_height=0, image_width=70, num_views=1
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["mask_iou"] is None and metrics["params"]["input"] == str(frames)
    assert _is_png(run / "probability_overlay.png") and not (run / "mask_scores.json").exists()


def test_overlay_notebook_prefers_the_newest_ablation_checkpoint(tmp_path, monkeypatch):
    import torch
    from page4d.model import build_model, preset
    from page4d.records import mark_finished

    outputs = tmp_path / "outputs"
    ck = outputs / "20260101-000000_ablation" / "train" / "bce_seed0" / "checkpoint.pt"
    ck.parent.mkdir(parents=True)
    torch.manual_seed(5)
    torch.save({"model": build_model(preset("tiny")).state_dict(), "config": {"preset": "tiny"}}, ck)
    mark_finished(ck.parent, "train")
    mark_finished(outputs / "20260101-000000_ablation", "notebook")
    monkeypatch.setenv("PAGE4D_OUTPUTS", str(outputs))
    run = _execute("02_mask_overlays.ipynb", tmp_path, num_times=1, num_views=1)
    note = json.loads((run / "metrics.json").read_text())["model"]
    assert (
        "outputs/20260101-000000_ablation/train/bce_seed0/checkpoint.pt" in note
        and "all keys matched" in note
    )


def test_compare_notebook_reads_every_run_folder(tmp_path):
    root = write_example_runs(tmp_path / "runs")
    run = _execute("04_compare_runs.ipynb", tmp_path, runs_root=str(root))
    comparison = json.loads((run / "comparison.json").read_text())
    labels = [(r["run"], r["arm"]) for r in comparison["rows"]]
    assert labels == [
        ("20260101-120000_ablation", "no_mask_loss"),
        ("20260101-120000_ablation", "bce"),
        ("20260101-120000_ablation", "bce_boundary_temporal"),
        ("20260102-090000_ablation", "bce"),
        ("sweeps/02_mask_overlays/threshold=0.4", "-"),
    ]
    assert comparison["rows"][3]["seeds"] == 3 and comparison["rows"][2]["mask_iou"] == 0.55
    assert _is_png(run / "comparison.png")
    executed = nbformat.read(tmp_path / "04_compare_runs.ipynb", as_version=4)
    text = "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert "skipped 20260103-000000_broken" in text
    tables = [o["data"]["text/html"] for c in executed.cells if c.cell_type == "code" for o in c.outputs
              if "text/html" in o.get("data", {})]  # fmt: skip
    assert len(tables) == 1, "one comparison table, as HTML (a DataFrame)"
    assert "mask_iou ±" in tables[0] and "±0.0200" in tables[0]  # the 3-seed run's CI, its own column
    assert tables[0].count("floor: all dynamic") == 2  # each ablation's floors, as rows


def test_reconstruction_notebook_writes_an_offline_viewer_point_clouds_and_a_picture(tmp_path):
    plyfile = pytest.importorskip("plyfile")
    run = _execute(
        "05_reconstruction_4d.ipynb",
        tmp_path,
        num_times=2,
        num_views=2,
        image_height=56,
        image_width=70,
        viewer_points=300,
        html_points=500,
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["points_per_time"] == [2 * 56 * 70] * 2 and metrics["points"] == 2 * 2 * 56 * 70
    assert "all keys matched" in metrics["model"]  # the shipped tiny-pos weights, not a random init
    assert "tiny-pos" in metrics["model"] and "conv_pos" in metrics["model"]  # embedding from its keys
    for t, count in enumerate(metrics["points_per_time"]):
        assert plyfile.PlyData.read(str(run / f"points_t{t:02d}.ply"))["vertex"].count == count
    static = plyfile.PlyData.read(str(run / "static_map.ply"))["vertex"]
    assert static.count == metrics["static_map_points"] > 0
    assert metrics["static_map_kept_share"] == pytest.approx(static.count / metrics["points"], abs=1e-6)
    assert float(static["p_dynamic"].max()) < metrics["static_map_threshold"]
    html = (run / "reconstruction_4d.html").read_text()
    assert not re.findall(r"<script[^>]*\bsrc=", html), "the HTML must open offline: no <script src=...>"
    assert "plotly" in html.lower() and len(html) > 1_000_000  # plotly.js inlined
    assert _is_png(run / "reconstruction_4d.png")
    executed = nbformat.read(tmp_path / "05_reconstruction_4d.ipynb", as_version=4)
    kinds = {k for c in executed.cells if c.cell_type == "code" for o in c.outputs for k in o.get("data", {})}
    assert {"application/vnd.plotly.v1+json", "image/png"} <= kinds


def test_ablation_on_the_real_capture_bce_beats_no_supervision_on_held_out_frames(tmp_path):
    """CI-sized: train on mv_scene's first 12 steps, evaluate on its last 4; mask terms only, so `none`
    has nothing to train and must come back named `untrained`."""
    from conftest import MV_SCENE

    run = _execute(
        "03_ablation_mask_supervision.ipynb",
        tmp_path,
        train_root=str(MV_SCENE),
        arms="none,bce",
        seeds="0",
        steps=150,
        geometry=False,
        trains="mask_head",
        lr=0.005,  # a head trained alone (the default 1e-3 is the answer's fine-tuning rate)
        threads=1,
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["params"]["eval_times_used"] == [12, 13, 14, 15]
    assert metrics["params"]["train_times_used"] == list(range(12))
    assert list(metrics["arms"]) == ["untrained", "bce"]
    untrained, bce = metrics["arms"]["untrained"], metrics["arms"]["bce"]
    assert bce["mask_ap"] > untrained["mask_ap"] + 0.1, (bce["mask_ap"], untrained["mask_ap"])
    assert bce["mask_ap"] > metrics["floors"]["all_dynamic"]["mask_ap"] + 0.1
    assert untrained["per_seed"][0]["trained_steps"] == 0
    assert bce["per_seed"][0]["mask_frames"] == 16
    for png in ("ablation_metrics.png", "training_loss.png", "held_out_overlays.png"):
        assert _is_png(run / png), png


# --------------------------------------------------------------------------------------------------
# one parameter check for every way a notebook runs (issue 22)
# --------------------------------------------------------------------------------------------------
TINY_ABLATION = dict(
    arms="none", seeds="0", steps=1, image_height=28, image_width=42, threads=1, pool_scenes=2, eval_scenes=1
)


def test_papermill_string_false_turns_geometry_off(tmp_path):
    """`papermill ... -p geometry false` injects the string "false"; the notebook's first cell after its
    parameters makes it False (and "1e-3" a float), as `page4d.main -p geometry false` does."""
    run = _execute(
        "03_ablation_mask_supervision.ipynb", tmp_path, geometry="false", lr="1e-3", **TINY_ABLATION
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["params"]["geometry"] is False and metrics["params"]["lr"] == 0.001
    assert list(metrics["arms"]) == ["untrained"]  # `none` without geometry has nothing to train


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"geometry": "maybe"}, "parameter geometry (bool): cannot parse 'maybe'"),
        ({"steps": 2.5}, "parameter steps (int): got 2.5 (float)"),
        ({"geometri": "false"}, "unknown parameter(s) ['geometri']"),
    ],
)
def test_a_value_that_does_not_fit_stops_the_notebook_naming_the_parameter(tmp_path, bad, message):
    with pytest.raises(papermill.PapermillExecutionError) as err:
        _execute("03_ablation_mask_supervision.ipynb", tmp_path, **{**TINY_ABLATION, **bad})
    assert err.value.ename == "ParameterError" and message in err.value.evalue
    assert not (tmp_path / "run").exists(), "refused before the run folder was made"


@pytest.mark.parametrize("name", ALL_NOTEBOOKS)
def test_every_notebook_checks_its_parameters_first(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    assert "coerce_parameters(globals())" in code[1].source and not code[1].get("outputs")


def test_page4d_main_the_sweep_and_plain_papermill_accept_and_refuse_the_same_values():
    """The runners parse command-line text (`parse_value`); papermill's CLI turns text into Python values
    its own way (`_resolve_type`: "0" -> 0, "1e-3" -> 0.001, "false" stays text) and the notebook's first
    cell converts those (`coerce_value`). Both paths give the same value of the same type, or both refuse."""
    from page4d.notebook.params import NotebookParameter, ParameterError, coerce_value, parse_value
    from papermill.cli import _resolve_type

    texts = ["true", "false", "True", "False", "0", "1", "2", "yes", "off", "maybe", "", "None",
             "1e-3", "0.5", "-3", "nan", "inf", "1_000"]  # fmt: skip
    for kind in ("bool", "int", "float"):
        param = NotebookParameter("p", kind, "", "")
        for text in texts:
            results = []
            for convert in (parse_value, lambda t, p: coerce_value(_resolve_type(t), p)):
                try:
                    value = convert(text, param)
                    results.append((type(value).__name__, value))
                except ParameterError as exc:
                    assert "parameter p (" in str(exc)
                    results.append("refused")
            assert results[0] == results[1], (kind, text, results)


def test_coerce_parameters_converts_in_place_and_refuses_unknown_injected_names():
    from page4d.notebook.params import ParameterError, coerce_parameters

    namespace = {
        "__annotations__": {"geometry": bool, "lr": float, "steps": int, "seeds": str},
        "geometry": "false", "lr": 1, "steps": "3", "seeds": 0,
        "In": ["", "geometry: bool = True ...", '# Parameters\ngeometry = "false"\nlr = 1\n', "<this cell>"],
    }  # fmt: skip
    coerce_parameters(namespace)
    assert (namespace["geometry"], namespace["lr"], namespace["steps"], namespace["seeds"]) == (
        False,
        1.0,
        3,
        "0",
    )
    assert type(namespace["lr"]) is float
    namespace["In"][-2] = '# Parameters\ngeometri = "false"\n'
    with pytest.raises(
        ParameterError, match=r"unknown parameter\(s\) \['geometri'\]; this notebook declares"
    ):
        coerce_parameters(namespace)
