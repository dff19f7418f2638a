"""The movers-vs-cameras study: paired rooms (same walls and cameras, only the movers change), coverage
near its targets, per-bin CIs and paired differences, a figure and a table, as a command."""

from __future__ import annotations

import json
import math

import numpy as np
from page4d.data import render_synthetic_scene
from page4d.experiments.phenomenon import METRICS, StudyConfig, main, room_config, summarize, variant


def test_a_rooms_variants_differ_only_in_their_movers():
    study = StudyConfig(image_size=(56, 70))
    still = render_synthetic_scene(room_config(study, 0))
    moving_cfg, coverage, moving = variant(study, 0, 0.25)
    assert np.array_equal(still.extrinsics, moving.extrinsics) and moving_cfg.num_movers == 2
    static_pixels = ~moving.exact_masks
    assert np.array_equal(still.images[static_pixels], moving.images[static_pixels])  # same walls
    assert 0.1 < coverage < 0.4 and not still.exact_masks.any()


def test_summary_pairs_each_room_with_itself_without_movers():
    rows = []
    for room, base in enumerate([1.0, 2.0, 4.0]):
        for target, extra in ((0.0, 0.0), (0.25, 10.0)):
            rows.append(
                {
                    "room": room,
                    "target": target,
                    "coverage": target,
                    **{k: base + extra + room * 0.1 for k in METRICS},
                }
            )
    bins = summarize(rows, (0.0, 0.25))
    assert bins[1]["rpe_rot_minus_static"]["mean"] == 10.0 and bins[1]["rpe_rot_minus_static"]["n"] == 3
    assert bins[1]["rpe_rot_minus_static"]["ci"] == [10.0, 10.0]  # paired: the rooms' spread cancels
    assert bins[0]["rpe_rot"]["ci"][0] < 2.4 < bins[0]["rpe_rot"]["ci"][1]


def test_the_command_writes_a_table_a_figure_and_metrics(tmp_path, monkeypatch, capsys):
    import page4d.experiments.phenomenon as ph

    monkeypatch.setattr(ph, "StudyConfig", lambda: StudyConfig(image_size=(56, 70), coverages=(0.0, 0.25)))
    main(["--checkpoint", "tiny-synthetic", "--out", str(tmp_path / "p"), "--rooms", "2"])
    metrics = json.loads((tmp_path / "p" / "metrics.json").read_text())
    assert len(metrics["rows"]) == 4 and [b["target"] for b in metrics["bins"]] == [0.0, 0.25]
    fig = ph.figure(metrics["bins"])
    assert [ax.get_title() for ax in fig.axes] == list(METRICS)
    line = fig.axes[0].lines[0]  # the errorbar's data line: realised coverage (%) vs mean RPE-r
    assert np.allclose(line.get_xdata(), [100 * b["coverage"] for b in metrics["bins"]])
    assert np.allclose(line.get_ydata(), [b["rpe_rot"]["mean"] for b in metrics["bins"]])
    assert (tmp_path / "p" / "phenomenon.png").read_bytes()[:4] == b"\x89PNG"
    assert "| moving pixels | rooms |" in (tmp_path / "p" / "phenomenon.md").read_text()
    assert (tmp_path / "p" / "DONE.json").is_file() and "Paired change" in capsys.readouterr().out


def test_the_command_studies_monocular_videos_too(tmp_path, monkeypatch):
    import page4d.experiments.phenomenon as ph

    monkeypatch.setattr(ph, "StudyConfig", lambda: StudyConfig(image_size=(56, 70), coverages=(0.0, 0.25)))
    argv = ["--checkpoint", "tiny-synthetic", "--out", str(tmp_path / "m"), "--rooms", "1"]
    metrics = main([*argv, "--views", "1", "--times", "4", "--orbit-deg", "4"])
    assert (metrics["config"]["views"], metrics["config"]["times"], metrics["config"]["orbit_deg"]) == (
        1,
        4,
        4.0,
    )
    rows = metrics["rows"]
    assert all(math.isnan(r["rpe_view_rot"]) and math.isfinite(r["rpe_rot"]) for r in rows)


def test_mover_influence_measures_changes_against_the_clean_room_and_restores_the_head():
    from page4d.experiments.phenomenon import INFLUENCE_ARMS, influence_table, mover_influence
    from page4d.inference.loading import load_model

    model, _ = load_model("tiny", "tiny-synthetic")
    head = model.aggregator.spatial_mask_head
    before = (head.soft_mask_bias, head.all_rows)
    study = StudyConfig(image_size=(56, 70), times=3, views=2)
    result = mover_influence(model, rooms=1, study=study, target=0.25)
    assert (head.soft_mask_bias, head.all_rows) == before  # the experiment's bias settings are undone
    assert [r["arm"] for r in result["rows"]] == list(INFLUENCE_ARMS)
    movers = result["summary"]["movers"]
    assert movers["rot_deg"]["mean"] > 0 and movers["depth_rel"]["mean"] > 0
    hard_all = result["rows"][-1]
    assert hard_all["depth_rel"] != result["rows"][0]["depth_rel"]  # all rows reach the patch tokens
    assert "| oracle_hard_all |" in influence_table(result)
