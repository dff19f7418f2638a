"""report.tables' DataFrames for notebooks: numbers stay numbers (sortable, filterable), a metric's 95% CI
half-width and a paired difference's CI bounds are their own columns, floors are rows of their own kind,
and `styled` only formats. The ablation metrics are made by the ablation's own statistics
(`summarize_arms`) from synthetic cells, so the frames read the format notebook 03 writes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from page4d.experiments.ablation_stats import summarize_arms
from page4d.records import find_runs
from page4d.report import tables
from page4d.scoring.evaluate import coverage_entry

SEEDS = (0, 1, 2)
AP = {"untrained": [0.30, 0.30, 0.30], "none": [0.20, 0.25, 0.30], "bce": [0.74, 0.75, 0.76]}


def _cell(arm: str, seed: int) -> dict:
    trained = arm != "untrained"
    result = {
        "mask_ap": AP[arm][seed],
        "mask_iou": 0.5 * AP[arm][seed],
        "ate": 1.0 + 0.1 * seed,
        "coverage": {
            "mask": coverage_entry(2, [], frames=16 - (arm == "none" and seed == 1), frames_of=16),
            "depth": coverage_entry(2, []),
            "camera": coverage_entry(2, []),
        },
    }
    return {
        "status": "ok",
        "result": result,
        "init_digest": "same" if not trained else f"init{seed}",
        "trained_steps": 5 if trained else 0,
        "seconds": 1.0,
    }


@pytest.fixture(scope="module")
def metrics() -> dict:
    cells = {(arm, s): _cell(arm, s) for arm in AP for s in SEEDS}
    arms = summarize_arms(list(AP), SEEDS, cells, baseline="none", unpaired=("untrained",))
    floors = {
        "all_dynamic": {"mask_ap": 0.178, "mask_iou": 0.178, "mask_frames": 16, "gt_dynamic_share": 0.178},
        "all_static": {"mask_ap": 0.178, "mask_iou": 0.0, "mask_frames": 16, "gt_dynamic_share": 0.178},
    }
    return json.loads(json.dumps({"arms": arms, "floors": floors, "baseline": "none", "params": {}}))


def test_arm_frame_keeps_numbers_numeric_with_ci_half_widths_and_floors_set_apart(metrics):
    df = tables.arm_frame(metrics, {"mask_ap": "AP", "mask_iou": "IoU"}, coverage="mask")
    assert list(df.index) == ["untrained", "none", "bce", "floor: all dynamic", "floor: all static"]
    assert df.index.name == "arm"
    assert list(df.columns) == ["kind", "seeds", "deterministic", "n", "of", "AP", "AP ±", "IoU", "IoU ±"]
    assert all(df[c].dtype == np.float64 for c in ("AP", "AP ±", "IoU", "IoU ±"))
    assert list(df["kind"]) == ["arm"] * 3 + ["floor"] * 2
    assert df.loc["bce", "AP"] == pytest.approx(0.75)
    lo, hi = metrics["arms"]["bce"]["mask_ap_ci95"]
    assert df.loc["bce", "AP ±"] == pytest.approx((hi - lo) / 2) and df.loc["bce", "AP ±"] > 0
    # a deterministic arm (nothing trained, one starting model) has one value and no ±
    assert bool(df.loc["untrained", "deterministic"]) and np.isnan(df.loc["untrained", "AP ±"])
    assert df.loc["untrained", "AP"] == pytest.approx(0.30)
    assert (int(df.loc["none", "n"]), int(df.loc["none", "of"])) == (15, 16)  # the fewest over the seeds
    assert df.loc["floor: all static", "IoU"] == 0.0 and pd.isna(df.loc["floor: all static", "seeds"])
    assert list(df.sort_values("AP", ascending=False).index[:2]) == ["bce", "untrained"]  # sortable
    assert "gt_dynamic_share" not in tables.arm_frame(metrics).columns  # a property, not a metric


def test_arm_frame_counts_several_families_and_leaves_out_floors_without_these_metrics(metrics):
    df = tables.arm_frame(metrics, {"ate": "ATE"}, coverage=("depth", "camera"))
    assert list(df.index) == list(AP)  # the floors score masks only
    assert list(df.columns) == ["seeds", "deterministic", "n depth", "of depth", "n camera", "of camera"] + [
        "ATE",
        "ATE ±",
    ]
    assert df.loc["bce", ["n depth", "of depth"]].tolist() == [2, 2]


def test_arm_frame_of_a_plain_metrics_file_is_one_row_without_ablation_columns():
    df = tables.arm_frame({"mask_iou": 0.3, "threshold": 0.4, "note": "text", "params": {}})
    assert list(df.index) == ["-"] and list(df.columns) == ["mask_iou", "threshold"]
    assert df.loc["-", "threshold"] == 0.4


def test_paired_frame_has_the_mean_difference_and_its_ci_bounds_as_numbers(metrics):
    df = tables.paired_frame(metrics, {"mask_ap": "AP", "mask_iou": "IoU"})
    assert df.index.name == "arm - none" and list(df.index) == ["bce"]  # untrained is not paired
    assert list(df.columns) == ["seeds paired", "AP", "AP lo", "AP hi", "IoU", "IoU lo", "IoU hi"]
    d = metrics["arms"]["bce"]["paired_vs_none"]["mask_ap"]
    assert df.loc["bce", "AP"] == pytest.approx(d["mean"]) and int(df.loc["bce", "seeds paired"]) == 3
    assert [df.loc["bce", "AP lo"], df.loc["bce", "AP hi"]] == pytest.approx(d["ci95"])
    assert tables.paired_frame(metrics, ["mask_ap"], baseline="nobody").empty
    named = tables.paired_frame(metrics, ("mask_iou",), labels={"mask_ap": "AP", "mask_iou": "IoU"})
    assert list(named.columns) == ["seeds paired", "IoU", "IoU lo", "IoU hi"]


def test_comparison_frame_indexes_runs_and_arms_and_keeps_each_runs_floors_after_its_arms(metrics, tmp_path):
    for name, data in {"a_ablation": metrics, "sweeps/b": {"mask_iou": 0.3, "params": {}}}.items():
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "metrics.json").write_text(json.dumps(data))
    runs = find_runs(tmp_path).runs
    df = tables.comparison_frame(runs, preferred=["mask_iou"])
    assert df.index.names == ["run", "arm"]
    assert list(df.index) == [("a_ablation", a) for a in AP] + [
        ("a_ablation", "floor: all dynamic"),
        ("a_ablation", "floor: all static"),
        ("sweeps/b", "-"),
    ]
    assert list(df.columns) == [
        "kind",
        "seeds",
        "deterministic",
        "mask_iou",
        "mask_iou ±",
        "ate",
        "ate ±",
        "mask_ap",
        "mask_ap ±",
    ]
    assert df.loc[("sweeps/b", "-"), "kind"] == "arm" and pd.isna(df.loc[("sweeps/b", "-"), "seeds"])
    arms_only = df[df["kind"] == "arm"]
    assert len(arms_only) == 4 and df.xs("bce", level="arm")["mask_ap"].item() == pytest.approx(0.75)
    rows = tables.comparison_rows(runs)  # the same numbers as the plain-text rows
    assert [r["mask_iou"] for r in rows] == list(arms_only["mask_iou"])
    assert list(tables.comparison_frame([], preferred=["mask_iou"]).columns) == ["kind"]


def test_to_dataframe_turns_numbers_written_as_text_back_into_numbers():
    rows = [
        {"arm": "none", "view0": "0.067", "view1": "-", "seeds": 3, "n": "frames 16/16"},
        {"arm": "bce", "view0": "0.553", "view1": "0.311", "seeds": 3, "n": "frames 15/16"},
    ]
    df = tables.to_dataframe(rows, index="arm")
    assert df["view0"].dtype == np.float64 and df.loc["bce", "view0"] == 0.553
    assert np.isnan(df.loc["none", "view1"]) and df["n"].dtype != np.float64  # text stays text
    assert df["seeds"].dtype == np.float64 and list(tables.to_dataframe(rows).columns)[0] == "arm"


def test_styled_formats_for_reading_without_changing_the_frame(metrics):
    df = tables.arm_frame(metrics, {"mask_ap": "AP"}, coverage="mask")
    before = df.copy()
    assert df.attrs["notes"] == ["GT dynamic share 0.178"]  # from the floors, shown under the table
    html = tables.styled(df, digits=3, notes=["a <note>"]).to_html()
    half = df.loc["bce", "AP ±"]
    assert f"±{half:.3f}" in html and "0.750" in html
    assert "nan" not in html.lower().replace("tabular-nums", "")  # missing values are blank
    assert "font-style: italic" in html  # the floors
    assert "GT dynamic share 0.178" in html and "a &lt;note&gt;" in html
    assert html == tables.styled(df, digits=3, notes=["a <note>"]).to_html()
    pd.testing.assert_frame_equal(df, before)
