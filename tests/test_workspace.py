"""The workspace's own plumbing: environment.yml agrees with pyproject/Makefile; the main job runs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib

import yaml
from conftest import REPO_ROOT


def test_environment_yml_agrees_with_pyproject_and_makefile():
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge", "nodefaults"]
    deps = env["dependencies"]
    assert "python=3.11" in deps and "pip" in deps
    pip_section = next(d["pip"] for d in deps if isinstance(d, dict))
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert "-e .[dev]" in pip_section and "dev" in project["optional-dependencies"]
    torch_pin = next(p for p in pip_section if p.startswith("torch"))
    make_pin = re.search(r"TORCH_SPEC \?= (\S+)", (REPO_ROOT / "Makefile").read_text()).group(1)
    assert torch_pin == make_pin == "torch==2.13.0"
    assert any(d.startswith("torch") for d in project["dependencies"])
    assert project["requires-python"] == ">=3.11"


def test_main_job_runs_the_ablation_talks_while_it_runs_and_prints_the_summary(tmp_path):
    run = tmp_path / "run"
    argv = [sys.executable, "-m", "page4d.main", "--out", str(run), "-p", "steps", "3", "-p", "seeds", "0",
            "-p", "arms", "none,bce", "-p", "pool_scenes", "4", "-p", "eval_scenes", "2"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("ablation [1/2] none seed 0: done in "):
                # passed on while the notebook runs: the second cell and metrics.json are still to come
                assert not (run / "metrics.json").exists() and not (run / "cells" / "bce_seed0.json").exists()
        proc.wait(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == 0, proc.stderr.read()[-3000:]
    out = "\n".join(lines)
    progress = [line for line in lines if line.startswith("ablation")]
    assert progress[0] == "ablation: 2 cells (2 arms x 1 seeds); each trained arm takes 3 steps"
    assert progress[1] == "ablation [1/2] none seed 0: training ..."
    assert progress[2].startswith("ablation [1/2] none seed 0: done in ") and "held-out AP " in progress[2]
    assert progress[3] == "ablation [2/2] bce seed 0: training ..."
    assert progress[4].startswith("ablation [2/2] bce seed 0: done in ")
    metrics = json.loads((run / "metrics.json").read_text())
    assert list(metrics["arms"]) == ["none", "bce"]
    # the generated pool: 4 dynamic videos to fine-tune on, 2 others scored; geometry on, so `none` trains
    assert len(metrics["params"]["pool"]["eval_seeds"]) == 2 and metrics["params"]["checkpoint"] == "tiny-pos"
    assert "fine-tuned on 4 generated dynamic videos, scored on 2 others" in out and "from tiny-pos" in out
    assert metrics["arms"]["none"]["per_seed"][0]["trained_steps"] == 3
    assert "paired difference arm - none" in out and "held-out depth and cameras" in out
    iou = f"{metrics['arms']['bce']['mask_iou']:.3f}"
    assert any(line.startswith("bce ") and iou in line for line in out.splitlines())
    # every table says what its numbers are over: 2 held-out videos of 8 frames, each one clip
    bce_rows = [line for line in out.splitlines() if line.startswith("bce ")]
    assert "frames 16/16" in bce_rows[0] and "clips 2/2" in bce_rows[1]
    assert "every frame's camera rotation error" in out
    assert (run / "03_ablation_mask_supervision.ipynb").is_file()
    # the closing summary: the answer in one sentence, where the figures are, what to run next
    answer = next(line for line in lines if line.startswith("Answer: "))
    best = max(metrics["arms"], key=lambda a: metrics["arms"][a]["mask_ap"])
    assert answer.startswith("Answer: Against none, ") and answer.endswith(".")  # depth and cameras first
    assert f"{best} has the best held-out mask AP" in answer
    figures = next(line for line in lines if line.startswith("Figures: "))
    for png in ("ablation_metrics.png", "held_out_overlays.png", "training_loss.png"):
        assert png in figures and (run / png).is_file()
    assert lines[lines.index("Next:") + 1].startswith("  more seeds for 95% CIs: python -m page4d.main")


def test_main_job_refuses_unknown_parameters(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "page4d.main", "--out", str(tmp_path), "-p", "stepz", "3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "unknown parameter(s) ['stepz']" in proc.stderr
    assert not (tmp_path / "metrics.json").exists()
