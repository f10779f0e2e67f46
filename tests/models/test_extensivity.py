"""Energy extensivity: two copies far apart have twice the energy of one (per-atom mean reference)."""

from __future__ import annotations

import numpy as np
import pytest
from atomforge.pipeline.label_stats import StatsAccumulator
from atomforge.schema import Structure
from atomforge.tasks import TaskSpec


def statistics(kit) -> dict:
    """A manifest statistics block from EMT-labelled molecules (nonzero residual mean, as real data has)."""
    acc = StatsAccumulator()
    for seed in range(3):
        atoms = kit.ethanol()
        atoms.rattle(0.1, seed=seed)
        acc.add(kit.labelled(atoms, f"e{seed}"))
    stats = acc.finalize()
    stats["energy_mean"] += 0.75  # a residual offset, so the mean term matters
    stats["energy_mean_per_atom"] = stats.get("energy_mean_per_atom", 0.0) + 0.75 / 9
    return stats


def energies(kit, kind, spec) -> tuple[float, float]:
    """(E of one ethanol, E of two ethanols 60 Å apart in one structure), float64 eV."""
    model = kit.make_model(kind, double=True, tasks=("oc20",))
    model.set_task_statistics({"oc20": spec})
    one = kit.labelled(kit.ethanol(), "one")
    pos = np.vstack([one.positions, one.positions + [60.0, 0.0, 0.0]])
    two = Structure("two", np.concatenate([one.atomic_numbers] * 2), pos, None, np.zeros(3, bool))
    e1 = float(model(kit.make_batch([one], double=True)).energy[0])
    e2 = float(model(kit.make_batch([two], double=True)).energy[0])
    return e1, e2


def test_two_far_copies_have_twice_the_energy(kit, backbone_kind):
    spec = TaskSpec("oc20", 5.0).with_statistics(statistics(kit))
    assert spec.energy_mean != 0.0
    e1, e2 = energies(kit, backbone_kind, spec)
    assert e2 == pytest.approx(2 * e1, rel=1e-12, abs=1e-9)


def test_per_structure_mean_is_not_extensive(kit):
    """JMP's per-structure mean (mean_reference='structure') adds μ once per structure."""
    stats = statistics(kit)
    spec = TaskSpec("oc20", 5.0, mean_reference="structure").with_statistics(stats)
    e1, e2 = energies(kit, "painn", spec)
    assert e2 - 2 * e1 == pytest.approx(-stats["energy_mean"], abs=1e-9)


def test_per_atom_mean_is_the_residual_per_atom():
    acc = StatsAccumulator()
    for n, energy in ((2, -3.0), (4, -5.0)):
        acc.add(Structure(f"h{n}", np.ones(n, int), np.arange(3 * n, dtype=float).reshape(n, 3) * 1.5, None,
                          np.zeros(3, bool), energy=energy))
    stats = acc.finalize()
    ref = stats["linear_reference"]["1"]
    residuals = np.array([-3.0 - 2 * ref, -5.0 - 4 * ref])
    assert stats["energy_mean_per_atom"] == pytest.approx(residuals.sum() / 6)
    assert stats["energy_mean"] == pytest.approx(residuals.mean())
    assert TaskSpec("h").with_statistics(stats).energy_mean == pytest.approx(residuals.sum() / 6)
