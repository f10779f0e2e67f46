"""The columnar hot path: validate a `StructureBatch`, build its graphs with one search each, split it.

Same rules, reasons and messages as the per-structure path (`schema.validate`, the readers'
`nan_label` check, `stages.Validator`), applied as array operations over the whole batch; the
one Python loop left is the neighbor search, which vesin does per structure. The minimum-distance
rule (`schema.MIN_DISTANCE`, periodic images included) reads the closest pair of the graph
search (`graph.search_graph`), so no structure is searched twice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from atomforge.corpora.base import BadRecord
from atomforge.graph import search_graph
from atomforge.pipeline.config import PipelineConfig
from atomforge.schema import MIN_DISTANCE
from atomforge.structure_batch import (
    StructureBatch,
    Verdicts,
    check_labels_and_fields,
    concatenate,
    per_structure_any,
)

INT8_MAX = 127


@dataclass
class BatchEdges:
    """Stored graphs of a batch: edge_offsets (F + 1,); src, dst (E,) int32; shifts (E, 3) int8."""

    edge_offsets: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    shifts: np.ndarray


def check_ranges(batch: StructureBatch, config: PipelineConfig, seen: set[str], verdicts: Verdicts) -> None:
    """`stages.Validator`'s rules: duplicate ids in the unit, size and label ranges."""
    b = batch
    duplicate = np.zeros(len(b), dtype=bool)
    for i, sid in enumerate(b.system_id):
        duplicate[i] = sid in seen and verdicts.reason[i] is None
        if verdicts.reason[i] is None:
            seen.add(sid)
    verdicts.flag(duplicate, "duplicate", lambda i: "system_id already seen earlier in this work unit")
    n = b.num_atoms
    verdicts.flag(n > config.max_atoms, "too_many_atoms", lambda i: f"{n[i]} atoms > max_atoms={config.max_atoms}")
    with np.errstate(divide="ignore", invalid="ignore"):
        per_atom = np.abs(b.energy) / np.maximum(n, 1)
    verdicts.flag(b.has_energy & (per_atom > config.max_abs_energy_per_atom), "energy_out_of_range",
                  lambda i: f"field 'energy' {b.energy[i]} eV exceeds {config.max_abs_energy_per_atom} eV/atom")
    big_force = np.abs(np.where(np.isfinite(b.forces), b.forces, 0.0)).max(axis=1, initial=0.0) > config.max_abs_force
    verdicts.flag(b.has_forces & per_structure_any(big_force, b.atom_offsets), "force_out_of_range",
                  lambda i: f"field 'forces' exceeds {config.max_abs_force} eV/Å")


def build_graphs(batch: StructureBatch, config: PipelineConfig, verdicts: Verdicts) -> BatchEdges:
    """One search per structure still valid; flags too-close atoms ("validation") and int8 overflow ("graph_error")."""
    radius, offsets = config.cutoff + config.skin, batch.atom_offsets
    src, dst, shifts, counts = [], [], [], np.zeros(len(batch), dtype=np.int64)
    for i in np.flatnonzero(verdicts.ok):
        a, b = offsets[i], offsets[i + 1]
        cell = batch.cell[i] if batch.has_cell[i] else None
        found = search_graph(batch.positions[a:b], cell, batch.pbc[i], radius, config.k_store, "strict")
        close = found.closest
        if close is not None and close[2] < MIN_DISTANCE:
            verdicts.flag(_one(len(batch), i), "validation", lambda _, c=close: (
                f"field 'positions' has atoms {c[1]} and {c[0]} only {c[2]:.4f} Å apart (< {MIN_DISTANCE} Å)"))
            continue
        graph = found.graph
        if graph.shifts.size and np.abs(graph.shifts).max() > INT8_MAX:
            verdicts.flag(_one(len(batch), i), "graph_error", lambda _: (
                "field 'edge_shift' exceeds int8 (cell far smaller than cutoff)"))
            continue
        # Stored dtypes at once: a part's graphs wait here as 11 bytes per edge, not int64's 40
        src.append(graph.edge_index[0].astype(np.int32))
        dst.append(graph.edge_index[1].astype(np.int32))
        shifts.append(graph.shifts.astype(np.int8))
        counts[i] = graph.num_edges
    return BatchEdges(np.concatenate([[0], np.cumsum(counts)]), _join(src, 0, np.int32),
                      _join(dst, 0, np.int32), _join(shifts, (0, 3), np.int8))


def _join(parts: list, shape, dtype) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(shape, dtype)


def _one(size: int, index: int) -> np.ndarray:
    mask = np.zeros(size, dtype=bool)
    mask[index] = True
    return mask


def bad_records(verdicts: Verdicts) -> list[BadRecord]:
    """The flagged structures as quarantine records."""
    b = verdicts.batch
    return [BadRecord(str(b.system_id[i]), str(b.source[i]), reason, detail) for i, reason, detail in verdicts.problems()]


def take_edges(edges: BatchEdges, index: np.ndarray) -> BatchEdges:
    """The graphs of the structures at `index` (in that order); `edges` itself when that is every one."""
    if len(index) == len(edges.edge_offsets) - 1 and np.array_equal(index, np.arange(len(index))):
        return edges
    counts = np.diff(edges.edge_offsets)[index]
    starts = edges.edge_offsets[:-1][index]
    picked = np.repeat(starts - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts) + np.arange(counts.sum())
    return BatchEdges(np.concatenate([[0], np.cumsum(counts)]), edges.src[picked], edges.dst[picked],
                      edges.shifts[picked])


def split_labels(group_ids: np.ndarray, fractions: tuple[float, float, float], seed: int) -> np.ndarray:
    """(F,) train/val/test by hashed group id, exactly as `stages.split_of` assigns one structure."""
    train, val, _ = fractions
    out = np.empty(len(group_ids), dtype=object)
    cache: dict[str, str] = {}
    for i, group in enumerate(group_ids):
        split = cache.get(group)
        if split is None:
            u = int.from_bytes(hashlib.sha256(f"{seed}:{group}".encode()).digest()[:8], "big") / 2**64
            split = cache[group] = "train" if u < train else "val" if u < train + val else "test"
        out[i] = split
    return out


def admit(batch: StructureBatch, config: PipelineConfig, seen: set[str]
          ) -> tuple[StructureBatch, np.ndarray, list[BadRecord], np.ndarray]:
    """(the structures that pass the field and range rules, their splits (F',), quarantine records,
    their indices in `batch` (F',))."""
    verdicts = Verdicts(batch)
    check_labels_and_fields(batch, verdicts)
    check_ranges(batch, config, seen, verdicts)
    kept = np.flatnonzero(verdicts.ok)
    good = batch.take(kept)
    return good, split_labels(good.group_id, config.split_fractions, config.seed), bad_records(verdicts), kept


def graph_part(batch: StructureBatch, config: PipelineConfig, split: str):
    """(shard table, the structures written, quarantine records) of one part: graphs and the Arrow table."""
    from atomforge.pipeline.formats import batch_to_arrow

    verdicts = Verdicts(batch)
    edges = build_graphs(batch, config, verdicts)
    keep = np.flatnonzero(verdicts.ok)
    good = batch.take(keep)
    table = batch_to_arrow(good, take_edges(edges, keep), np.full(len(good), split, dtype=object))
    return table, good, bad_records(verdicts)


class SplitBuffer:
    """Structures waiting for one split's next part, in arrival order: Structures and batches alike."""

    def __init__(self) -> None:
        self.batches: list[StructureBatch] = []
        self.pending: list = []  # Structures, turned into one batch when a batch follows or at a flush
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add_structure(self, structure) -> None:
        self.pending.append(structure)
        self.size += 1

    def add_batch(self, batch: StructureBatch) -> None:
        if len(batch):
            self._settle()
            self.batches.append(batch)
            self.size += len(batch)

    def pop(self, count: int) -> StructureBatch:
        """The first `count` structures (or all) as one batch; the rest stay buffered."""
        self._settle()
        whole = concatenate(self.batches)
        count = min(count, len(whole))
        head, tail = whole.take(np.arange(count)), whole.take(np.arange(count, len(whole)))
        self.batches = [tail] if len(tail) else []
        self.size = len(tail)
        return head

    def _settle(self) -> None:
        if self.pending:
            self.batches.append(StructureBatch.from_structures(self.pending))
            self.pending = []
