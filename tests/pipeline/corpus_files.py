"""Small labelled corpora written as real extxyz files (ASE + EMT), for pipeline and shard tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def labelled(atoms):
    """atoms with EMT energy and forces in a SinglePointCalculator (as a file would hold them)."""
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    atoms.calc = EMT()
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
    return atoms


def slabs(count: int, seed: int = 0) -> list:
    """Cu(111) slabs with an O adsorbate, rattled: periodic in x, y (and z, with vacuum)."""
    from ase.build import add_adsorbate, fcc111

    frames = []
    for i in range(count):
        slab = fcc111("Cu", (2, 2, 3), vacuum=6.0)
        add_adsorbate(slab, "O", 1.5, "fcc")
        slab.rattle(0.05, seed=seed + i)
        frames.append(labelled(slab))
    return frames


def molecules(count: int, seed: int = 0) -> list:
    """Small non-periodic molecules (CH4, H2O, NH3 cycled), rattled."""
    from ase.build import molecule

    frames = []
    for i in range(count):
        mol = molecule(("CH4", "H2O", "NH3")[i % 3])
        mol.rattle(0.02, seed=seed + i)
        frames.append(labelled(mol))
    return frames


def write_corpus(root: Path, num_files: int = 4, per_file: int = 6) -> Path:
    """`num_files` extxyz files alternating slabs and molecules (one split group per file)."""
    import ase.io

    root.mkdir(parents=True, exist_ok=True)
    for k in range(num_files):
        frames = slabs(per_file, seed=100 * k) if k % 2 == 0 else molecules(per_file, seed=100 * k)
        ase.io.write(root / f"part{k:02d}.extxyz", frames)
    return root


def write_bad_files(root: Path) -> Path:
    """Files with every reader-level defect: NaN energy, overlapping atoms, an unparsable file."""
    import ase.io
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    root.mkdir(parents=True, exist_ok=True)
    nan = Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.3, 0.9, 0]])
    nan.calc = SinglePointCalculator(nan, energy=float("nan"), forces=np.zeros((3, 3)))
    close = Atoms("H2", positions=[[0, 0, 0], [0.01, 0, 0]])
    close.calc = SinglePointCalculator(close, energy=-1.0, forces=np.zeros((2, 3)))
    ase.io.write(root / "defects.extxyz", [nan, close, *molecules(2, seed=7)])
    (root / "garbage.extxyz").write_text("this is not\nan xyz file\n")
    return root


def tar_rows(shards, split: str) -> list[dict]:
    """`split`'s rows from its WebDataset tars, read as a plain PyTorch user would (webdataset + decode_sample)."""
    from atomforge.pipeline.formats import decode_sample
    from webdataset.tariterators import group_by_keys, tar_file_expander

    rows = []
    for path in shards.paths(split, "webdataset"):
        with shards.fs.open(path, "rb") as handle:
            rows.extend(decode_sample(s) for s in group_by_keys(tar_file_expander([{"url": path, "stream": handle}])))
    return rows
