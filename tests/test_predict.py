"""`python -m page4d.predict` end to end (issue 11's "Done when"): a frames folder, an .mp4 made from it
and a two-view frames folder, with DAVIS-style GT; re-scoring the written PNGs with vos-benchmark
reproduces J_mean and F_mean."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from own_clip import GAP, H, T, W, make_clip
from page4d.data.inputs import load_input
from page4d.data.resize import CropResize
from page4d.experiments.trained_heads import quick_trained_model
from page4d.inference.loading import load_model
from page4d.inference.motion_cues import attention_mask_logits
from page4d.model import build_model, preset
from page4d.predict import logits_to_source, main, predict, require_mask_head
from page4d.records import RunFolderTaken
from PIL import Image
from vos_benchmark.evaluator import Evaluator


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("own_clip"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny model whose mask head learnt something (a few seconds), so the scores are not all 0."""
    work = tmp_path_factory.mktemp("quick")
    model, _ = quick_trained_model("tiny", work, (70, 98), 4, 1, seed=0, steps=150)
    torch.save({"model": model.state_dict()}, work / "ck.pt")
    return work / "ck.pt"


def rescore_with_vos_benchmark(out: Path, gt_dirs: dict[str, Path]) -> tuple[float, float]:
    """Mean over views of vos-benchmark's per-sequence J and F of the written PNGs."""
    js, fs = [], []
    for view, gt_dir in gt_dirs.items():
        evaluator = Evaluator(boundary=0.008)
        for gt_png in sorted(gt_dir.glob("*.png")):
            written = out / "masks" / view / gt_png.name
            mask = (np.array(Image.open(written)) > 0).astype(np.uint8)
            gt = (np.array(Image.open(gt_png)) > 0).astype(np.uint8)
            evaluator.feed_frame(mask, gt)
        iou, f = evaluator.conclude()
        js.append(iou[1] / 100)
        fs.append(f[1] / 100)
    return float(np.mean(js)), float(np.mean(fs))


def check_outputs(out: Path, views: list[str], frames: list[str]) -> dict:
    for view in views:
        for stem in frames:
            mask = Image.open(out / "masks" / view / f"{stem}.png")
            assert mask.mode == "L" and mask.size == (W, H)  # the frames' original resolution
            assert set(np.unique(np.array(mask))) <= {0, 255}
            prob = np.load(out / "prob" / view / f"{stem}.npy")
            assert prob.dtype == np.float16 and prob.shape == (H, W)
            assert np.array_equal(np.array(mask) == 255, prob.astype(np.float32) >= 0.5)
    with av.open(str(out / "overlay.mp4")) as video:
        decoded = list(video.decode(video=0))
    assert len(decoded) == len(frames)
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("J_mean", "J_recall", "J_decay", "F_mean", "F_recall", "F_decay", "JF_mean"):
        assert 0.0 <= metrics[key] <= 1.0 or key.endswith("decay"), key
    assert metrics["resolution"] == [H, W] and metrics["source_size"] == [H, W]
    assert len(metrics["per_frame"]) == len(views) * len(frames)
    return metrics


def test_frames_folder_with_davis_gt(clip, checkpoint, tmp_path):
    out = tmp_path / "out"
    metrics = predict(
        clip / "rig" / "cam0", out, checkpoint=checkpoint, gt=clip / "gt" / "cam0", image_width=70, chunk=4,
        progress=False,
    )  # fmt: skip
    frames = [f"{t:05d}" for t in range(T)]
    check_outputs(out, ["cam0"], frames)
    assert metrics["model_input_size"] == [56, 70] and metrics["input_kind"] == "frames"  # cropped + resized
    gap = [r for r in metrics["per_frame"] if r["frame"] == f"{GAP:05d}"][0]
    assert gap["J"] is None and "no mask" in metrics["gt_missing_reason"]
    assert metrics["J_mean"] > 0.05, "the trained head should find part of the movers"
    j, f = rescore_with_vos_benchmark(out, {"cam0": clip / "gt" / "cam0"})
    assert abs(j - metrics["J_mean"]) < 1e-6 and abs(f - metrics["F_mean"]) < 1e-6
    assert "no depth or cameras" in metrics["geometry"]


def test_mp4_made_from_the_frames_folder(clip, checkpoint, tmp_path):
    out = tmp_path / "out"
    metrics = main(
        [str(clip / "clip.mp4"), "--out", str(out), "--checkpoint", str(checkpoint),
         "--gt", str(clip / "gt" / "cam0"), "--image-width", "98", "--no-progress"]
    )  # fmt: skip
    check_outputs(out, ["clip"], [f"{t:05d}" for t in range(T)])
    assert metrics["input_kind"] == "video" and metrics["model_input_size"] == [70, 98]
    j, f = rescore_with_vos_benchmark(out, {"clip": clip / "gt" / "cam0"})
    assert abs(j - metrics["J_mean"]) < 1e-6 and abs(f - metrics["F_mean"]) < 1e-6


def test_two_view_frames_folder_as_a_command(clip, checkpoint, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "page4d.predict", str(clip / "rig"), "--out", str(out), "--checkpoint",
           str(checkpoint), "--gt", str(clip / "gt"), "--image-width", "70", "--chunk", "4"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True)
    assert "6 time steps x 2 views" in proc.stdout and "J " in proc.stdout
    assert "page4d.predict" in proc.stderr and "6/6" in proc.stderr  # the progress bar
    metrics = check_outputs(out, ["cam0", "cam1"], [f"{t:05d}" for t in range(T)])
    assert set(metrics["sequences"]) == {"cam0", "cam1"}
    j, f = rescore_with_vos_benchmark(out, {v: clip / "gt" / v for v in ("cam0", "cam1")})
    assert abs(j - metrics["J_mean"]) < 1e-6 and abs(f - metrics["F_mean"]) < 1e-6


def test_your_own_clip_start_to_finish_train_then_predict_with_that_checkpoint(clip, tmp_path):
    """README "Your own clip, start to finish": a frames folder with DAVIS-style masks through
    `python -m page4d.train` (geometry off by itself: frames have no depth or cameras), then
    `python -m page4d.predict --checkpoint <that run>/checkpoint.pt`, whose masks score far above the
    shipped weights' untrained head."""
    frames, gt, run, out = clip / "rig" / "cam0", clip / "gt" / "cam0", tmp_path / "run", tmp_path / "masks"
    trained = subprocess.run(
        [sys.executable, "-m", "page4d.train", "--input", str(frames), "--gt", str(gt), "--out", str(run),
         "--image-width", "70", "--trains", "mask_head", "--threads", "1"],
        capture_output=True, text=True, timeout=600, check=True,
    )  # fmt: skip
    assert "train: geometry off (automatic)" in trained.stdout and f"run folder {run}" in trained.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert (
        summary["geometry"] is False and summary["input"]["gt"] == str(gt) and summary["updated_steps"] == 120
    )
    predicted = subprocess.run(
        [sys.executable, "-m", "page4d.predict", str(frames), "--out", str(out), "--checkpoint",
         str(run / "checkpoint.pt"), "--gt", str(gt), "--image-width", "70", "--no-progress"],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    assert f"6 time steps x 1 views -> {out}; J " in predicted.stdout
    metrics = check_outputs(out, ["cam0"], [f"{t:05d}" for t in range(T)])
    assert metrics["checkpoint_path"] == str((run / "checkpoint.pt").resolve())
    shipped = predict(frames, tmp_path / "shipped", gt=gt, image_width=70, progress=False)  # untrained head
    assert metrics["J_mean"] > shipped["J_mean"] + 0.2, (metrics["J_mean"], shipped["J_mean"])


def test_attention_method_writes_the_same_outputs_from_the_attention_cues(clip, tmp_path):
    """`--method attention` on two views of 6 steps in chunks of 5: the last chunk (one step) runs with
    the step before it as context and writes exactly that forward's masks of its own step."""
    out = tmp_path / "out"
    metrics = main(
        [str(clip / "rig"), "--out", str(out), "--gt", str(clip / "gt"), "--image-width", "70",
         "--chunk", "5", "--method", "attention", "--checkpoint", "random", "--no-progress"]
    )  # fmt: skip
    check_outputs(out, ["cam0", "cam1"], [f"{t:05d}" for t in range(T)])
    assert metrics["method"] == "attention" and metrics["model_input_size"] == [56, 70]
    assert metrics["method_notes"] == []  # every chunk had a GT-free threshold
    scene = load_input(clip / "rig", image_width=70, gt=clip / "gt")
    model, _ = load_model("tiny", "", 0)
    logits = attention_mask_logits(model, scene.images[4:6][None])[0, 1]  # step 5 with step 4 as context
    expected = logits_to_source(logits, scene.transform)[1].numpy().astype(np.float16)
    assert np.array_equal(np.load(out / "prob" / "cam1" / "00005.npy"), expected)
    with pytest.raises(ValueError, match=r"--method attention compares time steps; the input has 1"):
        predict(
            clip / "rig", tmp_path / "one", image_width=70, max_frames=1, method="attention", progress=False
        )


def test_without_gt_no_metrics_file_and_every_max_frames(clip, tmp_path):
    out = tmp_path / "out"
    result = predict(clip / "rig" / "cam0", out, image_width=56, every=2, max_frames=2, progress=False)
    assert sorted(p.name for p in (out / "masks" / "cam0").iterdir()) == ["00000.png", "00002.png"]
    assert not (out / "metrics.json").exists() and "J_mean" not in result


def test_logits_go_back_to_the_source_frame_through_the_crop():
    transform = CropResize.centered((20, 40), (14, 14))  # keeps the middle 20 x 20 columns 10..29
    logits = torch.full((1, 1), -3.0)
    logits_big = torch.tensor([[-3.0, 3.0]])  # left half static, right half dynamic
    prob = logits_to_source(logits, transform)
    assert prob.shape == (20, 40) and torch.allclose(prob, torch.sigmoid(torch.tensor(-3.0)))
    prob = logits_to_source(logits_big, transform)
    assert prob[:, :10].max() < 0.05 and prob[:, 30:].min() > 0.95  # edges replicate the crop's border
    assert prob[0, 19] < 0.5 < prob[0, 20]  # the crop's centre line stays where the logit changes sign


def test_a_preset_without_mask_head_is_refused():
    with pytest.raises(ValueError, match="no mask head"):
        require_mask_head(build_model(preset("tiny", mask_head=None)), "vggt_1b")


def test_overlay_falls_back_to_gif_without_an_encoder(tmp_path, monkeypatch):
    import page4d.predict as predict_module

    monkeypatch.setattr(predict_module, "VIDEO_CODECS", ("no-such-codec",))
    video = predict_module.OverlayVideo(tmp_path / "overlay")
    for k in range(3):
        video.add(np.full((7, 9, 3), 80 * k, np.uint8))  # odd sizes are padded
    path = video.close()
    assert path.name == "overlay.gif" and Image.open(path).n_frames == 3


def test_the_shipped_checkpoint_by_name_on_the_command_line(clip, tmp_path):
    """`--checkpoint tiny-synthetic` is a name, not a path: the package's float16 weights are used."""
    out = tmp_path / "out"
    metrics = main(
        [str(clip / "rig"), "--out", str(out), "--gt", str(clip / "gt"), "--image-width", "70",
         "--checkpoint", "tiny-synthetic", "--max-frames", "2", "--no-progress"]
    )  # fmt: skip
    check_outputs(out, ["cam0", "cam1"], ["00000", "00001"])
    model, note = load_model("tiny", "tiny-synthetic", 0)
    assert "tiny-synthetic" in note
    scene = load_input(clip / "rig", image_width=70, gt=clip / "gt", max_frames=2)
    with torch.no_grad():
        logits = model(scene.images[None])["mask_logits"][0, 1, 0]
    expected = logits_to_source(logits, scene.transform).numpy().astype(np.float16)
    assert np.array_equal(np.load(out / "prob" / "cam0" / "00001.npy"), expected)
    assert 0.0 <= metrics["J_mean"] <= 1.0


# --------------------------------------------------------------------------------------------------
# the first hour: defaults, records and refusals (issue 22)
# --------------------------------------------------------------------------------------------------
def _forbid_building(monkeypatch):
    """Any model built from here on fails the test (refusals must come before a 1B build)."""
    import page4d.inference.loading as loading_module

    def forbidden(cfg):
        raise AssertionError(f"built a model ({cfg.embed_dim}-dim) before refusing")

    monkeypatch.setattr(loading_module, "build_model", forbidden)


def test_default_weights_are_the_shipped_checkpoint_and_run_json_says_what_ran(clip, tmp_path):
    """No --checkpoint: the tiny preset's shipped tiny-stream weights (not seeded random ones), and
    run.json records the run without GT too."""
    out = tmp_path / "out"
    argv = [str(clip / "rig" / "cam0"), "--out", str(out), "--image-width", "70", "--max-frames", "2",
            "--threshold", "0.4", "--no-progress"]  # fmt: skip
    result = main(argv)
    model, _ = load_model("tiny", "tiny-stream", 0)
    scene = load_input(clip / "rig" / "cam0", image_width=70, max_frames=2)
    with torch.no_grad():
        logits = model(scene.images[None])["mask_logits"][0, 1, 0]
    expected = logits_to_source(logits, scene.transform).numpy().astype(np.float16)
    assert np.array_equal(np.load(out / "prob" / "cam0" / "00001.npy"), expected)
    assert not (out / "metrics.json").exists() and result["checkpoint"] == "tiny-stream"

    run = json.loads((out / "run.json").read_text())
    assert run["preset"] == "tiny" and run["checkpoint"] == "tiny-stream" and run["checkpoint_default"]
    assert Path(run["checkpoint_path"]).name == "tiny-stream.pt" and Path(run["checkpoint_path"]).is_file()
    assert run["method"] == "mask_head" and run["threshold"] == 0.4 and run["method_notes"] == []
    assert run["input"] == str(clip / "rig" / "cam0") and run["input_kind"] == "frames"
    assert run["versions"]["torch"] == torch.__version__ and run["versions"]["page4d"]
    assert run["command"].startswith("python -m page4d.predict ") and "--threshold 0.4" in run["command"]
    assert "mask head is at its initialisation" in run["weights_note"]  # the card's caveat, said aloud
    done = json.loads((out / "DONE.json").read_text())
    assert done["kind"] == "predict" and done["status"] == "ok" and done["metrics_file"] is None

    random_out = tmp_path / "random"
    main([*argv[:1], "--out", str(random_out), *argv[3:], "--checkpoint", "random"])
    run = json.loads((random_out / "run.json").read_text())
    assert (
        run["checkpoint"] == "random" and run["checkpoint_path"] is None and "random weights" in run["model"]
    )


def test_a_preset_without_a_shipped_checkpoint_needs_weights_named(clip, tmp_path, monkeypatch):
    _forbid_building(monkeypatch)
    with pytest.raises(ValueError, match=r"no shipped checkpoint.*--checkpoint PATH.*--checkpoint random"):
        predict(clip / "rig" / "cam0", tmp_path / "out", preset="page4d_fin10_1b", progress=False)
    with pytest.raises(ValueError, match=r"an empty --checkpoint names no weights"):
        predict(clip / "rig" / "cam0", tmp_path / "out", checkpoint="", progress=False)
    with pytest.raises(ValueError, match=r"'tiny-synthetic' loads into preset 'tiny', not 'page4d_fin10_1b'"):
        predict(clip / "rig" / "cam0", tmp_path / "out", "page4d_fin10_1b", "tiny-synthetic", progress=False)
    assert not (tmp_path / "out").exists()
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(FileExistsError, match=r"--out .*file is a file, not a folder"):
        predict(clip / "rig" / "cam0", tmp_path / "file", progress=False)


def test_vggt_without_mask_head_is_refused_before_it_is_built_and_points_to_attention(
    clip, tmp_path, monkeypatch
):
    _forbid_building(monkeypatch)
    with pytest.raises(
        ValueError, match=r"'vggt_1b' has no mask head.*--method attention works for any preset"
    ):
        predict(
            clip / "rig" / "cam0", tmp_path / "out", preset="vggt_1b", checkpoint="random", progress=False
        )


def test_a_folder_holding_a_run_is_refused_and_the_run_ends_with_done(clip, tmp_path, capsys):
    out = tmp_path / "out"
    predict(clip / "rig" / "cam0", out, image_width=56, max_frames=1, progress=False)
    masks_before = {p.name: p.read_bytes() for p in (out / "masks" / "cam0").iterdir()}
    with pytest.raises(RunFolderTaken, match=rf"{out}: it already holds a finished run.*a new --out"):
        predict(clip / "rig", out, image_width=56, max_frames=1, progress=False)
    assert sorted((out / "masks").iterdir()) == [out / "masks" / "cam0"]  # no second run beside it
    assert {p.name: p.read_bytes() for p in (out / "masks" / "cam0").iterdir()} == masks_before

    # a run that never finished (killed: masks, no run.json, no DONE.json) is a run too
    (out / "DONE.json").unlink()
    (out / "run.json").unlink()
    with pytest.raises(SystemExit) as exit_info:
        main([str(clip / "rig" / "cam0"), "--out", str(out), "--image-width", "56", "--no-progress"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"page4d.predict: refusing to write into {out}: it already holds an unfinished run")
    assert "\n" not in err and "Traceback" not in err


def test_routine_mistakes_end_in_one_line_and_exit_status_2(clip, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU build, on any machine
    frames = str(clip / "rig" / "cam0")
    nan_ck = tmp_path / "nan.pt"
    state = build_model(preset("tiny")).state_dict()
    state["camera_head.trunk.0.norm1.weight"][3] = float("nan")
    torch.save(state, nan_ck)
    cases = {
        "missing checkpoint": ([frames, "--checkpoint", str(tmp_path / "nope.pt")], "checkpoint not found"),
        "missing input": ([str(tmp_path / "no_clip"), "--checkpoint", "random"], "no_clip: not found"),
        "bad preset": ([frames, "--preset", "tinyy"], "unknown preset 'tinyy'"),
        "NaN weight": ([frames, "--checkpoint", str(nan_ck)], "nan.pt: 1 tensor(s) hold NaN or inf"),
        "threshold 50": ([frames, "--threshold", "50"], None),  # argparse: its own usage + error line
        "cuda without CUDA": ([frames, "--device", "cuda:0"], "device 'cuda:0' cannot be used"),
    }
    for name, (args, message) in cases.items():
        with pytest.raises(SystemExit) as exit_info:
            main([*args, "--out", str(tmp_path / name), "--image-width", "56", "--no-progress"])
        assert exit_info.value.code == 2, name
        err = capsys.readouterr().err
        assert "Traceback" not in err, name
        if message is None:
            assert "argument --threshold: 50 is not a probability in [0, 1]" in err
        else:
            assert err.startswith("page4d.predict: ") and err.count("\n") == 1 and message in err, (name, err)
        assert not (tmp_path / name).exists(), f"{name}: wrote into --out before refusing"


def test_threshold_outside_0_1_is_refused_by_the_api_too(clip, tmp_path):
    for bad in (50, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"threshold must be a probability in \[0, 1\]"):
            predict(clip / "rig" / "cam0", tmp_path / "out", threshold=bad, progress=False)


def test_unexpected_errors_keep_their_traceback(clip, tmp_path, monkeypatch):
    import page4d.predict as predict_module

    def broken(*args, **kwargs):
        raise RuntimeError("a bug, not a user mistake")

    monkeypatch.setattr(predict_module, "predict_frames", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main([str(clip / "rig" / "cam0"), "--out", str(tmp_path / "out"), "--image-width", "56"])


def test_the_command_prints_one_line_for_a_missing_checkpoint(clip, tmp_path):
    cmd = [sys.executable, "-m", "page4d.predict", str(clip / "rig" / "cam0"), "--out", str(tmp_path / "o"),
           "--checkpoint", str(tmp_path / "missing.pt")]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("page4d.predict: checkpoint not found: ") and proc.stderr.count("\n") == 1


@pytest.fixture(scope="module")
def rgbd_run(tmp_path_factory):
    """The real capture (RGB-D + SegAnyMo) through predict with the shipped weights, in two chunks, and
    the same clip's predictions in memory, one chunk at a time, for checking the files."""
    from conftest import MV_SCENE

    out = tmp_path_factory.mktemp("rgbd") / "run"
    result = predict(MV_SCENE, out, image_width=154, max_frames=4, chunk=2, progress=False)
    return out, result


def test_predict_writes_cameras_depth_and_point_clouds_that_independent_readers_agree_with(rgbd_run):
    plyfile = pytest.importorskip("plyfile")
    from conftest import MV_SCENE
    from evo.tools import file_interface
    from page4d.inference.reconstruction import reconstruct

    out, result = rgbd_run
    cams = json.loads((out / "cameras.json").read_text())
    assert "world_to_camera" in cams["convention"] and len(cams["frames"]) == 4 * 4
    assert cams["source_size"] == [240, 320]
    scene = load_input(MV_SCENE, image_width=154, max_frames=4)
    model, _ = load_model("tiny", "tiny-stream")  # the default weights
    with torch.no_grad():
        pred = model(scene.images[:2][None])
    first = reconstruct(pred, scene.images[:2][None])  # chunk 1 is in the global world as it is
    frame = next(f for f in cams["frames"] if f["time"] == 1 and f["view"] == "view2")
    assert torch.allclose(torch.tensor(frame["world_to_camera"]), first.extrinsics[1, 2], atol=1e-4)
    k_model = scene.transform.intrinsics(torch.tensor(frame["intrinsics"], dtype=torch.float64))
    assert torch.allclose(k_model.float(), first.intrinsics[1, 2], atol=1e-3)
    depth = np.load(out / "depth" / "view2" / "time_01.npy")
    assert depth.shape == (240, 320) and depth.dtype == np.float16 and (depth > 0).mean() > 0.5
    from page4d.inference.reconstruction import source_depth

    want = source_depth(first.depth[1, 2], scene.transform).numpy()
    assert np.allclose(depth.astype(np.float32), want, rtol=2e-3, atol=1e-3)  # float16 on disk
    vertex = plyfile.PlyData.read(str(out / "points" / "t_00001.ply"))["vertex"]
    assert vertex.count == 4 * scene.image_size[0] * scene.image_size[1]
    xyz = np.stack([vertex["x"], vertex["y"], vertex["z"]], 1).reshape(4, *scene.image_size, 3)
    assert np.allclose(xyz, first.points[1].numpy(), atol=1e-4)
    assert np.allclose(
        vertex["p_dynamic"].reshape(4, *scene.image_size), first.p_dynamic[1].numpy(), atol=1e-6
    )
    traj = file_interface.read_tum_trajectory_file(str(out / "trajectories" / "view0.txt"))
    assert len(traj.timestamps) == 4  # chained across both chunks
    later = [f for f in cams["frames"] if f["view"] == "view0" and f["time"] == 3][0]
    assert np.allclose(np.linalg.inv(traj.poses_se3[3])[:3], np.array(later["world_to_camera"]), atol=1e-4)
    static = plyfile.PlyData.read(str(out / "static_map.ply"))["vertex"]
    assert (
        static.count == result["reconstruction"]["static_map_points"]
        and float(static["p_dynamic"].max()) < 0.5
    )


def test_with_gt_geometry_metrics_score_cameras_depth_and_the_static_map_with_and_without_the_mask(rgbd_run):
    out, result = rgbd_run
    metrics = json.loads((out / "metrics.json").read_text())
    geo = metrics["geometry_scores"]
    assert 0 < geo["depth_abs_rel"] < 1 and geo["time_steps"] == 4 and len(geo["camera_rot_deg"]) == 16
    for name in ("map_static", "map_unfiltered"):
        m = geo[name]
        assert m["accuracy"] > 0 and m["completeness"] > 0 and m["points"] > 1000, (name, m)
    assert 0 < geo["map_static_kept_points"] < geo["map_unfiltered_kept_points"]


def test_given_masks_drive_the_bias_and_a_missing_one_is_refused(clip, tmp_path):
    """--mask-from: every frame's mask drives the attention bias (the written masks are then those masks,
    J = 1 against the same GT), and a folder that lacks a frame's mask is refused, naming it."""
    from own_clip import write_palette_png

    full = tmp_path / "full"
    full.mkdir()
    for t in range(T):
        exact = np.asarray(
            Image.open(clip / "scene" / "SegAnyMo" / "sam2" / "exact_masks" / "view_0" / f"{t:03d}.png")
        )
        write_palette_png(full / f"{t:05d}.png", exact > 0)
    common = dict(image_width=70, chunk=3, progress=False, points=False)
    given = predict(clip / "rig" / "cam0", tmp_path / "given", gt=full, mask_from=full, **common)
    head = predict(clip / "rig" / "cam0", tmp_path / "head", gt=full, **common)
    run = json.loads((tmp_path / "given" / "run.json").read_text())
    assert run["mask_from"] == str(full) and given["J_mean"] > head["J_mean"] + 0.1
    assert not (tmp_path / "given" / "points").exists() and (tmp_path / "given" / "static_map.ply").is_file()
    with pytest.raises(ValueError, match=r"--mask-from .*no mask for frames \(time, view\) \[\[3, 0\]\]"):
        predict(clip / "rig" / "cam0", tmp_path / "gap", mask_from=clip / "gt" / "cam0", **common)


def test_a_model_without_usable_cameras_skips_the_reconstruction_and_says_why(clip, checkpoint, tmp_path):
    """The quick head sits on a random backbone whose camera head never trained: masks as without
    reconstruction (no overlapping context), no camera files, the reason in run.json and the result."""
    common = dict(checkpoint=checkpoint, image_width=70, chunk=2, progress=False)
    with_rec = predict(clip / "rig" / "cam0", tmp_path / "a", **common)
    without = predict(clip / "rig" / "cam0", tmp_path / "b", reconstruction=False, **common)
    assert "no valid field of view" in with_rec["reconstruction"]["skipped"]
    assert "reconstruction" not in without
    assert not (tmp_path / "a" / "cameras.json").exists()
    assert (
        "no valid field of view"
        in json.loads((tmp_path / "a" / "run.json").read_text())["reconstruction_skipped"]
    )
    for t in range(T):
        a = np.load(tmp_path / "a" / "prob" / "cam0" / f"{t:05d}.npy")
        b = np.load(tmp_path / "b" / "prob" / "cam0" / f"{t:05d}.npy")
        assert np.array_equal(a, b), t


ISSUE20_RIG = Path(__file__).resolve().parents[1] / "checkpoints" / "issue20" / "rig-pos-4800.pt"


def test_weights_made_with_a_tiny_only_patch_embedding_run_by_their_keys_and_refuse_another(
    clip, tmp_path, capsys, monkeypatch
):
    """Issue 20's `conv_pos` weights (in git) run with no option: `--patch-embed auto` reads the
    embedding from their keys, and run.json records the one built; naming another ends in one line that
    names the differing keys and the option; a 1B preset is refused the tiny-only variant before
    anything is built."""
    frames = str(clip / "rig" / "cam0")
    argv = [
        frames,
        "--image-width",
        "70",
        "--max-frames",
        "2",
        "--no-progress",
        "--checkpoint",
        str(ISSUE20_RIG),
    ]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--out", str(tmp_path / "refused"), "--patch-embed", "conv"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert "aggregator.patch_embed.pos_embed" in err and "--patch-embed" in err
    assert not (tmp_path / "refused").exists()

    out = tmp_path / "pos"
    main([*argv, "--out", str(out)])
    run = json.loads((out / "run.json").read_text())
    assert run["patch_embed"] == "conv_pos" and "with patch embedding conv_pos" in run["model"]
    assert "all keys matched" in run["model"]
    model, _ = load_model("tiny", ISSUE20_RIG, 0)
    assert "pos_embed" in dict(model.aggregator.patch_embed.named_parameters())
    scene = load_input(clip / "rig" / "cam0", image_width=70, max_frames=2)
    with torch.no_grad():
        logits = model(scene.images[None])["mask_logits"][0, 1, 0]
    expected = logits_to_source(logits, scene.transform).numpy().astype(np.float16)
    assert np.array_equal(np.load(out / "prob" / "cam0" / "00001.npy"), expected)
    named, _ = load_model("tiny", ISSUE20_RIG, 0, patch_embed="conv_pos")
    auto = model.state_dict()
    assert all(torch.equal(v, auto[k]) for k, v in named.state_dict().items())

    _forbid_building(monkeypatch)
    with pytest.raises(ValueError, match="'conv_pos' is a tiny-only variant; preset 'page4d_fin10_1b'"):
        predict(frames, tmp_path / "big", "page4d_fin10_1b", "random", patch_embed="conv_pos", progress=False)
    with pytest.raises(ValueError, match="patch embedding must be one of"):
        load_model("tiny", "", 0, patch_embed="dinov2")
