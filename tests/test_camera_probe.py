"""The two-frame camera probe: its labels agree with its pixels, its score puts the identity at the
floor and the truth at zero, and a run is a record that is never overwritten."""

from __future__ import annotations

import json
import math

import pytest
import torch
from page4d.experiments.camera_probe import (
    ProbeConfig,
    make_batch,
    pan_clip,
    probe_model,
    run_probe,
    score,
    shift_clip,
    training_seeds,
    yaw_extrinsics,
)
from page4d.geometry import extrinsics_intrinsics_to_pose_encoding, rotation_angle
from page4d.records import RunFolderTaken


def _project(k: torch.Tensor, e: torch.Tensor, point: torch.Tensor) -> torch.Tensor:
    cam = e[:, :3] @ point + e[:, 3]
    return (k @ cam)[:2] / cam[2]


def _shift_of(clip: dict) -> int:
    """The crop offset in pixels a shift clip's label encodes: f tan(yaw), signed by the turn."""
    e, k = clip["extrinsics"], clip["intrinsics"][0]
    yaw = float(rotation_angle(e[1, :, :3].double()))
    return round(float(k[0, 0]) * math.tan(yaw)) * (1 if e[1, 0, 2] < 0 else -1)


def test_a_shift_clip_is_two_crops_and_its_yaw_moves_the_centre_by_the_shift():
    cfg = ProbeConfig(max_shift_px=28)
    for seed in range(3):
        clip = shift_clip(seed, cfg)
        images, k, e = clip["images"], clip["intrinsics"][0], clip["extrinsics"]
        assert images.shape == (2, 3, 112, 154) and clip["depths"].shape == (2, 112, 154)
        shift = _shift_of(clip)
        assert abs(shift) <= 28 and torch.allclose(e[0], torch.eye(3, 4))
        # the pixels: frame 1's column u is frame 0's column u + shift (where both crops have it)
        lo, hi = max(0, -shift), min(154, 154 - shift)
        assert torch.equal(images[1, :, :, lo:hi], images[0, :, :, lo + shift : hi + shift])
        # the label: the point frame 1 sees at its centre sits `shift` px right of frame 0's centre
        centre = torch.linalg.inv(k) @ torch.tensor([float(k[0, 2]), float(k[1, 2]), 1.0])
        world = e[1, :, :3].T @ centre  # frame 1's centre ray, in frame 0's (= world) axes
        u0 = _project(k, e[0], world * 5.0)[0]
        assert float(u0) == pytest.approx(float(k[0, 2]) + shift, abs=1e-3)


def test_a_pan_clip_turns_in_place_by_the_drawn_angle():
    cfg = ProbeConfig(task="pan", min_deg=5.0, max_deg=20.0)
    clip = pan_clip(11, cfg)
    e = clip["extrinsics"]
    assert torch.allclose(e[0], torch.eye(3, 4), atol=1e-6)
    assert 5.0 - 1e-3 <= math.degrees(float(rotation_angle(e[1, :, :3].double()))) <= 20.0 + 1e-3
    centre_1 = -e[1, :, :3].T @ e[1, :, 3]
    assert float(centre_1.norm()) < 1e-4  # a pan: the camera stays where it was
    assert not torch.equal(clip["images"][0], clip["images"][1])


def _encode(e: torch.Tensor) -> torch.Tensor:
    k = torch.tensor([[100.0, 0, 77], [0, 100.0, 56], [0, 0, 1]]).expand(*e.shape[:-2], 3, 3)
    return extrinsics_intrinsics_to_pose_encoding(e, k, (112, 154))


def test_the_score_puts_the_truth_at_zero_and_the_identity_at_the_floor():
    gt = torch.stack([yaw_extrinsics(math.radians(d)) for d in (-10.0, 4.0, 7.0)])
    truth = score(_encode(gt), gt)
    assert truth["rot_deg_median"] == pytest.approx(0.0, abs=1e-3) and truth["skill"] == pytest.approx(1.0)
    assert truth["identity_floor_deg"] == pytest.approx(7.0, abs=1e-4)  # the median of 10, 4, 7
    identity = score(_encode(torch.stack([yaw_extrinsics(0.0)] * 3)), gt)
    assert identity["rot_deg_median"] == pytest.approx(7.0, abs=1e-3)
    assert identity["skill"] == pytest.approx(0.0, abs=1e-4)
    mirrored = score(_encode(torch.stack([yaw_extrinsics(-math.radians(d)) for d in (-10, 4, 7)])), gt)
    assert mirrored["skill"] == pytest.approx(-1.0, abs=1e-4)  # the wrong way round: worse than nothing


def test_a_probe_run_records_every_evaluation_and_is_never_overwritten(tmp_path):
    cfg = ProbeConfig(steps=2, batch=1, heldout_clips=2, eval_every=1)
    record = run_probe(cfg, tmp_path / "probe", progress=False)
    saved = json.loads((tmp_path / "probe" / "probe.json").read_text())
    assert (
        [e["step"] for e in saved["evaluations"]] == [0, 1, 2] == [e["step"] for e in record["evaluations"]]
    )
    assert saved["config"]["steps"] == 2 and (tmp_path / "probe" / "DONE.json").is_file()
    assert make_batch([0, 1], cfg)["images"].shape == (2, 2, 3, 112, 154)
    before = (tmp_path / "probe" / "probe.json").read_bytes()
    with pytest.raises(RunFolderTaken, match="never overwritten"):
        run_probe(cfg, tmp_path / "probe", progress=False)
    assert (tmp_path / "probe" / "probe.json").read_bytes() == before


def test_whole_patch_shifts_move_the_patch_tokens_exactly():
    cfg = ProbeConfig(whole_patches=True)
    model = probe_model(cfg).eval()
    moved = 0
    for seed in range(4):
        clip = shift_clip(seed, cfg)
        shift = _shift_of(clip)
        assert shift % 14 == 0 and abs(shift) <= 42
        k = shift // 14
        with torch.no_grad():
            tokens = model.aggregator.patch_embed(clip["images"]).reshape(2, 8, 11, -1)
        lo, hi = max(0, -k), min(11, 11 - k)
        assert torch.allclose(tokens[1, :, lo:hi], tokens[0, :, lo + k : hi + k], atol=1e-5)
        moved += k != 0
    assert moved >= 2  # not every draw rounds to no shift
    with pytest.raises(ValueError, match="whole_patches needs"):
        ProbeConfig(whole_patches=True, max_shift_px=10)


def test_the_control_trains_on_the_same_clips_every_step_and_scores_them(tmp_path):
    cfg = ProbeConfig(fixed_clips=2, steps=2, heldout_clips=2, eval_every=2, save_weights=True)
    assert training_seeds(cfg, 0) == training_seeds(cfg, 5) == range(0, 2)
    assert training_seeds(ProbeConfig(batch=3), 1) == range(3, 6)
    record = run_probe(cfg, tmp_path / "control", progress=False)
    last = record["evaluations"][-1]
    assert {"skill", "train_skill", "train_identity_floor_deg"} <= set(last)
    fixed = make_batch(range(0, 2), cfg)
    floor = score(_encode(torch.stack([yaw_extrinsics(0.0)] * 2)), fixed["extrinsics"])
    assert last["train_identity_floor_deg"] == pytest.approx(floor["identity_floor_deg"])
    trained = probe_model(ProbeConfig(init=str(tmp_path / "control" / "weights.pt")))
    start = probe_model(ProbeConfig())
    moved = [not torch.equal(a, b) for a, b in zip(trained.parameters(), start.parameters(), strict=True)]
    assert any(moved)  # the saved weights are the trained ones, and they load into the preset
