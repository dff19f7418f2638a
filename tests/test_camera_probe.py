"""The two-frame camera probe: its labels agree with its pixels, its score puts the identity at the
floor and the truth at zero, and a run is a record that is never overwritten."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math

import numpy as np
import pytest
import torch
from page4d.experiments.camera_probe import (
    MONO_MOVES,
    ProbeConfig,
    by_rotation_size,
    camera_predictions,
    clip_kind,
    geometry_step,
    make_batch,
    mono_clip,
    pan_clip,
    probe_model,
    rescore,
    rig_clip,
    rig_views,
    rigs_clip,
    rmse_by_side,
    run_probe,
    score,
    shift_clip,
    training_batches,
    training_seeds,
    turn_slope,
    widest_gap,
    yaw_extrinsics,
)
from page4d.experiments.scene_stream import draw_scene_config, rig_azimuths
from page4d.geometry import extrinsics_intrinsics_to_pose_encoding, rotation_angle
from page4d.records import ParametersChanged, RunFolderTaken


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


def _depth_agreement(clip: dict) -> tuple[int, float]:
    """View 0's depth (every 4th pixel) lifted through the label's relative pose into view 1: how many
    land inside view 1, and the share of those whose depth matches view 1's there within 2 %
    (the rest are occluded from view 1). The renderer's pixel centres are at integer coordinates."""
    e, k, depth = clip["extrinsics"].double(), clip["intrinsics"].double(), clip["depths"].double()
    h, w = depth.shape[-2:]
    v, u = torch.meshgrid(
        torch.arange(0.0, h, 4.0).double(), torch.arange(0.0, w, 4.0).double(), indexing="ij"
    )
    rays = torch.linalg.inv(k[0]) @ torch.stack([u, v, torch.ones_like(u)]).reshape(3, -1)
    cam1 = e[1, :, :3] @ (rays * depth[0, v.long(), u.long()].reshape(1, -1)) + e[1, :, 3:]
    pix = ((k[1] @ cam1)[:2] / cam1[2]).round().long()
    inside = (pix[0] >= 0) & (pix[0] < w) & (pix[1] >= 0) & (pix[1] < h) & (cam1[2] > 0)
    seen = depth[1, pix[1, inside], pix[0, inside]]
    return int(inside.sum()), float(((seen - cam1[2, inside]).abs() / seen < 0.02).double().mean())


def test_a_rig_clip_shows_one_room_from_two_cameras_the_label_relates():
    """The label agrees with the pixels (view 0's depth lands on view 1's); both cameras look at one
    point; the turn is the drawn gap; both orders of the views occur."""
    cfg = ProbeConfig(task="rig", min_deg=30.0, max_deg=120.0)
    turns = []
    for seed in range(4):
        clip = rig_clip(seed, cfg)
        e = clip["extrinsics"].double()
        assert torch.allclose(e[0], torch.eye(3, 4, dtype=e.dtype), atol=1e-6)
        inside, agree = _depth_agreement(clip)
        assert inside > 200 and agree > 0.5  # a transposed rotation lands < 150 points, 5 % agreeing
        r, t = e[1, :, :3], e[1, :, 3]
        # view 0's optical axis (0, 0, d) in view 1's frame is d * r[:, 2] + t: at one depth d it lies
        # on view 1's optical axis (x = y = 0), so both cameras look at one point
        axis = r[:2, 2]
        along = -(axis @ t[:2]) / (axis @ axis)
        assert float((axis * along + t[:2]).norm()) < 0.05
        gap = float(np.random.default_rng([seed, 5]).uniform(30.0, 120.0))
        assert math.degrees(float(rotation_angle(r))) == pytest.approx(gap, abs=1.0)  # heights differ a bit
        turns.append(float(r[0, 2]))
    assert min(turns) < 0 < max(turns)


def test_the_rig_curriculum_widens_the_gaps_to_the_full_range():
    cfg = ProbeConfig(task="rig", min_deg=5.0, max_deg=175.0, ramp_steps=100)
    assert widest_gap(cfg, 0) == pytest.approx(5.0 + 1.7)
    assert widest_gap(cfg, 49) == pytest.approx(90.0) and widest_gap(cfg, 500) == 175.0
    assert widest_gap(cfg, None) == 175.0  # held-out clips always draw the full range
    assert widest_gap(ProbeConfig(task="rig", max_deg=60.0), 0) == 60.0  # no ramp: the full range
    with pytest.raises(ValueError, match="max_deg"):
        ProbeConfig(task="pan", max_deg=120.0)


def _encode(e: torch.Tensor) -> torch.Tensor:
    k = torch.tensor([[100.0, 0, 77], [0, 100.0, 56], [0, 0, 1]]).expand(*e.shape[:-2], 3, 3)
    return extrinsics_intrinsics_to_pose_encoding(e, k, (112, 154))


def test_the_score_puts_the_truth_at_zero_and_the_identity_at_the_floor():
    gt = torch.stack([yaw_extrinsics(math.radians(d)) for d in (-10.0, 4.0, 7.0)])
    truth = score(_encode(gt), gt)
    assert truth["gt_deg"] == pytest.approx([10.0, 4.0, 7.0], abs=1e-3)  # every clip, for binning later
    assert truth["error_deg"] == pytest.approx([0.0] * 3, abs=1e-3)
    bins = by_rotation_size(score(_encode(torch.stack([yaw_extrinsics(0.0)] * 3)), gt), (0.0, 5.0, 45.0))
    assert [(b["clips"], b["floor_deg"]) for b in bins] == [
        (1, pytest.approx(4.0, abs=1e-3)),
        (2, pytest.approx(8.5, abs=1e-3)),
    ]
    assert all(b["skill"] == pytest.approx(0.0, abs=1e-3) for b in bins)  # the identity: no skill in any bin
    assert truth["rot_deg_median"] == pytest.approx(0.0, abs=1e-3) and truth["skill"] == pytest.approx(1.0)
    assert truth["identity_floor_deg"] == pytest.approx(7.0, abs=1e-4)  # the median of 10, 4, 7
    identity = score(_encode(torch.stack([yaw_extrinsics(0.0)] * 3)), gt)
    assert identity["rot_deg_median"] == pytest.approx(7.0, abs=1e-3)
    assert identity["skill"] == pytest.approx(0.0, abs=1e-4)
    mirrored = score(_encode(torch.stack([yaw_extrinsics(-math.radians(d)) for d in (-10, 4, 7)])), gt)
    assert mirrored["skill"] == pytest.approx(-1.0, abs=1e-4)  # the wrong way round: worse than nothing
    assert truth["same_turn"] == [True] * 3 and mirrored["same_turn"] == [False] * 3
    assert identity["same_turn"] == [False] * 3  # no turn is to no side
    half = score(_encode(torch.stack([yaw_extrinsics(math.radians(d)) for d in (-9, -4, 7)])), gt)
    assert [b["same_turn_share"] for b in by_rotation_size(half, (0.0, 5.0, 45.0))] == [0.0, 1.0]


def test_a_wide_turn_to_the_wrong_side_is_told_apart_from_one_to_the_right_side():
    """160 degrees left vs right: the error is 40 degrees either way round, the side tells them apart."""
    gt = torch.stack([yaw_extrinsics(math.radians(160.0))] * 2)
    pred = torch.stack([yaw_extrinsics(math.radians(d)) for d in (120.0, -160.0)])
    scored = score(_encode(pred), gt)
    assert scored["error_deg"] == pytest.approx([40.0, 40.0], abs=1e-3)
    assert scored["same_turn"] == [True, False] and scored["pred_deg"] == pytest.approx(
        [120.0, 160.0], abs=1e-3
    )
    assert by_rotation_size(scored)[0]["pred_deg_median"] == pytest.approx(140.0, abs=1e-3)
    sides = rmse_by_side({"error_deg": [3.0, 4.0, 120.0], "same_turn": [True, True, False]})
    assert sides["all"] == {"pairs": 3, "rmse_deg": pytest.approx(math.sqrt((9 + 16 + 14400) / 3))}
    assert sides["right_side"] == {"pairs": 2, "rmse_deg": pytest.approx(math.sqrt(12.5))}
    assert sides["wrong_side"] == {"pairs": 1, "rmse_deg": pytest.approx(120.0)}
    assert math.isnan(rmse_by_side({"error_deg": [1.0], "same_turn": [True]})["wrong_side"]["rmse_deg"])


def test_the_turn_slope_tells_a_mean_turn_from_one_read_in_the_pixels():
    """A head that turns every pair by about the same 24 degrees can beat the identity's median error
    (the conv_pos rig probe did) yet follows nothing: slope about 0; one that turns each pair by its GT
    angle scores 1, one that turns half as far 0.5, whatever the offset."""
    gt = [6.0, 20.0, 60.0, 110.0, 170.0]
    assert turn_slope(gt, gt) == pytest.approx(1.0)
    assert turn_slope([x / 2 + 30 for x in gt], gt) == pytest.approx(0.5)
    assert turn_slope([24.0] * 5, gt) == 0.0
    assert abs(turn_slope([24.0, 23.9, 24.1, 24.0, 23.95], gt)) < 0.002  # its hundredths order nothing
    assert math.isnan(turn_slope([1.0, 2.0], [5.0, 5.0]))
    gt_ext = torch.stack([yaw_extrinsics(math.radians(d)) for d in (-10.0, 4.0, 7.0)])
    doubled = torch.stack([yaw_extrinsics(math.radians(d)) for d in (-20.0, 8.0, 14.0)])
    assert score(_encode(doubled), gt_ext)["turn_slope"] == pytest.approx(2.0, abs=1e-3)
    with pytest.raises(ValueError, match="differ in length"):
        turn_slope([1.0, 2.0], [1.0, 2.0, 3.0])


def test_a_probe_run_records_every_evaluation_and_is_never_overwritten(tmp_path):
    cfg = ProbeConfig(steps=2, batch=1, heldout_clips=2, eval_every=1)
    record = run_probe(cfg, tmp_path / "probe", progress=False)
    saved = json.loads((tmp_path / "probe" / "probe.json").read_text())
    assert (
        [e["step"] for e in saved["evaluations"]] == [0, 1, 2] == [e["step"] for e in record["evaluations"]]
    )
    assert saved["config"]["steps"] == 2 and (tmp_path / "probe" / "DONE.json").is_file()
    assert len(saved["losses"]) == 2 and all(0 < loss < 100 for loss in saved["losses"])
    replay = run_probe(cfg, tmp_path / "replay", progress=False)  # same seed, same clips: same start
    assert replay["losses"] == pytest.approx(saved["losses"], rel=1e-4)
    assert make_batch([0, 1], cfg)["images"].shape == (2, 2, 3, 112, 154)
    before = (tmp_path / "probe" / "probe.json").read_bytes()
    with pytest.raises(RunFolderTaken, match="never overwritten"):
        run_probe(cfg, tmp_path / "probe", progress=False)
    assert (tmp_path / "probe" / "probe.json").read_bytes() == before


def test_the_probe_s_rotation_target_reaches_the_camera_loss(tmp_path):
    """Same start, same clips: the chordal target's first loss differs from the canonical one's, and the
    run records which it trained."""
    cfg = ProbeConfig(task="rigs", steps=1, batch=1, heldout_clips=1, max_views=2)
    canonical = run_probe(cfg, tmp_path / "canonical", progress=False)
    chordal = run_probe(
        dataclasses.replace(cfg, rotation_target="chordal"), tmp_path / "chordal", progress=False
    )
    assert chordal["config"]["rotation_target"] == "chordal"
    assert chordal["losses"][0] != pytest.approx(canonical["losses"][0], rel=1e-3)


def test_the_matching_term_adds_its_weighted_value_to_the_loss_and_evaluations_score_matching(tmp_path):
    """Same start, same clips: with `w_correspondence` the first loss is the plain one plus the weight
    times the recorded matching term (an InfoNCE over 88 patches: near log 88 for untrained tokens);
    every evaluation scores how well the patch tokens find their matches, with or without the term."""
    cfg = ProbeConfig(task="rigs", steps=1, batch=1, heldout_clips=1, max_views=3)
    plain = run_probe(cfg, tmp_path / "plain", progress=False)
    matched_cfg = dataclasses.replace(cfg, w_correspondence=0.5, save_weights=True)
    matched = run_probe(matched_cfg, tmp_path / "matched", progress=False)
    assert "correspondence" not in plain and len(matched["correspondence"]) == 1
    term = matched["correspondence"][0]
    assert 1.0 < term < 2 * math.log(88)
    assert matched["losses"][0] == pytest.approx(plain["losses"][0] + 0.5 * term, rel=1e-4)
    for record in (plain, matched):
        assert all(0.0 <= e["match_top1"] <= 1.0 for e in record["evaluations"])
        assert all(len(e["match_top1_by_gap"]) == 4 for e in record["evaluations"])
    again = rescore(matched_cfg, [tmp_path / "matched" / "weights.pt"])[0]  # the last evaluation's weights
    last = matched["evaluations"][-1]
    assert (
        again["match_top1"] == pytest.approx(last["match_top1"]) and again["same_turn"] == last["same_turn"]
    )
    assert again["error_deg"] == pytest.approx(last["error_deg"], abs=1e-2)
    with pytest.raises(ValueError, match="correspondence_layer"):
        ProbeConfig(correspondence_layer=6)
    with pytest.raises(ValueError, match="w_correspondence"):
        ProbeConfig(w_correspondence=-1.0)


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


def test_worker_processes_render_exactly_the_clips_of_each_step():
    cfg = ProbeConfig(task="rig", steps=3, batch=2, min_deg=5.0, max_deg=175.0, ramp_steps=3)
    here = list(training_batches(cfg))
    there = list(training_batches(dataclasses.replace(cfg, workers=2)))
    assert len(here) == len(there) == 3
    for step, (a, b) in enumerate(zip(here, there, strict=True)):
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
        assert torch.equal(a["images"], make_batch(training_seeds(cfg, step), cfg, step)["images"])
    assert not torch.equal(here[0]["images"], here[1]["images"])  # a new pair of rooms every step


def test_rig_plus_pan_alternates_rigs_and_pans_and_scores_both(tmp_path):
    cfg = ProbeConfig(task="rig+pan", min_deg=0.0, max_deg=175.0, steps=2, batch=1, heldout_clips=2)
    assert [clip_kind(cfg, step) for step in (0, 1, 2, None)] == ["rig", "pan", "rig", "rig"]
    pan = make_batch([5], cfg, step=1)["extrinsics"][0, 1]
    assert torch.allclose(pan[:, 3], torch.zeros(3), atol=1e-5)  # a pan turns in place
    assert 1.0 <= math.degrees(float(rotation_angle(pan[:, :3].double()))) <= 20.0
    assert float(make_batch([5], cfg, step=0)["extrinsics"][0, 1, :, 3].norm()) > 0.1  # a rig's views move
    record = run_probe(dataclasses.replace(cfg, eval_every=2), tmp_path / "run", progress=False)
    assert {"skill", "pan_skill", "pan_gt_deg"} <= set(record["evaluations"][-1])


def test_the_card_s_rigs_have_its_gaps_views_and_fields_of_view_and_every_view_is_scored(tmp_path):
    """`rigs` draws the pretraining stream's rigs: each view turned from view 0 by its azimuth
    difference (heights differ a little), neighbouring azimuths 20-90 degrees apart, the nearest
    view's depth landing on view 0's; the camera count cycles 2..max_views (held out: max_views)."""
    cfg = ProbeConfig(task="rigs+pan", steps=2, batch=1, heldout_clips=2)
    fovs = set()
    for seed in range(3):
        clip = rigs_clip(seed, cfg, 4)
        rng = np.random.default_rng([seed, 5])
        rng.uniform(1.2, 2.4)
        rng.uniform(50.0, 80.0)
        azimuths = np.asarray(rig_azimuths(rng, 4))
        turn = np.abs((azimuths - azimuths[0] + 180.0) % 360.0 - 180.0)
        e = clip["extrinsics"].double()
        got = [math.degrees(float(rotation_angle(e[v, :, :3]))) for v in range(4)]
        assert got == pytest.approx(turn.tolist(), abs=1.0)
        ordered = np.sort(azimuths % 360.0)
        gaps = sorted(np.diff(np.concatenate([ordered, ordered[:1] + 360.0])))[:3]  # the rig's own gaps
        assert 20.0 - 1e-6 <= min(gaps) and max(gaps) <= 90.0 + 1e-6
        nearest = int(np.argmin(turn[1:])) + 1
        inside, agree = _depth_agreement({k: v[[0, nearest]] for k, v in clip.items()})
        assert inside > 200 and agree > 0.5
        fovs.add(round(float(clip["intrinsics"][0, 0, 0]), 1))
    assert len(fovs) == 3  # a field of view per room
    assert [rig_views(cfg, s) for s in range(4)] + [rig_views(cfg, None)] == [2, 3, 4, 2, 4]
    assert [clip_kind(cfg, s) for s in (0, 1, None)] == ["rigs", "pan", "rigs"]
    assert make_batch([7, 8], cfg, step=0)["images"].shape[:2] == (2, 2)
    gt = make_batch([7], cfg, step=None)["extrinsics"]
    scored = score(_encode(gt), gt)
    assert len(scored["error_deg"]) == 3 and scored["rot_deg_median"] == pytest.approx(0.0, abs=1e-2)
    record = run_probe(dataclasses.replace(cfg, eval_every=2), tmp_path / "run", progress=False)
    assert len(record["evaluations"][-1]["gt_deg"]) == 2 * 3 and "pan_skill" in record["evaluations"][-1]


def test_camera_only_steps_skip_the_dpt_heads_and_give_the_full_model_s_cameras(tmp_path, monkeypatch):
    """`camera_predictions` is the full forward's camera output without the depth and point heads;
    `geometry_every` N runs those heads (and their losses) on every N-th training step only, and the
    evaluations never do."""
    from page4d.experiments import camera_probe

    cfg = ProbeConfig(task="rigs", steps=4, batch=1, heldout_clips=2, eval_every=2, geometry=True)
    model = probe_model(cfg).eval()
    images = make_batch([3], cfg, step=2)["images"]  # a rig of 4 views
    with torch.no_grad():
        internals = model(images, return_internals=True)
        full = internals["pose_enc_list"]
        alone = camera_predictions(model, images)
        with_middle = camera_predictions(model, images, frozenset({2}))
    assert len(alone["pose_enc_list"]) == len(full)
    for a, b in zip(alone["pose_enc_list"], full, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    kept = [i for i, t in enumerate(alone["aggregated_tokens_list"]) if t is not None]
    assert kept == [5] and [
        i for i, t in enumerate(with_middle["aggregated_tokens_list"]) if t is not None
    ] == [2, 5]
    assert torch.allclose(
        with_middle["aggregated_tokens_list"][2], internals["aggregated_tokens_list"][2], atol=1e-6
    )
    assert alone["patch_start_idx"] == internals["patch_start_idx"]
    assert [geometry_step(dataclasses.replace(cfg, geometry_every=2), s) for s in range(4)] == [
        True, False, True, False,
    ]  # fmt: skip
    assert not any(geometry_step(dataclasses.replace(cfg, geometry=False), s) for s in range(4))

    calls = []

    def counted(cfg: ProbeConfig) -> torch.nn.Module:
        built = probe_model(cfg)
        built.depth_head.register_forward_hook(lambda *_: calls.append("depth"))
        built.point_head.register_forward_hook(lambda *_: calls.append("point"))
        return built

    monkeypatch.setattr(camera_probe, "probe_model", counted)
    runs = {}
    for every in (1, 2, 4):
        calls.clear()
        runs[every] = run_probe(
            dataclasses.replace(cfg, geometry_every=every), tmp_path / f"every{every}", progress=False
        )
        assert calls.count("depth") == calls.count("point") == 4 // every  # training steps 0, every, ...
    # Same start and clips: step 0 (geometry in every run) agrees; step 1 has no depth term with N > 1.
    assert runs[2]["losses"][0] == pytest.approx(runs[1]["losses"][0], rel=1e-4)
    assert runs[2]["losses"][1] != pytest.approx(runs[1]["losses"][1], rel=1e-3)
    with pytest.raises(ValueError, match="geometry_every"):
        ProbeConfig(geometry_every=0)


def test_rigs_plus_mono_alternates_the_card_s_rigs_and_its_static_monocular_moves(tmp_path):
    """`rigs+mono`'s odd steps are the pretraining stream's static monocular moves: one camera, no
    movers, 4 frames, small turns per step, the label agreeing with the pixels (frame 0's depth lands
    on frame 3's); the held-out moves are scored beside the held-out rigs."""
    cfg = ProbeConfig(task="rigs+mono", steps=2, batch=1, heldout_clips=2)
    assert [clip_kind(cfg, s) for s in (0, 1, 2, None)] == ["rigs", "mono", "rigs", "rigs"]
    motions = set()
    for seed in range(4):
        room = draw_scene_config(MONO_MOVES, seed)
        assert (room.views, room.times, room.num_movers) == (1, 4, 0)
        motions.add(room.camera_motion)
        clip = mono_clip(seed)
        assert clip["images"].shape == (4, 3, 112, 154)
        e = clip["extrinsics"].double()
        steps = [math.degrees(float(rotation_angle(e[t, :, :3] @ e[t - 1, :, :3].T))) for t in (1, 2, 3)]
        assert max(steps) < 6.0 + 6 * 1.5  # <= 6 degrees per step plus the hand-held walk (6 sigma)
        inside, agree = _depth_agreement({k: v[[0, 3]] for k, v in clip.items()})
        assert inside > 200 and agree > 0.5
    assert len(motions) >= 2
    assert make_batch([7, 8], cfg, step=1)["images"].shape[:2] == (2, 4)
    record = run_probe(dataclasses.replace(cfg, eval_every=2), tmp_path / "run", progress=False)
    last = record["evaluations"][-1]
    assert len(last["gt_deg"]) == 2 * 3 and len(last["mono_gt_deg"]) == 2 * 3 and "mono_skill" in last


def test_rig_times_shows_each_training_rig_again_at_its_first_time_s_poses_and_leaves_the_held_out_rigs():
    """`rig_times` 2: a training rig of V views becomes 2V frames, the second V the first again (a static
    rig: same images, depths and poses, so frame V is the identity against frame 0); the held-out rigs
    (step None) and the monocular steps keep their frames; only the rigs tasks take it."""
    cfg = ProbeConfig(task="rigs+mono", rig_times=2, max_views=4)
    views = rig_views(cfg, 2)
    once, twice = rigs_clip(3, cfg, views), make_batch([3], cfg, step=2)
    assert twice["images"].shape[:2] == (1, 2 * views)
    for key, value in once.items():
        assert torch.equal(twice[key][0, :views], value) and torch.equal(twice[key][0, views:], value)
    pose = twice["extrinsics"][0, views].double()
    assert torch.allclose(pose, torch.eye(3, 4, dtype=torch.float64), atol=1e-6)
    assert make_batch([3], cfg, step=None)["images"].shape[1] == cfg.max_views  # held out: one time
    assert make_batch([3], cfg, step=1)["images"].shape[1] == 4  # a monocular move: its 4 frames
    with pytest.raises(ValueError, match="rig_times"):
        ProbeConfig(task="pan", rig_times=2)
    with pytest.raises(ValueError, match="rig_times"):
        ProbeConfig(task="rigs", rig_times=0)


def test_a_time_budget_stops_the_run_at_the_first_evaluation_past_it(tmp_path, monkeypatch):
    """`minutes`: the run ends (finished, its record complete) at the first evaluation whose clock is
    past the budget. A fake clock that advances 30 s per reading makes this independent of the machine."""
    from page4d.experiments import camera_probe

    readings = itertools.count()

    class Clock:
        @staticmethod
        def perf_counter() -> float:
            return 30.0 * next(readings)

    monkeypatch.setattr(camera_probe, "time", Clock)
    cfg = ProbeConfig(steps=10, batch=1, heldout_clips=2, eval_every=2, minutes=1.0)
    record = run_probe(cfg, tmp_path / "budget", progress=False)
    assert [e["step"] for e in record["evaluations"]] == [0, 2] and record["stopped_by_minutes"] == 2
    assert len(record["losses"]) == 2 and (tmp_path / "budget" / "DONE.json").is_file()
    saved = json.loads((tmp_path / "budget" / "probe.json").read_text())
    assert saved["stopped_by_minutes"] == 2
    with pytest.raises(ValueError, match="minutes"):
        ProbeConfig(minutes=-1.0)


def _stopping_at(real, stop_step: int):
    """`training_loss` that stops the run (as Ctrl-C does) when it reaches step `stop_step`."""

    def loss(model, batch, cfg_, step, geometry_cfg):
        if step == stop_step:
            raise KeyboardInterrupt
        return real(model, batch, cfg_, step, geometry_cfg)

    return loss


def test_an_interrupted_probe_resumes_from_its_last_evaluation_as_if_never_stopped(tmp_path, monkeypatch):
    """A step's clips depend on the step alone, and `state.pt` holds the weights, the optimiser and the
    record of the last evaluation: a run stopped after it goes on to the same losses and weights; the
    folder is refused without --resume, and with another config."""
    from page4d.experiments import camera_probe

    cfg = ProbeConfig(steps=4, batch=1, heldout_clips=2, eval_every=2, save_weights=True)
    whole = run_probe(cfg, tmp_path / "whole", progress=False)
    real = camera_probe.training_loss
    monkeypatch.setattr(camera_probe, "training_loss", _stopping_at(real, 3))
    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        run_probe(cfg, cut, progress=False)
    assert not (cut / "DONE.json").exists() and (cut / "state.pt").is_file()
    monkeypatch.setattr(camera_probe, "training_loss", real)
    with pytest.raises(RunFolderTaken, match="--resume"):
        run_probe(cfg, cut, progress=False)
    with pytest.raises(ParametersChanged, match="steps"):
        run_probe(dataclasses.replace(cfg, steps=6), cut, progress=False, resume=True)
    resumed = run_probe(cfg, cut, progress=False, resume=True)
    assert [e["step"] for e in resumed["evaluations"]] == [0, 2, 4] and len(resumed["losses"]) == 4
    assert resumed["losses"] == pytest.approx(whole["losses"], rel=1e-5)
    assert resumed["evaluations"][-1]["rot_deg_median"] == pytest.approx(
        whole["evaluations"][-1]["rot_deg_median"], rel=1e-4
    )
    a = torch.load(tmp_path / "whole" / "weights.pt", weights_only=True)
    b = torch.load(cut / "weights.pt", weights_only=True)
    assert all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6) for k in a)


def test_a_probe_recorded_before_rig_times_existed_still_resumes_and_another_value_is_refused(
    tmp_path, monkeypatch
):
    """A run stopped before `rig_times` was a knob has no such key in its record; resuming it with the
    default (1, what the code did then) goes on, asking for 2 is refused naming the knob."""
    from page4d.experiments import camera_probe

    cfg = ProbeConfig(task="rigs", steps=2, batch=1, heldout_clips=2, eval_every=1)
    real = camera_probe.training_loss
    monkeypatch.setattr(camera_probe, "training_loss", _stopping_at(real, 1))
    with pytest.raises(KeyboardInterrupt):
        run_probe(cfg, tmp_path / "old", progress=False)
    monkeypatch.setattr(camera_probe, "training_loss", real)
    state = torch.load(tmp_path / "old" / "state.pt", weights_only=True)
    del state["record"]["config"]["rig_times"]  # as recorded before the knob existed
    torch.save(state, tmp_path / "old" / "state.pt")
    with pytest.raises(ParametersChanged, match="rig_times"):
        run_probe(dataclasses.replace(cfg, rig_times=2), tmp_path / "old", progress=False, resume=True)
    resumed = run_probe(cfg, tmp_path / "old", progress=False, resume=True)
    assert [e["step"] for e in resumed["evaluations"]] == [0, 1, 2] and len(resumed["losses"]) == 2
