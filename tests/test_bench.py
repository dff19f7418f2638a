"""Benchmarks (issue #6) at tiny sizes: JSON structure, accuracy of every masked-attention method, and
the measuring tools themselves (allocator peak, saved tensors, log-log fit)."""

from __future__ import annotations

import json
import math

import nbformat
import pytest
import torch
import torch.nn.functional as F
from page4d.bench import QUICK, format_result, run_benchmark
from page4d.bench.__main__ import main
from page4d.bench.frames_scaling import loglog_slope
from page4d.bench.mask_export import drop_mask_outputs
from page4d.bench.masked_attention import METHODS, make_problem, recompute_rows_sdpa
from page4d.model import build_model, preset
from page4d.model.attention import augmented_channel_sdpa, masked_sdpa
from page4d.profiling import paired_ratio, peak_memory, saved_tensor_bytes, time_interleaved


@pytest.fixture(autouse=True)
def _one_thread():
    # one intra-op thread, as the CLI uses: several OpenMP threads on a busy 2-core box crawl
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_peak_memory_counts_allocator_bytes_exactly():
    def fn():
        tmp = torch.ones(1000, 1000)  # 4 MB, freed before returning
        return torch.ones(250, 1000) + tmp[:250]  # 1 MB operand (freed) + 1 MB result (kept)

    mem = peak_memory(fn)
    assert mem["retained_bytes"] == 1_000_000
    assert mem["peak_bytes"] == 6_000_000


def test_saved_tensor_bytes_sees_what_autograd_keeps():
    x = torch.randn(1000, requires_grad=True)
    assert saved_tensor_bytes(lambda: x.exp().sum()) == 4000  # exp saves its result
    w = torch.randn(1000, requires_grad=True)
    assert saved_tensor_bytes(lambda: (x * w).sum(), exclude=[w]) == 4000  # w excluded, x counted


def test_interleaved_timing_and_paired_ratio():
    times = time_interleaved({"a": lambda: None, "b": lambda: sum(range(20000))}, 3, timer="wall")
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}
    assert paired_ratio({"x": [2.0, 4.0, 9.0], "y": [1.0, 1.0, 3.0]}, "x", "y") == 3.0


def test_loglog_slope_recovers_power_law():
    xs = [2, 4, 8, 16, 32]
    assert loglog_slope(xs, [3.0 * x**1.5 for x in xs]) == pytest.approx(1.5, abs=1e-12)


def test_all_masked_attention_methods_equal_dense_reference_float64():
    q, k, v, bias = make_problem(frames=3, heads=2, tokens_per_frame=20, head_dim=16)
    q, k, v = q.double(), k.double(), v.double()
    bias.row_gain, bias.key_bias = bias.row_gain.double(), bias.key_bias.double()
    dense = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.dense(q.shape[2]))
    for fn in (masked_sdpa, recompute_rows_sdpa, augmented_channel_sdpa):
        assert (fn(q, k, v, bias) - dense).abs().max() < 1e-12, fn.__name__
    assert (F.scaled_dot_product_attention(q, k, v) - dense).abs().max() > 1e-2  # the bias matters


def test_masked_attention_json_and_accuracy():
    out = run_benchmark("masked_attention", quick=True)
    json.dumps(out)
    assert len(out["results"]) == len(QUICK["masked_attention"]["sizes"])
    for res in out["results"]:
        n, r = res["tokens"], res["gated_rows"]
        assert r == 5 * res["frames"] and n == res["frames"] * res["tokens_per_frame"]
        for key in ("ratio_vs_plain", "time_s", "extra_memory_bytes", "max_abs_diff", "max_abs_err_f64"):
            assert set(res[key]) == set(METHODS), key
        assert res["ratio_vs_plain"]["plain"] == 1.0
        assert all(math.isfinite(x) and x > 0 for x in res["ratio_vs_plain"].values())
        for m in METHODS[1:]:
            assert res["max_abs_diff"][m] < 1e-5, m
            assert res["max_abs_err_f64"][m] < 1e-5, m
        # ignoring the bias is visibly wrong, so the checks above are not vacuous
        assert res["max_abs_diff"]["plain"] > 1e-2 and res["plain_max_abs_diff_on_gated_rows"] > 1e-2
        assert res["extra_memory_bytes"]["dense_bias"] == 4 * n * n
        assert res["extra_memory_bytes"]["masked_sdpa"] == 4 * r * n
        assert res["extra_peak_bytes"]["plain"] == 0


def test_mask_export_json_and_memory_accounting():
    out = run_benchmark("mask_export", quick=True)
    json.dumps(out)
    tiny = out["tiny"]
    assert {"time_ratio", "extra_memory_bytes", "logits_bytes"} <= set(tiny)
    b, s, c, h, w = tiny["logits_shape"]
    assert tiny["logits_bytes"] == 4 * b * s * c * h * w > 0
    assert tiny["same_predictions"]
    # exporting keeps exactly the logits alive, and can raise the peak by at most their size
    assert tiny["extra_retained_bytes"] == tiny["logits_bytes"]
    assert 0 <= tiny["extra_memory_bytes"] <= tiny["logits_bytes"]
    assert tiny["time_ratio"] > 0 and tiny["mask_head"]["time_ratio_vs_vggt"] > 0
    assert tiny["mask_head"]["parameters"] > 0 and tiny["mask_head"]["extra_train_saved_bytes"] > 0


def test_drop_mask_outputs_is_temporary():
    model = build_model(preset("tiny")).eval()
    x = torch.rand(1, 2, 3, 28, 28)
    with torch.no_grad():
        with drop_mask_outputs(model, ("dynamic_logits",)):
            assert model(x)["mask_logits"] is None
        assert model(x)["mask_logits"].shape == (1, 2, 1, 2, 2)


def test_train_step_json():
    out = run_benchmark("train_step", quick=True)
    json.dumps(out)
    assert set(out["images_per_s"]) == {"no_mask_loss", "mask_loss", "vggt"}
    assert all(v > 0 for v in out["images_per_s"].values())
    assert out["time_ratio"] > 0 and out["vggt_time_ratio"] > 0
    # BCE trains the mask head only (its input is detached) and saves little for backward
    assert out["mask_loss_head_grad_abs_sum"] > 0 and out["mask_loss_trunk_grad_abs_sum"] == 0
    assert 0 <= out["extra_saved_bytes"] < 1_000_000


def test_patch_embeddings_times_every_tiny_embedding_against_the_preset_s():
    out = run_benchmark("patch_embeddings", quick=True)
    json.dumps(out)
    assert set(out["step_s"]) == {"conv", "conv_stem", "conv_pos"} and out["time_ratio"]["conv"] == 1.0
    assert all(out["time_ratio"][n] > 0 for n in ("conv_stem", "conv_pos"))
    # the stem's 3x3 convolutions and the position table add parameters; nothing else differs
    p = out["parameters"]
    assert p["conv_stem"] > p["conv"] and p["conv_pos"] - p["conv"] == 122 * 64 + 64 + 64 + 64 + 64


def test_frames_scaling_json_through_cli(capsys):
    assert main(["frames_scaling", "--quick", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["machine"]["torch"] == torch.__version__ and out["machine"]["torch_threads"] == 1
    assert [r["frames"] for r in out["results"]] == list(QUICK["frames_scaling"]["frames"])
    assert math.isfinite(out["exponent"]) and len(out["local_exponents"]) == len(out["results"]) - 1


def test_notebooks_empty_dir_and_one_notebook(tmp_path):
    empty = run_benchmark("notebooks", notebook_dir=tmp_path)
    assert empty["notebooks"] == [] and empty["total_s"] == 0.0 and "no notebooks" in empty["note"]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1 + 1")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "one.ipynb")
    out = run_benchmark("notebooks", notebook_dir=tmp_path)
    json.dumps(out)
    assert [e["name"] for e in out["notebooks"]] == ["one.ipynb"]
    assert out["all_ok"] and out["within_target"] and out["total_s"] > 0


def test_ablation_budget_benchmark_reports_every_cell_and_the_budget():
    out = run_benchmark("ablation", quick=True, threads=1)
    arms = ["untrained", "attention", "no_mask", "none", "bce", "bce_noisy", "attention_forcing", "oracle"]
    assert out["arms"] == arms and not out["failed"]  # the main job's default arms
    assert [c["trained_steps"] for c in out["cells"]] == [0, 0] + [2] * 6
    assert out["total_s"] > 0 and out["budget_s"] == 600.0 and isinstance(out["within_budget"], bool)
    assert "budget <= 600 s" in format_result("ablation", out)


def test_data_benchmark_times_generation_and_both_loads(tmp_path):
    out = run_benchmark("data", quick=True)
    assert set(out["seconds"]) == {"generate (render + write)", "load synthetic", "load real capture"}
    assert all(v > 0 for v in out["seconds"].values()) and out["generate_over_load"] > 0
    assert out["synthetic"] == {"times": 2, "views": 2, "size": [56, 70]}
    assert "generating a scene costs" in format_result("data", out)
