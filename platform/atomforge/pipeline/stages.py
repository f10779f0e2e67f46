"""Pipeline stages, each a small callable over records: read -> validate -> split (graphing: columnar.py).

A record is a `Structure` or a `BadRecord`; every stage passes `BadRecord`s through untouched so
the executor can quarantine them with the stage's reason, and counts reconcile
(read = written + quarantined).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import numpy as np

from atomforge.corpora.base import BadRecord, CorpusError, WorkUnit
from atomforge.pipeline.config import SPLITS, PipelineConfig
from atomforge.schema import Structure

Record = Structure | BadRecord


def read_unit(reader, unit: WorkUnit) -> Iterator[Record]:
    """The records of one work unit; a file unreadable as a whole ends in one `unreadable_file` record.

    Readers isolate bad records themselves, so a CorpusError means the file (or its rest) cannot
    be read at all: the entry is marked `uncounted` (it stands for an unknown number of records)
    and the manifest says the read count is incomplete.
    """
    num_read = 0
    try:
        for record in reader.read(unit):
            num_read += 1
            yield record
    except CorpusError as error:
        after = f"; {num_read} records of the unit were read before it" if num_read else ""
        yield BadRecord(system_id=f"{unit.key}#unreadable", source=unit.path, reason="unreadable_file",
                        detail=f"{error}{after}", uncounted=True)


class Validator:
    """Checks a reader cannot make per record: duplicate ids in a unit, size and label ranges.

    The `Structure` constructor already rejects NaNs, shapes, bad Z, singular cells and atoms
    closer than `schema.MIN_DISTANCE`; readers report those as `BadRecord`s.
    """

    def __init__(self, config: PipelineConfig, source: str) -> None:
        self.config = config
        self.source = source
        self.seen: set[str] = set()

    def __call__(self, record: Record) -> Record:
        if isinstance(record, BadRecord):
            return record
        problem = self.problem(record)
        if problem is None:
            self.seen.add(record.system_id)
            return record
        reason, detail = problem
        return BadRecord(record.system_id, self.source, reason, f"{record.system_id}: {detail}")

    def problem(self, s: Structure) -> tuple[str, str] | None:
        """(reason, detail) for a record that must not be written, else None."""
        cfg = self.config
        if s.system_id in self.seen:
            return "duplicate", "system_id already seen earlier in this work unit"
        if s.num_atoms > cfg.max_atoms:
            return "too_many_atoms", f"{s.num_atoms} atoms > max_atoms={cfg.max_atoms}"
        if s.energy is not None and abs(s.energy) / s.num_atoms > cfg.max_abs_energy_per_atom:
            return "energy_out_of_range", f"field 'energy' {s.energy} eV exceeds {cfg.max_abs_energy_per_atom} eV/atom"
        if s.forces is not None and s.forces.size and np.abs(s.forces).max() > cfg.max_abs_force:
            return "force_out_of_range", f"field 'forces' exceeds {cfg.max_abs_force} eV/Å"
        return None


def split_of(structure: Structure, fractions: tuple[float, float, float], seed: int) -> str:
    """train/val/test: the corpus's official split when the reader gives one, else by hashed group id.

    The hash (sha256 of seed and group id) keeps whole groups together and is stable across runs,
    machines and Python versions.
    """
    official = structure.info.get("split") if structure.info else None
    if official is not None:
        official = {"valid": "val", "validation": "val"}.get(official, official)
        if official not in SPLITS:
            raise ValueError(f"{structure.system_id}: info['split'] is {official!r}, expected one of {SPLITS}")
        return official
    digest = hashlib.sha256(f"{seed}:{structure.group_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    train, val, _ = fractions
    return "train" if u < train else "val" if u < train + val else "test"
