"""Running a model on a clip and looking at what it exports (the logic behind notebooks 01 and 02).

set_determinism(seed=0, threads=1)
scene = prepare_scene("", (112, 154), num_times=4, num_views=2, seed=0, work_dir=run_dir)
model, note = load_model("tiny", checkpoint="", seed=0)
pred = run_model(model, scene_to_batch(scene).images)
prediction_shape_rows(pred)        # key / shape / dtype / meaning
sign_check(model, pred)            # sigmoid(mask_logits) vs the suppression the attention applied
export_cost(model, images)         # time and memory with vs without exporting mask logits
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from page4d.data import Scene, SyntheticSceneConfig, generate_synthetic_scene, load_scene
from page4d.model import MaskHeadOutput, build_model, load_checkpoint, preset, upsample_mask_logits
from page4d.model.vggt import PAGE4DModel
from page4d.train import set_determinism  # noqa: F401  (the notebooks call extract.set_determinism)

# What each exported key holds (multi-view input [B, T, V, 3, H, W]; h = H / 14, w = W / 14).
KEY_MEANING = {
    "pose_enc": "camera: t (3), quaternion xyzw (4), fov_h, fov_w; world-to-camera",
    "pose_enc_list": "pose_enc after each refinement iteration",
    "depth": "z-depth per pixel",
    "depth_conf": "depth confidence (1 + exp)",
    "world_points": "3D point per pixel in the frame of camera (t=0, v=0)",
    "world_points_conf": "point confidence (1 + exp)",
    "mask_logits": "dynamic logit per patch; sigmoid = P(dynamic) = attention suppression",
    "aggregated_tokens_list": "per block pair: [frame | global] tokens, [B, S, P, 2C]",
    "patch_start_idx": "index of the first patch token (camera + register tokens before)",
    "mask_head.raw_logits": "raw conv output m of the mask head (original sign)",
    "mask_head.head_input": "patch features fed to the mask head",
    "mask_head.dynamic_logits": "mask_logits before the [B, T, V] split",
    "mask_head.query_gain": "per query row gain r_i (camera/register rows only)",
    "mask_head.key_bias": "per key additive bias c_j (patch keys only)",
}


def load_model(preset_name: str, checkpoint: str | Path = "", seed: int = 0) -> tuple[PAGE4DModel, str]:
    """`(model in eval mode, one-line note)`: the preset with seeded random weights, then the checkpoint
    if one is given (every key and shape must match; see `page4d.model.load_checkpoint`)."""
    torch.manual_seed(seed)
    model = build_model(preset(preset_name)).eval()
    n_params = sum(p.numel() for p in model.parameters())
    if str(checkpoint):
        report = load_checkpoint(model, checkpoint, allow_missing_mask_head=True)
        note = f"preset {preset_name} ({n_params:,} parameters), weights from {Path(checkpoint).name}: "
        note += report.summary()
    else:
        note = f"preset {preset_name} ({n_params:,} parameters), random weights (seed {seed})"
    return model, note


def prepare_scene(
    scene_root: str | Path,
    image_size: tuple[int, int],
    num_times: int,
    num_views: int,
    seed: int,
    work_dir: str | Path,
) -> Scene:
    """Load the first `num_times` x `num_views` frames of `scene_root` at `image_size` (H, W).

    An empty `scene_root` renders a synthetic dynamic scene of exactly that size into
    `work_dir/synthetic_scene` (so the run folder keeps the data it was computed on).
    """
    if num_times < 1 or num_views < 1:
        raise ValueError(f"need at least one time and one view, got {num_times} x {num_views}")
    if not str(scene_root):
        h, w = image_size
        root = Path(work_dir) / "synthetic_scene"
        if not root.is_dir():
            config = SyntheticSceneConfig(seed=seed, times=num_times, views=num_views, height=h, width=w)
            generate_synthetic_scene(root, config)
    else:
        root = Path(scene_root)
    full = load_scene(root, image_size=tuple(image_size), load_tracks=False)
    if len(full.times) < num_times or len(full.views) < num_views:
        raise ValueError(
            f"{root} has {len(full.times)} times x {len(full.views)} views; "
            f"asked for {num_times} x {num_views}"
        )
    if len(full.times) == num_times and len(full.views) == num_views:
        return full
    return load_scene(
        root,
        times=full.times[:num_times],
        views=full.views[:num_views],
        image_size=tuple(image_size),
        load_tracks=False,
    )


def run_model(model: PAGE4DModel, images: torch.Tensor, return_internals: bool = True) -> dict[str, Any]:
    """One inference forward pass (no gradients) on `[B, T, V, 3, H, W]` images in [0, 1]."""
    with torch.no_grad():
        return model(images, return_internals=return_internals)


def _describe(x: Any) -> tuple[str, str]:
    if isinstance(x, torch.Tensor):
        return str(list(x.shape)), str(x.dtype).removeprefix("torch.")
    if isinstance(x, (list, tuple)) and x and all(isinstance(t, torch.Tensor) for t in x):
        shapes = {tuple(t.shape) for t in x}
        inner = str(list(next(iter(shapes)))) if len(shapes) == 1 else "mixed shapes"
        return f"{len(x)} x {inner}", str(x[0].dtype).removeprefix("torch.")
    return repr(x) if isinstance(x, (int, float)) else type(x).__name__, type(x).__name__


def prediction_shape_rows(pred: dict[str, Any]) -> list[dict[str, str]]:
    """One row per exported key (MaskHeadOutput fields as `mask_head.<field>`): key, shape, dtype, meaning."""
    rows = []
    for key, value in pred.items():
        if isinstance(value, MaskHeadOutput):
            for f in dataclasses.fields(value):
                name = f"{key}.{f.name}"
                shape, dtype = _describe(getattr(value, f.name))
                rows.append(
                    {"key": name, "shape": shape, "dtype": dtype, "meaning": KEY_MEANING.get(name, "")}
                )
            continue
        shape, dtype = _describe(value)
        rows.append({"key": key, "shape": shape, "dtype": dtype, "meaning": KEY_MEANING.get(key, "")})
    return rows


def applied_suppression(model: PAGE4DModel, mask_head: MaskHeadOutput) -> torch.Tensor:
    """The per-patch suppression the global attention actually applied, read back from the key bias.

    fin10: `c_j = soft_mask_bias * clamp(alpha * s_j, 0, 1)`, so `s_applied = c_j / soft_mask_bias`
    (= `clamp(alpha * s_j, 0, 1)`). official: `c_j = sigmoid(pre_j) - 0.5 = 0.5 - s_j`. Returns `[B, S, h*w]`.
    """
    head = model.aggregator.spatial_mask_head
    if head is None:
        raise ValueError("the model has no mask head (a VGGT preset); nothing to check")
    b, s = mask_head.dynamic_logits.shape[:2]
    start = model.cfg.patch_start_idx
    key_bias = mask_head.key_bias.reshape(b, s, -1)[:, :, start:]
    variant = model.cfg.mask_head.variant
    if variant == "fin10":
        return key_bias / head.soft_mask_bias
    if variant == "official":
        return 0.5 - key_bias
    raise ValueError(f"unknown mask head variant {variant!r}")


def sign_check(model: PAGE4DModel, pred: dict[str, Any]) -> dict[str, Any]:
    """Is `sigmoid(mask_logits)` the suppression the attention applied? (Needs `return_internals=True`.)

    Compares the suppression read back from the key bias with what `mask_logits` predicts for it:
    fin10 `clamp(alpha * sigmoid(mask_logits), 0, 1)` (alpha = 1 at initialisation, so equal to
    sigmoid), official `sigmoid(mask_logits)`. Also checks the direction: the patch with the largest
    dynamic logit gets the most negative key bias (it is attended least).
    """
    if "mask_head" not in pred or "mask_logits" not in pred:
        raise ValueError("sign_check needs pred from model(..., return_internals=True) with a mask head")
    mh: MaskHeadOutput = pred["mask_head"]
    b, s = mh.dynamic_logits.shape[:2]
    logits = pred["mask_logits"].reshape(b, s, -1)
    applied = applied_suppression(model, mh)
    head = model.aggregator.spatial_mask_head
    variant = model.cfg.mask_head.variant
    alpha = float(head.alpha().detach()) if variant == "fin10" else 1.0
    expected = torch.clamp(alpha * torch.sigmoid(logits), 0.0, 1.0)
    start = model.cfg.patch_start_idx
    key_bias = mh.key_bias.reshape(b, s, -1)[:, :, start:]
    most_dynamic = logits.flatten().argmax()
    return {
        "variant": variant,
        "alpha": alpha,
        "max_abs_diff": float((applied - expected).abs().max()),
        "most_dynamic_patch_gets_lowest_bias": bool(
            key_bias.flatten()[most_dynamic] <= key_bias.min() + 1e-7
        ),
        "num_patches": int(logits.numel()),
    }


def mask_probabilities(mask_logits: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """`[1, T, V, h, w]` (or `[T, V, h, w]`) logits -> `[T, V, H, W]` P(dynamic) at image resolution
    (logits are upsampled bilinearly, then squashed, so p = 0.5 stays where the logit is 0)."""
    if mask_logits.ndim == 5:
        if mask_logits.shape[0] != 1:
            raise ValueError(f"expected batch size 1, got mask_logits {tuple(mask_logits.shape)}")
        mask_logits = mask_logits[0]
    if mask_logits.ndim != 4:
        raise ValueError(
            f"mask_logits must be [1, T, V, h, w] or [T, V, h, w], got {tuple(mask_logits.shape)}"
        )
    return torch.sigmoid(upsample_mask_logits(mask_logits.float(), tuple(image_hw)))


def save_mask_logits(path: str | Path, pred: dict[str, Any], scene: Scene, preset_name: str) -> Path:
    """Write the exported logits with what is needed to read them back: `{"mask_logits" [T, V, h, w],
    "times", "views", "image_size", "preset", "scene_root"}` (torch.save; load with weights_only=True)."""
    path = Path(path)
    torch.save(
        {
            "mask_logits": pred["mask_logits"][0].detach().cpu().contiguous(),
            "times": list(scene.times),
            "views": list(scene.views),
            "image_size": list(scene.image_size),
            "preset": preset_name,
            "scene_root": str(scene.root),
        },
        path,
    )
    return path


# --------------------------------------------------------------------------------------------------
# what exporting costs
# --------------------------------------------------------------------------------------------------
def _storages(x: Any) -> dict[int, int]:
    """`{storage id: nbytes}` of every tensor reachable in `x` (dicts, lists, dataclasses)."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        x = {f.name: getattr(x, f.name) for f in dataclasses.fields(x)}
    out: dict[int, int] = {}
    for leaf in tree_leaves(x):
        if dataclasses.is_dataclass(leaf) and not isinstance(leaf, type):
            out.update(_storages(leaf))
        elif isinstance(leaf, torch.Tensor):
            st = leaf.untyped_storage()
            out[st._cdata] = st.nbytes()
    return out


def retained_bytes(pred: Any) -> int:
    """Bytes held by the tensors in a prediction (storages shared by views counted once)."""
    return sum(_storages(pred).values())


class PeakTensorMemory(TorchDispatchMode):
    """Peak bytes of tensor storages created inside the `with` block and alive at the same time.

    Exact and deterministic on any device (it counts tensors, not allocator pages), so it can be
    compared across runs; inputs and weights that existed before the block are not counted.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.preexisting: set[int] = set()
        self.current = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        before = {id_ for id_ in _storages((args, kwargs))}
        out = func(*args, **kwargs)
        for key in [k for k, (ref, _) in self.live.items() if ref.expired()]:
            self.current -= self.live.pop(key)[1]
        for leaf in tree_leaves(out):
            if not isinstance(leaf, torch.Tensor):
                continue
            st = leaf.untyped_storage()
            key = st._cdata
            if key in self.live or key in before or key in self.preexisting:
                continue
            self.live[key] = (StorageWeakRef(st), st.nbytes())
            self.current += st.nbytes()
        self.peak = max(self.peak, self.current)
        self.preexisting |= before - set(self.live)
        return out


def _time_call(fn: Callable[[], Any], repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def without_mask_head(model: PAGE4DModel) -> PAGE4DModel:
    """The same network and weights with the mask head removed (plain VGGT: nothing to export)."""
    plain = build_model(model.cfg.replace(mask_head=None)).eval()
    own = plain.state_dict()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k in own}, strict=True)
    return plain.to(next(model.parameters()).device)


def export_cost(model: PAGE4DModel, images: torch.Tensor, repeats: int = 3, warmup: int = 1) -> list[dict]:
    """Time and memory of one forward pass, with vs without exporting the mask logits.

    Three variants of the same weights: `no mask head` (VGGT: no bias, nothing to export), `mask_logits`
    (PAGE-4D's default forward: the logit it computes anyway is returned) and `+ internals`
    (`return_internals=True`: also the per-layer tokens and the head's tensors). Per variant: median
    wall time over `repeats` (after `warmup`; machine-dependent), peak bytes of tensors alive during the
    forward (`PeakTensorMemory`, deterministic), bytes the returned dict retains, and on CUDA the
    allocator's peak. Ratios are relative to `no mask head`.
    """
    cuda = images.is_cuda
    variants = [
        ("no mask head", without_mask_head(model), False),
        ("mask_logits", model, False),
        ("+ internals", model, True),
    ]
    rows = []
    for name, net, internals in variants:

        def call(net=net, internals=internals):
            out = run_model(net, images, return_internals=internals)
            if cuda:
                torch.cuda.synchronize()
            return out

        seconds = _time_call(call, repeats, warmup)
        with torch.no_grad(), PeakTensorMemory() as mem:
            pred = net(images, return_internals=internals)
        row = {
            "variant": name,
            "seconds": seconds,
            "peak_tensor_bytes": mem.peak,
            "retained_bytes": retained_bytes(pred),
            "mask_logits_bytes": retained_bytes(pred["mask_logits"]) if "mask_logits" in pred else 0,
        }
        del pred
        if cuda:
            torch.cuda.reset_peak_memory_stats(images.device)
            base = torch.cuda.memory_allocated(images.device)
            call()
            row["cuda_peak_bytes"] = torch.cuda.max_memory_allocated(images.device) - base
        rows.append(row)
    base = rows[0]
    for row in rows:
        row["time_ratio"] = row["seconds"] / base["seconds"]
        row["peak_ratio"] = row["peak_tensor_bytes"] / base["peak_tensor_bytes"]
    return rows
