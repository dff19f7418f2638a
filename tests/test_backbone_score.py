"""Scoring any weights on a recipe's held-out scenes reproduces the shipped card's numbers for the
shipped weights, and says which targets are met."""

from __future__ import annotations

import json
from importlib import resources

import pytest
from page4d.experiments.backbone_score import main, score_backbone, summary_lines


def test_the_shipped_backbone_scores_its_cards_first_heldout_scene(capsys):
    card = json.loads(resources.files("page4d.weights").joinpath("tiny-stream.json").read_text())
    result = score_backbone("tiny-stream", "tiny-stream", scenes=1)
    expected, got = card["heldout"]["pretrained"]["per_scene"][0], result["per_scene"][0]
    for key in ("depth_abs_rel", "depth_delta1", "rpe_rot", "rpe_view_rot"):
        assert got[key] == pytest.approx(expected[key], rel=1e-3, nan_ok=True), key
    assert result["scenes"] == 1 and set(result["targets"]) == {
        "rpe_rot", "rpe_view_rot", "depth_abs_rel", "depth_delta1"
    }  # fmt: skip
    assert result["targets"]["depth_abs_rel"]["value"] == pytest.approx(got["depth_abs_rel"])
    lines = summary_lines(result)
    assert any("rpe_view_rot" in line and "identity floor" in line for line in lines)


def test_a_pool_recipe_is_refused_by_name():
    with pytest.raises(ValueError, match="tiny-synthetic"):
        score_backbone("tiny-stream", "tiny-synthetic", scenes=1)


def test_the_command_writes_the_scores(tmp_path, capsys):
    assert main(["tiny-stream", "--scenes", "1", "--out", str(tmp_path / "s.json")]) == 0
    assert "depth_abs_rel" in capsys.readouterr().out
    assert json.loads((tmp_path / "s.json").read_text())["scenes"] == 1
