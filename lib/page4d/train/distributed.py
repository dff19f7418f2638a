"""One process, or one process per device under `torchrun`: rank and world size, the device, DDP.

Under torchrun every process trains on its own share of the clips (`ClipOrder`) on `cuda:LOCAL_RANK`
(or the CPU, with gloo); DistributedDataParallel averages the gradients in backward, so every rank holds
the same weights and only rank 0 writes. The few collectives the loop needs besides DDP's (agree on
skipping a step, gather RNG states and weight digests) live here, each a no-op with one process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from page4d.devices import require_device


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def resolve_device(name: str) -> torch.device:
    """ "auto" = this process's GPU (LOCAL_RANK under torchrun, else cuda:0) when CUDA exists, else cpu;
    a bare "cuda" also means cuda:LOCAL_RANK. A device this process cannot use (`--device cuda` on a
    CPU-only build, a GPU index that is not there) is a ValueError of one line
    (`page4d.devices.require_device`), before anything is built."""
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    dev = require_device(name)
    if dev.type == "cuda" and dev.index is None:
        dev = require_device(torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))))
    return dev


def use_device(device: torch.device) -> None:
    """Make `device` this process's current GPU and restart its peak-memory count (summary.json)."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.cuda.reset_peak_memory_stats(device)


def wrap_for_ddp(model: nn.Module, device: torch.device, world: int) -> nn.Module:
    """The module that runs the forward: DDP around `model` with several processes, else `model`.
    `find_unused_parameters`: heads a loss leaves out (e.g. DPT heads without geometry) get no gradient."""
    if world == 1:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        model, device_ids=ids, output_device=ids[0] if ids else None, find_unused_parameters=True
    )


def barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def gather(obj: Any, world: int) -> list[Any]:
    """`obj` of every rank, in rank order (every rank must call it)."""
    if world == 1:
        return [obj]
    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


def every_rank(flag: bool, device: torch.device, world: int) -> bool:
    """True when `flag` is True on every rank: a step trains on all ranks or on none (DDP's backward is
    a collective)."""
    if world == 1:
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t)


@contextmanager
def process_group(device_name: str) -> Iterator[None]:
    """The process group of a `torchrun` launch (WORLD_SIZE > 1): nccl on GPUs, gloo on CPUs; nothing
    for one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        device = resolve_device(device_name)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield
    finally:
        if world > 1:
            dist.destroy_process_group()
