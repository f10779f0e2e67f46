"""Replication corpora: TIP3P water frames and EMT bulk frames carry their calculator's physics, deterministically."""

from __future__ import annotations

import numpy as np
import pytest
from atomforge.corpora.demo import bulk, water


def test_water_frames_are_rigid_tip3p_with_calculator_forces():
    from ase.calculators.tip3p import TIP3P, angleHOH, rOH

    frames = water.mc_frames(np.random.default_rng(3), num_molecules=4, num_frames=2, sweeps=1, equilibration=2)
    again = water.mc_frames(np.random.default_rng(3), num_molecules=4, num_frames=2, sweeps=1, equilibration=2)
    assert all(np.array_equal(a.positions, b.positions) for a, b in zip(frames, again))
    atoms = frames[-1]
    mol = atoms.positions.reshape(-1, 3, 3)
    oh = mol[:, 1:] - mol[:, :1]
    np.testing.assert_allclose(np.linalg.norm(oh, axis=-1), rOH, atol=1e-9)
    cos = np.sum(oh[:, 0] * oh[:, 1], axis=-1) / rOH**2
    np.testing.assert_allclose(np.degrees(np.arccos(cos)), angleHOH, atol=1e-6)
    probe = atoms.copy()
    probe.calc = TIP3P(rc=water.COULOMB_CUTOFF, width=1.0)
    np.testing.assert_allclose(atoms.get_forces(), probe.get_forces(), atol=1e-10)
    h = 1e-5  # the stored force is -dE/dx of the TIP3P energy (central difference on one coordinate)
    energies = []
    for sign in (1, -1):
        moved = probe.copy()
        moved.calc = probe.calc
        moved.positions[4, 2] += sign * h
        energies.append(moved.get_potential_energy())
    assert atoms.get_forces()[4, 2] == pytest.approx(-(energies[0] - energies[1]) / (2 * h), abs=1e-5)


@pytest.mark.slow
def test_bulk_relaxed_cell_has_no_pressure_and_positive_modulus():
    from ase.calculators.emt import EMT

    cell, modulus = bulk.relaxed(bulk.random_cell(np.random.default_rng(1)))
    frame = bulk.labelled(cell)
    pressure = -np.trace(frame.get_stress(voigt=False)) / 3
    assert abs(pressure) < 2e-3  # eV/Å³ (0.3 GPa): the volume is at the E(V) minimum
    probe = frame.copy()
    probe.calc = EMT()
    np.testing.assert_allclose(frame.get_stress(), probe.get_stress(), atol=1e-12)
    assert 50 < modulus < 400  # GPa, the range of the fcc metals EMT models


@pytest.mark.slow
def test_bulk_modulus_set_holds_only_unseen_compositions(tmp_path):
    import ase.io

    bulk.write_bulk(tmp_path, np.random.default_rng(0), num_cells=3, strained_per_cell=1, num_downstream=3)
    seen = {bulk.composition_key(a.get_chemical_symbols())
            for a in ase.io.read(tmp_path / "pretrain" / "relaxed" / "cells.extxyz", index=":")}
    downstream = ase.io.read(tmp_path / "bulk_modulus" / "cells.extxyz", index=":")
    assert len(downstream) == 3
    assert all(bulk.composition_key(a.get_chemical_symbols()) not in seen for a in downstream)
    assert all(a.info["bulk_modulus"] > 0 for a in downstream)
