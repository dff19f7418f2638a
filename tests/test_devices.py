"""page4d.devices.require_device: a device this process cannot use is refused in one line, before
anything is built (issue 22: `--device cuda` on a CPU build ended in torch's AttributeError)."""

from __future__ import annotations

import pytest
import torch
from page4d.devices import require_device


def test_cpu_is_always_usable():
    assert require_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
def test_cuda_without_cuda_is_refused_in_one_line(name, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError) as err:
        require_device(name)
    message = str(err.value)
    assert message.startswith(f"device '{name}' cannot be used: torch.cuda.is_available() is False")
    assert "use --device cpu" in message and "\n" not in message


def test_a_gpu_index_that_does_not_exist_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert require_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ValueError, match=r"only 1 CUDA device\(s\) are visible"):
        require_device("cuda:1")


@pytest.mark.parametrize("name", ["gpu", "", "cuda:x"])
def test_names_that_are_no_device_are_refused(name):
    with pytest.raises(ValueError, match="is not a device name: use cpu, cuda, cuda:N or mps"):
        require_device(name)
