"""Do movers break a static backbone's cameras? The errors as a function of how much of the image moves.

PAGE-4D's premise: a VGGT pretrained on mostly static data gets cameras (and depth) wrong when large
things move. This measures it on held-out generated rooms, paired: each room is rendered once per
coverage target (0, 10, 25, 40 % of the pixels moving by default) with the same walls, the same cameras
and only the movers changed (two large textured objects, each moving rigidly, sized to reach the
target), so a difference between bins is the movers' doing, not the room's.

Rooms come from the held-out seed range (`scene_stream.HELDOUT_SEED_BASE`), have no static clutter (so
a mover's size cannot move the clutter) and a rig of `views` cameras `gap_deg` apart on an orbit of
`orbit_deg` per step, so ATE, RPE-r and view-RPE-r are all defined. The realised coverage (the exact
masks' dynamic fraction, averaged over the clip) is recorded per scene; each bin reports it beside
its errors.

    result = coverage_study(model, rooms=20)       # per-bin means, 95% CIs, paired differences vs 0 %
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from page4d.data import SyntheticSceneConfig, render_synthetic_scene
from page4d.data.synthetic import scene_in_memory
from page4d.experiments.ablation import ORACLES, arm_setup, bias_settings
from page4d.experiments.ablation_stats import mean_ci95
from page4d.experiments.scene_stream import HELDOUT_SEED_BASE
from page4d.scoring.evaluate import evaluate

METRICS = ("rpe_rot", "rpe_view_rot", "ate", "camera_rot_deg_median", "depth_abs_rel", "depth_delta1")
SIZES = (0.3, 0.45, 0.6, 0.75, 0.9, 1.05)  # mover half-extents tried to reach a coverage target


@dataclass(frozen=True)
class StudyConfig:
    """The rooms and cameras of the study (see the module docstring)."""

    coverages: tuple[float, ...] = (0.0, 0.10, 0.25, 0.40)
    image_size: tuple[int, int] = (112, 154)
    times: int = 3
    views: int = 3
    gap_deg: float = 40.0
    orbit_deg: float = 3.0
    movers: int = 2
    seed_offset: int = 50_000  # rooms come from the held-out range, apart from the pretraining card's


def room_config(study: StudyConfig, room: int, movers: int = 0, size: float = 0.3) -> SyntheticSceneConfig:
    """Room `room` with `movers` movers of half-extent `size`; everything else is the room's own."""
    rng = np.random.default_rng([room, 11])
    h, w = study.image_size
    base = float(rng.uniform(0, 360))
    return SyntheticSceneConfig(
        seed=HELDOUT_SEED_BASE + study.seed_offset + room,
        times=study.times,
        views=study.views,
        height=h,
        width=w,
        fov_deg=float(rng.uniform(55, 75)),
        camera_radius=3.8,
        camera_height=float(rng.uniform(1.4, 2.2)),
        orbit_deg_per_step=study.orbit_deg,
        view_azimuths_deg=tuple(base + study.gap_deg * v for v in range(study.views)),
        view_heights=tuple(float(x) for x in rng.uniform(1.4, 2.2, size=study.views)),
        num_movers=movers,
        mover_size=(size, size),
        mover_speed=0.25,
        num_static_boxes=0,
        num_static_spheres=0,
        tracks_per_mover=0,
        query_points_per_step=0,
    )


def variant(study: StudyConfig, room: int, target: float) -> tuple[SyntheticSceneConfig, float, Any]:
    """The room's rendering whose moving share is closest to `target`: (config, coverage, scene)."""
    if target == 0.0:
        cfg = room_config(study, room)
        rendered = render_synthetic_scene(cfg)
        return cfg, 0.0, rendered
    best = None
    for size in SIZES:
        cfg = room_config(study, room, study.movers, size)
        rendered = render_synthetic_scene(cfg)
        coverage = float(rendered.exact_masks.mean())
        if best is None or abs(coverage - target) < abs(best[1] - target):
            best = (cfg, coverage, rendered)
    return best


def coverage_study(
    model: torch.nn.Module, rooms: int = 20, study: StudyConfig | None = None
) -> dict[str, Any]:
    """Every room at every coverage target, scored with `evaluate` (each scene as one clip). Returns
    per-scene rows, per-bin means with 95% CIs over rooms, and paired differences against the same
    rooms without movers (`n` rooms where both values exist)."""
    study = study or StudyConfig()
    rows = []
    for room in range(rooms):
        for target in study.coverages:
            cfg, coverage, rendered = variant(study, room, target)
            scene = scene_in_memory(rendered, exact_masks=True)
            result = evaluate(model, scene, clip_times=scene.num_times)
            rows.append(
                {"room": room, "target": target, "coverage": coverage, **{k: result[k] for k in METRICS}}
            )
    return {"config": dataclasses.asdict(study), "rows": rows, "bins": summarize(rows, study.coverages)}


def summarize(rows: list[dict[str, Any]], coverages: Sequence[float]) -> list[dict[str, Any]]:
    """Per target: realised coverage, each metric's mean and 95% CI over rooms, and its paired
    difference against 0 % (same room) with its CI."""
    by = {(r["room"], r["target"]): r for r in rows}
    rooms = sorted({r["room"] for r in rows})
    bins = []
    for target in coverages:
        mine = [by[(room, target)] for room in rooms if (room, target) in by]
        entry: dict[str, Any] = {"target": target, "rooms": len(mine)}
        entry["coverage"] = float(np.mean([r["coverage"] for r in mine]))
        for key in METRICS:  # NaN (an error a clip cannot have) drops out of mean_ci95, paired too
            entry[key] = _with_ci([r[key] for r in mine])
            pairs = [
                by[(room, target)][key] - by[(room, 0.0)][key]
                for room in rooms
                if (room, 0.0) in by and (room, target) in by
            ]
            entry[f"{key}_minus_static"] = _with_ci(pairs)
        bins.append(entry)
    return bins


def _with_ci(values: list[float]) -> dict[str, Any]:
    mean, ci, n = mean_ci95(values)
    return {"mean": mean, "ci": ci, "n": n}


INFLUENCE_ARMS = ("movers", *ORACLES)


@torch.no_grad()
def mover_influence(
    model: torch.nn.Module, rooms: int = 10, study: StudyConfig | None = None, target: float = 0.4
) -> dict[str, Any]:
    """Where the movers' harm enters, and whether a mask can take it out: per room, the model's outputs on
    the room without movers (`clean`) against the same cameras with movers at `target` coverage, as is
    (`movers`) and with the exact GT masks driving the attention bias of the masked global blocks as the
    network applies it (`oracle`), as strong as PAGE-4D's released head can make it (`oracle_hard`:
    the camera/register rows ignore dynamic keys) and on every query row (`oracle_hard_all`).

    Per arm and room: ``rot_deg``, the median over frames of the predicted camera's rotation change
    against the clean prediction (relative to the first frame, `camera_errors_per_frame`); ``depth_rel``,
    the mean relative depth change on pixels static in both renderings. A mask that undid the movers
    would bring both to the clean prediction (0). Returns per-room rows and per-arm means with 95% CIs."""
    from page4d.data import scene_to_batch
    from page4d.scoring.evaluate import oracle_logits, pose_encoding_to_extrinsics
    from page4d.scoring.metrics import camera_errors_per_frame

    study = study or StudyConfig()
    model.eval()
    rows = []
    for room in range(rooms):
        batches = []
        for goal in (0.0, target):
            rendered = variant(study, room, goal)[2]
            scene = scene_in_memory(rendered, exact_masks=True)
            batches.append(scene_to_batch(scene, times=scene.times, world_frame="first_camera"))
        clean_batch, moving = batches
        logits = oracle_logits(moving, model.cfg.patch_size)
        outputs = {"clean": model(clean_batch.images), "movers": model(moving.images)}
        for arm in ORACLES:  # each as the ablation's arm of that name sets the head
            with bias_settings(model, arm_setup(arm)):
                outputs[arm] = model(moving.images, given_mask_logits=logits)
        h, w = moving.masks.shape[-2:]
        static = (moving.masks[0].reshape(-1, h, w) < 0.5) & (clean_batch.depths[0].reshape(-1, h, w) > 0)
        clean_pose = pose_encoding_to_extrinsics(outputs["clean"]["pose_enc"][0].reshape(-1, 9))
        clean_depth = outputs["clean"]["depth"][0, ..., 0].reshape(-1, h, w)
        for arm in INFLUENCE_ARMS:
            pose = pose_encoding_to_extrinsics(outputs[arm]["pose_enc"][0].reshape(-1, 9))
            rot = camera_errors_per_frame(pose, clean_pose)["rot_deg"][1:]
            depth = outputs[arm]["depth"][0, ..., 0].reshape(-1, h, w)
            change = (depth - clean_depth).abs() / clean_depth.abs().clamp_min(1e-6)
            rows.append(
                {
                    "room": room,
                    "arm": arm,
                    "rot_deg": float(rot.median()),
                    "depth_rel": float(change[static].mean()),
                }
            )
    summary = {
        arm: {k: _with_ci([r[k] for r in rows if r["arm"] == arm]) for k in ("rot_deg", "depth_rel")}
        for arm in INFLUENCE_ARMS
    }
    return {"target": target, "rows": rows, "summary": summary}


def influence_table(influence: dict[str, Any]) -> str:
    """Markdown: per arm, the change against the clean room's prediction, mean [95% CI] over rooms."""

    def cell(v: dict[str, Any], digits: int) -> str:
        if v["ci"] is None:
            return f"{v['mean']:.{digits}f}"
        return f"{v['mean']:.{digits}f} [{v['ci'][0]:.{digits}f}, {v['ci'][1]:.{digits}f}]"

    rows = [
        "| outputs on the moving room | camera rotation change (deg) | depth change on static pixels |",
        "|---|---|---|",
    ]
    for arm, v in influence["summary"].items():
        rows.append(f"| {arm} | {cell(v['rot_deg'], 3)} | {cell(v['depth_rel'], 4)} |")
    return "\n".join(rows)


def figure(bins: list[dict[str, Any]], title: str = ""):
    """Each metric's mean (95% CI bars) against the realised moving share."""
    from page4d.report.viz import new_figure

    fig = new_figure((3.2 * len(METRICS), 3.0))
    axes = fig.subplots(1, len(METRICS))
    x = [b["coverage"] * 100 for b in bins]
    for ax, key in zip(axes, METRICS, strict=True):
        means = [b[key]["mean"] for b in bins]
        errs = [
            [0.0, 0.0]
            if b[key]["ci"] is None
            else [b[key]["mean"] - b[key]["ci"][0], b[key]["ci"][1] - b[key]["mean"]]
            for b in bins
        ]
        ax.errorbar(x, means, yerr=np.array(errs).T, marker="o", capsize=3)
        ax.set_xlabel("moving pixels (%)")
        ax.set_title(key, fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle(title or "static backbone vs movers (mean, 95% CI over rooms)", fontsize=10)
    fig.tight_layout()
    return fig


def table(bins: list[dict[str, Any]]) -> str:
    """Markdown: one row per coverage bin, each metric as mean [95% CI] and its paired change vs 0 %."""

    def cell(v: dict[str, Any]) -> str:
        if v["ci"] is None:
            return f"{v['mean']:.3f}"
        return f"{v['mean']:.3f} [{v['ci'][0]:.3f}, {v['ci'][1]:.3f}]"

    head = "| moving pixels | rooms | " + " | ".join(METRICS) + " |"
    rows = [head, "|" + "---|" * (len(METRICS) + 2)]
    for b in bins:
        rows.append(
            f"| {b['coverage']:.1%} | {b['rooms']} | " + " | ".join(cell(b[k]) for k in METRICS) + " |"
        )
    rows += ["", "Paired change against the same rooms without movers:", "", head, rows[1]]
    for b in bins[1:]:
        changes = " | ".join(cell(b[f"{k}_minus_static"]) for k in METRICS)
        rows.append(f"| {b['coverage']:.1%} | {b['rooms']} | {changes} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """`python -m page4d.experiments.phenomenon --checkpoint NAME --out DIR [--rooms 20]`; `--views 1
    --times 8` for monocular videos."""
    import argparse

    from page4d.inference.loading import AUTO, load_model
    from page4d.model.config import TINY_PATCH_EMBEDS
    from page4d.records import claim_run_folder, mark_finished, write_json
    from page4d.report.viz import save_figure

    parser = argparse.ArgumentParser(prog="python -m page4d.experiments.phenomenon", description=__doc__)
    parser.add_argument("--checkpoint", required=True, help="the static backbone (a file or a shipped name)")
    parser.add_argument("--out", required=True, help="run folder (never overwritten)")
    parser.add_argument("--rooms", type=int, default=20, help="held-out rooms, each at every coverage")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--patch-embed",
        choices=(AUTO, *TINY_PATCH_EMBEDS),
        default=AUTO,
        help="the tiny preset's patch embedding the checkpoint was made with (auto: read from its keys)",
    )
    default = StudyConfig()
    parser.add_argument(
        "--views", type=int, default=default.views, help="cameras per room (1: a monocular video)"
    )
    parser.add_argument("--times", type=int, default=default.times, help="time steps per room")
    parser.add_argument("--gap-deg", type=float, default=default.gap_deg, help="azimuth gap between views")
    parser.add_argument("--orbit-deg", type=float, default=default.orbit_deg, help="orbit per time step")
    parser.add_argument(
        "--influence",
        type=int,
        default=0,
        metavar="ROOMS",
        help="also measure, on this many rooms, how much the movers change the outputs and how much of "
        "that the GT masks undo through the attention bias (`mover_influence`)",
    )
    args = parser.parse_args(argv)
    study = dataclasses.replace(
        default, views=args.views, times=args.times, gap_deg=args.gap_deg, orbit_deg=args.orbit_deg
    )
    claim_run_folder(args.out)
    torch.set_num_threads(args.threads)
    model, note = load_model("tiny", args.checkpoint, patch_embed=args.patch_embed)
    result = {"model": note, **coverage_study(model, args.rooms, study)}
    from pathlib import Path

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_figure(figure(result["bins"], f"{args.checkpoint}: errors vs moving pixels"), out / "phenomenon.png")
    text = table(result["bins"])
    if args.influence:
        result["influence"] = mover_influence(model, args.influence, study)
        share = f"{result['influence']['target']:.0%}"
        text += f"\n\nChange against the same room without movers ({share} moving pixels):\n\n"
        text += influence_table(result["influence"])
    (out / "phenomenon.md").write_text(text + "\n")
    write_json(out / "metrics.json", result)
    mark_finished(out, "phenomenon", rooms=args.rooms)
    print(text)
    return result


if __name__ == "__main__":
    main()
