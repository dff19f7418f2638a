"""How any backbone's weights score on a pretraining recipe's held-out static scenes, beside the identity
floor and issue 20's targets: the card's numbers for weights that no card was written for (a probe's or
a phase's output, a checkpoint of a long run).

    python -m page4d.experiments.backbone_score outputs/probe_rig/weights.pt
    python -m page4d.experiments.backbone_score tiny-stream --scenes 4 --out outputs/score_stream.json

The scenes are the recipe's own held-out range (`tiny-stream`: 16 scenes, 13 rigs and 3 monocular
cameras, seeds no training draws), each scored as one whole clip, exactly as its card scores them; so
`tiny-stream` itself reproduces its card's held-out numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import torch

from page4d.data import Scene
from page4d.experiments import pretrain
from page4d.experiments.ablation_stats import mean_ci95
from page4d.experiments.camera_probe import by_rotation_size
from page4d.geometry import relative_to_first_camera, rotation_angle
from page4d.inference.loading import AUTO, resolve_patch_embed
from page4d.records import write_json

FLOORED = ("rpe_rot", "rpe_view_rot")  # the camera metrics whose identity floor the scores carry


def score_backbone(
    weights: str | Path,
    recipe: str = pretrain.DEFAULT_RECIPE,
    scenes: int = 0,
    patch_embed: str = AUTO,
    first: int = 0,
) -> dict:
    """`pretrain.heldout_metrics` of `weights` (a checkpoint path or a packaged name) on `scenes` (0: all
    the card's) held-out scenes of the named recipe from index `first`, with its targets checked and, for
    the monocular scenes, the median camera rotation error beside its identity floor. Indices past the
    card's (`first` >= its `heldout_scenes`) are scenes of the same held-out range that no card scored:
    a check that a backbone's numbers are not the card's draw."""
    cfg = pretrain.RECIPES[recipe]
    if cfg.scenes != "stream":
        raise ValueError(f"recipe {recipe!r} renders its held-out scenes to disk; score a stream recipe")
    if first < 0 or scenes < 0:
        raise ValueError(f"first and scenes must be >= 0, got first={first}, scenes={scenes}")
    if first and not scenes:
        raise ValueError(f"first={first} needs scenes > 0 (the count to score from it); got scenes={scenes}")
    count = scenes or cfg.heldout_scenes
    cfg = dataclasses.replace(cfg, heldout_scenes=first + count)
    _, heldout = pretrain.render_scenes(cfg, Path("."))  # a stream: rendered in memory, nothing written
    # rendered once here: the stream keeps only its last few scenes, and the pairs below read them again
    chosen = [heldout[i].load() for i in range(first, first + count)]
    patch_embed = resolve_patch_embed("tiny", weights, patch_embed)  # auto: the weights' own
    model = pretrain.starting_model(cfg.seed, str(weights), patch_embed)
    with torch.no_grad():
        scores = pretrain.heldout_metrics(model.eval(), chosen, cfg.eval_clip_times)
    mono = [s for s in scores["per_scene"] if s["views"] == 1]
    pairs = rig_view_pairs(chosen, scores["per_scene"])
    return {
        "weights": str(weights),
        "patch_embed": patch_embed,
        "recipe": recipe,
        "scenes": len(chosen),
        "first_scene": first,
        "scene_seeds": [c.seed for c in pretrain.heldout_configs(cfg)[first:]],  # the generator's
        **scores,
        "targets": pretrain.target_check({"heldout": {"pretrained": scores}}),
        "ci95_over_scenes": {  # how far the mean of these few scenes could be from the range's
            key: mean_ci95([s[key] for s in scores["per_scene"]])[1] for key in pretrain.TARGETS
        },
        "rig_view_pairs": pairs,
        "rig_view_pairs_by_gap": by_rotation_size(pairs) if pairs["gt_deg"] else [],
        "monocular_rot_deg_median": [
            {"error": s["camera_rot_deg_median"], "floor": s["camera_floor"]["camera_rot_deg_median"]}
            for s in mono
        ],
    }


def rig_view_pairs(scenes: list[Scene], per_scene: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Every rig's views at the first time step against its view 0: the GT angle between them (the
    identity's error) and the predicted relative rotation's error (degrees), in scene order.

    These are the view-RPE-r's pairs at t = 0. The card has few (13 rigs: 25 pairs), and its RMSE is
    ruled by the widest; split by gap, they say where a camera has skill."""
    gt, err = [], []
    for scene, scored in zip(scenes, per_scene, strict=True):
        if scored["views"] == 1:
            continue
        rig = relative_to_first_camera(torch.as_tensor(scene.extrinsics[0]).double())
        gt += torch.rad2deg(rotation_angle(rig[1:, :3, :3])).tolist()
        err += scored["camera_frames"][0]["rot_deg"][1 : scored["views"]]
    return {"gt_deg": [round(g, 3) for g in gt], "error_deg": err}


def summary_lines(result: dict[str, Any]) -> list[str]:
    """The scores as the README's rows: each target's value, its bound, and the floor where it has one."""
    where = f" from index {result['first_scene']}" if result.get("first_scene") else ""
    lines = [
        f"{result['weights']} on {result['scenes']} held-out scenes of {result['recipe']}{where} "
        "(mean [95% CI over scenes]):"
    ]
    for key, check in result["targets"].items():
        floor = result["camera_floor"].get(key) if key in FLOORED else None
        floor_text = f" identity floor {floor:.2f}" if floor is not None else ""
        ci = result["ci95_over_scenes"].get(key)
        ci_text = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
        lines.append(
            f"  {key:15s} {check['value']:8.3f}{ci_text}  target {check['target']:7s} "
            f"{'met' if check['met'] else 'NOT met':8s}{floor_text}"
        )
    if result["rig_view_pairs_by_gap"]:
        bins = "; ".join(
            f"{b['from_deg']:.0f}-{b['to_deg']:.0f} deg ({b['clips']}): "
            f"{b['error_deg']:.1f} / {b['floor_deg']:.1f}"
            for b in result["rig_view_pairs_by_gap"]
        )
        lines.append(f"  rig views at t=0 against view 0, by gap (pairs): median error / floor: {bins}")
    for s in result["monocular_rot_deg_median"]:
        lines.append(
            f"  monocular scene: rotation error {s['error']:.2f} deg (median), floor {s['floor']:.2f}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m page4d.experiments.backbone_score", description=__doc__)
    p.add_argument("weights", help="a checkpoint file, or a packaged backbone's name (tiny-stream)")
    p.add_argument("--recipe", default=pretrain.DEFAULT_RECIPE, help="whose held-out scenes to score")
    p.add_argument("--scenes", type=int, default=0, help="score N held-out scenes (0: the card's 16)")
    p.add_argument(
        "--first",
        type=int,
        default=0,
        help="index of the first held-out scene scored (16 and up: scenes of the range no card scored)",
    )
    p.add_argument("--out", help="also write the scores, per scene and per frame, to this JSON file")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument(
        "--patch-embed",
        default=AUTO,
        choices=(AUTO, *pretrain.TINY_PATCH_EMBEDS),
        help="the weights' patch embedding (auto: read from their keys)",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = score_backbone(args.weights, args.recipe, args.scenes, args.patch_embed, args.first)
    print("\n".join(summary_lines(result)))
    if args.out:
        write_json(Path(args.out), result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
