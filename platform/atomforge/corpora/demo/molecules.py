"""Demo ANI-1x, Transition1x and rMD17 corpora labelled by GFN2-xTB (tblite), in the real raw layouts.

Differences from the real corpora, also written into every file's HDF5 attributes and the README:
- level of theory: GFN2-xTB (tblite), not ωB97x/6-31G(d) DFT; stored under the real key names;
- ANI-1x conformers: Gaussian displacements (σ in Å) of xTB-relaxed G2 molecules, not normal-mode
  / active-learning sampling; `wb97x_tz.*` and `ccsd(t)_cbs.energy` are all NaN (not computed),
  and a few `wb97x_dz` conformers are deliberately NaN (listed in the `demo_nan_conformers` attr)
  so that readers' skip-counting is exercised;
- Transition1x paths: rigid torsions / inversions between xTB-relaxed endpoints, not converged NEB;
- rMD17: a short xTB Langevin trajectory; `old_*` arrays repeat the new labels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from atomforge.corpora.ani1x import HARTREE_TO_EV, formula_of
from atomforge.corpora.rmd17 import KCAL_PER_MOL_TO_EV

LEVEL_OF_THEORY = "GFN2-xTB (tblite), not DFT: demo data, stored under the real corpus' key names"
# The first twelve are the demo's; the rest (aromatics, carbonyls, amines, amides) widen the
# replication corpus towards the chemistry of the rMD17 molecules, as ANI-1x covers it.
ANI_MOLECULES = ("CH4", "H2O", "NH3", "CH3OH", "H2CO", "HCOOH", "C2H4", "CH3CHO", "H3CNH2", "HCN",
                 "C2H6", "CH3CH2OH", "C6H6", "C5H5N", "C4H4O", "C4H4NH", "CH3COCH3", "CH3CONH2", "CH3OCH3",
                 "C3H8", "CH3CH2NH2", "butadiene", "HCOOCH3", "CH3COOH", "CH3NO2", "CH2OCH2", "CH3CN", "N2H4")
# rMD17 molecule name -> ASE g2 name (rMD17 molecules that ASE's g2 collection holds)
RMD17_MOLECULES = {"ethanol": "CH3CH2OH", "benzene": "C6H6"}
# (g2 molecule, kind): torsion = 180° rotation of the atoms on atom 1's side of bond (0, 1);
# inversion = hydrogens mirrored through the heavy atom (NH3 umbrella)
REACTIONS = (("C2H4", "torsion"), ("NH3", "inversion"), ("H2O2", "torsion"), ("CH3OH", "torsion"),
             ("N2H4", "torsion"), ("H3CNH2", "torsion"))


def xtb(atoms):
    """Attach a GFN2-xTB calculator (tblite) and return the atoms."""
    from tblite.ase import TBLite

    atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
    return atoms


def relaxed(name: str, sort: bool = True, max_steps: int = 50):
    """An xTB-relaxed G2 molecule (sorted by element symbol, as in ANI-1x groups, when `sort`)."""
    from ase.build import molecule
    from ase.optimize import BFGS

    atoms = molecule(name)
    atoms = xtb(atoms[np.argsort(atoms.get_chemical_symbols(), kind="stable")] if sort else atoms)
    BFGS(atoms, logfile=None).run(fmax=0.02, steps=max_steps)
    return atoms


def labels(atoms) -> tuple[float, np.ndarray]:
    """(energy eV, forces (N, 3) eV/Å) from the attached calculator."""
    return float(atoms.get_potential_energy()), atoms.get_forces()


def write_ani1x(path: Path, rng: np.random.Generator, num_molecules: int, num_conformers: int,
                sigma: float = 0.06) -> int:
    """ANI-1x layout: one group per formula (isomers share it, as in the release); Hartree, Hartree/Å, Å.

    Returns conformers written.
    """
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    nan_conformers: list[str] = []
    groups: dict[str, tuple[np.ndarray, list, list, list]] = {}
    for index, name in enumerate(ANI_MOLECULES[:num_molecules]):
        base = relaxed(name)
        formula = formula_of(base.numbers)
        _, coords, energies, forces = groups.setdefault(formula, (base.numbers, [], [], []))
        for _ in range(num_conformers):
            atoms = xtb(base.copy())
            atoms.positions += rng.normal(0.0, sigma, atoms.positions.shape)
            energy, force = labels(atoms)
            coords.append(atoms.positions)
            energies.append(energy / HARTREE_TO_EV)
            forces.append(force / HARTREE_TO_EV)
        if index % 2 == 1 and num_conformers > 2:  # exercise NaN skip-counting in readers
            energies[-1], forces[-1] = np.nan, np.full_like(forces[-1], np.nan)
            nan_conformers.append(f"{formula}/{len(energies) - 1}")
    with h5py.File(path, "w") as out:
        out.attrs.update(level_of_theory=LEVEL_OF_THEORY, energy_unit="Hartree", forces_unit="Hartree/Angstrom",
                         hartree_to_ev=HARTREE_TO_EV, sampling=f"Gaussian displacements sigma={sigma} A")
        for formula, (numbers, coords, energies, forces) in groups.items():
            _write_ani_group(out.create_group(formula), numbers, np.array(coords), np.array(energies), np.array(forces))
        out.attrs["demo_nan_conformers"] = ",".join(nan_conformers)
    return num_molecules * num_conformers


def _write_ani_group(group, numbers, coords, energies, forces) -> None:
    num_conf, num_atoms = coords.shape[:2]
    group["atomic_numbers"] = numbers.astype(np.uint8)
    group["coordinates"] = coords.astype(np.float32)
    group["wb97x_dz.energy"] = energies.astype(np.float64)
    group["wb97x_dz.forces"] = forces.astype(np.float32)
    group["wb97x_tz.energy"] = np.full(num_conf, np.nan)
    group["wb97x_tz.forces"] = np.full((num_conf, num_atoms, 3), np.nan, dtype=np.float32)
    group["ccsd(t)_cbs.energy"] = np.full(num_conf, np.nan)
    group.attrs["level_of_theory"] = LEVEL_OF_THEORY


def reaction_path(name: str, kind: str, num_images: int) -> list:
    """Images (xTB attached) from the relaxed reactant through a 180° torsion or an inversion."""
    reactant = relaxed(name, sort=False)
    images = []
    for t in np.linspace(0.0, 1.0, num_images):
        atoms = xtb(reactant.copy())
        atoms.positions = (_torsion if kind == "torsion" else _inversion)(reactant.positions, reactant.numbers, t)
        images.append(atoms)
    return images


def _torsion(pos: np.ndarray, numbers: np.ndarray, t: float) -> np.ndarray:
    """Rotate atoms nearer to atom 1 than atom 0 by 180°·t about the 0->1 bond (Rodrigues)."""
    axis = (pos[1] - pos[0]) / np.linalg.norm(pos[1] - pos[0])
    side = [i for i in range(2, len(pos)) if np.linalg.norm(pos[i] - pos[1]) < np.linalg.norm(pos[i] - pos[0])]
    angle = np.pi * t
    rel = pos[side] - pos[1]
    rotated = (rel * np.cos(angle) + np.cross(axis, rel) * np.sin(angle)
               + np.outer(rel @ axis, axis) * (1.0 - np.cos(angle)))
    out = pos.copy()
    out[side] = pos[1] + rotated
    return out


def _inversion(pos: np.ndarray, numbers: np.ndarray, t: float) -> np.ndarray:
    """Move hydrogens through the plane of the heavy atom: t = 0.5 planar, t = 1 mirrored."""
    hydrogens = numbers == 1
    center = pos[~hydrogens].mean(axis=0)
    h = pos[hydrogens]
    normal = np.cross(h[1] - h[0], h[2] - h[0])
    normal /= np.linalg.norm(normal)
    height = (h - center) @ normal
    out = pos.copy()
    out[hydrogens] = h - 2.0 * t * height[:, None] * normal
    return out


def write_transition1x(path: Path, num_reactions: int, num_images: int) -> int:
    """Transition1x layout `/{train,val,test,data}/{formula}/{rxn}/` in eV, eV/Å. Returns path frames."""
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    splits = ["val", "test"] + ["train"] * max(0, num_reactions - 2)
    with h5py.File(path, "w") as out:
        out.attrs.update(level_of_theory=LEVEL_OF_THEORY, energy_unit="eV", forces_unit="eV/Angstrom",
                         path_method="rigid torsion / inversion between xTB-relaxed endpoints, not NEB")
        for index, (name, kind) in enumerate(REACTIONS[:num_reactions]):
            images = reaction_path(name, kind, num_images)
            formula = images[0].get_chemical_formula(mode="hill")
            key = f"{formula}/rxn{index + 1:04d}"
            group = out.create_group(f"{splits[index]}/{key}")
            _write_t1x_frames(group, images)
            highest = int(np.argmax([a.get_potential_energy() for a in images]))
            for role, image in (("reactant", images[0]), ("product", images[-1]),
                                ("transition_state", images[highest])):
                _write_t1x_frames(group.create_group(role), [image])
            out[f"data/{key}"] = group  # hard link: `data` repeats the split groups, as in the release
    return num_reactions * num_images


def _write_t1x_frames(group, images: list) -> None:
    energies, forces = zip(*(labels(a) for a in images))
    group["atomic_numbers"] = images[0].numbers.astype(np.uint8)
    group["positions"] = np.array([a.positions for a in images], dtype=np.float32)
    group["wB97x_6-31G(d).energy"] = np.array(energies, dtype=np.float64)
    group["wB97x_6-31G(d).forces"] = np.array(forces, dtype=np.float32)


def write_rmd17(path: Path, seed: int, num_frames: int, stride: int, molecule_name: str = "CH3CH2OH") -> int:
    """rMD17 `.npz`: xTB Langevin MD (500 K, 0.5 fs) of one molecule, kcal/mol and kcal/mol/Å."""
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    path.parent.mkdir(parents=True, exist_ok=True)
    atoms = relaxed(molecule_name, sort=False)
    rng = np.random.RandomState(seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=500, rng=rng)
    dynamics = Langevin(atoms, 0.5 * units.fs, temperature_K=500, friction=0.02 / units.fs,
                        fixcm=False, rng=rng)
    coords, energies, forces = [], [], []
    for _ in range(num_frames):
        dynamics.run(stride)
        energy, force = labels(atoms)
        coords.append(atoms.positions.copy())
        energies.append(energy / KCAL_PER_MOL_TO_EV)
        forces.append(force / KCAL_PER_MOL_TO_EV)
    energies, forces = np.array(energies), np.array(forces)
    np.savez(path, nuclear_charges=atoms.numbers.astype(np.int64), coords=np.array(coords),
             energies=energies, forces=forces, old_indices=np.arange(num_frames) * stride,
             old_energies=energies.copy(), old_forces=forces.copy())
    return num_frames
