"""Demo periodic bulk alloys labelled by ASE EMT (energy, forces, stress) and an EMT bulk-modulus set (seed 002).

Seed 002 pretrains on Materials Project relaxation frames (energy, forces, stress) and fine-tunes on
materials properties such as bulk moduli (MatBench KVRH). The miniature, all EMT (ASE's effective
medium theory for Al, Ni, Cu, Pd, Ag, Pt, Au):

- pretraining corpus: random fcc alloy cells (8 atoms, 2x1x1 conventional cubic cells, 1-3
  elements). Each cell is relaxed (volume to the E(V) minimum, then positions): that frame is
  `relaxed/`; the nonequilibrium frames (`strained/`) are the same cell under a random symmetric
  strain (|ε_ij| <= 4%) with positions rattled by N(0, 0.05²) Å, as relaxation trajectories visit;
- downstream set: other compositions (none seen in pretraining), relaxed, with the bulk modulus
  B (GPa) of a Birch-Murnaghan fit to E(V) over ±4% volume (uniform scaling of the ideal-site
  cell) around the relaxed volume, in `info["bulk_modulus"]`.
  An intensive property of the relaxed structure, as in MatBench, and a second derivative of the
  energy: what a representation that learned energies, forces and stresses should carry.

Layout: `<out>/pretrain/relaxed/cells.extxyz`, `<out>/pretrain/strained/cells.extxyz` (energy eV,
forces eV/Å, stress eV/Å³; `info["cell_id"]` groups a cell with its strained copies),
`<out>/bulk_modulus/cells.extxyz` (plus energy).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

LEVEL_OF_THEORY = "ASE EMT (effective medium theory), not DFT: demo data"
METALS = ("Al", "Ni", "Cu", "Pd", "Ag", "Pt", "Au")
NUM_SITES = 8
MAX_STRAIN = 0.04
RATTLE = 0.05  # Å
EOS_VOLUMES = np.linspace(0.96, 1.04, 7)  # relative volumes of the E(V) fit


def composition_key(symbols) -> tuple[tuple[str, int], ...]:
    """A hashable composition: ((element, count), ...) sorted by element."""
    names, counts = np.unique(np.asarray(symbols), return_counts=True)
    return tuple((str(n), int(c)) for n, c in zip(names, counts))


def random_cell(rng: np.random.Generator):
    """An 8-atom fcc cell (2x1x1 conventional) of 1-3 random metals on random sites, Vegard lattice constant."""
    from ase.build import bulk
    from ase.data import atomic_numbers, reference_states

    elements = rng.choice(METALS, size=int(rng.integers(1, 4)), replace=False)
    symbols = rng.choice(elements, size=NUM_SITES)
    a = float(np.mean([reference_states[atomic_numbers[s]]["a"] for s in symbols]))
    atoms = bulk("Cu", "fcc", a=a, cubic=True).repeat((2, 1, 1))
    atoms.set_chemical_symbols(list(symbols))
    return atoms


def relaxed(atoms, fmax: float = 0.05, steps: int = 30):
    """(atoms, B GPa): volume relaxed (uniform scaling to the E(V) minimum), then positions (BFGS, fixed
    cell), EMT attached; B from the second E(V) fit, centred on the relaxed volume.

    Uniform scaling, not a full cell relaxation: ASE's cell filters cost ~50-150 ms a step here, and
    these cubic-derived cells keep near-zero shear stress; the residual stress is in the labels.
    """
    from ase.calculators.emt import EMT
    from ase.optimize import BFGS

    atoms = atoms.copy()
    for attempt in range(2):  # the second fit is centred on the first one's minimum (Vegard's guess can be 5% off)
        with warnings.catch_warnings():
            if attempt == 0:  # ASE warns when the minimum lies outside the sampled volumes: expected here
                warnings.simplefilter("ignore", UserWarning)
            volume, modulus = equation_of_state(atoms)
        atoms.set_cell(atoms.cell.array * (volume / atoms.get_volume()) ** (1 / 3), scale_atoms=True)
    atoms.calc = EMT()
    BFGS(atoms, logfile=None).run(fmax=fmax, steps=steps)
    return atoms, modulus


def labelled(atoms):
    """A copy carrying EMT energy (eV), forces (eV/Å) and stress (Voigt, eV/Å³) as a SinglePointCalculator."""
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    frame = atoms.copy()
    frame.calc = EMT()
    results = {"energy": frame.get_potential_energy(), "forces": frame.get_forces(), "stress": frame.get_stress()}
    frame.calc = SinglePointCalculator(frame, **results)
    return frame


def strained(rng: np.random.Generator, atoms):
    """The cell under a random symmetric strain (|ε_ij| <= MAX_STRAIN), positions rattled by RATTLE Å."""
    eps = rng.uniform(-MAX_STRAIN, MAX_STRAIN, (3, 3))
    eps = (eps + eps.T) / 2
    frame = atoms.copy()
    frame.set_cell(frame.cell.array @ (np.eye(3) + eps), scale_atoms=True)
    frame.positions += rng.normal(0.0, RATTLE, frame.positions.shape)
    return frame


def equation_of_state(atoms) -> tuple[float, float]:
    """(V0 Å³, B GPa): Birch-Murnaghan fit of EMT E(V) over EOS_VOLUMES (uniform scaling, clamped ions)."""
    from ase import units
    from ase.calculators.emt import EMT
    from ase.eos import EquationOfState

    volumes, energies = [], []
    for factor in EOS_VOLUMES:
        scaled = atoms.copy()
        scaled.set_cell(atoms.cell.array * factor ** (1 / 3), scale_atoms=True)
        scaled.calc = EMT()
        volumes.append(scaled.get_volume())
        energies.append(scaled.get_potential_energy())
    volume, _, modulus = EquationOfState(volumes, energies, eos="birchmurnaghan").fit()
    return float(volume), float(modulus / units.GPa)


def write_bulk(out: Path, rng: np.random.Generator, num_cells: int, strained_per_cell: int,
               num_downstream: int) -> dict[str, int]:
    """Pretraining frames (relaxed + strained) and the bulk-modulus set; returns frames written per part."""
    import ase.io

    seen, relaxed_frames, strained_frames = set(), [], []
    for index in range(num_cells):
        cell, _ = relaxed(random_cell(rng))
        seen.add(composition_key(cell.get_chemical_symbols()))
        frames = [labelled(cell)] + [labelled(strained(rng, cell)) for _ in range(strained_per_cell)]
        for frame in frames:
            frame.info["cell_id"] = f"cell{index}"  # the split group: a cell and its strained copies
        relaxed_frames.append(frames[0])
        strained_frames += frames[1:]
    downstream = []
    while len(downstream) < num_downstream:
        cell = random_cell(rng)
        if composition_key(cell.get_chemical_symbols()) in seen:
            continue  # held-out compositions only
        seen.add(composition_key(cell.get_chemical_symbols()))
        cell, modulus = relaxed(cell)
        frame = labelled(cell)
        frame.info["bulk_modulus"] = modulus
        downstream.append(frame)
    for name, frames in (("pretrain/relaxed", relaxed_frames), ("pretrain/strained", strained_frames),
                         ("bulk_modulus", downstream)):
        (out / name).mkdir(parents=True, exist_ok=True)
        ase.io.write(out / name / "cells.extxyz", frames, format="extxyz")
    (out / "LEVEL_OF_THEORY").write_text(LEVEL_OF_THEORY + "\n")
    return {"bulk_relaxed": len(relaxed_frames), "bulk_strained": len(strained_frames),
            "bulk_modulus": len(downstream)}
