"""Mixed precision, bounded memory on long sequences, and device-safe metrics (issue 12).

The heads run in float32 under autocast (as VGGT runs its camera and DPT heads); only the aggregator
layers some head reads are kept; the DPT frame chunk is configurable; metrics build their constants on the
input's device. CUDA checks skip cleanly on a machine without a GPU.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from page4d.model import build_model, preset
from page4d.model.config import MaskHeadConfig
from page4d.scoring.metrics import boundary_f_measure, depth_metrics, jf_metrics, mask_iou, trajectory_metrics

KEYS = ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf", "mask_logits")
# bf16 keeps 8 bits of mantissa: the tiny preset's predictions stay within 2% of their largest value
# (measured: pose 0.6%, mask logits 0.2%, depth / points < 0.02%).
BF16_TOLERANCE = 2e-2


def tiny(**changes):
    torch.manual_seed(0)
    return build_model(preset("tiny", **changes)).eval()


def test_bf16_autocast_gives_the_fp32_predictions_and_float32_heads():
    model = tiny()
    images = torch.rand(1, 2, 2, 3, 56, 70)
    with torch.no_grad():
        ref = model(images)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(images, return_internals=True)
    errors = []
    for key in KEYS:
        assert low[key].dtype == torch.float32, key
        err = float((low[key] - ref[key]).abs().max() / ref[key].abs().max())
        assert err < BF16_TOLERANCE, (key, err)
        errors.append(err)
    assert max(errors) > 1e-4  # the trunk's matmuls did run in bf16
    assert all(p.dtype == torch.float32 for p in low["pose_enc_list"])


def test_official_head_in_bf16_and_its_schedule_counter_is_a_buffer():
    head = MaskHeadConfig(
        variant="official", mask_after_block=2, masked_global_blocks=(3, 4, 5), pointwise_channels=8
    )
    model = tiny(mask_head=head)
    counter = model.aggregator.spatial_mask_head.schedule_step
    assert counter.dtype == torch.int64 and "aggregator.spatial_mask_head.schedule_step" in dict(
        model.named_buffers()
    )
    assert (
        "aggregator.spatial_mask_head.schedule_step" not in model.state_dict()
    )  # released checkpoints lack it
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.rand(1, 2, 3, 56, 70))
    assert out["mask_logits"].dtype == torch.float32 and int(counter) == 1
    model.double()
    assert model.aggregator.spatial_mask_head.schedule_step.dtype == torch.int64  # dtype casts leave it alone


def test_only_the_layers_the_heads_read_are_kept_and_outputs_do_not_change():
    model = tiny()
    images = torch.rand(1, 3, 3, 56, 70)
    with torch.no_grad():
        full = model(images, return_internals=True)
        kept = model.aggregator(images, keep_layers=model.head_layers())
        lean = model(images)
    assert model.head_layers() == {1, 3, 4, 5}  # DPT (1, 3, 4, 5) and the camera head's last layer
    assert [i for i, t in enumerate(kept.tokens) if t is not None] == [1, 3, 4, 5]
    assert all(t is not None for t in full["aggregated_tokens_list"])
    for key in KEYS:
        assert torch.equal(full[key], lean[key]), key


@pytest.mark.parametrize("chunk", [2, 0])
def test_dpt_frame_chunk_is_config_and_does_not_change_the_numbers(chunk):
    base = tiny()
    cfg = base.cfg.replace(dpt=dataclasses.replace(base.cfg.dpt, frames_chunk_size=chunk))
    other = build_model(cfg).eval()
    other.load_state_dict(base.state_dict())
    assert other.depth_head.frames_chunk_size == chunk
    images = torch.rand(1, 3, 3, 56, 70)
    with torch.no_grad():
        a, b = base(images), other(images)
    for key in ("depth", "world_points"):
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_training_on_cpu(tmp_path, precision):
    from page4d.data import SyntheticSceneConfig, generate_synthetic_scene, load_scene
    from page4d.train import TrainConfig, train

    root = generate_synthetic_scene(
        tmp_path / "s", SyntheticSceneConfig(seed=1, times=3, views=2, height=56, width=70)
    )
    cfg = TrainConfig(steps=2, clip_times=2, threads=1, precision=precision, trains="everything")
    model, history = train(cfg, load_scene(root), output_dir=tmp_path / "run", progress=False)
    assert all(r["updated"] for r in history) and all(torch.isfinite(p).all() for p in model.parameters())
    scaler = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["scaler"]
    assert (scaler["scale"] > 0) if precision == "fp16" else scaler == {}  # a GradScaler only for fp16


def metric_inputs(device):
    gen = torch.Generator().manual_seed(0)
    pred = torch.rand(2, 3, 40, 50, generator=gen)
    gt = (torch.rand(2, 3, 40, 50, generator=gen) > 0.5).float()
    depth = torch.rand(2, 40, 50, generator=gen) + 0.5
    ext = torch.eye(4)[:3].repeat(6, 1, 1)
    ext[:, :, 3] = torch.randn(6, 3, generator=gen)
    return [x.to(device) for x in (pred, gt, depth, ext)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_every_metric_accepts_cuda_tensors_and_agrees_with_the_cpu():
    cpu, gpu = metric_inputs("cpu"), metric_inputs("cuda")
    for fn in (mask_iou, boundary_f_measure):
        torch.testing.assert_close(fn(gpu[0], gpu[1]).cpu(), fn(cpu[0], cpu[1]))
    on_gpu, on_cpu = jf_metrics(gpu[0], gpu[1]), jf_metrics(cpu[0], cpu[1])
    for key in ("J_mean", "F_mean", "JF_mean", "J_recall", "F_recall", "num_frames"):
        assert on_gpu[key] == pytest.approx(on_cpu[key]), key
    assert depth_metrics(gpu[2], gpu[2] * 1.1) == pytest.approx(depth_metrics(cpu[2], cpu[2] * 1.1))
    for align in ("sim3", "none"):
        a = trajectory_metrics(gpu[3] * 1.01, gpu[3], align=align)
        b = trajectory_metrics(cpu[3] * 1.01, cpu[3], align=align)
        assert a == pytest.approx(b, rel=1e-4, abs=1e-5)


def test_metric_constants_follow_the_input_device():
    """On CPU: the helpers that used to hard-code the CPU now take the input's device (meta tensors
    would fail on any CPU-only constant)."""
    from page4d.scoring.metrics import _dilate_disk

    b = torch.zeros(2, 8, 9, dtype=torch.bool, device="meta")
    assert _dilate_disk(b, 2).device.type == "meta"
