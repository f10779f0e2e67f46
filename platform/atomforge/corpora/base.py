"""The reader contract: a corpus is a list of independent work units, each streaming Structures.

A pipeline calls `reader.work_units()` once (cheap: lists files / HDF5 groups, never reads data),
ships each `WorkUnit` (plain JSON-able fields) to a worker, and there iterates `reader.read(unit)`.
A record that cannot become a valid `Structure` is yielded as a `BadRecord` with a reason naming
the file, the record and the field, and reading goes on with the next record, so the pipeline
can quarantine it and counts reconcile (read = written + quarantined). Every record the source
holds is yielded once, as a Structure or a BadRecord: where a group of records shares a broken
field (an HDF5 group without forces), each record of the group is a BadRecord, counted from the
format's index (dataset shapes, frame count lines, LMDB keys). Only a file that cannot be read
at all raises `CorpusError`; the pipeline then records one `uncounted` entry for it. Every
reason code is listed in docs/bad-data.md. Readers convert units once, here, to eV / Å / eV/Å / eV/Å³.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from atomforge.schema import Structure


class CorpusError(ValueError):
    """A source file that cannot be read at all; the message names the file and what is wrong."""


class RecordError(ValueError):
    """A record, or a group of records sharing one field, that cannot be read; reading goes on.

    Readers raise it internally and turn it into BadRecords (`reason`, e.g. "missing_field").
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


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
        """Stable identifier of the unit (used for resumption and shard naming).

        Options are part of it: Transition1x's train/val/test units share path and range and differ
        only in `options["split"]`.
        """
        options = json.dumps(self.options, sort_keys=True, default=str)
        return f"{self.corpus}:{self.path}:{self.start}:{self.stop}:{options}"


@dataclass(frozen=True)
class BadRecord:
    """A record sent to quarantine instead of the shards."""

    system_id: str
    source: str  # file (and record index) it came from
    reason: str  # short machine-countable reason, e.g. "nan_label", "validation" (docs/bad-data.md)
    detail: str  # human-readable message naming the file, the record and the field
    uncounted: bool = False  # stands for an unknown number of records (a file unreadable as a whole)


def bad_records(system_ids, sources, error: RecordError) -> Iterator[BadRecord]:
    """One BadRecord per record of a group that shares the broken field `error` names."""
    for system_id, source in zip(system_ids, sources):
        yield BadRecord(system_id, source, error.reason, f"{source}: {error.detail}")


class CorpusReader(Protocol):
    """What every corpus module provides."""

    name: str
    energy_convention: str  # "total" or "referenced"; recorded in manifests

    def work_units(self) -> list[WorkUnit]: ...

    def source_paths(self) -> list[str]: ...  # every file the output depends on (a rerun compares them)

    def read(self, unit: WorkUnit) -> Iterator[Structure | BadRecord]: ...


# ---------------------------------------------------------------- helpers shared by the readers
LABEL_FIELDS = ("energy", "total_energy", "forces", "stress")
MAX_KEPT_BAD = 100  # BadRecords kept on a reader for inspection; all of them are counted


def nan_label_field(fields: dict[str, Any]) -> str | None:
    """Name of the first label field (energy, forces, ...) holding NaN or inf, else None."""
    for name in LABEL_FIELDS:
        value = fields.get(name)
        if value is not None and not np.isfinite(np.asarray(value, dtype=np.float64)).all():
            return name
    return None


def build_record(source: str, system_id: str, **fields: Any) -> Structure | BadRecord:
    """A validated `Structure`, or a `BadRecord` naming `source` (file + record) and the field.

    Reason codes: "nan_label" (a label holds NaN/inf), "validation" (Structure rejected it).
    """
    bad_label = nan_label_field(fields)
    if bad_label is not None:
        detail = f"{source}: {system_id}: field '{bad_label}' contains NaN or inf"
        return BadRecord(system_id, source, "nan_label", detail)
    try:
        return Structure(system_id=system_id, **fields)
    except ValueError as err:
        return BadRecord(system_id, source, "validation", f"{source}: {err}")


class StreamingCorpus:
    """Mixin giving a reader `__iter__` over all work units, counting what it skips.

    Subclasses implement `work_units()` and `read(unit)`. After (or during) iteration,
    `counts` maps "structures" and each BadRecord reason to a count, and `bad_records`
    keeps the first `MAX_KEPT_BAD` BadRecords.
    """

    name: str = "unknown"
    energy_convention: str = "total"

    def __iter__(self) -> Iterator[Structure]:
        self.counts: Counter[str] = Counter()
        self.bad_records: list[BadRecord] = []
        for unit in self.work_units():
            for record in _one_by_one(self.read(unit)):
                if isinstance(record, BadRecord):
                    self.counts[record.reason] += 1
                    if len(self.bad_records) < MAX_KEPT_BAD:
                        self.bad_records.append(record)
                else:
                    self.counts["structures"] += 1
                    yield record

    @property
    def num_bad(self) -> int:
        """BadRecords met by the last iteration."""
        return sum(n for reason, n in getattr(self, "counts", Counter()).items() if reason != "structures")

    def work_units(self) -> list[WorkUnit]:
        raise NotImplementedError

    def source_paths(self) -> list[str]:
        """Every file whose bytes make the output (cheap: a listing); a rerun compares them to the manifest.

        Readers that join files (OC20's extxyz + txt) list both; the default is the units' files.
        """
        return list(dict.fromkeys(unit.path for unit in self.work_units()))

    def read(self, unit: WorkUnit) -> Iterator[Structure | BadRecord]:
        raise NotImplementedError


def _one_by_one(records: Iterator) -> Iterator[Structure | BadRecord]:
    """Records with every `StructureBatch` (the pipeline's columnar chunks) expanded into Structures.

    A batch's structures get the checks their constructor would make, with the same reasons as a
    reader's `build_record` ("nan_label", "validation").
    """
    from atomforge.structure_batch import StructureBatch, Verdicts, check_labels_and_fields

    for record in records:
        if not isinstance(record, StructureBatch):
            yield record
            continue
        verdicts = Verdicts(record)
        check_labels_and_fields(record, verdicts)
        for i in range(len(record)):
            sid, source = str(record.system_id[i]), str(record.source[i])
            if verdicts.reason[i] is not None:
                yield BadRecord(sid, source, verdicts.reason[i], verdicts.detail[i])
                continue
            try:
                yield record.structure(i)
            except ValueError as err:  # atoms too close: the rule that needs a neighbor search
                yield BadRecord(sid, source, "validation", f"{source}: {err}")
