"""A tiny backbone whose cameras read the images, in one command: the stream, a rig phase, two `rigs+mono`.

Why these phases (issue 20; README, "The patch embedding"): `tiny-stream`'s recipe learns depth and
predicts the identity camera, because 6,000 one-scene steps whose gradient is mostly depth give the camera
path too few clips; the rig probe's camera-dominated steps (8 rigs a step, the rotation term x10) teach
it the turns, but only with a position table in the patch tokens (`conv_pos`) and only after a plateau of
some 2,000 steps; trained on wide rig gaps alone it turns small steps into large turns, which the card's
own rigs and monocular moves (`rigs+mono`) then bring back, and those rigs shown at two time steps
(`recur`) teach that a frame identical to the first has not turned. So:

1. `stream/`: `pretrain`'s `tiny-stream` recipe with `--patch-embed conv_pos`, `stream_steps` steps
   (depth, points and cameras on a new scene every step);
2. `rig/`: `camera_probe --task rig`, two views of a static rig 5-175 degrees apart (widened from 5
   over `ramp_steps`), the depth and point losses kept on every 4th step, `rig_steps` steps;
3. `mono/`: `camera_probe --task rigs+mono`, `mono_steps` steps;
4. `recur/`: `rigs+mono` again, `recur_steps` steps, each training rig shown at `rig_times` time steps
   (its frames recur, as in the stream's rigs: after phase 3 alone the first `tiny-pos` turned identical
   frames by some 20 degrees, and its temporal RPE-r was 15 against the identity's 2).

Each phase is that module's own run folder under OUT, recorded as it records it. A finished phase is
not run again; its recorded config must be the one this recipe would run (else the recipe is refused,
naming the fields), so a stopped recipe continues with the same command: an interrupted phase goes on
from its last checkpoint (the stream as `pretrain --resume`, a probe phase as `camera_probe --resume`,
from its last evaluation).

Then the shipped files in OUT: `NAME.pt` (float16 weights of the last phase), `NAME.json` / `NAME.md`
(the card: every phase's config and time, the stream's first losses for the replay test, the
held-out static scenes of `tiny-stream`'s card with the identity floor and issue 20's targets, 16 of the
stream's training scenes beside them, the rig views by gap) and `NAME_loss.png` (each phase's loss).

    python -m page4d.experiments.camera_recipe --out outputs/tiny_pos          # the default lengths
    python -m page4d.experiments.camera_recipe --out outputs/tiny_pos          # again: continues it
    python -m page4d.experiments.camera_recipe --out DIR --device cuda         # on a GPU
    python -m page4d.experiments.camera_recipe --out NEW --recur-steps 1000 --reuse outputs/tiny_pos
                                  # copies the three phases that NEW runs the same way

The default lengths are those of the chain of separate runs that first learnt the turns (README, "The
patch embedding": a 6000-step stream, 4800 rig steps, 750 `rigs+mono` steps) and of the first run with
recurring rigs (500 steps), about 120 minutes on one CPU thread: over issue 20's 60-minute budget (the
card says whether a run kept it). Two splits that fit it (streams of 2000 and 3000 steps) did not leave
the camera plateau (README, "The camera recipe in one command"). The defaults' run ships as `tiny-pos`
(`lib/page4d/weights/tiny-pos.md`, with its numbers against issue 20's targets).

The weights keep the `conv_pos` embedding, a tiny-only difference from the preset (the 1B presets keep
DINOv2): `load_model("tiny", "NAME")` and `--checkpoint NAME` pick it from the shipped name.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from page4d.cli_args import DefaultsHelpFormatter, add_options, changed_options, from_args, knob
from page4d.experiments import backbone_score, pretrain
from page4d.experiments.camera_probe import ProbeConfig, run_probe
from page4d.records import (
    ParametersChanged,
    atomic_torch_save,
    atomic_write_text,
    changed_fields,
    field_defaults,
    is_finished,
    mark_finished,
    read_json,
    write_json,
)

PATCH_EMBED = "conv_pos"
SCORED_RECIPE = "tiny-stream"  # whose held-out scenes the card scores: the same as every card before
CARD_SCENES = 0  # the held-out scenes the card scores: 0 = all 16 (tests score fewer)
TRAINING_SCENES_SCORED = 16
PHASES = ("stream", "rig", "mono", "recur")
REUSED_FILE = "reused.json"  # {phase: the recipe folder it was copied from} (`reuse_phases`)
BUDGET_MINUTES = 60.0  # issue 20's budget for the recipe's training on the 2-core CPU


@dataclass
class CameraRecipe:
    """The four phases' lengths and seeds (see the module docstring); each field is an option."""

    name: str = knob("tiny-pos", "the shipped files' name: NAME.pt, NAME.json / NAME.md")
    seed: int = knob(0, "the stream's seed (initialisation and scenes); the rig phase draws clip seed "
                     "SEED, the rigs+mono phases SEED + 4 and SEED + 11")  # fmt: skip
    stream_steps: int = knob(6000, "phase 1: steps of the tiny-stream recipe (one new scene each)")
    rig_steps: int = knob(4800, "phase 2: rig-probe steps (8 two-view rigs each)")
    ramp_steps: int = knob(1200, "phase 2: steps over which the rig gaps widen from 5 to 175 degrees")
    mono_steps: int = knob(750, "phase 3: rigs+mono steps (the card's rigs and monocular moves)")
    recur_steps: int = knob(500, "phase 4: rigs+mono steps, rigs shown at rig_times time steps (0: none)")
    rig_times: int = knob(2, "phase 4: time steps each training rig is shown at (its frames recur)")
    threads: int = knob(1, "torch CPU threads (results are reproducible for a fixed thread count)")
    device: str = knob("cpu", "cpu, or cuda (fast; the first losses are then not bit-identical)")

    def __post_init__(self) -> None:
        sizes = (self.stream_steps, self.rig_steps, self.mono_steps, self.rig_times)
        if min(sizes) < 1 or self.ramp_steps < 0 or self.recur_steps < 0:
            raise ValueError(
                f"every phase needs >= 1 step (recur >= 0), rig_times >= 1 and ramp_steps >= 0: {self}"
            )

    def phases(self) -> tuple[str, ...]:
        """The phases this recipe runs, in order: all four, or without `recur` when `recur_steps` is 0
        (the recipe as the first `tiny-pos` and the README's earlier splits ran it)."""
        return PHASES if self.recur_steps else PHASES[:3]

    def stream(self) -> pretrain.PretrainConfig:
        """Phase 1: `tiny-stream` with the position table, shortened."""
        return dataclasses.replace(
            pretrain.RECIPES[SCORED_RECIPE],
            name=f"{self.name}-stream",
            steps=self.stream_steps,
            patch_embed=PATCH_EMBED,
            seed=self.seed,
            threads=self.threads,
            device=self.device,
        )

    def rig(self, out: Path) -> ProbeConfig:
        """Phase 2, from phase 1's float16 weights."""
        return ProbeConfig(
            task="rig", init=str(out / "stream" / f"{self.name}-stream.pt"), patch_embed=PATCH_EMBED,
            steps=self.rig_steps, min_deg=5.0, max_deg=175.0, ramp_steps=self.ramp_steps, geometry=True,
            geometry_every=4, eval_every=400, seed=self.seed, threads=self.threads, device=self.device,
            save_weights=True,
        )  # fmt: skip

    def mono(self, out: Path) -> ProbeConfig:
        """Phase 3, from phase 2's last weights."""
        return ProbeConfig(
            task="rigs+mono", init=str(out / "rig" / "weights.pt"), patch_embed=PATCH_EMBED,
            steps=self.mono_steps, geometry=True, geometry_every=4, eval_every=250, seed=self.seed + 4,
            threads=self.threads, device=self.device, save_weights=True,
        )  # fmt: skip

    def recur(self, out: Path) -> ProbeConfig:
        """Phase 4, from phase 3's last weights: its rigs shown at `rig_times` time steps (seed + 11: the
        clip seed the first such run drew)."""
        return dataclasses.replace(
            self.mono(out), init=str(out / "mono" / "weights.pt"), steps=self.recur_steps,
            rig_times=self.rig_times, seed=self.seed + 11,
        )  # fmt: skip

    def probe(self, phase: str, out: Path) -> ProbeConfig:
        """The probe phase `phase`'s config (its weights from the last phase's, under `out`)."""
        return {"rig": self.rig, "mono": self.mono, "recur": self.recur}[phase](out)


def check_phase(
    folder: Path, recorded: dict[str, Any], wanted: dict[str, Any], defaults: dict[str, Any] | None = None
) -> None:
    """Refuse a phase folder whose run was made with another config than this recipe's (`defaults`:
    the phase's config class's, so a knob added since, at its default, is no change: `changed_fields`)."""
    changed = changed_fields(recorded, wanted, defaults)
    if changed:
        shown = ", ".join(f"{k}: {there!r} there, {here!r} here" for k, (there, here) in changed.items())
        raise ParametersChanged(
            f"{folder} holds a phase run with another config ({shown}); this recipe will not mix it in. "
            "Choose a new --out, or the options that run made."
        )


def recorded_config(folder: Path, phase: str) -> dict[str, Any]:
    """The config a phase folder's run recorded (the stream's `pretrain_config.json`, a probe's own)."""
    if phase == "stream":
        return read_json(folder / "pretrain_config.json")
    return read_json(folder / "probe.json")["config"]


def wanted_config(recipe: CameraRecipe, phase: str, root: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config, its class's field defaults) of `phase` as this recipe runs it in the recipe folder `root`
    (a probe phase names the last phase's weights under `root`)."""
    if phase == "stream":
        return dataclasses.asdict(recipe.stream()), field_defaults(pretrain.PretrainConfig)
    return dataclasses.asdict(recipe.probe(phase, root)), field_defaults(ProbeConfig)


def reused_phases(out: Path) -> dict[str, str]:
    """{phase: the folder it was copied from} of the recipe folder `out` (none copied: empty)."""
    return read_json(out / REUSED_FILE) if (out / REUSED_FILE).is_file() else {}


def reuse_phases(recipe: CameraRecipe, source: Path, out: Path) -> dict[str, str]:
    """Copy into `out` the finished phases of the recipe folder `source` that this recipe runs the same
    way, in order, up to the first one that differs (each phase starts from the last one's weights, so
    none after a difference can be shared); returns {phase: source folder}, kept in `out/reused.json`.

    Why: a change to the last phase (say `recur_steps`) need not train the first three again, some 110
    minutes on one CPU thread. The copies are the records as their runs wrote them (a probe phase's
    config names `source`'s paths, which the checks then expect); the card lists what was reused."""
    reused = reused_phases(out)
    for phase in recipe.phases():
        there = source / phase
        if (out / phase).exists() or not is_finished(there):
            break
        wanted, defaults = wanted_config(recipe, phase, source)
        if changed_fields(recorded_config(there, phase), wanted, defaults):
            break
        partial = out / f".{phase}.partial"
        shutil.rmtree(partial, ignore_errors=True)  # a copy an earlier call did not finish
        shutil.copytree(there, partial)
        partial.rename(out / phase)
        reused[phase] = str(there)
        write_json(out / REUSED_FILE, reused)
    return reused


def run_phases(recipe: CameraRecipe, out: Path, progress: bool = True) -> dict[str, dict[str, Any]]:
    """Run (or adopt, when finished with this recipe's config) each phase; returns each one's record."""
    records: dict[str, dict[str, Any]] = {}
    reused = reused_phases(out)
    for phase in recipe.phases():
        folder = out / phase
        root = Path(reused[phase]).parent if phase in reused else out
        wanted, defaults = wanted_config(recipe, phase, root)
        if is_finished(folder):
            check_phase(folder, recorded_config(folder, phase), wanted, defaults)
            name = f"{recipe.stream().name}.json" if phase == "stream" else "probe.json"
            records[phase] = read_json(folder / name)
        elif phase == "stream":
            resume = (folder / "pretrain_config.json").is_file()
            records[phase] = pretrain.pretrain(recipe.stream(), folder, resume=resume, progress=progress)
        else:  # an interrupted phase continues from its last evaluation
            resume = (folder / "probe.json").is_file()
            records[phase] = run_probe(recipe.probe(phase, out), folder, progress=progress, resume=resume)
    return records


def phase_summary(records: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What the card keeps of each phase: its config, its training time and its own held-out scores."""
    stream = records["stream"]
    summary = {
        "stream": {
            "config": stream["recipe"],
            "train_seconds": stream["train_seconds"],
            "heldout": stream["heldout"]["pretrained"]["mean"],
        }
    }
    for phase in list(records)[1:]:
        last = records[phase]["evaluations"][-1]
        scores = {k: v for k, v in last.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        summary[phase] = {
            "config": records[phase]["config"],
            "train_seconds": records[phase]["train_seconds"],
            "final": scores,
        }
    return summary


def score_weights(recipe: CameraRecipe, weights: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(held-out, training scenes): the shipped float16 weights on `tiny-stream`'s held-out static scenes
    (`backbone_score`: with the identity floor, targets and rig views by gap) and on the first
    `TRAINING_SCENES_SCORED` scenes the stream trained on."""
    heldout = backbone_score.score_backbone(weights, SCORED_RECIPE, CARD_SCENES, PATCH_EMBED)
    stream_cfg = recipe.stream()
    pool, _ = pretrain.render_scenes(stream_cfg, Path("."))  # a stream: rendered in memory
    model = pretrain.starting_model(recipe.seed, str(weights), PATCH_EMBED).eval()
    n = min(TRAINING_SCENES_SCORED, len(pool))
    with torch.no_grad():
        training = pretrain.heldout_metrics(model, [pool[i] for i in range(n)], stream_cfg.eval_clip_times)
    return heldout, training


def recipe_command(recipe: CameraRecipe) -> str:
    """The command that runs `recipe`: the module and the options that differ from the defaults."""
    return "python -m page4d.experiments.camera_recipe --out DIR" + changed_options(recipe, CameraRecipe())


def build_card(
    recipe: CameraRecipe, records: dict[str, dict[str, Any]], weights: Path, commit: str
) -> dict[str, Any]:
    """The card's numbers (`card_markdown` renders them)."""
    heldout, training = score_weights(recipe, weights)
    phases = phase_summary(records)
    stream = records["stream"]
    card = {
        "name": recipe.name,
        "preset": "tiny",
        "model_config_changes": stream["model_config_changes"],
        "recipe": dataclasses.asdict(recipe),
        "phases": phases,
        "command": recipe_command(recipe),
        "commit": commit,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": recipe.threads,
        "train_seconds": sum(p["train_seconds"] for p in phases.values()),
        "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "parameters": stream["parameters"],
        "first_losses": stream["first_losses"],
        "heldout": {"pretrained": {k: heldout[k] for k in ("mean", "per_scene", "camera_floor")}},
        "heldout_scenes": stream["heldout_scenes"],
        "rig_view_pairs_by_gap": heldout["rig_view_pairs_by_gap"],
        "monocular_rot_deg_median": heldout["monocular_rot_deg_median"],
        "training_scenes": training,
    }
    card["targets"] = pretrain.target_check(card)
    return card


def run_recipe(
    recipe: CameraRecipe, out_dir: str | Path, progress: bool = True, reuse: str | Path | None = None
) -> dict[str, Any]:
    """Run the four phases into `out_dir` (continuing a stopped recipe; `reuse`: first copy the
    phases another recipe folder ran the same way, `reuse_phases`), then write the shipped files;
    returns the card's numbers."""
    out = Path(out_dir)
    if is_finished(out):
        raise FileExistsError(f"{out} already holds a finished camera recipe; choose a new --out")
    out.mkdir(parents=True, exist_ok=True)
    if (out / "recipe.json").is_file():
        check_phase(out, read_json(out / "recipe.json"), dataclasses.asdict(recipe))
    write_json(out / "recipe.json", dataclasses.asdict(recipe))
    if reuse is not None:
        reuse_phases(recipe, Path(reuse), out)
    torch.set_num_threads(recipe.threads)
    commit = pretrain.git_commit()
    records = run_phases(recipe, out, progress)
    last = torch.load(out / recipe.phases()[-1] / "weights.pt", weights_only=True)
    state = {k: v.half() if v.is_floating_point() else v for k, v in last.items()}
    weights = atomic_torch_save({"model": state}, out / f"{recipe.name}.pt")
    t0 = time.perf_counter()
    card = build_card(recipe, records, weights, commit)  # scores exactly the float16 weights it ships
    card["reused"] = reused_phases(out)
    card["card_seconds"] = time.perf_counter() - t0  # scoring the card's scenes, after the training
    write_loss_curve(out, records, out / f"{recipe.name}_loss.png", recipe.name)
    atomic_write_text(out / f"{recipe.name}.md", card_markdown(card))
    write_json(out / f"{recipe.name}.json", card)
    mark_finished(out, "camera_recipe", card=f"{recipe.name}.json")  # last: marks the recipe finished
    return card


def write_loss_curve(out: Path, records: dict[str, dict[str, Any]], path: Path, name: str) -> None:
    """One panel per phase: the stream's losses by term, the probes' total training loss."""
    from page4d.report.viz import new_figure, save_figure

    fig = new_figure((12.0, 3.0))
    history = read_json(out / "stream" / "train" / "history.json")
    panels = [("stream", [r["step"] for r in history], [r.get("loss", np.nan) for r in history])]
    panels += [(p, list(range(len(records[p]["losses"]))), records[p]["losses"]) for p in list(records)[1:]]
    for i, (phase, steps, values) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        values = np.asarray(values, dtype=float)
        window = max(1, min(50, len(values)))
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1 :], smooth)
        ax.set_title(f"{phase} ({len(values)} steps)", fontsize=9)
        ax.set_xlabel("step")
    fig.axes[0].set_ylabel(f"loss (running mean of {window})")
    fig.suptitle(f"{name}: the {len(panels)} phases", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def phase_lines(card: dict[str, Any]) -> str:
    """The card's numbered list of phases: what each did, how long it took, where its own held-out
    clips ended (the fourth only when the recipe ran it)."""
    r, phases = card["recipe"], card["phases"]
    took = {p: f"{phases[p]['train_seconds'] / 60:.0f} min" for p in phases}
    rig, mono = phases["rig"]["final"], phases["mono"]["final"]
    rig_clips = phases["rig"]["config"]["heldout_clips"]
    lines = f"""1. **stream** ({r["stream_steps"]} steps, {took["stream"]}): `tiny-stream`'s recipe (a new
   generated scene every step; camera + depth + point losses, everything trains, AdamW lr 1e-3,
   cosine to 2e-5);
2. **rig** ({r["rig_steps"]} steps, {took["rig"]}): 8 two-view rigs a step, gaps widened from 5 to 175
   degrees over {r["ramp_steps"]} steps; the camera loss with its rotation term x10, depth and points
   every 4th step. At its end, on its own {rig_clips} held-out rigs: median error
   {rig["rot_deg_median"]:.1f} deg against the identity's {rig["identity_floor_deg"]:.1f} (turn slope
   {rig["turn_slope"]:.2f});
3. **rigs+mono** ({r["mono_steps"]} steps, {took["mono"]}): the card's rigs of 2-4 cameras and its
   monocular moves on alternate steps, the same losses. At its end (error / identity floor, degrees):
   held-out rigs {mono["rot_deg_median"]:.1f} / {mono["identity_floor_deg"]:.1f},
   moves {mono["mono_rot_deg_median"]:.2f} / {mono["mono_identity_floor_deg"]:.2f};"""
    if "recur" not in phases:
        return lines.rstrip(";") + "."
    recur = phases["recur"]["final"]
    return (
        lines
        + f"""
4. **recur** ({r["recur_steps"]} steps, {took["recur"]}): `rigs+mono` again, each training rig shown at
   {r["rig_times"]} time steps (a static rig's frames recur, as in the stream: frame V is frame 0 again,
   unturned). At its end: held-out rigs {recur["rot_deg_median"]:.1f} / {recur["identity_floor_deg"]:.1f},
   moves {recur["mono_rot_deg_median"]:.2f} / {recur["mono_identity_floor_deg"]:.2f}."""
    )


_COUNT = {3: "three", 4: "four"}


def card_markdown(card: dict[str, Any]) -> str:
    """The human-readable card (a test checks the shipped `.md` is this rendering of its `.json`)."""
    r, phases, name = card["recipe"], card["phases"], card["name"]
    mean, floor = card["heldout"]["pretrained"]["mean"], card["heldout"]["pretrained"]["camera_floor"]
    rows = "\n".join(f"| {k} | {mean[k]:.3f} | {_floor(floor, k)} |" for k in _KEYS)
    gaps = "\n".join(
        f"| {b['from_deg']:.0f}-{b['to_deg']:.0f} | {b['clips']} | {b['error_deg']:.1f} | "
        f"{b['floor_deg']:.1f} |"
        for b in card["rig_view_pairs_by_gap"]
    )
    sha, where = card["weights_sha256"][:16], f"`{card['command']}` at commit `{card['commit']}`"
    count = _COUNT[len(phases)]
    return f"""# {name}: a tiny backbone whose cameras read the images

Weights: `{name}.pt` (float16, {card["parameters"]:,} parameters, sha256 {sha}...).
Load with `--checkpoint {name}` (CLI) or `load_model("tiny", "{name}")`: it loads strictly into
the `tiny` preset with the **tiny-only patch embedding `conv_pos`** (the patchify plus a learned position
table and a LayerNorm, as DINOv2's embedding without its blocks), which its name selects. The mask head's
attention bias was off throughout (as PAGE-4D's `checkpoint_nomask`): the head is at its initialisation.

## Recipe
{where}, torch {card["torch"]},
{card["threads"]} CPU thread(s) ({card["cpu_capability"]}), seed {r["seed"]}; {count} phases, each from the
last one's weights:

{phase_lines(card)}

Training: {card["train_seconds"] / 60:.0f} minutes in all (each phase's own held-out scoring included; the
card's scenes then took {card["card_seconds"]:.0f} s more). {budget_text(card)}{reused_text(card)}

![loss curve]({name}_loss.png)

## Held-out static scenes
{len(card["heldout_scenes"])} scenes of `tiny-stream`'s card (never trained on), each scored as one clip:

| metric | {name} | identity floor |
|---|---|---|
{rows}
{pretrain.targets_text(card)}
Rig views at t = 0 against view 0, by gap (median error / floor, degrees):

| gap (deg) | pairs | error | floor |
|---|---|---|---|
{gaps}
{pretrain.training_text(card)}
Depth after median scaling; ATE / RPE after a Sim(3) alignment per clip (`page4d.scoring.evaluate`).
{pretrain.heldout_coverage(card["heldout"])}{pretrain.corrections_text(card.get("corrections", []))}"""


_KEYS = (*pretrain.GEOMETRY_KEYS, *pretrain.CAMERA_KEYS)


def budget_text(card: dict[str, Any]) -> str:
    """Whether the recorded training time is within issue 20's budget, said on the card either way."""
    minutes = card["train_seconds"] / 60
    verdict = "within" if minutes <= BUDGET_MINUTES else "**over**"
    return (
        f"That is {verdict} issue 20's budget of {BUDGET_MINUTES:.0f} minutes on the 2-core CPU "
        f"({card['threads']} thread(s), as recorded by the phases)."
    )


def reused_text(card: dict[str, Any]) -> str:
    """Which phases were copied from another recipe folder (`--reuse`), said on the card."""
    reused = card["reused"]
    if not reused:
        return ""
    where = ", ".join(f"{phase} from `{folder}`" for phase, folder in reused.items())
    return (
        f"\nPhases copied from an earlier recipe folder that ran them the same way (`--reuse`; their minutes "
        f"count above): {where}."
    )


def _floor(floor: dict[str, float], key: str) -> str:
    return f"{floor[key]:.3f}" if key in floor else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m page4d.experiments.camera_recipe",
        description=__doc__.split("\n\n")[0],
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("--out", required=True, help="run folder (a stopped recipe continues there)")
    parser.add_argument(
        "--reuse",
        default=None,
        help="a recipe folder whose finished phases, where this recipe runs them the same way, are copied "
        "in rather than trained again (in order, up to the first that differs)",
    )
    add_options(parser, CameraRecipe)
    args = parser.parse_args(argv)
    card = run_recipe(from_args(CameraRecipe, args), args.out, reuse=args.reuse)
    held = card["targets"]
    print(
        f"camera_recipe: done in {card['train_seconds'] / 60:.1f} min; held-out "
        + ", ".join(f"{k} {t['value']:.3f} ({'met' if t['met'] else 'NOT met'})" for k, t in held.items())
        + f"; files in {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
