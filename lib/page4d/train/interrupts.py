"""Stopping a run cleanly: Ctrl-C, SIGTERM and a dead torchrun launcher all end with a checkpoint.

The loop catches `KeyboardInterrupt`, saves a checkpoint at the step it reached (`--resume` continues
from it, whatever `--save-every` says) and re-raises. Two other ways a run is stopped end the same way:

- SIGTERM, what schedulers and `timeout` send (by default it kills the process with nothing saved).
  `StopRequests` installs a handler for the duration of a run that only notes the request; the loop
  stops at the next step boundary, so the checkpoint holds exactly the steps the history lists.
- The torchrun launcher died. Killed with SIGKILL it cannot tell its workers, which would train on and
  write checkpoints with nobody waiting for them. Each worker (LOCAL_RANK set) remembers its parent's
  pid at the start; once the parent is gone the worker has been re-parented, and it stops.

Under DDP the ranks agree on stopping at every step (one all-reduce of two flags), so they stop at the
same step and save together (saving gathers every rank's RNG state).
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import torch
import torch.distributed as dist

SIGTERM_EXIT = 128 + signal.SIGTERM  # the exit status of a process stopped by SIGTERM, by convention
LAUNCHER_GONE_EXIT = 1


class Stopped(KeyboardInterrupt):
    """A run stopped by SIGTERM or by its launcher's death (Ctrl-C is a plain KeyboardInterrupt):
    `reason` for the message, `exit_code` for the command line."""

    def __init__(self, reason: str, exit_code: int) -> None:
        super().__init__(reason)
        self.reason, self.exit_code = reason, exit_code


def launcher_pid() -> int | None:
    """The pid of the torchrun launcher that started this worker (its parent); None outside torchrun."""
    return os.getppid() if "LOCAL_RANK" in os.environ else None


class StopRequests:
    """What may stop a run between two steps: SIGTERM (noted by the handler `install` puts in place)
    and, under torchrun, the launcher's death. `check` is called by every rank at every step."""

    def __init__(self, launcher: int | None = None) -> None:
        self.launcher = launcher
        self.sigterm = False
        self._old: Any = None
        self._installed = False

    def install(self) -> None:
        """Note SIGTERM instead of dying of it (main thread only: Python allows handlers nowhere else)."""
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGTERM, self._note)
            self._installed = True

    def restore(self) -> None:
        """Put back the handler SIGTERM had before `install`."""
        if self._installed:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if self._old is None else self._old)
            self._installed = False

    def _note(self, signum: int, frame: Any) -> None:
        self.sigterm = True

    def launcher_gone(self) -> bool:
        return self.launcher is not None and os.getppid() != self.launcher

    def check(self, device: torch.device, world: int) -> None:
        """Raise `Stopped` when this rank or any other was asked to stop (every rank must call it)."""
        flags = [self.sigterm, self.launcher_gone()]
        if world > 1:
            t = torch.tensor([int(f) for f in flags], device=device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            flags = [bool(x) for x in t.tolist()]
        if flags[0]:
            raise Stopped("stopped by SIGTERM", SIGTERM_EXIT)
        if flags[1]:
            raise Stopped(f"stopped: its torchrun launcher (pid {self.launcher}) died", LAUNCHER_GONE_EXIT)
