"""GPU check for issue 12 (< 10 minutes on one node): DDP, bf16 training of the 1B presets, resume, and
the long-sequence benchmark. Appends its results to bench/RESULTS.md and writes a JSON next to them.

    .venv/bin/python bench/gpu_check.py                 # everything, results -> bench/RESULTS.md
    .venv/bin/python bench/gpu_check.py --skip-bench    # training checks only

What it runs (random weights; a synthetic 2-view scene at 294x518, generated into --work):
1. `torchrun --nproc_per_node N -m page4d.train` with N = 2 when two GPUs exist, else 1: bf16, PAGE-4D's
   recipe (mask head + middle blocks train), gradient checkpointing, 4 steps, for `page4d_fin10_1b` and
   `page4d_official_1b`. Records time, peak GPU memory, final losses, and whether every rank ends with
   the same weights.
2. Resume: the fin10 run again as 2 steps (`--stop-after 2`) + `--resume`; its final weights digest is
   compared with the uninterrupted run's (bit-identity is only promised on CPU: CUDA kernels such as
   upsampling backward are not deterministic, so a mismatch here is reported, not failed).
3. Pretraining cost: `python -m page4d.experiments.pretrain --device cuda --stop-after 300` with the
   shipped card's recipe; seconds per step, and the projected time of the full recipe (its `steps`).
4. `page4d.bench.long_sequence` for `page4d_fin10_1b` in bf16 at 294x518 and 50 / 100 / 200 frames:
   peak memory and time with only the heads' layers kept vs all 24.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
IMAGE_SIZE = (294, 518)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(nproc: int, args: list[str], log: Path) -> tuple[int, float]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
           "--master_port", str(free_port()), "-m", "page4d.train", *args]  # fmt: skip
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False).returncode
    return rc, time.perf_counter() - t0


def train_args(scene: Path, out: Path, preset: str, *extra: str) -> list[str]:
    size = [str(n) for n in IMAGE_SIZE]
    return ["--scene", str(scene), "--out", str(out), "--preset", preset, "--image-size", *size,
            "--precision", "bf16", "--trains", "mask_head+middle_blocks", "--gradient-checkpointing",
            "--steps", "4", "--clip-times", "2", "--lr", "1e-4", *extra]  # fmt: skip


def read_summary(out: Path) -> dict | None:
    path = out / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else None


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", default="outputs/gpu_check", help="scene, run folders and logs go here")
    parser.add_argument("--results", default=str(HERE / "RESULTS.md"), help="Markdown file to append to")
    parser.add_argument("--skip-bench", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device; nothing to check", file=sys.stderr)
        return 2
    from page4d.data import SyntheticSceneConfig, generate_synthetic_scene

    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    work = Path(args.work) / stamp
    work.mkdir(parents=True)
    scene = generate_synthetic_scene(
        work / "scene",
        SyntheticSceneConfig(seed=0, times=4, views=2, height=IMAGE_SIZE[0], width=IMAGE_SIZE[1]),
    )
    gpus = torch.cuda.device_count()
    nproc = 2 if gpus >= 2 else 1
    report: dict = {
        "date_utc": stamp,
        "gpu": torch.cuda.get_device_name(0),
        "gpus": gpus,
        "torch": torch.__version__,
        "ranks": nproc,
        "training": {},
    }
    for preset in ("page4d_fin10_1b", "page4d_official_1b"):
        out = work / preset
        rc, seconds = torchrun(nproc, train_args(scene, out, preset), work / f"{preset}.log")
        summary = read_summary(out)
        report["training"][preset] = {
            "exit_code": rc,
            "wall_s": seconds,
            "ranks_agree": summary is not None and len(set(summary["rank_weight_digests"])) == 1,
            "peak_gpu_gib": summary and (summary["peak_device_memory_bytes"] or 0) / 2**30,
            "trainable_parameters": summary and summary["trainable_parameters"],
            "final_losses": summary and summary["final_losses"],
            "digest": summary and summary["rank_weight_digests"][0],
        }
        print(f"gpu_check: {preset}: {report['training'][preset]}", flush=True)

    resumed = work / "fin10_resumed"
    rc1, s1 = torchrun(
        nproc, train_args(scene, resumed, "page4d_fin10_1b", "--stop-after", "2"), work / "r1.log"
    )
    rc2, s2 = torchrun(nproc, train_args(scene, resumed, "page4d_fin10_1b", "--resume"), work / "r2.log")
    summary = read_summary(resumed)
    report["resume"] = {
        "exit_codes": [rc1, rc2],
        "wall_s": s1 + s2,
        "resumed_from_step": summary and summary["resumed_from_step"],
        "bit_identical_to_uninterrupted": summary is not None
        and summary["rank_weight_digests"][0] == report["training"]["page4d_fin10_1b"]["digest"],
    }
    print(f"gpu_check: resume: {report['resume']}", flush=True)

    report["pretrain"] = pretrain_cost(work / "pretrain")
    print(f"gpu_check: pretrain: {report['pretrain']}", flush=True)

    if not args.skip_bench:
        from page4d.bench import long_sequence

        result = long_sequence.run(
            frames=(50, 100, 200), image_size=IMAGE_SIZE, model_name="page4d_fin10_1b", dtype="bf16",
            repeats=1, device="cuda",
        )  # fmt: skip
        report["long_sequence"] = result
        print(long_sequence.format_result(result), flush=True)

    (work / "gpu_check.json").write_text(json.dumps(report, indent=1))
    with open(args.results, "a") as fh:
        fh.write(markdown(report))
    print(f"gpu_check: results appended to {args.results}; raw JSON in {work / 'gpu_check.json'}")
    ok = all(t["exit_code"] == 0 and t["ranks_agree"] for t in report["training"].values())
    return 0 if ok and report["resume"]["exit_codes"] == [0, 0] else 1


def pretrain_cost(out: Path, steps: int = 300) -> dict:
    """Seconds per step of the shipped checkpoint's recipe on this GPU, and the full recipe projected."""
    from page4d.model.checkpoint import SHIPPED_DIR

    recipe = json.loads((SHIPPED_DIR / "tiny-synthetic.json").read_text())["recipe"]
    flags = []
    for key, value in recipe.items():
        if key in ("device", "threads"):
            continue
        values = value if isinstance(value, list) else [value]
        flags += [f"--{key.replace('_', '-')}", *(str(v) for v in values)]
    cmd = [sys.executable, "-m", "page4d.experiments.pretrain", "--out", str(out), *flags, "--device", "cuda",
           "--stop-after", str(steps)]  # fmt: skip
    t0 = time.perf_counter()
    rc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False).returncode
    wall = time.perf_counter() - t0
    history = json.loads((out / "train" / "history.json").read_text()) if rc == 0 else []
    per_step = (history[-1]["seconds"] - history[9]["seconds"]) / (len(history) - 10) if history else None
    return {
        "exit_code": rc,
        "wall_s_incl_scene_rendering": wall,
        "seconds_per_step": per_step,
        "projected_minutes_full_recipe": per_step and per_step * recipe["steps"] / 60,
    }


def markdown(report: dict) -> str:
    lines = [
        "",
        f"## GPU check (issue 12), {report['date_utc']}: {report['gpus']} x {report['gpu']}, torch "
        f"{report['torch']}, {report['ranks']} rank(s)",
        "",
        "`bench/gpu_check.py`: bf16, mask head + middle blocks train, gradient checkpointing, 4 steps, "
        f"clips of 2 time steps x 2 views at {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]}, random weights.",
        "",
        "| preset | exit | wall s | peak GPU GiB | trainable params | ranks agree | final loss |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, t in report["training"].items():
        loss = (t["final_losses"] or {}).get("loss")
        peak = "-" if t["peak_gpu_gib"] is None else f"{t['peak_gpu_gib']:.1f}"
        params = "-" if t["trainable_parameters"] is None else f"{t['trainable_parameters']:,}"
        loss = "-" if loss is None else f"{loss:.4f}"
        cells = [name, t["exit_code"], f"{t['wall_s']:.0f}", peak, params, t["ranks_agree"], loss]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    r = report["resume"]
    lines += [
        "",
        f"Resume (2 steps + `--resume` 2 steps, fin10): exit codes {r['exit_codes']}, resumed from step "
        f"{r['resumed_from_step']}, bit-identical to the uninterrupted run: "
        f"{r['bit_identical_to_uninterrupted']}.",
    ]
    pre = report["pretrain"]
    if pre["seconds_per_step"] is not None:
        lines += [
            "",
            f"Pretraining (tiny-synthetic recipe, cuda, 300 steps): {pre['seconds_per_step']:.3f} s/step, "
            f"the full recipe projected at {pre['projected_minutes_full_recipe']:.1f} minutes.",
        ]
    else:
        lines += ["", f"Pretraining on cuda failed (exit {pre['exit_code']})."]
    if "long_sequence" in report:
        from page4d.bench import long_sequence

        lines += ["", "```", long_sequence.format_result(report["long_sequence"]), "```"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "4")
    sys.exit(main())
