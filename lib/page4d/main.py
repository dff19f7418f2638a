"""The README's main job: build the tiny PAGE-4D model, run it on a generated synthetic clip and print
the prediction keys and shapes (including `mask_logits`), with no external data or weights.

    python -m page4d.main [--out DIR] [--seed N]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from page4d.data import SyntheticSceneConfig, generate_synthetic_scene, load_scene, scene_to_batch
from page4d.model import build_model, preset, upsample_mask_logits


def describe(predictions: dict) -> list[tuple[str, str]]:
    """(key, shape) rows; lists of tensors show their length and element shape."""
    rows = []
    for key, value in predictions.items():
        if isinstance(value, torch.Tensor):
            rows.append((key, str(list(value.shape))))
        elif isinstance(value, list) and value and isinstance(value[0], torch.Tensor):
            rows.append((key, f"{len(value)} x {list(value[0].shape)}"))
    return rows


def run(out_dir: Path, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    scene_dir = generate_synthetic_scene(out_dir / "synthetic_scene", SyntheticSceneConfig(seed=seed, times=4, views=2))
    scene = load_scene(scene_dir)
    batch = scene_to_batch(scene)
    model = build_model(preset("tiny")).eval()
    with torch.no_grad():
        pred = model(batch.images)
    prob = torch.sigmoid(upsample_mask_logits(pred["mask_logits"], scene.image_size))
    print(f"scene: {scene_dir}  T={len(scene.times)} V={len(scene.views)} image={scene.image_size}")
    print(f"model: tiny preset, {sum(p.numel() for p in model.parameters()):,} parameters")
    for key, shape in describe(pred):
        print(f"  {key:<20} {shape}")
    print(f"  mask probability at image size {list(prob.shape)}, mean {prob.mean():.3f}")
    return pred


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="where the synthetic scene is written")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.out is None:
        with tempfile.TemporaryDirectory() as tmp:
            run(Path(tmp), args.seed)
    else:
        run(args.out, args.seed)


if __name__ == "__main__":
    main()
