"""Trainer and evaluation: determinism, what trains, the head-only fast path, DDP, metric plumbing."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from page4d.data import SyntheticSceneConfig, generate_synthetic_scene, load_scene
from page4d.experiments.ablation import AblationParams
from page4d.geometry import rotation_matrix_to_quaternion
from page4d.model import build_model, load_checkpoint, preset
from page4d.model.config import MaskHeadConfig
from page4d.scoring.evaluate import evaluate
from page4d.train import (
    NO_GEOMETRY,
    TRAINS,
    ClipOrder,
    TrainConfig,
    build_parser,
    build_training_model,
    clip_for_step,
    lr_at,
    main,
    mask_logits_from_features,
    middle_blocks,
    schedule_counters,
    train,
    weights_digest,
)
from page4d.train.cli import image_size_of
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


@pytest.mark.parametrize(
    "strategy", ["mask_head", "mask_head+middle_blocks", "mask_head_only", "middle_blocks"]
)
def test_each_choice_of_what_trains_trains_only_what_it_names(scene, strategy):
    cfg = small(steps=1, trains=strategy)
    assert cfg.trains in TRAINS  # old names are aliases of the names for what trains
    model = build_training_model(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train(cfg, scene, model=model, progress=False)
    diff = changed(before, model)
    assert any(k.startswith("aggregator.spatial_mask_head.") for k in diff)
    middle = middle_blocks(model.cfg)
    assert middle == (3, 4, 5)  # the tiny preset's masked_global_blocks
    for k in diff:
        if cfg.trains == "mask_head":
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
    if cfg.trains == "mask_head+middle_blocks":
        assert any(k.startswith("aggregator.global_blocks.3.") for k in diff)


def test_middle_blocks_follow_the_mask_head_config():
    assert middle_blocks(preset("page4d_official_1b")) == tuple(range(10, 20))  # PAGE-4D's own recipe
    assert middle_blocks(preset("page4d_fin10_1b")) == tuple(range(8, 24))
    assert middle_blocks(preset("vggt_1b")) == tuple(range(10, 20))  # no mask head: 10..19 of 24
    assert middle_blocks(preset("tiny"), (1, 2)) == (1, 2)
    with pytest.raises(ValueError, match="outside"):
        middle_blocks(preset("tiny"), (9,))


def test_schedule_warmup_and_min_lr_are_config():
    cfg = TrainConfig(steps=100, lr=1e-2, warmup_steps=10, min_lr=1e-3)
    assert lr_at(0, cfg) == pytest.approx(1e-3) and lr_at(9, cfg) == pytest.approx(1e-2)
    assert lr_at(10, cfg) == pytest.approx(1e-2)
    assert lr_at(99, cfg) > 1e-3 and lr_at(100, cfg) == pytest.approx(1e-3)
    assert TrainConfig(steps=300).warmup() == 15  # default: 5% of the steps


def test_steps_zero_is_refused(tmp_path, scene_dir):
    with pytest.raises(ValueError, match="steps must be >= 1"):
        TrainConfig(steps=0)
    with pytest.raises(SystemExit) as exc:
        main(["--scene", str(scene_dir), "--out", str(tmp_path / "r"), "--steps", "0"])
    assert "steps must be >= 1" in str(exc.value.code)
    assert not (tmp_path / "r").exists()


def test_cli_defaults_match_the_ablation_and_help_shows_every_default(scene_dir):
    args = build_parser().parse_args(["--scene", "s", "--out", "o"])
    p, d = AblationParams(), TrainConfig()
    assert (args.lr, args.clip_times, args.steps, args.preset) == (d.lr, d.clip_times, d.steps, d.preset)
    assert (d.steps, d.preset) == (p.steps, p.preset)  # the ablation's fine-tuning has its own lr / clips
    assert image_size_of(args, "rgbd_scene") == {"image_size": tuple(p.image_size)}  # an RGB-D scene
    assert TrainConfig(trains=args.trains).trains == TrainConfig(trains=p.trains).trains
    assert p.trains == "mask_head+middle_blocks"
    text = " ".join(build_parser().format_help().split())
    for expected in (
        "(default: 0.005)",
        "(default: 2)",
        "(default: 120)",
        "(default: mask_head+middle_blocks)",
        "(default: fp32)",
    ):
        assert expected in text, expected
    assert "all = everything" in text


def test_start_and_end_lines_count_parameters_and_history_logs_each_term(scene, tmp_path, capsys):
    cfg = small(trains="mask_head")
    _, history = train(cfg, scene, output_dir=tmp_path / "run", progress=True)
    out = capsys.readouterr().out
    n = sum(p.numel() for n_, p in build_training_model(cfg).named_parameters() if "spatial_mask_head" in n_)
    assert f"trains mask_head ({n:,} parameters in 8 tensors)" in out
    assert f"run folder {tmp_path / 'run'}" in out.splitlines()[-1] and "mask_loss" in out.splitlines()[-1]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["trainable_parameters"] == n and summary["trainable_tensors"] == 8
    assert summary["trained_parameters"] == n and summary["trained_tensors"] == 8  # geometry reaches them all
    for key in ("loss", "camera_loss", "depth_loss", "point_loss", "mask_loss", "mask_bce_loss", "lr"):
        assert isinstance(history[0][key], float), key


def test_summary_records_the_tensors_that_received_gradients_not_what_was_configured(scene, tmp_path, capsys):
    """Mask terms only, the mask head's input detached: whatever `trains` says, only the head learns."""
    cfg = small(trains="everything", loss_overrides=dict(NO_GEOMETRY))
    train(cfg, scene, output_dir=tmp_path / "run", progress=True)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    names = summary["trained_tensor_names"]
    assert names and all(n.startswith("aggregator.spatial_mask_head.") for n in names), names
    params = dict(build_training_model(cfg).named_parameters())
    assert summary["trainable_tensors"] == sum(not n.endswith("mask_token") for n in params)  # everything
    assert summary["trained_tensors"] == len(names) < summary["trainable_tensors"]
    assert summary["trained_parameters"] == sum(params[n].numel() for n in names)
    assert summary["trained_parameters"] < summary["trainable_parameters"]
    end = capsys.readouterr().out.splitlines()[-1]
    assert f"gradients reached {len(names)} of {summary['trainable_tensors']} trainable tensors" in end


def test_freeze_is_the_deprecated_name_of_trains_in_the_config_the_cli_and_old_checkpoints(scene, tmp_path):
    with pytest.deprecated_call():
        assert TrainConfig(freeze="all").trains == "everything"
    with pytest.raises(ValueError, match="not both"):
        TrainConfig(trains="mask_head", freeze="everything")
    assert dataclasses.replace(small(trains="mask_head"), steps=3).trains == "mask_head"
    assert "freeze" not in dataclasses.asdict(small())  # config.json says `trains`
    args = build_parser().parse_args(["--scene", "s", "--out", "o", "--freeze", "mask_head_only"])
    assert args.trains == "mask_head_only" and TrainConfig(trains=args.trains).trains == "mask_head"
    assert TrainConfig.from_record({"freeze": "mask_head", "lr": 0.1, "gone": 1}).trains == "mask_head"
    # a run folder written before the rename: its checkpoint's config says `freeze`
    cfg = small(steps=4, trains="mask_head")
    whole, _ = train(cfg, scene, progress=False)
    train(cfg, scene, output_dir=tmp_path / "old", progress=False, stop_after=2)
    path = tmp_path / "old" / "checkpoint_2.pt"
    ckpt = torch.load(path, weights_only=True)
    ckpt["config"]["freeze"] = ckpt["config"].pop("trains")
    del ckpt["trained_tensors"]
    torch.save(ckpt, path)
    resumed, _ = train(cfg, scene, output_dir=tmp_path / "old", progress=False, resume=True)
    assert weights_digest(resumed) == weights_digest(whole)


def test_every_option_of_the_generated_clis_shows_its_default():
    from page4d.experiments.pretrain import PretrainConfig
    from page4d.experiments.pretrain import build_parser as pretrain_parser

    for parser in (build_parser(), pretrain_parser()):
        for action in parser._actions:
            if action.required or action.dest == "help":
                continue
            text = " ".join(parser._get_formatter()._expand_help(action).split())
            assert "default" in text, (parser.prog, action.option_strings, text)
    text = " ".join(pretrain_parser().format_help().split())
    assert "(default: 6000)" in text and "--image-size H W" in text and "(default: 0.001)" in text
    old = " ".join(pretrain_parser("tiny-synthetic").format_help().split())  # a named recipe's defaults
    assert "(default: 5000)" in old and "(default: 48)" in old
    args = pretrain_parser().parse_args(["--out", "o", "--image-size", "56", "70", "--steps", "4"])
    assert (args.image_size, args.steps, args.lr) == ([56, 70], 4, PretrainConfig.lr)


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
        trains="mask_head_only",
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
        str(free_port()),
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
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300, env=cpu_env())
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2
    first, second = summary["rank_weight_digests"]
    assert first == second
    assert first != weights_digest(build_training_model(small()))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def test_ranks_split_one_seeded_stream_of_clips():
    rng = random.Random(3 * 1000)
    stream = [rng.choice(range(7)) for _ in range(24)]  # one process draws exactly this (as before)
    assert [clip_for_step(7, k, seed=3) for k in range(24)] == stream
    for world in (2, 3):
        for rank in range(world):
            order = ClipOrder(7, seed=3, rank=rank, world=world)
            assert [order.clip(k) for k in range(24 // world)] == stream[rank::world]
    assert ClipOrder(7, seed=3).clip(5) == stream[5]  # a pure function of the step: resumable
    assert [clip_for_step(7, k, seed=4) for k in range(24)] != stream


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_training_in_bf16_on_the_local_rank_device(scene, tmp_path):
    model, history = train(
        small(precision="bf16", device="cuda"), scene, output_dir=tmp_path / "gpu", progress=False
    )
    assert next(model.parameters()).device == torch.device("cuda", torch.cuda.current_device())
    assert all(r["updated"] for r in history)
    summary = json.loads((tmp_path / "gpu" / "summary.json").read_text())
    assert summary["device"].startswith("cuda")


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")
def test_two_nccl_processes_use_one_gpu_each(scene_dir, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(free_port()), "-m", "page4d.train", "--scene", str(scene_dir), "--out", str(tmp_path / "ddp"),
           "--image-size", "56", "70", "--steps", "2", "--precision", "bf16"]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2 and len(set(summary["rank_weight_digests"])) == 1


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
    assert "collinear" in result["trajectory_note"] and "rotation errors kept" in result["trajectory_note"]
    assert result["depth_abs_rel"] < 1e-6
    # a relative rotation needs no alignment: the oracle's rotations are still scored, and exact
    assert result["rpe_rot"] < 1e-3 and result["rpe_view_rot"] < 1e-3
    frames = result["camera_frames"]
    assert [f["times"] for f in frames] == [[0, 1], [2, 3]] and len(frames[0]["rot_deg"]) == 4
    assert max(max(f["rot_deg"]) for f in frames) < 1e-3 and result["camera_rot_deg_max"] < 1e-3


def test_mask_only_objective_without_detach_trains_the_backbone_but_not_the_dense_heads(scene):
    cfg = small(
        steps=2,
        trains="all",
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


# ---------------------------------------------------------------------------------------------------
# run folders are records: refused when taken, resumable bit-identically, pruned on request
# ---------------------------------------------------------------------------------------------------
def folder_bytes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def cli(scene_dir, out, *extra) -> list[str]:
    return [
        "--scene",
        str(scene_dir),
        "--out",
        str(out),
        "--image-size",
        "56",
        "70",
        "--threads",
        "1",
        *extra,
    ]


def test_a_finished_run_folder_is_never_overwritten(scene_dir, tmp_path, capsys):
    out = tmp_path / "run"
    main(cli(scene_dir, out, "--steps", "2"))
    before = folder_bytes(out)
    assert {"config.json", "history.json", "summary.json", "checkpoint.pt"} <= set(before)
    for argv in (cli(scene_dir, out, "--steps", "2"), cli(scene_dir, out, "--steps", "3", "--lr", "0.1")):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        message = str(exc.value.code)
        assert str(out) in message and "--resume" in message and "new --out" in message
        assert folder_bytes(out) == before
    # the same through the real command line: non-zero exit, every file byte-identical
    done = subprocess.run(
        [sys.executable, "-m", "page4d.train", *cli(scene_dir, out, "--steps", "2")],
        capture_output=True, text=True, timeout=300, env=cpu_env(),
    )  # fmt: skip
    assert done.returncode != 0 and str(out) in done.stderr and "--resume" in done.stderr
    assert folder_bytes(out) == before
    # --resume of a finished run at the same step count has nothing to do and writes nothing
    main(cli(scene_dir, out, "--steps", "2", "--resume"))
    assert "already finished at step 2" in capsys.readouterr().out
    assert folder_bytes(out) == before


def official_tiny_model(cfg: TrainConfig) -> nn.Module:
    """Tiny model with the official head and a hold schedule that changes within a few steps, so a
    resumed run that restarted the schedule counter would end with different weights."""
    head = MaskHeadConfig(
        variant="official", mask_after_block=2, masked_global_blocks=(3, 4, 5), pointwise_channels=8,
        scale=8.0, hold_start=2, hold_end=6,
    )  # fmt: skip
    torch.manual_seed(cfg.seed)
    return build_model(preset("tiny", mask_head=head, track_head=None))


def test_three_steps_then_resume_three_equals_six_in_one_go(scene, tmp_path):
    cfg = small(steps=6, trains="everything", save_every=2, lr=0.01)
    whole, _ = train(
        cfg, scene, output_dir=tmp_path / "whole", model=official_tiny_model(cfg), progress=False
    )
    part, first = train(
        cfg, scene, output_dir=tmp_path / "part", model=official_tiny_model(cfg), progress=False, stop_after=3
    )
    assert len(first) == 3 and not (tmp_path / "part" / "summary.json").exists()
    assert schedule_counters(part) == {"aggregator.spatial_mask_head.schedule_step": torch.tensor(3)}
    with pytest.raises(RuntimeError):  # not resuming: the unfinished folder is refused too
        train(cfg, scene, output_dir=tmp_path / "part", model=official_tiny_model(cfg), progress=False)
    for path in (tmp_path / "part").glob("checkpoint*.pt"):  # as if the first call had taken 1000 s
        saved = torch.load(path, weights_only=True)
        saved["history"][-1]["seconds"] = 1000.0
        torch.save(saved, path)
    fresh = official_tiny_model(dataclasses.replace(cfg, seed=cfg.seed + 1))  # other weights: all restored
    resumed, history = train(
        cfg, scene, output_dir=tmp_path / "part", model=fresh, progress=False, resume=True
    )
    assert int(schedule_counters(resumed)["aggregator.spatial_mask_head.schedule_step"]) == 6
    assert weights_digest(resumed) == weights_digest(whole)
    whole_history = json.loads((tmp_path / "whole" / "history.json").read_text())
    assert [r["loss"] for r in history] == [r["loss"] for r in whole_history]
    summary = json.loads((tmp_path / "part" / "summary.json").read_text())
    assert summary["resumed_from_step"] == 3
    # the clock goes on from the first call's: the summary times the whole run, not the last call
    assert all(r["seconds"] > 1000.0 for r in history[3:]) and summary["seconds"] > 1000.0


def test_resume_refuses_changed_settings(scene, tmp_path):
    cfg = small(steps=4)
    train(cfg, scene, output_dir=tmp_path / "r", progress=False, stop_after=2)
    with pytest.raises(ValueError, match="lr"):
        train(dataclasses.replace(cfg, lr=0.1), scene, output_dir=tmp_path / "r", progress=False, resume=True)


def like_a_terminal() -> None:
    """Ctrl-C's SIGINT as a terminal's foreground job gets it: a shell runs background jobs (`cmd &`,
    nohup, a CI runner's) with SIGINT ignored, the child inherits that, and Python then installs no
    KeyboardInterrupt handler, so the test's "Ctrl-C" would do nothing and the run would finish."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt_when(proc: subprocess.Popen, path: Path, sig: signal.Signals) -> None:
    deadline = time.monotonic() + 120
    while not path.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it could be stopped"
        time.sleep(0.01)
    proc.send_signal(sig)
    proc.wait(timeout=60)


def test_ctrl_c_then_sigkill_then_resume_ends_with_the_uninterrupted_weights(scene_dir, tmp_path):
    steps = 16
    scene = load_scene(scene_dir, image_size=(56, 70))
    uninterrupted, _ = train(small(steps=steps), scene, output_dir=tmp_path / "whole", progress=False)
    out = tmp_path / "killed"
    flags = ("--steps", str(steps), "--save-every", "4", "--keep-last", "2")
    argv = [sys.executable, "-m", "page4d.train", *cli(scene_dir, out, *flags)]
    env = cpu_env()

    # Ctrl-C: a checkpoint at the step it reached, and the history up to it
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
        preexec_fn=like_a_terminal,
    )
    interrupt_when(proc, out / "checkpoint_4.pt", signal.SIGINT)
    assert proc.returncode != 0 and "continue with --resume" in proc.stderr.read()
    done = len(json.loads((out / "history.json").read_text()))
    assert done >= 4 and (out / f"checkpoint_{done}.pt").exists()

    # SIGKILL of the resumed run: nothing is written after the kill, no half file is ever visible
    proc = subprocess.Popen(
        [*argv, "--resume"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    interrupt_when(proc, out / f"checkpoint_{(done // 4 + 1) * 4}.pt", signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "summary.json").exists(), "the run finished before the kill: make it longer"
    assert len(list(out.glob("checkpoint_*.pt"))) <= 3  # --keep-last 2 (+1 if killed before pruning)

    subprocess.run([*argv, "--resume"], check=True, capture_output=True, text=True, timeout=300, env=env)
    resumed = build_training_model(small())
    assert load_checkpoint(resumed, out / "checkpoint.pt").ok
    assert weights_digest(resumed) == weights_digest(uninterrupted)
    assert not list(out.glob(".*tmp-*"))
    assert len(json.loads((out / "history.json").read_text())) == steps


def test_keep_last_prunes_step_checkpoints(scene, tmp_path):
    train(small(steps=5, save_every=1, keep_last=2), scene, output_dir=tmp_path / "k", progress=False)
    names = sorted(p.name for p in (tmp_path / "k").glob("checkpoint*.pt"))
    assert names == ["checkpoint.pt", "checkpoint_3.pt", "checkpoint_4.pt"]


# ---------------------------------------------------------------------------------------------------
# clips without mask GT (issue 10, item 6, training side)
# ---------------------------------------------------------------------------------------------------
def without_gt(scene, times):
    valid = scene.mask_valid.clone()
    for t in times:
        valid[scene.times.index(t)] = False
    return dataclasses.replace(scene, mask_valid=valid)


def test_a_clip_without_mask_gt_trains_geometry_and_history_says_why(scene, tmp_path):
    partial = without_gt(scene, scene.times[:2])  # the clip starting at t0 has no GT at all
    _, history = train(small(steps=6), partial, output_dir=tmp_path / "g", progress=False)
    assert all(r["updated"] for r in history)
    skipped = [r for r in history if r["mask_supervised"] is False]
    assert skipped and all(r["clip_start"] == scene.times[0] for r in skipped)
    assert all(isinstance(r["camera_loss"], float) for r in skipped)
    summary = json.loads((tmp_path / "g" / "summary.json").read_text())
    assert summary["mask_skipped_steps"]["count"] == len(skipped)
    assert "no valid frame" in next(iter(summary["mask_skipped_steps"]["reasons"]))


def test_mask_only_training_skips_clips_without_gt_and_fails_only_if_nothing_trained(scene, tmp_path):
    mask_only = {"use_camera": False, "use_depth": False, "use_point": False}
    partial = without_gt(scene, scene.times[:2])
    _, history = train(
        small(steps=6, loss_overrides=mask_only), partial, output_dir=tmp_path / "m", progress=False
    )
    skipped = [r for r in history if not r["updated"]]
    assert skipped and len(skipped) < len(history)
    assert all("no mask GT" in r["skip_reason"] for r in skipped)
    summary = json.loads((tmp_path / "m" / "summary.json").read_text())
    assert summary["skipped_steps"]["count"] == len(skipped) and summary["updated_steps"] == 6 - len(skipped)
    with pytest.raises(RuntimeError, match="trained nothing"):
        train(small(arm="none", loss_overrides=mask_only), scene, progress=False)


def test_an_arm_with_mask_terms_and_no_gt_anywhere_is_refused_before_training(scene, tmp_path):
    nothing = dataclasses.replace(scene, masks=None, mask_valid=torch.zeros_like(scene.mask_valid))
    with pytest.raises(ValueError, match="mask terms"):
        train(small(arm="bce"), nothing, output_dir=tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()
    with pytest.raises(ValueError, match="no training time step"):
        train(small(arm="bce"), without_gt(scene, scene.times), progress=False)
    train(small(arm="none", steps=1), nothing, progress=False)  # geometry alone is fine


# ---------------------------------------------------------------------------------------------------
# bounded memory
# ---------------------------------------------------------------------------------------------------
def test_feature_cache_has_a_limit_and_reports_it(scene, tmp_path):
    mask_only = {"use_camera": False, "use_depth": False, "use_point": False}
    cfg = small(steps=4, trains="mask_head", loss_overrides=mask_only)
    m1, _ = train(cfg, scene, output_dir=tmp_path / "cached", progress=False)
    m2, _ = train(
        dataclasses.replace(cfg, feature_cache_mb=0.001), scene, output_dir=tmp_path / "tiny", progress=False
    )
    assert weights_digest(m1) == weights_digest(m2)  # the cache changes the cost, never the numbers
    big = json.loads((tmp_path / "cached" / "summary.json").read_text())["feature_cache"]
    small_ = json.loads((tmp_path / "tiny" / "summary.json").read_text())["feature_cache"]
    assert big["clips"] >= 1 and big["where"] == "host memory" and big["recomputed_for_lack_of_room"] == 0
    assert small_["clips"] == 0 and small_["recomputed_for_lack_of_room"] == 4


def test_weights_digest_sees_one_flipped_bit_and_runs_where_the_weights_are():
    model = build_model(preset("tiny"))
    digest = weights_digest(model)
    clone = build_model(preset("tiny"))
    clone.load_state_dict(model.state_dict())
    assert weights_digest(clone) == digest
    w = clone.aggregator.frame_blocks[0].attn.qkv.weight
    with torch.no_grad():
        w.view(-1).view(torch.int32)[123] ^= 1  # one bit of one float
    assert weights_digest(clone) != digest


def test_history_records_every_frames_camera_error(scene, tmp_path):
    """Each geometry step lists the rotation and centre-direction error of each of its T*V frames; they
    are what the clip's poses say (recomputed here from a forward of the final weights)."""
    from page4d.data import scene_to_batch
    from page4d.scoring.evaluate import pose_encoding_to_extrinsics
    from page4d.scoring.metrics import camera_errors_per_frame

    model, history = train(small(arm="none", steps=3, lr=1e-3), scene, progress=False)
    last = history[-1]
    assert len(last["camera_rot_deg"]) == 2 * 3 and last["camera_rot_deg"][0] == 0.0
    assert all(0.0 <= r <= 180.0 for r in last["camera_rot_deg"])
    batch = scene_to_batch(scene, times=[0, 1], world_frame="first_camera")
    with torch.no_grad():
        pose = model(batch.images)["pose_enc"][0].reshape(-1, 9)
    again = camera_errors_per_frame(pose_encoding_to_extrinsics(pose), batch.extrinsics[0].reshape(-1, 3, 4))
    assert again["rot_deg"].shape == (6,) and float(again["rot_deg"][0]) < 1e-9


def test_the_bias_can_be_off_or_the_gt_and_attention_forcing_trains(scene_dir, tmp_path):
    """no_mask (bias off), the oracle (GT masks drive the bias; the head never runs) and MoRe's forcing
    term give three different runs from the same init; forcing logs its term and its gradient reaches
    the middle blocks."""
    exact = load_scene(scene_dir, mask_source="sam2/exact_masks")
    runs = {}
    for name, kw in {
        "head": {},
        "off": {"mask_bias": "off"},
        "gt": {"mask_bias": "gt"},
        "forcing": {"loss_overrides": {"use_attention_forcing": True, "w_attention_forcing": 5.0}},
    }.items():
        torch.manual_seed(0)
        model, history = train(small(arm="none", **kw), exact, progress=False)
        runs[name] = (weights_digest(model), history)
    assert len({d for d, _ in runs.values()}) == 4
    assert runs["forcing"][1][0]["attention_forcing_loss"] > 0
    assert "attention_forcing_loss" not in runs["head"][1][0]
    head_free = build_training_model(small(mask_bias="off"))
    assert head_free.aggregator.masked_global_blocks  # the config keeps them; train() switches them off
    gap = dataclasses.replace(exact, mask_valid=exact.mask_valid.clone())
    gap.mask_valid[1, 2] = False
    with pytest.raises(ValueError, match="oracle.*needs a GT mask on every frame"):
        train(small(arm="none", mask_bias="gt", steps=4), gap, progress=False)


def test_whole_scenes_in_stream_order(tmp_path):
    """clip_times 0 trains on each scene whole; the stream order visits scene k at step k."""
    from page4d.experiments.scene_stream import SceneStream, StreamRecipe

    stream = SceneStream(StreamRecipe(image_size=(56, 70)), length=3)
    cfg = small(arm="none", steps=4, clip_times=0, clip_order="stream", trains="everything", lr=1e-3)
    _, history = train(cfg, stream, progress=False)
    assert [r["scene"] for r in history] == [0, 1, 2, 0]
    assert all(r["updated"] for r in history)
    assert len(history[1]["camera_rot_deg"]) == stream.config(1).times * stream.config(1).views


# ---------------------------------------------------------------------------------------------------
# any input predict reads (issue 22): frames folders and videos train the mask terms only, and say so
# ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from own_clip import make_clip

    return make_clip(tmp_path_factory.mktemp("own_clip"))


def refusal(argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    message = str(exc.value.code)
    assert message.startswith("page4d.train: ") and "\n" not in message, message
    return message


def test_an_input_without_depth_or_cameras_refuses_what_cannot_train_in_one_line(clip, scene_dir, tmp_path):
    frames, gt, out = str(clip / "rig" / "cam0"), str(clip / "gt" / "cam0"), tmp_path / "run"
    base = ["--scene", frames, "--out", str(out), "--image-width", "70", "--steps", "1", "--threads", "1"]
    message = refusal([*base, "--gt", gt, "--geometry"])
    assert "--geometry needs depth and cameras" in message and "is a frames folder without them" in message
    assert "pass --gt MASKS" in refusal(base)  # mask terms only, and no masks to learn from
    assert "nothing would train" in refusal([*base, "--gt", gt, "--arm", "none"])
    assert "not both" in refusal([*base, "--gt", gt, "--image-size", "56", "70"])
    assert not out.exists()
    # the library says the same when asked for geometry terms on such a scene, before the first step
    from page4d.data import load_input

    scene = load_input(frames, image_width=70, gt=gt)
    with pytest.raises(
        ValueError, match="geometry terms are on but frames folder .* has no depth or cameras"
    ):
        train(small(), scene, output_dir=out, progress=False)
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda_is_one_line(scene_dir, tmp_path):
    message = refusal(cli(scene_dir, tmp_path / "run", "--steps", "1", "--device", "cuda"))
    assert "device 'cuda' cannot be used: torch.cuda.is_available() is False" in message
    assert not (tmp_path / "run").exists()


def test_a_frames_folder_with_davis_masks_trains_the_mask_terms_and_records_why(clip, tmp_path, capsys):
    out = tmp_path / "run"
    main(["--input", str(clip / "rig"), "--gt", str(clip / "gt"), "--out", str(out), "--image-width", "70",
          "--steps", "3", "--threads", "1", "--trains", "mask_head"])  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        f"train: geometry off (automatic): {clip / 'rig'} is a folder of per-view frame folders without "
        "depth or cameras: training the mask terms only"
    )
    summary = json.loads((out / "summary.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert summary["geometry"] is False and summary["input"] == config["input"]
    record = summary["input"]
    assert record["input_kind"] == "multiview_frames" and record["geometry"].startswith("off (automatic)")
    assert (record["frames"], record["views"], record["model_input_size"]) == (6, 2, [56, 70])
    assert record["mask_missing_reason"].startswith("2 of 12 frames have no mask")  # own_clip's GAP, 2 views
    assert config["loss_overrides"] == NO_GEOMETRY
    history = json.loads((out / "history.json").read_text())
    assert all(r["updated"] and "camera_loss" not in r for r in history)


# ---------------------------------------------------------------------------------------------------
# a run stops with a checkpoint however it is stopped: Ctrl-C, SIGTERM, a dead torchrun launcher
# ---------------------------------------------------------------------------------------------------
def stop_at(monkeypatch, step: int, how: str) -> None:
    """Make the trainer meet `how` at the start of `step`: SIGTERM sent to this process, or Ctrl-C."""
    from page4d.train import loop

    real = loop.train_step

    def step_then_stop(run, k, index):
        if k == step:
            if how == "SIGTERM":
                os.kill(os.getpid(), signal.SIGTERM)
            else:
                raise KeyboardInterrupt
        return real(run, k, index)

    monkeypatch.setattr(loop, "train_step", step_then_stop)


@pytest.mark.parametrize("how, saved", [("SIGTERM", 4), ("Ctrl-C", 3)])
def test_a_stopped_run_saves_its_last_step_even_with_save_every_0(scene, tmp_path, monkeypatch, how, saved):
    """SIGTERM is noted and the run stops before the next step (step 3 finishes: 4 steps saved); Ctrl-C
    stops at once (3 steps). Either way checkpoint_<steps>.pt holds exactly the history's steps, and
    SIGTERM's handler is the one from before the run once it ends."""
    stop_at(monkeypatch, 3, how)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        train(small(steps=8, save_every=0), scene, output_dir=tmp_path / "run", progress=False)
    assert signal.getsignal(signal.SIGTERM) is before
    assert sorted(p.name for p in (tmp_path / "run").glob("checkpoint*.pt")) == [f"checkpoint_{saved}.pt"]
    assert len(json.loads((tmp_path / "run" / "history.json").read_text())) == saved
    assert torch.load(tmp_path / "run" / f"checkpoint_{saved}.pt", weights_only=True)["step"] == saved
    assert not (tmp_path / "run" / "DONE.json").exists()


def progress_reached(proc: subprocess.Popen, steps: int, timeout: float = 120) -> str:
    """Read the trainer's stderr until its progress bar shows `steps` steps done; returns what was read."""
    import re

    seen, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        chunk = os.read(proc.stderr.fileno(), 4096)
        assert chunk, f"the run ended before step {steps}: {seen[-2000:]!r}"
        seen += chunk
        done = [int(m) for m in re.findall(rb"\| *(\d+)/\d+ \[", seen)]
        if done and max(done) >= steps:
            return seen.decode(errors="replace")
    raise AssertionError("the run never got there")


def test_sigterm_saves_like_ctrl_c_and_the_run_resumes_to_the_uninterrupted_weights(scene_dir, tmp_path):
    steps = 24
    scene = load_scene(scene_dir, image_size=(56, 70))
    uninterrupted, _ = train(small(steps=steps), scene, output_dir=tmp_path / "whole", progress=False)
    out = tmp_path / "stopped"
    argv = [
        sys.executable,
        "-m",
        "page4d.train",
        *cli(scene_dir, out, "--steps", str(steps), "--save-every", "0"),
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=cpu_env())
    try:
        progress_reached(proc, 3)
        proc.send_signal(signal.SIGTERM)  # what a scheduler (or `timeout`) sends
        err = proc.communicate(timeout=120)[1].decode()
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM
    done = len(json.loads((out / "history.json").read_text()))
    assert 3 <= done < steps
    assert (
        f"train: stopped by SIGTERM after step {done}; checkpoint_{done}.pt saved; continue with --resume"
        in err
    )
    assert (out / f"checkpoint_{done}.pt").is_file() and not (out / "summary.json").exists()
    subprocess.run([*argv, "--resume"], check=True, capture_output=True, timeout=300, env=cpu_env())
    resumed = build_training_model(small())
    assert load_checkpoint(resumed, out / "checkpoint.pt").ok
    assert weights_digest(resumed) == weights_digest(uninterrupted)


def torchrun(scene_dir, out, *flags) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
            str(free_port()), "-m", "page4d.train", *cli(scene_dir, out, *flags)]  # fmt: skip


def test_a_ddp_run_resumed_with_another_world_size_is_refused(scene_dir, tmp_path):
    out = tmp_path / "ddp"
    subprocess.run(torchrun(scene_dir, out, "--steps", "4", "--stop-after", "2"),
                   check=True, capture_output=True, timeout=300, env=cpu_env())  # fmt: skip
    assert torch.load(out / "checkpoint_2.pt", weights_only=True)["world_size"] == 2
    before = folder_bytes(out)
    message = refusal(cli(scene_dir, out, "--steps", "4", "--resume"))
    assert "was written by a run of world size 2, and this --resume has world size 1" in message
    assert "torchrun --nproc_per_node 2" in message
    assert folder_bytes(out) == before  # nothing written, the run stays resumable with 2 processes
    subprocess.run(torchrun(scene_dir, out, "--steps", "4", "--resume"),
                   check=True, capture_output=True, timeout=300, env=cpu_env())  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["resumed_from_step"] == 2


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads the process tree from /proc")
def test_workers_stop_with_a_checkpoint_when_their_torchrun_launcher_is_killed(scene_dir, tmp_path):
    out = tmp_path / "ddp"
    with open(tmp_path / "torchrun.log", "w") as log:
        launcher = subprocess.Popen(
            torchrun(scene_dir, out, "--steps", "2000", "--save-every", "2"),
            stdout=log, stderr=subprocess.STDOUT, env=cpu_env(),
        )  # fmt: skip
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 180
        while not (out / "checkpoint_2.pt").exists():
            assert launcher.poll() is None and time.monotonic() < deadline, "the run did not start"
            time.sleep(0.05)
        workers = [
            int(p) for p in Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split()
        ]
        assert len(workers) == 2
        launcher.kill()  # SIGKILL: torchrun cannot pass anything on to its workers
        launcher.wait()
        deadline = time.monotonic() + 120
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(w) for w in workers), "the workers went on training without their launcher"
    finally:
        launcher.kill()
        for w in workers:
            if _alive(w):
                os.kill(w, signal.SIGKILL)
    done = len(json.loads((out / "history.json").read_text()))
    assert done < 2000 and (out / f"checkpoint_{done}.pt").is_file() and not (out / "summary.json").exists()
    text = (tmp_path / "torchrun.log").read_text()
    assert (
        f"its torchrun launcher (pid {launcher.pid}) died after step {done}; checkpoint_{done}.pt saved"
        in text
    )
