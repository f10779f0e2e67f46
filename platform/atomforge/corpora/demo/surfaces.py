"""Demo OC20 / OC22 corpora: ASE EMT relaxations of small adsorbates on EMT-metal slabs.

Written in the real raw layouts (OC20 S2EF extxyz + txt pairs; OC22 trajectories and an
`.aselmdb`), but labelled by EMT, not RPBE/PBE DFT, on pure fcc metals, not oxides.
OC20 tags: 0 sub-surface, 1 surface, 2 adsorbate; the bottom layers are fixed (FixAtoms ->
move_mask False) and their forces are zero, as in OC20. Reference energy = relaxed clean-slab
energy + Σ gas-phase atomic references (H from H2, O from H2O - H2, C from CO - O, N from N2),
all EMT, so `energy - reference` is an EMT adsorption energy.
"""

from __future__ import annotations

import lzma
from pathlib import Path

import numpy as np

METALS = ("Cu", "Pt", "Ni", "Al", "Ag", "Au", "Pd")
FACETS = ("fcc111", "fcc100")
ADSORBATES = ("O", "H", "C", "N", "CO", "OH")
GAS_REFERENCE = {"H": (("H2", 0.5),), "O": (("H2O", 1.0), ("H2", -1.0)),
                 "C": (("CO", 1.0), ("H2O", -1.0), ("H2", 1.0)), "N": (("N2", 0.5),)}
S2EF_PROPERTIES = "species:S:1:pos:R:3:move_mask:L:1:tags:I:1:forces:R:3"
SLAB_SIZE = (2, 2, 3)  # the demo's slabs: 12 metal atoms, fast enough for tests
LEVEL_OF_THEORY = "ASE EMT (effective medium theory), not VASP RPBE/PBE DFT"


def emt_slab(metal: str, facet: str, size: tuple[int, int, int] = SLAB_SIZE):
    """An EMT slab of `size` (a, b, layers) cells with the bottom two layers fixed, as in OC20.

    OC20 tags: the free layers 1 (surface), the fixed ones 0 (sub-surface). (4, 4, 4) gives 64
    metal atoms, near OC20's mean of ~73 atoms per adsorbate+slab system.
    """
    from ase import build
    from ase.calculators.emt import EMT
    from ase.constraints import FixAtoms

    if len(size) != 3 or min(size) < 1 or size[2] < 3:
        raise ValueError(f"slab size must be (a, b, layers) with layers >= 3, got {size}")
    slab = getattr(build, facet)(metal, size=tuple(size), vacuum=7.0)
    layer = slab.get_tags()  # ASE: 1 = top layer, increasing downwards
    fixed = layer >= size[2] - 1
    slab.set_tags(np.where(fixed, 0, 1))
    slab.set_constraint(FixAtoms(mask=fixed))
    slab.calc = EMT()
    return slab


def relax(atoms, max_steps: int, fmax: float = 0.05) -> list:
    """Frames of a BFGS relaxation (first frame = start), each a copy with a SinglePointCalculator."""
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.optimize import BFGS

    frames = []

    def record() -> None:
        frame = atoms.copy()
        frame.calc = SinglePointCalculator(frame, energy=atoms.get_potential_energy(),
                                           free_energy=atoms.get_potential_energy(), forces=atoms.get_forces())
        frames.append(frame)

    optimizer = BFGS(atoms, logfile=None)
    optimizer.attach(record, interval=1)
    optimizer.run(fmax=fmax, steps=max_steps)
    return frames


def gas_references() -> dict[str, float]:
    """EMT atomic reference energies (eV) from gas-phase molecules, OC20's scheme."""
    from ase.build import molecule
    from ase.calculators.emt import EMT

    energies = {}
    for name in ("H2", "H2O", "CO", "N2"):
        mol = molecule(name)
        mol.calc = EMT()
        energies[name] = mol.get_potential_energy()
    return {el: sum(w * energies[m] for m, w in terms) for el, terms in GAS_REFERENCE.items()}


def adsorbate_relaxation(rng: np.random.Generator, max_steps: int, references: dict[str, float],
                         slab_size: tuple[int, int, int] = SLAB_SIZE):
    """(frames, reference energy eV, description) of one random adsorbate on one random slab."""
    from ase.build import add_adsorbate, molecule
    from ase.calculators.emt import EMT
    from ase.constraints import FixAtoms

    metal, facet, name = rng.choice(METALS), rng.choice(FACETS), rng.choice(ADSORBATES)
    slab = emt_slab(metal, facet, slab_size)
    clean = relax(_with_emt(slab), max_steps)
    adsorbate = molecule(name) if len(name) > 1 else _atom(name)
    position = rng.uniform(0.0, 1.0, 2) @ slab.cell.array[:2, :2]
    system = slab.copy()
    add_adsorbate(system, adsorbate, height=1.6 + rng.uniform(0, 0.4), position=position)
    tags = system.get_tags()
    tags[len(slab):] = 2
    system.set_tags(tags)
    system.set_constraint(FixAtoms(indices=slab.constraints[0].get_indices()))
    system.calc = EMT()
    frames = relax(system, max_steps)
    reference = clean[-1].get_potential_energy() + sum(references[s] for s in adsorbate.get_chemical_symbols())
    return frames, reference, f"{name} on {metal} {facet}"


def _with_emt(atoms):
    from ase.calculators.emt import EMT

    copy = atoms.copy()
    copy.calc = EMT()
    return copy


def _atom(symbol: str):
    from ase import Atoms

    return Atoms(symbol, positions=[(0.0, 0.0, 0.0)])


def s2ef_frame_text(atoms) -> str:
    """One frame in the OC20 S2EF extxyz flavour (exact header key order)."""
    lattice = " ".join(f"{x:.8f}" for x in atoms.cell.array.reshape(-1))
    energy = atoms.get_potential_energy()
    fixed = np.zeros(len(atoms), dtype=bool)
    for constraint in atoms.constraints:
        fixed[constraint.get_indices()] = True
    lines = [str(len(atoms)),
             f'Lattice="{lattice}" Properties={S2EF_PROPERTIES} energy={energy:.8f} '
             f'free_energy={energy:.8f} pbc="T T T"']
    forces = atoms.get_forces()
    for symbol, pos, free, tag, force in zip(atoms.get_chemical_symbols(), atoms.positions, ~fixed,
                                             atoms.get_tags(), forces):
        lines.append(f"{symbol:<2} {pos[0]:15.8f} {pos[1]:15.8f} {pos[2]:15.8f} {'T' if free else 'F'} "
                     f"{tag:d} {force[0]:15.8f} {force[1]:15.8f} {force[2]:15.8f}")
    return "\n".join(lines) + "\n"


def write_oc20(out: Path, rng: np.random.Generator, num_systems: int, max_steps: int, systems_per_file: int,
               slab_size: tuple[int, int, int] = SLAB_SIZE, compress_odd: bool = True) -> int:
    """OC20 S2EF pairs `<i>.extxyz` + `<i>.txt` (odd-numbered pairs xz-compressed unless
    `compress_odd` is False). Returns frames written."""
    out.mkdir(parents=True, exist_ok=True)
    references = gas_references()
    num_frames, chunks = 0, [[]]
    for _ in range(num_systems):
        if len(chunks[-1]) == systems_per_file:
            chunks.append([])
        frames, reference, _ = adsorbate_relaxation(rng, max_steps, references, slab_size)
        chunks[-1].append((int(rng.integers(1, 2_500_000)), frames, reference))
    for index, chunk in enumerate(chunks):
        xyz = "".join(s2ef_frame_text(f) for _, frames, _ in chunk for f in frames)
        txt = "".join(f"random{sid},frame{fid},{ref:.8f}\n" for sid, frames, ref in chunk for fid in range(len(frames)))
        num_frames += sum(len(frames) for _, frames, _ in chunk)
        if index % 2 and compress_odd:
            (out / f"{index}.extxyz.xz").write_bytes(lzma.compress(xyz.encode()))
            (out / f"{index}.txt.xz").write_bytes(lzma.compress(txt.encode()))
        else:
            (out / f"{index}.extxyz").write_text(xyz)
            (out / f"{index}.txt").write_text(txt)
    return num_frames


def write_oc22(out: Path, rng: np.random.Generator, num_systems: int, max_steps: int) -> int:
    """OC22-style total-energy relaxations: even systems as ASE `.traj`, odd ones into one `.aselmdb`."""
    from ase.io.trajectory import Trajectory

    out.mkdir(parents=True, exist_ok=True)
    references = gas_references()
    lmdb_rows, num_frames = [], 0
    for index in range(num_systems):
        frames, _, _ = adsorbate_relaxation(rng, max_steps, references)
        num_frames += len(frames)
        if index % 2:
            lmdb_rows += [(frame, {"sid": f"system{index}", "fid": fid}) for fid, frame in enumerate(frames)]
            continue
        with Trajectory(str(out / f"system{index}.traj"), "w") as traj:
            for frame in frames:
                traj.write(frame)
    if lmdb_rows:
        write_aselmdb(out / "relaxations.aselmdb", lmdb_rows)
    return num_frames


def write_aselmdb(path: Path, rows: list) -> None:
    """fairchem ASE-LMDB written by ase-db-backends (fairchem's writer); each row's `data` holds its sid/fid.

    Rows carry the writer's timestamps, so this file (unlike the others) is not byte-reproducible.
    """
    import ase.db

    path.unlink(missing_ok=True)
    db = ase.db.connect(str(path), type="aselmdb")
    with db:
        for atoms, data in rows:
            db.write(atoms, data=data)
    Path(f"{path}-lock").unlink(missing_ok=True)  # LMDB's reader table, not part of the corpus
