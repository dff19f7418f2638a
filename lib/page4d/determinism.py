"""Repeatable runs: seeds, deterministic kernels and a fixed CPU thread count.

Seeds + `torch.use_deterministic_algorithms(True)` + a fixed thread count gave identical losses and
byte-identical PNGs across CPU runs (shared docs, NOTEBOOKS.md). The trainer and the notebooks call this.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def set_determinism(seed: int, threads: int | None = None, deterministic: bool = True) -> None:
    """Seeds + deterministic kernels + a fixed thread count give identical runs on CPU."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)
    if torch.cuda.is_available():
        # cuBLAS needs a fixed workspace to be deterministic; a few CUDA kernels (e.g. upsampling
        # backward) have no deterministic version, so CUDA runs warn instead of failing.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=torch.cuda.is_available())
