"""Where a trainer's checkpoints go and where a restarted trainer finds them: the run directory itself.

A sink has two methods, called on every rank:
    save(name, write, metrics)   persist checkpoint `name`; `write(folder)` writes its files (rank 0
                                 passes it, other ranks None)
    latest_state()               the newest complete checkpoint's training state, or None
`RunDirectory` writes into the run directory (local or any fsspec URL) and keeps the newest
`num_to_keep`: the in-process path (tests, `scaling.num_workers=0`). The Ray Train layer has its own
sink (`training.ray_train.RayTrainSink`) that reports checkpoints to Ray Train, which persists them
in the same run directory. File layouts belong to `atomforge.artifacts.checkpoint`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from atomforge.artifacts import checkpoint as ckpt

Writer = Callable[[Path], None]


class RunDirectory:
    """Checkpoints as `<output>/checkpoint_XXXXXXXX/`, written by rank 0, the newest `num_to_keep` kept."""

    def __init__(self, output: str, num_to_keep: int):
        self.output, self.num_to_keep = output, num_to_keep

    def save(self, name: str, write: Writer | None, metrics: Mapping[str, float]) -> None:
        if write is None:
            return
        with tempfile.TemporaryDirectory() as tmp:
            write(Path(tmp))
            ckpt.upload(Path(tmp), self.output, name, self.num_to_keep)

    def latest_state(self) -> dict[str, Any] | None:
        return latest_state(self.output)


def latest_state(output: str) -> dict[str, Any] | None:
    """The training state of the newest complete checkpoint under `output`, or None.

    (The driver refuses an output holding checkpoints unless --resume, so these are this run's.)"""
    url = ckpt.latest_checkpoint(output)
    if url is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        return ckpt.read_state(ckpt.download(url, Path(tmp)))


def write_weights(output: str, name: str, write: Writer) -> None:
    """A checkpoint-layout folder `<output>/<name>` that is not part of the resumable sequence (e.g. `best`)."""
    with tempfile.TemporaryDirectory() as tmp:
        write(Path(tmp))
        ckpt.upload(Path(tmp), output, name, num_to_keep=0)
