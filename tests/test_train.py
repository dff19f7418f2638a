"""Trainer and evaluation: determinism, freeze strategies, the head-only fast path, DDP, metric plumbing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from page4d.data import SyntheticSceneConfig, generate_synthetic_scene, load_scene
from page4d.evaluate import evaluate
from page4d.geometry import rotation_matrix_to_quaternion
from page4d.model import load_checkpoint
from page4d.train import (
    TrainConfig,
    build_training_model,
    mask_logits_from_features,
    middle_block_range,
    train,
    weights_digest,
)
from torch import nn


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("scene") / "synthetic"
    return generate_synthetic_scene(out, SyntheticSceneConfig(seed=3, times=4, views=3, height=56, width=70))


@pytest.fixture(scope="module")
def scene(scene_dir):
    return load_scene(scene_dir)


def small(**kw) -> TrainConfig:
    base = dict(steps=2, clip_times=2, threads=1, log_every=1)
    base.update(kw)
    return TrainConfig(**base)


def test_training_is_deterministic_and_writes_a_loadable_run_folder(scene, tmp_path):
    m1, h1 = train(small(), scene, output_dir=tmp_path / "a", progress=False)
    m2, h2 = train(small(), scene, output_dir=tmp_path / "b", progress=False)
    assert [r["loss"] for r in h1] == [r["loss"] for r in h2]
    assert weights_digest(m1) == weights_digest(m2)
    history = json.loads((tmp_path / "a" / "history.json").read_text())
    assert len(history) == 2 and history[0]["mask_supervised"] is True and history[0]["loss"] > 0
    fresh = build_training_model(small())
    assert weights_digest(fresh) != weights_digest(m1)
    assert load_checkpoint(fresh, tmp_path / "a" / "checkpoint.pt").ok
    assert weights_digest(fresh) == weights_digest(m1)


def changed(before: dict, model: nn.Module) -> set[str]:
    return {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}


@pytest.mark.parametrize("strategy", ["mask_head_only", "middle_blocks"])
def test_freeze_strategies_train_only_what_they_name(scene, strategy):
    cfg = small(steps=1, freeze=strategy)
    model = build_training_model(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train(cfg, scene, model=model, progress=False)
    diff = changed(before, model)
    assert any(k.startswith("aggregator.spatial_mask_head.") for k in diff)
    middle = middle_block_range(model.cfg.depth)
    assert list(middle) == [2, 3, 4]  # 10..19 of 24, scaled to the tiny preset's 6 block pairs
    for k in diff:
        if strategy == "mask_head_only":
            assert k.startswith("aggregator.spatial_mask_head."), k
        else:
            block = (
                k.split(".")[2]
                if k.startswith(("aggregator.frame_blocks", "aggregator.global_blocks"))
                else None
            )
            assert k.startswith("aggregator.spatial_mask_head.") or (
                block is not None and int(block) in middle
            ), k
    if strategy == "middle_blocks":
        assert any(k.startswith("aggregator.global_blocks.3.") for k in diff)


def test_head_only_fast_path_uses_the_same_logits_as_a_full_forward(scene):
    from page4d.data import scene_to_batch

    model = build_training_model(small()).eval()
    batch = scene_to_batch(scene, times=scene.times[:2])
    images = batch.images
    with torch.no_grad():
        full = model(images)["mask_logits"]
        tokens = model.aggregator(images.reshape(1, -1, *images.shape[3:]), stop_at_mask_head=True)
        fast = mask_logits_from_features(model, tokens, images.shape)
    assert torch.equal(full, fast)


def test_head_only_objective_trains_only_the_head_and_lowers_the_mask_loss(scene):
    cfg = small(
        steps=30,
        freeze="mask_head_only",
        lr=0.02,
        loss_overrides={"use_camera": False, "use_depth": False, "use_point": False},
    )
    _, history = train(cfg, scene, progress=False)
    assert "camera_loss" not in history[0]  # geometry never ran: the fast path
    assert history[-1]["mask_loss"] < 0.8 * history[0]["mask_loss"]


def test_two_gloo_processes_end_with_identical_weights(scene_dir, tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29533",
        "-m",
        "page4d.train",
        "--scene",
        str(scene_dir),
        "--out",
        str(tmp_path / "ddp"),
        "--image-size",
        "56",
        "70",
        "--steps",
        "2",
        "--clip-times",
        "2",
        "--threads",
        "1",
    ]
    subprocess.run(
        cmd,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2
    first, second = summary["rank_weight_digests"]
    assert first == second
    assert first != weights_digest(build_training_model(small()))


class OracleModel(nn.Module):
    """Returns GT-derived predictions for the clip it is given (found by matching the images)."""

    def __init__(self, scene):
        super().__init__()
        self.scene = scene

    def forward(self, images):
        from page4d.data import scene_to_batch

        idx = [
            next(i for i in range(len(self.scene.times)) if torch.equal(self.scene.images[i], images[0, j]))
            for j in range(images.shape[1])
        ]
        batch = scene_to_batch(
            self.scene, times=[self.scene.times[i] for i in idx], world_frame="first_camera"
        )
        e = batch.extrinsics
        quat = rotation_matrix_to_quaternion(e[..., :3])
        b, t, v, _, h, w = images.shape
        pose = torch.cat([e[..., 3], quat, torch.ones(b, t, v, 2)], dim=-1)
        return {
            "depth": (3.0 * batch.depths)[..., None],
            "pose_enc": pose,
            "mask_logits": torch.full((b, t, v, h // 14, w // 14), 10.0),
        }


def test_evaluate_reports_exact_geometry_for_an_oracle_and_the_right_iou(scene):
    result = evaluate(OracleModel(scene), scene, times=scene.times, clip_times=2)
    assert result["depth_abs_rel"] < 1e-6 and result["depth_delta1"] == 1.0
    assert result["ate"] < 1e-4 and result["rpe_rot"] < 1e-2
    # everything predicted dynamic: IoU = dynamic share of each frame
    share = scene.masks.flatten(-2).mean(-1)
    assert abs(result["mask_iou"] - float(share.mean())) < 1e-6
    assert set(result["mask_iou_per_view"]) == set(scene.views)


def test_evaluate_says_why_a_degenerate_trajectory_has_no_ate(scene):
    two_views = load_scene(scene.root, views=scene.views[:2])
    result = evaluate(OracleModel(two_views), two_views, clip_times=2)
    assert result["ate"] != result["ate"]  # NaN, not a made-up number
    assert "collinear" in result["trajectory_note"]
    assert result["depth_abs_rel"] < 1e-6


def test_mask_only_objective_without_detach_trains_the_backbone_but_not_the_dense_heads(scene):
    cfg = small(
        steps=2,
        freeze="all",
        detach_mask_input=False,
        loss_overrides={"use_camera": False, "use_depth": False, "use_point": False},
    )
    model = build_training_model(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _, history = train(cfg, scene, model=model, progress=False)
    diff = changed(before, model)
    assert "aggregator.frame_blocks.0.attn.qkv.weight" in diff  # the mask loss reached the backbone
    assert not any(k.startswith(("depth_head.", "point_head.", "camera_head.")) for k in diff)
    assert not any(k.startswith("aggregator.global_blocks.5.") for k in diff)  # after the mask head
    assert "camera_loss" not in history[0]
