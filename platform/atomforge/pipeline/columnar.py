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
from atomforge.schema import FRAME_KINDS, MAX_ATOMIC_NUMBER, MIN_DISTANCE
from atomforge.structure_batch import StructureBatch, per_structure_any

INT8_MAX = 127


@dataclass
class BatchEdges:
    """Stored graphs of a batch: edge_offsets (F + 1,); src, dst (E,) int32; shifts (E, 3) int8."""

    edge_offsets: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    shifts: np.ndarray


class Verdicts:
    """The first problem found per structure: reason and message (None = none yet)."""

    def __init__(self, batch: StructureBatch) -> None:
        self.batch = batch
        self.reason: list[str | None] = [None] * len(batch)
        self.detail: list[str | None] = [None] * len(batch)

    def flag(self, mask: np.ndarray, reason: str, why) -> None:
        """Give `reason` to the structures in (F,) `mask` that have none; `why(i)` is the message tail."""
        for i in np.flatnonzero(mask):
            if self.reason[i] is None:
                sid, source = self.batch.system_id[i], self.batch.source[i]
                self.reason[i], self.detail[i] = reason, f"{source}: {sid}: {why(i)}"

    @property
    def ok(self) -> np.ndarray:
        return np.array([r is None for r in self.reason], dtype=bool)

    def bad_records(self) -> list[BadRecord]:
        b = self.batch
        return [BadRecord(str(b.system_id[i]), str(b.source[i]), self.reason[i], self.detail[i])
                for i in range(len(b)) if self.reason[i] is not None]


def _any_per_frame(batch: StructureBatch, per_atom: np.ndarray) -> np.ndarray:
    return per_structure_any(per_atom, batch.atom_offsets)


def check_labels_and_fields(batch: StructureBatch, verdicts: Verdicts) -> None:
    """NaN labels ("nan_label"), then `schema.validate`'s field rules ("validation"), in its order."""
    b = batch
    nan = {"energy": b.has_energy & ~np.isfinite(b.energy),
           "total_energy": b.has_total_energy & ~np.isfinite(b.total_energy),
           "forces": b.has_forces & _any_per_frame(b, ~np.isfinite(b.forces).all(axis=1)),
           "stress": b.has_stress & ~np.isfinite(b.stress).reshape(len(b), -1).all(axis=1)}
    for name, mask in nan.items():
        verdicts.flag(mask, "nan_label", lambda i, name=name: f"field '{name}' contains NaN or inf")
    n = b.num_atoms
    verdicts.flag(np.array([not s for s in b.system_id], dtype=bool), "validation",
                  lambda i: "field 'system_id' must be a non-empty string")
    verdicts.flag(n == 0, "validation", lambda i: "field 'atomic_numbers' is empty")
    verdicts.flag(_any_per_frame(b, ~np.isfinite(b.positions).all(axis=1)), "validation",
                  lambda i: "field 'positions' contains NaN or inf")
    bad_z = (b.atomic_numbers < 1) | (b.atomic_numbers > MAX_ATOMIC_NUMBER)

    def z_values(i):
        z = b.atomic_numbers[b.atom_offsets[i]:b.atom_offsets[i + 1]]
        return f"field 'atomic_numbers' has values outside 1..118: {sorted(set(z[(z < 1) | (z > 118)].tolist()))}"

    verdicts.flag(_any_per_frame(b, bad_z), "validation", z_values)
    verdicts.flag(np.array([k not in FRAME_KINDS for k in b.frame_kind], dtype=bool), "validation",
                  lambda i: f"field 'frame_kind' is {b.frame_kind[i]!r}, expected one of {FRAME_KINDS}")
    periodic = b.pbc.any(axis=1)
    verdicts.flag(periodic & ~b.has_cell, "validation", lambda i: "field 'cell' is missing but pbc is set")
    cell_finite = np.isfinite(b.cell).reshape(len(b), -1).all(axis=1)
    verdicts.flag(b.has_cell & ~cell_finite, "validation", lambda i: "field 'cell' contains NaN or inf")
    verdicts.flag(periodic & b.has_cell & cell_finite & ~_periodic_rows_span(b), "validation",
                  lambda i: "field 'cell' is singular along periodic directions")


def _periodic_rows_span(b: StructureBatch) -> np.ndarray:
    """(F,) bool: the periodic cell vectors are linearly independent (rank test of `schema.validate`)."""
    ok = np.ones(len(b), dtype=bool)
    cells = np.where(np.isfinite(b.cell), b.cell, 0.0)
    full = b.pbc.all(axis=1)
    if full.any():  # one batched SVD for the common all-periodic case, the tolerance of matrix_rank
        ok[full] = np.linalg.svd(cells[full], compute_uv=False).min(axis=1) > 1e-6
    for i in np.flatnonzero(b.pbc.any(axis=1) & ~full):
        rows = cells[i][b.pbc[i]]
        ok[i] = np.linalg.matrix_rank(rows, tol=1e-6) == len(rows)
    return ok


def check_ranges(batch: StructureBatch, config: PipelineConfig, seen: set[str], verdicts: Verdicts) -> None:
    """`stages.Validator`'s rules: duplicate ids in the unit, size and label ranges."""
    b = batch
    duplicate = np.zeros(len(b), dtype=bool)
    for i, sid in enumerate(b.system_id):
        duplicate[i] = sid in seen and verdicts.reason[i] is None
        if verdicts.reason[i] is None:
            seen.add(sid)
    verdicts.flag(duplicate, "duplicate_id", lambda i: "system_id already seen in this work unit")
    n = b.num_atoms
    verdicts.flag(n > config.max_atoms, "too_many_atoms", lambda i: f"{n[i]} atoms > max_atoms={config.max_atoms}")
    with np.errstate(divide="ignore", invalid="ignore"):
        per_atom = np.abs(b.energy) / np.maximum(n, 1)
    verdicts.flag(b.has_energy & (per_atom > config.max_abs_energy_per_atom), "energy_out_of_range",
                  lambda i: f"field 'energy' {b.energy[i]} eV exceeds {config.max_abs_energy_per_atom} eV/atom")
    big_force = np.abs(np.where(np.isfinite(b.forces), b.forces, 0.0)).max(axis=1, initial=0.0) > config.max_abs_force
    verdicts.flag(b.has_forces & _any_per_frame(b, big_force), "force_out_of_range",
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
        src.append(graph.edge_index[0])
        dst.append(graph.edge_index[1])
        shifts.append(graph.shifts)
        counts[i] = graph.num_edges
    return BatchEdges(np.concatenate([[0], np.cumsum(counts)]), _join(src, 0).astype(np.int32),
                      _join(dst, 0).astype(np.int32), _join(shifts, (0, 3)).astype(np.int8))


def _join(parts: list, shape) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(shape, np.int64)


def _one(size: int, index: int) -> np.ndarray:
    mask = np.zeros(size, dtype=bool)
    mask[index] = True
    return mask


def take_edges(edges: BatchEdges, index: np.ndarray) -> BatchEdges:
    """The graphs of the structures at `index` (in that order)."""
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
