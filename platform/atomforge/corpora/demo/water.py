"""Demo water clusters labelled by ASE's TIP3P, as extxyz files (the hydrogen-masking miniature, seed 004).

TIP3P (Jorgensen et al. 1983) is a rigid three-site water model: ASE's calculator gives the
intermolecular Lennard-Jones (O–O) + Coulomb energy and forces, with no intramolecular terms, so
molecules keep r(OH) = 0.9572 Å and ∠HOH = 104.52°. Clusters (6-10 molecules, in vacuum, no cell)
are sampled at 250 K by rigid-molecule Metropolis Monte Carlo (`mc_frames`): ASE's constrained MD
(RATTLE) costs ~0.1-0.3 s a step here, a Metropolis move one energy call. The Coulomb cutoff lies
beyond every cluster, so every pair interacts. Stored forces are the calculator's: the gradient of
the TIP3P energy, which a force field trained on these frames must learn.

Layout (each frame's energy eV and forces eV/Å in the extxyz header / columns):
    <out>/pretrain/run<i>.extxyz     one Monte Carlo chain each, for label-free pretraining
    <out>/finetune/water.extxyz      other chains: the labelled downstream set
Atoms are ordered O, H, H per molecule, as the TIP3P calculator requires.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

LEVEL_OF_THEORY = "TIP3P (rigid, ASE ase.calculators.tip3p), intermolecular energy only: demo data"
COULOMB_CUTOFF = 20.0  # Å, O–O; beyond any cluster here, so the smooth cutoff never acts
MIN_OO = 2.7  # Å, closest O–O distance when placing molecules


def water_molecule(rng: np.random.Generator, center: np.ndarray) -> np.ndarray:
    """Positions (3, 3) Å of one TIP3P water (O, H, H), randomly oriented about its O at `center`."""
    from ase.calculators.tip3p import angleHOH, rOH

    half = np.radians(angleHOH) / 2
    local = np.array([[0.0, 0.0, 0.0], [rOH * np.sin(half), 0.0, rOH * np.cos(half)],
                      [-rOH * np.sin(half), 0.0, rOH * np.cos(half)]])
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    rotation = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                         [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                         [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    return center + local @ rotation.T


def random_cluster(rng: np.random.Generator, num_molecules: int):
    """An ASE Atoms of `num_molecules` waters in a sphere of liquid-like density (~0.033 molecules/Å³)."""
    from ase import Atoms

    radius = (3 * num_molecules / (4 * np.pi * 0.033)) ** (1 / 3)
    centers: list[np.ndarray] = []
    while len(centers) < num_molecules:
        point = rng.uniform(-radius, radius, 3)
        if np.linalg.norm(point) <= radius and all(np.linalg.norm(point - c) >= MIN_OO for c in centers):
            centers.append(point)
    positions = np.concatenate([water_molecule(rng, c) for c in centers])
    return Atoms("OH2" * num_molecules, positions=positions)


def tip3p_energy(calc, atoms, positions: np.ndarray) -> float:
    """TIP3P energy (eV) of `atoms` at `positions` (N, 3) Å."""
    atoms.positions = positions
    return float(calc.get_potential_energy(atoms))


def rotate_molecule(rng: np.random.Generator, molecule: np.ndarray, max_angle: float) -> np.ndarray:
    """A rigid rotation of (3, 3) positions about their centroid: random axis, angle uniform in ±max_angle (rad).

    The proposal is symmetric (the inverse rotation is as likely), as Metropolis sampling needs.
    """
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = rng.uniform(-max_angle, max_angle)
    center = molecule.mean(axis=0)
    rel = molecule - center
    rotated = (rel * np.cos(angle) + np.cross(axis, rel) * np.sin(angle)
               + np.outer(rel @ axis, axis) * (1.0 - np.cos(angle)))
    return center + rotated


def mc_frames(rng: np.random.Generator, num_molecules: int, num_frames: int, sweeps: int,
              temperature: float = 250.0, step: float = 0.15, max_angle: float = 0.35,
              equilibration: int = 25) -> list:
    """Frames (Atoms + TIP3P energy and forces) of one rigid-molecule Metropolis Monte Carlo chain.

    Moves: one molecule at a time, a random translation (uniform in ±`step` Å per axis) and a
    rotation about its centroid; accepted with min(1, exp(-ΔE/kT)). A spherical wall (O atoms
    within the packing radius + 3 Å) keeps the cluster from evaporating, the usual container
    for cluster simulations. After `equilibration` sweeps, one frame every `sweeps` sweeps.
    """
    from ase import units
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.calculators.tip3p import TIP3P

    atoms = random_cluster(rng, num_molecules)
    wall = (3 * num_molecules / (4 * np.pi * 0.033)) ** (1 / 3) + 3.0
    calc, beta = TIP3P(rc=COULOMB_CUTOFF, width=1.0), 1.0 / (units.kB * temperature)
    positions = atoms.positions.copy()
    energy = tip3p_energy(calc, atoms, positions)
    frames = []
    for sweep in range(equilibration + num_frames * sweeps):
        for molecule in range(num_molecules):
            rows = slice(3 * molecule, 3 * molecule + 3)
            trial = positions.copy()
            trial[rows] = rotate_molecule(rng, positions[rows], max_angle) + rng.uniform(-step, step, 3)
            if np.linalg.norm(trial[3 * molecule]) > wall:
                continue
            trial_energy = tip3p_energy(calc, atoms, trial)
            if trial_energy <= energy or rng.uniform() < np.exp(-beta * (trial_energy - energy)):
                positions, energy = trial, trial_energy
        if sweep >= equilibration and (sweep + 1 - equilibration) % sweeps == 0:
            frame = atoms.copy()
            frame.positions = positions
            calc.calculate(frame, ["energy", "forces"])
            frame.calc = SinglePointCalculator(frame, energy=float(calc.results["energy"]),
                                               forces=calc.results["forces"].copy())
            frames.append(frame)
    return frames


def write_water(out: Path, rng: np.random.Generator, pretrain_runs: int, finetune_runs: int, frames_per_run: int,
                sweeps: int, equilibration: int = 25, sizes: tuple[int, ...] = (6, 8, 10)) -> dict[str, int]:
    """Pretraining chains (one extxyz each) and the downstream set (one extxyz); returns frames written."""
    import ase.io

    (out / "pretrain").mkdir(parents=True, exist_ok=True)
    (out / "finetune").mkdir(parents=True, exist_ok=True)
    for index in range(pretrain_runs):
        frames = mc_frames(rng, int(sizes[index % len(sizes)]), frames_per_run, sweeps, equilibration=equilibration)
        ase.io.write(out / "pretrain" / f"run{index}.extxyz", frames, format="extxyz")
    downstream = []
    for index in range(finetune_runs):
        downstream += mc_frames(rng, int(sizes[index % len(sizes)]), frames_per_run, sweeps, equilibration=equilibration)
    ase.io.write(out / "finetune" / "water.extxyz", downstream, format="extxyz")
    (out / "LEVEL_OF_THEORY").write_text(LEVEL_OF_THEORY + "\n")
    return {"water_pretrain": pretrain_runs * frames_per_run, "water_finetune": len(downstream)}
