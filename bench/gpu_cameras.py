"""The camera phase of issue 20 on a GPU: the `rigs+mono` probe for a fixed time, then the card's scores.

On the 2-core CPU the probe makes about one step a second (`--geometry-every 4`) and learns the card's
rigs slowly; the question a GPU answers is how far ten times the steps take it. Run on a machine with
CUDA (its CPU cores render the clips, two steps ahead of the GPU):

    PYTHONPATH=lib python bench/gpu_cameras.py --init WEIGHTS --minutes 7 --out $OUT/cameras
    (weights of a tiny-only patch embedding: add --patch-embed conv_pos, or conv_stem)

1. `python -m page4d.experiments.camera_probe --task rigs+mono --device cuda --workers N --geometry
   --minutes M --save-weights` from `--init` (N = the CPU cores less two), into `OUT/probe`;
2. `python -m page4d.experiments.backbone_score` of the weights it ends with, on the card's 16
   held-out scenes (CPU), into `OUT/card.json` and `OUT/card.txt`;
3. `OUT/summary.json`: steps made, steps per second, the first and last held-out evaluations, and the
   card's four numbers beside their targets.
`--device cpu` runs the same chain on this machine (a dry run: `--minutes 0.1 --eval-every 2`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from page4d.model.config import TINY_PATCH_EMBEDS

HELDOUT_KEYS = ("rot_deg_median", "identity_floor_deg", "skill", "match_top1")


def run(cmd: list[str], log: Path) -> float:
    """Run `cmd`, its output into `log`; raises on a non-zero exit, naming the log. Returns seconds."""
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False).returncode
    if rc:
        raise SystemExit(f"gpu_cameras: {cmd[2]} exited {rc}; see {log}")
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--init", required=True, help="starting weights (a .pt or a packaged name)")
    parser.add_argument("--out", required=True, help="a new folder for the records")
    parser.add_argument("--minutes", type=float, default=7.0, help="training budget of the probe")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=8, help="clips per step")
    parser.add_argument("--geometry-every", type=int, default=1, help="depth and point losses every N steps")
    parser.add_argument("--seed", type=int, default=3, help="the probe's training clips (0-2 ran on CPU)")
    parser.add_argument(
        "--eval-every", type=int, default=250, help="held-out evaluation (and budget check) every N"
    )
    parser.add_argument(
        "--rotation-target", default="canonical", choices=("canonical", "chordal"), help="see camera_probe"
    )
    parser.add_argument(
        "--w-correspondence",
        type=float,
        default=0.0,
        help="the cross-view patch-matching term (camera_probe)",
    )
    parser.add_argument(
        "--patch-embed",
        default="conv",
        choices=TINY_PATCH_EMBEDS,
        help="the --init weights' tiny patch embedding (camera_probe / backbone_score --patch-embed)",
    )
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=False)
    workers = max(1, (os.cpu_count() or 4) - 2) if args.device == "cuda" else 0
    probe = [
        sys.executable, "-m", "page4d.experiments.camera_probe", "--out", str(out / "probe"),
        "--task", "rigs+mono", "--init", args.init, "--lr", str(args.lr), "--batch", str(args.batch),
        "--steps", "1000000", "--minutes", str(args.minutes), "--eval-every", str(args.eval_every),
        "--geometry", "--geometry-every", str(args.geometry_every), "--seed", str(args.seed),
        "--rotation-target", args.rotation_target, "--w-correspondence", str(args.w_correspondence),
        "--device", args.device, "--workers", str(workers), "--save-weights", "--threads", "4",
        "--patch-embed", args.patch_embed,
    ]  # fmt: skip
    probe_s = run(probe, out / "probe.log")
    score = [
        sys.executable, "-m", "page4d.experiments.backbone_score", str(out / "probe" / "weights.pt"),
        "--out", str(out / "card.json"), "--threads", "4", "--patch-embed", args.patch_embed,
    ]  # fmt: skip
    run(score, out / "card.txt")
    record = json.loads((out / "probe" / "probe.json").read_text())
    first, last = record["evaluations"][0], record["evaluations"][-1]
    card = json.loads((out / "card.json").read_text())
    summary = {
        "device": args.device,
        "rotation_target": args.rotation_target,
        "w_correspondence": args.w_correspondence,
        "patch_embed": args.patch_embed,
        "workers": workers,
        "probe_wall_s": probe_s,
        "steps": last["step"],
        "steps_per_s": last["step"] / max(last["seconds"], 1e-9),
        "heldout_first": {k: first[k] for k in HELDOUT_KEYS},
        "heldout_last": {k: last[k] for k in HELDOUT_KEYS},
        "card_targets": card["targets"],
        "card_rig_pairs_by_gap": card["rig_view_pairs_by_gap"],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    print((out / "card.txt").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
