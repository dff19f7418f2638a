"""The re-implementation reproduces the original code's float64 outputs on every reference fixture."""

from __future__ import annotations

import pytest
import torch
from conftest import FIXTURES
from page4d.model import build_model
from reference_config import config_from_reference

FIXTURE_FILES = sorted(FIXTURES.glob("*.pt")) if FIXTURES.is_dir() else []
REL_TOL = 1e-9


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    scale = ref.abs().max().clamp(min=1e-300)
    return float(((ours.to(ref.dtype) - ref).abs().max() / scale).detach())


def ours_for(name: str, pred: dict, ref_outputs: dict):
    """Our tensor(s) for each reference output name (the mask head's return tuple is mapped per variant)."""
    mh = pred.get("mask_head")
    if name == "m_logit":
        return mh.raw_logits
    if name == "mask_head_input":
        return mh.head_input
    if name == "mask_head_return":
        first, second = ref_outputs[name]
        if second.dtype == torch.bool:  # fin10: (key_bias_1d [B,N], cam_row_mask [B,N] bool)
            return [mh.key_bias, mh.query_gain != 0]
        return [mh.query_gain, mh.key_bias[:, None]]  # official: (query_gain, key_values [B,1,N])
    return pred[name]


def compare(name: str, ours, ref) -> list[str]:
    if isinstance(ref, (list, tuple)):
        assert len(ours) == len(ref), f"{name}: {len(ours)} items vs {len(ref)}"
        pairs = enumerate(zip(ours, ref, strict=True))
        return [e for i, (o, r) in pairs for e in compare(f"{name}[{i}]", o, r)]
    if isinstance(ref, torch.Tensor):
        assert ours.shape == ref.shape, f"{name}: shape {tuple(ours.shape)} vs reference {tuple(ref.shape)}"
        if ref.dtype == torch.bool:
            return [] if torch.equal(ours, ref) else [f"{name}: boolean mask differs"]
        err = rel_err(ours, ref)
        return [] if err <= REL_TOL else [f"{name}: relative error {err:.2e}"]
    assert ours == ref, f"{name}: {ours} vs {ref}"
    return []


@pytest.fixture(scope="module", params=FIXTURE_FILES, ids=lambda p: p.stem)
def case(request):
    data = torch.load(request.param, weights_only=True)
    model = build_model(config_from_reference(data["config"])).double().eval()
    model.load_state_dict(data["state_dict"], strict=True)
    inputs = data["inputs"]
    with torch.no_grad():
        pred = model(inputs["images"], query_points=inputs.get("query_points"), return_internals=True)
    return data, model, pred


def test_fixture_folder_is_not_empty():
    assert len(FIXTURE_FILES) >= 5, f"expected the reference fixtures in {FIXTURES}"


def test_every_reference_output_matches(case):
    data, _, pred = case
    failures = []
    for name, ref in data["outputs"].items():
        failures += compare(name, ours_for(name, pred, data["outputs"]), ref)
    assert not failures, "\n".join(failures)


def test_mask_logits_follow_the_sign_rule(case):
    """sigmoid(mask_logits) is the suppression the attention used (fin10: -m/tau; official: -pre)."""
    data, model, pred = case
    mask_cfg = model.cfg.mask_head
    if mask_cfg is None:
        assert "mask_logits" not in pred
        return
    ref = data["outputs"]
    b, s = data["inputs"]["images"].shape[:2]
    m = ref["m_logit"]
    logits = pred["mask_logits"]
    assert logits.shape == (b, s, 1, *m.shape[-2:])
    if mask_cfg.variant == "fin10":
        head = model.aggregator.spatial_mask_head
        expected = (-m / head.temperature()).reshape(logits.shape)
        # the attention's key bias is soft_mask_bias * clamp(alpha * sigmoid(logit)) on patch keys
        key_bias = ref["mask_head_return"][0].reshape(b, s, -1)[:, :, model.cfg.patch_start_idx :]
        suppress = torch.sigmoid(logits).reshape(b, s, -1)
        assert torch.allclose(key_bias, -0.5 * torch.clamp(head.alpha() * suppress, 0, 1), atol=1e-12)
    else:
        pre = m + ref["mask_head_input"].mean(dim=1, keepdim=True)
        expected = (-pre).reshape(logits.shape)
        # key value m = sigmoid(pre) - 0.5 = 0.5 - sigmoid(mask_logits)
        keys = ref["mask_head_return"][1].reshape(b, s, -1)[:, :, model.cfg.patch_start_idx :]
        assert torch.allclose(keys, 0.5 - torch.sigmoid(logits).reshape(b, s, -1), atol=1e-12)
    assert rel_err(logits, expected) <= REL_TOL
