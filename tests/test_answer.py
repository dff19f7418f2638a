"""The answer experiment (issue 20): fine-tune on a pool of generated dynamic videos, score on other
ones, arms paired by seed with `none` and with `no_mask`; the oracles' bias settings; the pooled scorer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from page4d.data import scene_to_batch
from page4d.experiments import ablation_report
from page4d.experiments.ablation import (
    HARD_REACH,
    AblationParams,
    arm_setup,
    initial_model,
    resolve_arms,
    run_ablation,
    train_config,
)
from page4d.experiments.dynamic_pool import (
    EVAL_SEED_BASE,
    TRAIN_SEED_BASE,
    PoolRecipe,
    moving_share,
    pool_scenes,
    scene_config,
)
from page4d.experiments.scene_stream import HELDOUT_SEED_BASE
from page4d.model.attention import RowGatedKeyBias, masked_sdpa
from page4d.scoring.evaluate import MASK_KEYS, evaluate, evaluate_scenes, oracle_logits

SIZE = (56, 70)
RECIPE = PoolRecipe(train_scenes=2, eval_scenes=2, times=3, image_size=SIZE)


def test_the_pool_draws_from_seed_ranges_that_nothing_else_draws():
    """Training and held-out videos come from disjoint ranges, apart from pretraining's stream (seeds
    below 10^6 per recipe) and its held-out static scenes (10^8 + index)."""
    train = [scene_config(RECIPE, i).seed for i in range(50)]
    held = [scene_config(RECIPE, j, heldout=True).seed for j in range(50)]
    assert train[0] == TRAIN_SEED_BASE and held[0] == EVAL_SEED_BASE and not set(train) & set(held)
    assert all(s >= 2 * HELDOUT_SEED_BASE for s in train + held)
    assert scene_config(RECIPE, 3) == scene_config(RECIPE, 3)  # a pure function of (recipe, index)
    configs = [scene_config(PoolRecipe(), i) for i in range(20)]
    assert all(c.views == 1 and c.num_movers >= 2 and c.camera_motion in ("orbit", "dolly") for c in configs)


def test_the_noisy_twin_has_the_same_pixels_and_cameras_and_other_masks():
    exact, noisy = pool_scenes(RECIPE), pool_scenes(RECIPE, noisy=True)
    for a, b in zip(exact, noisy, strict=True):
        assert torch.equal(a.images, b.images) and torch.equal(a.extrinsics, b.extrinsics)
        assert torch.equal(a.depths, b.depths)
    assert any(not torch.equal(a.masks, b.masks) for a, b in zip(exact, noisy, strict=True))
    assert 0.05 < moving_share(exact) < 0.6  # movers are large, not the whole picture


def test_evaluate_scenes_is_the_mean_of_each_scene_scored_alone():
    torch.manual_seed(0)
    model = initial_model(train_config(AblationParams(image_size=SIZE), "none", 0)).eval()
    scenes = pool_scenes(RECIPE, heldout=True)
    pooled = evaluate_scenes(model, scenes, with_floors=True)
    alone = [evaluate(model, s, clip_times=s.num_times, with_floors=True) for s in scenes]
    for key in ("mask_ap", "depth_abs_rel", "rpe_rot", "camera_rot_deg_median"):
        assert pooled[key] == pytest.approx(np.mean([r[key] for r in alone]), rel=1e-12)
    assert pooled["floors"]["all_static"]["mask_ap"] == pytest.approx(
        np.mean([r["floors"]["all_static"]["mask_ap"] for r in alone])
    )
    assert pooled["scenes"] == 2 and pooled["coverage"]["camera"]["of"] == 2
    assert pooled["coverage"]["mask"]["frames_of"] == 2 * RECIPE.times
    assert [len(s["camera_frames"][0]["rot_deg"]) for s in pooled["per_scene"]] == [RECIPE.times] * 2


def test_the_hard_oracle_reaches_its_bias_and_all_rows_biases_patch_queries_too():
    params = AblationParams(image_size=SIZE)
    scene = pool_scenes(RECIPE, heldout=True)[0]
    batch = scene_to_batch(scene, times=scene.times, world_frame="first_camera")
    logits = oracle_logits(batch, 14)
    outputs = {}
    for arm in ("oracle", "oracle_hard", "oracle_hard_all"):
        model = initial_model(train_config(params, arm, 0), arm_setup(arm)).eval()
        head = model.aggregator.spatial_mask_head
        out = head.bias_from_dynamic_logits(torch.full((1, 1, 4, 5), 8.0), 1 + 4 * 5, 1)
        outputs[arm] = (float(out.key_bias.min().detach()), head.all_rows)
        with torch.no_grad():
            outputs[arm] += (model(batch.images, given_mask_logits=logits)["depth"],)
    assert outputs["oracle"][0] == pytest.approx(-0.5 * math.log(2), rel=1e-3)  # the preset's nudge
    assert outputs["oracle_hard"][0] == pytest.approx(-HARD_REACH, rel=1e-3)
    assert (outputs["oracle_hard"][1], outputs["oracle_hard_all"][1]) == (False, True)
    # patch rows: only the all-rows variant changes what the patch tokens (and so depth) see
    assert not torch.equal(outputs["oracle_hard"][2], outputs["oracle_hard_all"][2])


def test_an_all_rows_bias_is_the_dense_bias_on_every_row():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 4) for _ in range(3))
    key_bias = torch.randn(2, 7)
    bias = RowGatedKeyBias(rows=torch.arange(7), row_gain=torch.ones(2, 7), key_bias=key_bias)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias.dense(7))
    torch.testing.assert_close(masked_sdpa(q, k, v, bias), expected)


@pytest.fixture(scope="module")
def pool_run(tmp_path_factory) -> dict:
    torch.set_num_threads(1)
    params = AblationParams(
        arms=("untrained", "no_mask", "none", "bce_noisy", "oracle_hard_all"),
        seeds=(0, 1),
        steps=2,
        image_size=SIZE,
        pool_scenes=2,
        eval_scenes=2,
        pool_times=3,
        clip_times=2,
        lr=1e-3,
        output_dir=str(tmp_path_factory.mktemp("answer") / "run"),
    )
    return run_ablation(params, progress=False, log=None)


def test_pool_arms_pair_with_none_and_no_mask_and_start_from_the_same_weights(pool_run):
    arms = pool_run["arms"]
    assert pool_run["failed"] == [] and pool_run["baselines"] == ["none", "no_mask"]
    for seed in (0, 1):
        digests = {r["init_digest"] for a in arms.values() for r in a["per_seed"] if r["seed"] == seed}
        assert len(digests) == 1
    assert set(arms["bce_noisy"]) >= {"paired_vs_none", "paired_vs_no_mask"}
    assert "paired_vs_none" in arms["no_mask"] and "paired_vs_no_mask" in arms["none"]
    assert "paired_vs_none" not in arms["untrained"]
    pool = pool_run["params"]["pool"]
    assert len(pool["train_seeds"]) == 2 and pool["noisy_moving_share"] is not None
    for seed in (0, 1):  # the noisy arm draws the same clips as the others
        orders = {a["per_seed"][seed]["clip_order_digest"] for n, a in arms.items() if n != "untrained"}
        assert len(orders) == 1


def test_the_oracle_has_geometry_but_no_mask_scores(pool_run):
    oracle = pool_run["arms"]["oracle_hard_all"]["per_seed"][0]
    assert all(math.isnan(oracle[k]) for k in MASK_KEYS) and "GT" in oracle["mask_missing_reason"]
    assert math.isfinite(oracle["depth_abs_rel"]) and math.isfinite(oracle["rpe_rot"])
    assert math.isfinite(pool_run["arms"]["bce_noisy"]["per_seed"][0]["mask_ap"])


def test_the_report_shows_pairs_against_both_baselines_and_every_frames_camera_error(pool_run):
    vs_none = ablation_report.paired_geometry_rows(pool_run)
    vs_control = ablation_report.paired_geometry_rows(pool_run, baseline="no_mask")
    assert {r["arm - none"] for r in vs_none} == {"no_mask", "bce_noisy", "oracle_hard_all"}
    assert {r["arm - no_mask"] for r in vs_control} == {"none", "bce_noisy", "oracle_hard_all"}
    frames = ablation_report.camera_frame_rows(pool_run)
    assert [r["arm"] for r in frames] == list(pool_run["arms"])
    assert [k for k in frames[0] if k.startswith("t")] == [f"t{t}" for t in range(1, RECIPE.times)]


def test_noisy_labels_need_the_generated_pool():
    with pytest.raises(ValueError, match="bce_noisy.*pool_scenes"):
        resolve_arms(AblationParams(arms=("none", "bce_noisy"), pool_scenes=0))
    with pytest.raises(ValueError, match="bce_noisy.*generated pool"):
        resolve_arms(AblationParams(arms=("none", "bce_noisy"), train_root="my_scene"))
    assert resolve_arms(AblationParams(arms=("none", "bce_noisy")))[0] == ["none", "bce_noisy"]


def test_the_identity_camera_floor_is_the_gt_motion_itself():
    """The floor "every camera is the first one" errs by exactly the GT rotation between frames: its RPE-r
    is the RMSE of the GT's consecutive rotation angles, computed here independently."""
    torch.manual_seed(0)
    model = initial_model(train_config(AblationParams(image_size=SIZE, checkpoint=""), "none", 0)).eval()
    scenes = pool_scenes(RECIPE, heldout=True)
    pooled = evaluate_scenes(model, scenes)
    expected = []
    for scene in scenes:
        r = scene.extrinsics[:, 0, :, :3].double()  # [T, 3, 3] world-to-camera
        rel = r[1:] @ r[:-1].transpose(-1, -2)
        cos = ((rel.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1)
        angles = torch.rad2deg(torch.acos(cos))
        expected.append(float(angles.pow(2).mean().sqrt()))
    assert pooled["camera_floor"]["rpe_rot"] == pytest.approx(np.mean(expected), rel=1e-4)
    assert math.isnan(pooled["camera_floor"]["rpe_view_rot"])  # monocular: no views to compare
    rows = ablation_report.geometry_rows(
        {"params": {"geometry": True}, "arms": {}, "camera_floor": pooled["camera_floor"]}
    )
    assert rows[-1]["arm"] == "floor: identity cameras"
