"""Pretraining on a pool or a stream of scenes, and the shipped `tiny-synthetic` and `tiny-stream`
checkpoints and their cards."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math

import pytest
import torch
from card_replay import assert_replays_first_losses
from page4d.data import SyntheticSceneConfig, generate_synthetic_scene, load_scene, render_synthetic_scene
from page4d.data.synthetic import scene_in_memory
from page4d.experiments.pretrain import (
    NAME,
    RECIPES,
    PretrainConfig,
    card_markdown,
    heldout_configs,
    heldout_metrics,
    initial_model,
    main,
    model_config,
    model_config_changes,
    pretrain,
    recipe_command,
    scene_config,
    starting_model,
)
from page4d.inference.loading import load_model
from page4d.model import SHIPPED_CHECKPOINTS, CheckpointError, build_model, load_checkpoint, preset
from page4d.model.checkpoint import SHIPPED_DIR, resolve_checkpoint
from page4d.records import RunFolderTaken
from page4d.scoring.evaluate import evaluate
from page4d.train import TrainConfig, build_training_model, train, weights_digest

CARD = SHIPPED_DIR / f"{NAME}.json"


def card() -> dict:
    return json.loads(CARD.read_text())


@pytest.fixture(scope="module")
def two_scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("pool")
    scenes = []
    for seed in (1, 2):
        cfg = SyntheticSceneConfig(seed=seed, times=3, views=2, height=56, width=70, orbit_deg_per_step=3.0)
        scenes.append(load_scene(generate_synthetic_scene(root / f"s{seed}", cfg)))
    return scenes


def test_a_pool_of_scenes_trains_on_clips_of_every_scene_and_one_scene_is_unchanged(two_scenes):
    cfg = TrainConfig(arm="none", trains="everything", steps=12, clip_times=2, threads=1, lr=1e-3)
    _, history = train(cfg, two_scenes, model=initial_model(0), progress=False)
    assert {r["scene"] for r in history} == {0, 1}  # 4 clips, 12 seeded draws
    assert all(r["updated"] and math.isfinite(r["loss"]) for r in history)
    single = TrainConfig(arm="bce", steps=2, clip_times=2, threads=1)
    _, alone = train(single, two_scenes[0], progress=False)
    _, listed = train(single, [two_scenes[0]], progress=False)
    assert "scene" not in alone[0]  # one scene: the history earlier versions wrote
    assert [r["loss"] for r in alone] == [r["loss"] for r in listed]
    with pytest.raises(ValueError, match="train_times selects time steps of one scene"):
        train(cfg, two_scenes, train_times=[0, 1], progress=False)


def test_pretraining_keeps_the_mask_head_untouched_with_its_bias_off(two_scenes, tmp_path):
    assert model_config().mask_head.masked_global_blocks == ()
    model = initial_model(0)
    head = {k: v.clone() for k, v in model.state_dict().items() if "spatial_mask_head" in k}
    cfg = dataclasses.replace(PretrainConfig(), steps=3, warmup_steps=1).train_config()
    train(cfg, two_scenes, model=model, progress=False)
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in head.items())  # no gradient reaches it
    assert not torch.equal(after["aggregator.frame_blocks.0.attn.qkv.weight"], initial_model(0).state_dict()[
        "aggregator.frame_blocks.0.attn.qkv.weight"])  # fmt: skip


def test_pool_and_heldout_scenes_are_distinct_and_include_static_and_moving_rigs():
    cfg = PretrainConfig()
    configs = [scene_config(cfg, i) for i in range(cfg.pool_scenes + cfg.heldout_scenes)]
    assert len({c.seed for c in configs}) == len(configs)
    assert scene_config(cfg, 5) == scene_config(cfg, 5)  # a pure function of (recipe, index)
    assert {c.orbit_deg_per_step == 0.0 for c in configs} == {True, False}  # static rigs and moving ones


def test_the_shipped_checkpoint_is_found_by_name_and_loads_strictly_into_the_tiny_preset():
    assert resolve_checkpoint(NAME) == SHIPPED_DIR / SHIPPED_CHECKPOINTS[NAME]
    model = build_model(preset("tiny"))
    report = load_checkpoint(model, NAME)  # strict: every key and shape
    assert report.ok
    saved = torch.load(resolve_checkpoint(NAME), weights_only=True)["model"]
    assert all(v.dtype == torch.float16 for v in saved.values() if v.is_floating_point())
    assert weights_digest(model) != weights_digest(build_model(preset("tiny")))
    loaded, note = load_model("tiny", NAME)
    assert NAME in note and weights_digest(loaded) == weights_digest(model)
    with pytest.raises(FileNotFoundError, match="shipped checkpoints by name: tiny-synthetic"):
        load_checkpoint(model, "tiny-synthetc")
    with pytest.raises(CheckpointError, match="shape mismatch|missing"):
        load_checkpoint(build_model(preset("tiny", embed_dim=32, num_heads=2)), NAME)


def test_a_training_config_takes_the_checkpoint_by_name_with_or_without_its_mask_head():
    kept = build_training_model(TrainConfig(checkpoint=NAME, seed=0))
    torch.manual_seed(1)
    fresh = build_training_model(TrainConfig(checkpoint=NAME, checkpoint_mask_head=False))
    torch.manual_seed(1)
    seeded = build_training_model(TrainConfig())
    k, f, s = kept.state_dict(), fresh.state_dict(), seeded.state_dict()
    head = [n for n in k if n.startswith("aggregator.spatial_mask_head.")]
    backbone = "aggregator.global_blocks.2.attn.qkv.weight"
    assert head and all(torch.equal(f[n], s[n]) for n in head)  # the seed's own head
    assert not all(torch.equal(f[n], k[n]) for n in head)
    assert torch.equal(f[backbone], k[backbone]) and not torch.equal(f[backbone], s[backbone])


def test_the_shipped_card_is_the_code_s_rendering_of_its_json_with_its_corrections_shown():
    """Cards are written by the run: the committed .md is `card_markdown` of the committed .json, and a
    fact fixed by hand after the run is a recorded correction that the card shows, not a silent edit."""
    c = card()
    assert (SHIPPED_DIR / f"{NAME}.md").read_text() == card_markdown(c)
    fields = {fix["field"]: fix for fix in c["corrections"]}
    assert fields["commit"]["now"] == c["commit"] and fields["commit"]["was"] != c["commit"]
    assert fields["command"]["now"] == c["command"]
    text = card_markdown(c)
    assert "## Corrected after the run (by hand, not by the run)" in text
    assert f"was {fields['commit']['was']}, now {c['commit']}" in text
    assert "not recorded by this run" in text  # no clip counts in this card: said, not hidden
    untouched = card_markdown({k: v for k, v in c.items() if k != "corrections"})
    assert "Corrected after the run" not in untouched


def test_the_card_records_the_command_of_its_recipe():
    assert recipe_command(PretrainConfig()) == "python -m page4d.experiments.pretrain --out DIR"
    small = PretrainConfig(steps=4, image_size=(56, 70))
    assert recipe_command(small).endswith("--image-size 56 70 --steps 4")


def test_the_shipped_checkpoint_scores_its_recorded_heldout_metric(tmp_path):
    c = card()
    recipe = PretrainConfig(**c["recipe"])
    index = recipe.pool_scenes  # the first held-out scene
    recorded = c["heldout_scenes"][0]
    recorded_scene = SyntheticSceneConfig(**{**recorded, "mover_size": tuple(recorded["mover_size"])})
    assert scene_config(recipe, index) == recorded_scene  # the recipe still draws the scene it recorded
    root = generate_synthetic_scene(tmp_path / "heldout", scene_config(recipe, index))
    scene = load_scene(root, image_size=recipe.image_size, load_tracks=False)
    model = build_model(model_config()).eval()
    load_checkpoint(model, NAME)
    torch.set_num_threads(recipe.threads)
    got = heldout_metrics(model, [scene], recipe.eval_clip_times)["per_scene"][0]
    want = c["heldout"]["pretrained"]["per_scene"][0]
    for key in ("depth_abs_rel", "depth_delta1", "ate"):
        assert got[key] == pytest.approx(want[key], rel=1e-3, abs=1e-4), key
    rand = evaluate(initial_model(recipe.seed), scene, clip_times=recipe.eval_clip_times)
    recorded_random = c["heldout"]["random_init"]["per_scene"][0]
    assert rand["depth_abs_rel"] == pytest.approx(recorded_random["depth_abs_rel"], rel=1e-3)


def test_the_pretraining_command_reproduces_the_shipped_first_losses(tmp_path):
    """The card's recipe, replayed for 3 steps, logs the card's first losses within rel 1e-5: machines
    of the same kind and torch differ by a float32 ulp (~1e-7), a changed recipe (another scene, clip,
    learning rate or loss) by far more. Only the scenes those steps draw are rendered."""
    c = card()
    recipe = PretrainConfig(**c["recipe"])
    assert pretrain(recipe, tmp_path / "run", progress=False, stop_after=3) is None  # stopped, resumable
    history = json.loads((tmp_path / "run" / "train" / "history.json").read_text())
    for logged, replayed in zip(c["first_losses"][:3], history, strict=True):
        assert (logged["step"], logged["scene"], logged["clip_start"]) == (
            replayed["step"],
            replayed["scene"],
            replayed["clip_start"],
        )
        assert replayed["lr"] == pytest.approx(logged["lr"], rel=1e-12)
        for key, value in logged.items():
            if key.endswith("loss") and value is not None:
                assert replayed[key] == pytest.approx(value, rel=1e-5), key
    rendered = sorted(p.name for p in (tmp_path / "run" / "scenes").iterdir())
    assert rendered == sorted({f"pool_{r['scene']:03d}" for r in history})  # nothing else was rendered


def test_an_interrupted_pretraining_resumes_to_the_same_checkpoint_and_card(tmp_path, capsys):
    """A small recipe end to end through the command: 2 steps, stop, resume to 4 == 4 in one go (the
    exported weights' sha256 and the logged losses); the finished folder is refused afterwards."""
    small = "--pool-scenes 2 --heldout-scenes 1 --times 3 --views 2 --image-size 56 70 --steps 4"
    small = ["--recipe", "tiny-synthetic", *small.split(), "--warmup-steps", "1", "--save-every", "2"]
    main(["--out", str(tmp_path / "once"), *small])
    main(["--out", str(tmp_path / "twice"), *small, "--stop-after", "2"])
    assert "continue with --resume" in capsys.readouterr().out
    assert not (tmp_path / "twice" / f"{NAME}.json").exists()
    with pytest.raises(RunFolderTaken, match="--resume"):  # an unfinished run is continued, not restarted
        main(["--out", str(tmp_path / "twice"), *small])
    main(["--out", str(tmp_path / "twice"), *small, "--resume"])
    once, twice = (json.loads((tmp_path / r / f"{NAME}.json").read_text()) for r in ("once", "twice"))
    assert once["weights_sha256"] == twice["weights_sha256"]
    assert once["first_losses"] == twice["first_losses"] and len(once["first_losses"]) == 4
    assert set(once["heldout"]["pretrained"]["mean"]) == set(once["heldout"]["random_init"]["mean"])
    assert (tmp_path / "once" / f"{NAME}.md").read_text() == card_markdown(once)
    assert once["command"].endswith("--steps 4 --warmup-steps 1 --save-every 2") and "corrections" not in once
    covered = once["heldout"]["pretrained"]["per_scene"][0]["coverage"]["camera"]  # clips scored, dropped
    assert covered["clips"] + len(covered["dropped"]) == covered["of"] == 2  # 3 steps in clips of 2
    assert "Clips scored, pretrained: depth" in card_markdown(once)
    with pytest.raises(FileExistsError, match="already holds a finished pretraining run"):
        main(["--out", str(tmp_path / "once"), *small])


def test_a_resume_that_would_change_the_scenes_is_refused(tmp_path):
    """With another pool size a training scene could be rendered from a held-out scene's seed."""
    small = ["--recipe", "tiny-synthetic", "--heldout-scenes", "1", "--times", "3", "--views", "2"]
    small += ["--image-size", "56", "70", "--steps", "4", "--warmup-steps", "1", "--save-every", "2"]
    main(["--out", str(tmp_path / "run"), "--pool-scenes", "2", *small, "--stop-after", "2"])
    with pytest.raises(ValueError, match=r"--resume needs the run's own recipe.*pool_scenes: 2 -> 3"):
        main(["--out", str(tmp_path / "run"), "--pool-scenes", "3", *small, "--resume"])
    main(["--out", str(tmp_path / "run"), "--pool-scenes", "2", *small, "--resume", "--steps", "5"])
    assert json.loads((tmp_path / "run" / "tiny-synthetic.json").read_text())["recipe"]["steps"] == 5


def test_the_stream_recipe_end_to_end_writes_a_card_with_targets_and_every_cameras_errors(tmp_path, capsys):
    args = ["--out", str(tmp_path / "s"), "--recipe", "tiny-stream", "--steps", "4", "--warmup-steps", "1"]
    args += [
        "--heldout-scenes",
        "2",
        "--train-eval-scenes",
        "1",
        "--image-size",
        "56",
        "70",
        "--threads",
        "1",
    ]
    main(args)
    c = json.loads((tmp_path / "s" / "tiny-stream.json").read_text())
    assert c["recipe"]["scenes"] == "stream" and c["train_config"]["clip_order"] == "stream"
    assert c["train_config"]["loss_overrides"] == {"rotation_target": "canonical"}
    assert c["command"].startswith("python -m page4d.experiments.pretrain --out DIR --recipe tiny-stream")
    assert set(c["targets"]) == {"rpe_rot", "rpe_view_rot", "depth_abs_rel", "depth_delta1"}
    assert all(h["num_movers"] == 0 and h["seed"] >= 100_000_000 for h in c["heldout_scenes"])
    frames = c["heldout"]["pretrained"]["per_scene"][0]["camera_frames"]
    assert frames and len(frames[0]["rot_deg"]) == c["heldout"]["pretrained"]["per_scene"][0]["views"] * len(
        frames[0]["times"]
    )
    assert c["training_scenes"]["per_scene"] and c["camera_errors_in_training"]["frames"] > 0
    md = (tmp_path / "s" / "tiny-stream.md").read_text()
    assert md == card_markdown(c) and "Targets (issue 20" in md and "rotation target canonical" in md
    assert "Training scenes (1 of the scenes it trained on)" in md


def test_a_later_phase_starts_from_the_weights_it_names_and_its_card_says_so(tmp_path):
    """`--init WEIGHTS` continues from those weights (the digest the card records is theirs, not the
    seeded initialisation's), while the card's random-init column stays the seeded initialisation."""
    start = initial_model(5)
    torch.save({"model": start.state_dict()}, tmp_path / "start.pt")
    args = ["--out", str(tmp_path / "s"), "--recipe", "tiny-stream", "--steps", "2", "--warmup-steps", "1"]
    args += ["--heldout-scenes", "1", "--image-size", "56", "70", "--init", str(tmp_path / "start.pt")]
    main(args)
    c = json.loads((tmp_path / "s" / "tiny-stream.json").read_text())
    assert c["init_digest"] == weights_digest(start) != weights_digest(initial_model(0))
    assert c["recipe"]["init"] == str(tmp_path / "start.pt") and "--init " in c["command"]
    assert f"continuing from `{tmp_path / 'start.pt'}`" in (tmp_path / "s" / "tiny-stream.md").read_text()
    rescored = heldout_metrics(
        initial_model(0).eval(),
        [scene_in_memory(render_synthetic_scene(heldout_configs(PretrainConfig(**c["recipe"]))[0]))],
        0,
    )
    assert c["heldout"]["random_init"]["mean"]["depth_abs_rel"] == pytest.approx(
        rescored["mean"]["depth_abs_rel"], rel=1e-4
    )


def test_a_camera_dominated_phase_weights_the_rotation_term_and_older_recipes_read_back_unchanged():
    stream = RECIPES["tiny-stream"]
    assert stream.train_config().loss_overrides == {"rotation_target": "canonical"}  # as its card ran
    heavy = dataclasses.replace(stream, rotation_weight=10.0)
    assert heavy.train_config().loss_overrides == {"rotation_target": "canonical", "cam_w_rotation": 10.0}
    assert "--rotation-weight 10.0" in recipe_command(heavy) and "--rotation-weight" not in recipe_command(
        stream
    )


# ---------------------------------------------------------------------------------------------------
# the shipped tiny-stream backbone (issue 20): fresh scenes every step, cameras that generalise
# ---------------------------------------------------------------------------------------------------
STREAM = "tiny-stream"


def stream_card() -> dict:
    return json.loads((SHIPPED_DIR / f"{STREAM}.json").read_text())


def test_tiny_stream_is_shipped_in_float16_with_its_card_rendered_from_its_json():
    model = build_model(preset("tiny"))
    assert load_checkpoint(model, STREAM).ok  # strict
    saved = torch.load(resolve_checkpoint(STREAM), weights_only=True)["model"]
    assert all(v.dtype == torch.float16 for v in saved.values() if v.is_floating_point())
    c = stream_card()
    assert (SHIPPED_DIR / f"{STREAM}.md").read_text() == card_markdown(c)
    # the shipped recipe (a field added since reads back at its default)
    assert PretrainConfig(**c["recipe"]) == RECIPES[STREAM]
    assert c["weights_sha256"] == hashlib.sha256(resolve_checkpoint(STREAM).read_bytes()).hexdigest()


def test_tiny_stream_rescores_its_first_heldout_scene_as_its_card_recorded():
    """The held-out scene is drawn again from the recipe (a seed range no training draws), rendered in
    memory and scored by the shipped float16 weights: the card's depth and every frame's camera error."""
    c = stream_card()
    recipe = PretrainConfig(**c["recipe"])
    config = heldout_configs(recipe)[0]
    assert json.loads(json.dumps(dataclasses.asdict(config))) == c["heldout_scenes"][0]
    scene = scene_in_memory(render_synthetic_scene(config))
    model = build_model(model_config()).eval()
    load_checkpoint(model, STREAM)
    torch.set_num_threads(recipe.threads)
    got = heldout_metrics(model, [scene], recipe.eval_clip_times)["per_scene"][0]
    want = c["heldout"]["pretrained"]["per_scene"][0]
    for key in ("depth_abs_rel", "depth_delta1", "rpe_rot", "camera_rot_deg_median"):
        assert got[key] == pytest.approx(want[key], rel=1e-3, abs=1e-3), key
    got_frames = got["camera_frames"][0]["rot_deg"]
    assert got_frames == pytest.approx(want["camera_frames"][0]["rot_deg"], abs=0.01)


def test_the_tiny_stream_recipe_replays_its_card_s_first_losses(tmp_path):
    """3 steps of the shipped recipe log the card's first losses within rel 1e-5 (an ulp between
    machines of one kind is ~1e-7; a changed stream, clip, rate or loss moves them by far more)."""
    c = stream_card()
    recipe = PretrainConfig(**c["recipe"])
    assert pretrain(recipe, tmp_path / "run", progress=False, stop_after=3) is None
    history = json.loads((tmp_path / "run" / "train" / "history.json").read_text())
    assert_replays_first_losses(c["first_losses"][:3], history)


def test_the_patch_embedding_variants_are_a_recipe_knob_the_card_and_command_record():
    """`--patch-embed conv_stem` (or conv_pos) builds that embedding wherever a phase builds its network,
    the card names the change against the `tiny` preset, and weights of another embedding are refused
    by name."""
    cfg = dataclasses.replace(RECIPES["tiny-stream"], patch_embed="conv_stem")
    assert model_config("conv_stem").patch_embed == "conv_stem" and model_config().patch_embed == "conv"
    assert "stem.0.weight" in dict(initial_model(0, "conv_stem").aggregator.patch_embed.named_parameters())
    assert model_config_changes(cfg)["patch_embed"] == "conv_stem"
    assert "patch_embed" not in model_config_changes(RECIPES["tiny-stream"])
    assert "--patch-embed conv_stem" in recipe_command(cfg)
    with pytest.raises(CheckpointError, match="aggregator.patch_embed.stem"):
        starting_model(0, "tiny-stream", "conv_stem")
    assert "pos_embed" in dict(initial_model(0, "conv_pos").aggregator.patch_embed.named_parameters())
    with pytest.raises(CheckpointError, match="aggregator.patch_embed.pos_embed"):
        starting_model(0, "tiny-stream", "conv_pos")
