"""Scoring any weights on a recipe's held-out scenes reproduces the shipped card's numbers for the
shipped weights, and says which targets are met."""

from __future__ import annotations

import json
from importlib import resources

import pytest
import torch
from page4d.experiments.backbone_score import main, score_backbone, summary_lines
from page4d.experiments.camera_probe import ProbeConfig, probe_model
from page4d.experiments.pretrain import initial_model
from page4d.model import CheckpointError


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
    # the first held-out scene is a rig: its views against view 0, GT angle and error, split by gap
    pairs = result["rig_view_pairs"]
    assert (
        len(pairs["gt_deg"]) == got["views"] - 1
        and pairs["error_deg"] == expected["camera_frames"][0]["rot_deg"][1 : got["views"]]
    )
    assert sum(b["clips"] for b in result["rig_view_pairs_by_gap"]) == got["views"] - 1
    assert any("by gap" in line for line in lines)


def test_the_rig_view_pairs_gt_angles_are_the_scene_s_and_agree_with_the_card_s_identity_floor():
    """The pairs' GT angles are read from the rendered scene, not assumed: their RMSE is the identity
    floor the evaluation computes independently (from the batch's extrinsics)."""
    result = score_backbone("tiny-stream", "tiny-stream", scenes=1)
    scene = result["per_scene"][0]
    floor = scene["camera_floor"]["rpe_view_rot"]
    gt = result["rig_view_pairs"]["gt_deg"]
    assert all(20.0 - 1.0 <= g <= 180.0 for g in gt)  # neighbouring gaps are at least 20 degrees
    # the card's identity floor is the RMSE over the view pairs of both time steps; at t = 0 they are
    # these angles (a static or slowly orbiting rig keeps them), so their RMSE lies near it
    assert (sum(g * g for g in gt) / len(gt)) ** 0.5 == pytest.approx(floor, rel=0.1)


def test_a_pool_recipe_is_refused_by_name():
    with pytest.raises(ValueError, match="tiny-synthetic"):
        score_backbone("tiny-stream", "tiny-synthetic", scenes=1)


def test_the_command_writes_the_scores(tmp_path, capsys):
    assert main(["tiny-stream", "--scenes", "1", "--out", str(tmp_path / "s.json")]) == 0
    assert "depth_abs_rel" in capsys.readouterr().out
    assert json.loads((tmp_path / "s.json").read_text())["scenes"] == 1


def test_weights_of_the_conv_stem_are_scored_with_it_read_from_their_keys_and_refused_as_another(tmp_path):
    path = tmp_path / "stem.pt"
    torch.save({"model": initial_model(3, "conv_stem").state_dict()}, path)
    result = score_backbone(path, scenes=1)  # auto: the keys say conv_stem
    assert result["patch_embed"] == "conv_stem" and result["scenes"] == 1
    named = score_backbone(path, scenes=1, patch_embed="conv_stem")
    assert named["per_scene"][0]["depth_abs_rel"] == result["per_scene"][0]["depth_abs_rel"]
    with pytest.raises(CheckpointError, match="aggregator.patch_embed.stem"):
        score_backbone(path, scenes=1, patch_embed="conv")
    probe = probe_model(ProbeConfig(init=str(path), patch_embed="conv_stem"))
    assert torch.equal(
        probe.state_dict()["aggregator.patch_embed.stem.0.weight"],
        initial_model(3, "conv_stem").state_dict()["aggregator.patch_embed.stem.0.weight"],
    )


def test_scenes_past_the_card_s_are_the_same_held_out_range_and_scored_from_the_index_asked():
    """`first` picks held-out scenes by index: index 1 scored alone is the card's second scene, and
    index 16 (past the card's 16) is a scene of the same never-trained range that no card scored."""
    card = json.loads(resources.files("page4d.weights").joinpath("tiny-stream.json").read_text())
    second = score_backbone("tiny-stream", "tiny-stream", scenes=1, first=1)
    expected = card["heldout"]["pretrained"]["per_scene"][1]
    assert second["per_scene"][0]["depth_abs_rel"] == pytest.approx(expected["depth_abs_rel"], rel=1e-3)
    assert second["first_scene"] == 1 and "from index 1" in summary_lines(second)[0]
    seeds = [s["seed"] for s in card["heldout_scenes"]]
    assert second["scene_seeds"] == [seeds[1]]
    past = score_backbone("tiny-stream", "tiny-stream", scenes=3, first=16)
    assert past["scenes"] == 3 and len(past["scene_seeds"]) == 3 and not set(past["scene_seeds"]) & set(seeds)
    assert all(ci is None or ci[0] <= past["targets"][k]["value"] <= ci[1]
               for k, ci in past["ci95_over_scenes"].items())  # fmt: skip
    assert past["ci95_over_scenes"]["depth_abs_rel"] is not None  # 3 scenes: a t-interval
    with pytest.raises(ValueError, match="needs scenes > 0"):
        score_backbone("tiny-stream", "tiny-stream", first=16)
    with pytest.raises(ValueError, match="must be >= 0, got first=-1"):
        score_backbone("tiny-stream", "tiny-stream", scenes=1, first=-1)
