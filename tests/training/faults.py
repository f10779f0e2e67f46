"""Fault injection as a trainer hook (a test fixture, not code in the training loop).

`FailOnce(step, rank, output)` makes rank `rank` fail when it reaches `step`, once per run directory
(a marker file under `output` says it happened, so the restarted run goes on): by raising, or by
SIGKILL of its own process (what a lost Ray worker looks like).
"""

from __future__ import annotations

import os
import signal

from atomforge.storage import filesystem
from atomforge.training.hooks import Hook


class FailOnce(Hook):
    name = "fail_once"

    def __init__(self, step: int, rank: int, output: str, mode: str = "raise"):
        if mode not in ("raise", "kill"):
            raise ValueError(f"mode must be 'raise' or 'kill', got {mode!r}")
        self.step, self.rank, self.output, self.mode = step, rank, output, mode

    def before_step(self, trainer) -> None:
        if trainer.step != self.step or trainer.rank != self.rank:
            return
        fs, root = filesystem(self.output)
        marker = f"{root}/fault_injected_at_{self.step}"
        if fs.exists(marker):
            return
        fs.makedirs(root, exist_ok=True)
        fs.pipe_file(marker, b"injected\n")
        print(f"fault injection: rank {trainer.rank} fails at step {trainer.step} ({self.mode})", flush=True)
        if self.mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError(f"injected failure at step {trainer.step} on rank {trainer.rank}")
