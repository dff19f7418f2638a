"""Shared test helpers: where ../shared lives (read-only reference data; never copied into the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PAGE4D_SHARED", REPO_ROOT.parent / "shared"))
FIXTURES = Path(os.environ.get("PAGE4D_REFERENCE_FIXTURES", SHARED / "fixtures"))
MV_SCENE = SHARED / "data" / "mv_scene"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"reference fixtures not found at {FIXTURES} (set PAGE4D_REFERENCE_FIXTURES)")
    return FIXTURES


def assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """torch.testing.assert_close's default tolerances without its slow first-call import."""
    tol = 1e-7 if expected.dtype == torch.float64 else 1e-5
    assert actual.shape == expected.shape, (tuple(actual.shape), tuple(expected.shape))
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    assert torch.allclose(actual, expected, rtol=tol, atol=tol), (actual, expected)
