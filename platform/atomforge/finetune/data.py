"""Downstream data: read a set (rMD17 npz or anything ASE reads), split it, fit its statistics, batch it.

Structures are read once, split by a seeded permutation, and turned into graphs once (fine-tuning
never corrupts positions, so the graph of a structure never changes). Statistics (linear reference,
energy mean/std, force RMS) come from the train split only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Batch, Data

from atomforge.batch import structure_data
from atomforge.corpora import read_corpus
from atomforge.finetune.config import DataSpec, TargetSpec
from atomforge.schema import Structure
from atomforge.tasks import TaskSpec

SPLITS = ("train", "val", "test")


@dataclass
class DownstreamData:
    """Structures per split, the fitted TaskSpec and the count of records the reader skipped."""

    splits: dict[str, list[Structure]]
    spec: TaskSpec
    num_skipped: int = 0

    def sizes(self) -> dict[str, int]:
        return {name: len(items) for name, items in self.splits.items()}


def data_format(spec: DataSpec) -> str:
    """'rmd17' or 'ase' (from the suffix when spec.format is 'auto')."""
    if spec.format != "auto":
        return spec.format
    return "rmd17" if spec.path.rstrip("/").endswith(".npz") or "rmd17" in Path(spec.path).name else "ase"


def read_structures(spec: DataSpec, target: TargetSpec) -> tuple[list[Structure], int]:
    """All valid structures of the set, with the target in `energy` (and forces); (structures, skipped)."""
    if not spec.path:
        raise ValueError("data.path is empty: pass --data PATH")
    if target.kind == "property":
        return read_property(spec.path, target.key, target.pooling), 0
    reader = read_corpus(data_format(spec), spec.path)
    structures = []
    for record in reader:
        if record.energy is None or record.forces is None:
            raise ValueError(f"{spec.path}: structure {record.system_id} has no energy or forces label")
        structures.append(record)
    return structures, reader.num_bad


def read_property(path: str, key: str, pooling: str) -> list[Structure]:
    """Structures whose `energy` holds the property `key` (×N for mean pooling, so that E/N is the mean).

    ASE databases: `key` from each row's key_value_pairs (or data); other files: from `atoms.info`.
    """
    import ase.db
    import ase.io

    from atomforge.schema import from_ase

    if path.endswith(".db"):
        rows = [(f"{row.id}", row.toatoms(), {**row.key_value_pairs, **dict(row.data)}) for row in ase.db.connect(path).select()]
    else:
        rows = [(str(i), atoms, atoms.info) for i, atoms in enumerate(ase.io.iread(path, index=":"))]
    structures = []
    for ident, atoms, meta in rows:
        if key not in meta:
            raise ValueError(f"{path}: record {ident} has no property {key!r} (keys: {sorted(meta)})")
        value = float(meta[key]) * (len(atoms) if pooling == "mean" else 1)
        atoms.calc = None
        structures.append(from_ase(atoms, f"{Path(path).stem}/{ident}", energy=value, forces=None, stress=None))
    return structures


def split(structures: Sequence[Structure], spec: DataSpec) -> dict[str, list[Structure]]:
    """Seeded random split: num_train, num_val, then the rest (or num_test) as test."""
    needed = spec.num_train + spec.num_val + 1
    if len(structures) < needed:
        raise ValueError(f"{spec.path}: {len(structures)} structures, need at least {needed} "
                         f"(num_train {spec.num_train} + num_val {spec.num_val} + 1 test)")
    order = np.random.default_rng(spec.seed).permutation(len(structures))
    train, val = order[: spec.num_train], order[spec.num_train: spec.num_train + spec.num_val]
    test = order[spec.num_train + spec.num_val:]
    if spec.num_test is not None:
        test = test[: spec.num_test]
    return {name: [structures[i] for i in idx] for name, idx in zip(SPLITS, (train, val, test))}


def fit_statistics(train: Sequence[Structure], target: TargetSpec, cutoff: float) -> TaskSpec:
    """The downstream TaskSpec: least-squares linear reference on element counts, energy mean/std, force RMS.

    Mean-pooled properties get one shared per-atom reference (the train mean), so E/N = mean + s·mean(head).
    The residual mean is per atom (mean_reference "atom"), so predictions stay extensive.
    """
    elements = sorted({int(z) for s in train for z in s.atomic_numbers})
    counts = np.array([[np.sum(s.atomic_numbers == z) for z in elements] for s in train], dtype=np.float64)
    energy = np.array([s.energy for s in train], dtype=np.float64)
    if target.kind == "property" and target.pooling == "mean":
        mean = float(np.sum(energy) / counts.sum())
        reference = dict.fromkeys(elements, mean)
    else:
        coef = np.linalg.lstsq(counts, energy, rcond=None)[0]  # min-norm when all compositions are equal
        reference = {z: float(c) for z, c in zip(elements, coef)}
    residual = energy - counts @ np.array([reference[z] for z in elements])
    forces = [s.forces for s in train if s.forces is not None]
    force_rms = float(np.sqrt(np.mean(np.concatenate([f.reshape(-1) for f in forces]) ** 2))) if forces else 1.0
    labels = ("energy", "forces") if forces else ("energy",)
    return TaskSpec(
        target.task, cutoff=cutoff, max_neighbors=target.max_neighbors if target.max_neighbors else 30,
        linear_reference=reference, energy_mean=float(residual.sum() / counts.sum()), mean_reference="atom",
        labels=labels, dens_md_frames=target.dens_md_frames,
        energy_std=max(float(residual.std()), 1e-3), force_std=max(force_rms, 1e-3),
        energy_weight=target.energy_weight, force_weight=target.force_weight if target.kind == "energy_forces" else 0.0,
    )


def load_downstream(spec: DataSpec, target: TargetSpec, cutoff: float) -> DownstreamData:
    """Read, split and fit statistics on the train split."""
    structures, skipped = read_structures(spec, target)
    splits = split(structures, spec)
    return DownstreamData(splits, fit_statistics(splits["train"], target, cutoff), skipped)


def graphs(structures: Sequence[Structure], spec: TaskSpec, max_neighbors: int | None, task: int = 0) -> list[Data]:
    """One graph per structure at the task's cutoff and K (built once)."""
    return [structure_data(s, spec.cutoff, max_neighbors, task) for s in structures]


def batches(items: Sequence[Data], batch_size: int, shuffle: bool, generator: torch.Generator | None = None) -> Iterator[Batch]:
    """Batches of `batch_size` graphs (the last one may be smaller), in a seeded random order when shuffling."""
    device = None if generator is None else generator.device
    order = torch.randperm(len(items), generator=generator, device=device).tolist() if shuffle else list(range(len(items)))
    for start in range(0, len(order), batch_size):
        yield Batch.from_data_list([items[i] for i in order[start: start + batch_size]])
