"""The reader contract: a corpus is a list of independent work units, each streaming Structures.

A pipeline calls `reader.work_units()` once (cheap: lists files / HDF5 groups, never reads data),
ships each `WorkUnit` (plain JSON-able fields) to a worker, and there iterates `reader.read(unit)`.
A record that cannot become a valid `Structure` is yielded as a `BadRecord` with a reason naming
the file, the record and the field, so the pipeline can quarantine it and counts reconcile
(read = written + quarantined). A file that is unreadable as a whole raises `CorpusError`.
Readers convert units once, here, to eV / Å / eV/Å / eV/Å³.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from atomforge.schema import Structure


class CorpusError(ValueError):
    """A source file that cannot be read at all; the message names the file and what is wrong."""


@dataclass(frozen=True)
class WorkUnit:
    """One independently readable piece of a corpus: a file, or a range of HDF5 groups in one file."""

    corpus: str
    path: str  # local path or fsspec URL
    start: int = 0  # first record/group of the range
    stop: int | None = None  # one past the last; None = to the end
    options: dict[str, Any] = field(default_factory=dict)  # JSON-able reader options (must not hold secrets)

    @property
    def key(self) -> str:
        """Stable identifier of the unit (used for resumption and shard naming)."""
        return f"{self.corpus}:{self.path}:{self.start}:{self.stop}"


@dataclass(frozen=True)
class BadRecord:
    """A record sent to quarantine instead of the shards."""

    system_id: str
    source: str  # file (and record index) it came from
    reason: str  # short machine-countable reason, e.g. "nan_label", "validation"
    detail: str  # human-readable message naming the file, the record and the field


class CorpusReader(Protocol):
    """What every corpus module provides."""

    name: str
    energy_convention: str  # "total" or "referenced"; recorded in manifests

    def work_units(self) -> list[WorkUnit]: ...

    def read(self, unit: WorkUnit) -> Iterator[Structure | BadRecord]: ...
