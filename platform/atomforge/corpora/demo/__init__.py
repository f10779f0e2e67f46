"""Demo corpora in the real raw layouts, labelled by real physics codes (ASE EMT, GFN2-xTB via tblite).

`make_demo_corpora(out, size, seed)` writes under `out`:
    oc20/<i>.extxyz + <i>.txt (odd i: .xz)     EMT relaxations, OC20 S2EF flavour
    oc22/system<i>.traj, relaxations.aselmdb   EMT total-energy relaxations
    ani1x/ani1x-demo.h5                        xTB conformers, ANI-1x layout, Hartree
    transition1x/transition1x-demo.h5          xTB reaction paths, Transition1x layout, eV
    rmd17/rmd17_ethanol.npz                    xTB Langevin MD, kcal/mol
    README.md                                  what differs from the real corpora
Deterministic for a given (size, seed).

`make_replication_corpora(out, size, seed, parts)` writes the replication benchmark's corpora
(benchmarks/replicate.py, docs/replication.md): the four JMP corpora above at other sizes, rMD17
files for several molecules, TIP3P water clusters (`water.py`) and EMT bulk alloys with stress
labels plus an EMT bulk-modulus set (`bulk.py`). Parts are independent, so they can be written
in parallel; each is deterministic for (size, seed).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from atomforge.corpora.demo import bulk, molecules, surfaces, water


@dataclass(frozen=True)
class DemoSize:
    """How much of each corpus to generate."""

    oc20_systems: int
    oc20_systems_per_file: int
    oc22_systems: int
    relax_steps: int  # max BFGS steps per relaxation (frames per system <= steps + 1)
    ani_molecules: int
    ani_conformers: int
    t1x_reactions: int
    t1x_images: int
    md_frames: int
    md_stride: int  # MD steps between stored frames


SIZES = {
    "tiny": DemoSize(3, 2, 2, 6, 4, 4, 3, 5, 20, 2),
    "small": DemoSize(24, 8, 8, 30, 12, 40, 6, 12, 400, 5),
    "medium": DemoSize(120, 20, 40, 60, 12, 400, 6, 40, 4000, 10),
}

README = """# atomforge demo corpora (size {size}, seed {seed})

Mini corpora in the real raw on-disk layouts of OC20, OC22, ANI-1x, Transition1x and rMD17,
labelled by real physics codes, **not by the DFT of the real corpora**:

| corpus | files | labels (real corpus) | other differences |
|---|---|---|---|
| oc20 | `oc20/<i>.extxyz` + `<i>.txt` (odd i xz-compressed) | ASE EMT (VASP RPBE) | fcc metals only; reference = EMT clean slab + EMT gas references (H2, H2O, CO, N2) |
| oc22 | `oc22/system<i>.traj`, `relaxations.aselmdb` | ASE EMT (VASP PBE+U) | metal slabs with adsorbates, not oxides |
| ani1x | `ani1x/ani1x-demo.h5` | GFN2-xTB via tblite, stored under `wb97x_dz.*` in Hartree | Gaussian-displaced conformers; `wb97x_tz.*`, `ccsd(t)_cbs.energy` all NaN; conformers listed in attr `demo_nan_conformers` are NaN on purpose |
| transition1x | `transition1x/transition1x-demo.h5` | GFN2-xTB, stored under `wB97x_6-31G(d).*` in eV | rigid torsion / inversion paths, not NEB |
| rmd17 | `rmd17/rmd17_ethanol.npz` | GFN2-xTB (DFT PBE/def2-SVP) in kcal/mol | short Langevin MD at 500 K; `old_*` repeat the new labels |

Every HDF5 file carries a `level_of_theory` attribute saying the same.

Counts: {counts}
"""


def make_demo_corpora(out: str | Path, size: str = "tiny", seed: int = 0) -> dict[str, int]:
    """Write all demo corpora under `out`; returns structures written per corpus (and seconds)."""
    if size not in SIZES:
        raise ValueError(f"size {size!r} unknown; expected one of {sorted(SIZES)}")
    spec, out = SIZES[size], Path(out)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    counts = {
        "oc20": surfaces.write_oc20(out / "oc20", rng, spec.oc20_systems, spec.relax_steps,
                                    spec.oc20_systems_per_file),
        "oc22": surfaces.write_oc22(out / "oc22", rng, spec.oc22_systems, spec.relax_steps),
        "ani1x": molecules.write_ani1x(out / "ani1x" / "ani1x-demo.h5", rng, spec.ani_molecules,
                                       spec.ani_conformers),
        "transition1x": molecules.write_transition1x(out / "transition1x" / "transition1x-demo.h5",
                                                     spec.t1x_reactions, spec.t1x_images),
        "rmd17": molecules.write_rmd17(out / "rmd17" / "rmd17_ethanol.npz", seed, spec.md_frames, spec.md_stride),
    }
    (out / "README.md").write_text(README.format(size=size, seed=seed, counts=json.dumps(counts)))
    (out / "demo.json").write_text(json.dumps({"size": size, "seed": seed, "spec": asdict(spec),
                                               "counts": counts}, indent=2))
    return {**counts, "seconds": round(time.perf_counter() - start, 2)}


@dataclass(frozen=True)
class ReplicationSize:
    """How much of each replication corpus to generate (see docs/replication.md for why these sizes)."""

    jmp: DemoSize  # the four JMP corpora (its md_* fields are unused: rMD17 files are written per molecule)
    md_frames: int
    md_stride: int  # 0.5 fs MD steps between stored frames
    water_pretrain_chains: int
    water_finetune_chains: int
    water_frames_per_chain: int
    water_sweeps: int  # Monte Carlo sweeps between stored frames
    water_equilibration: int
    bulk_cells: int
    bulk_strained_per_cell: int
    bulk_downstream: int


REPLICATION_SIZES = {
    "tiny": ReplicationSize(DemoSize(3, 2, 2, 6, 6, 4, 3, 5, 0, 1), 40, 2, 2, 1, 16, 1, 5, 6, 2, 12),
    "small": ReplicationSize(DemoSize(16, 8, 6, 20, 28, 12, 6, 10, 0, 1), 240, 10, 4, 3, 25, 2, 15, 30, 3, 60),
    "medium": ReplicationSize(DemoSize(40, 10, 12, 30, 28, 40, 6, 20, 0, 1), 600, 10, 12, 8, 40, 3, 25, 80, 4, 150),
}
JMP_CORPORA = ("oc20", "oc22", "ani1x", "transition1x")


def replication_parts(molecules_: tuple[str, ...]) -> tuple[str, ...]:
    """Part names: "jmp", "rmd17_<molecule>" per molecule, "water", "bulk"."""
    unknown = sorted(set(molecules_) - set(molecules.RMD17_MOLECULES))
    if unknown:
        raise ValueError(f"rMD17 molecules {unknown} unknown; expected some of {sorted(molecules.RMD17_MOLECULES)}")
    return ("jmp", *(f"rmd17_{m}" for m in molecules_), "water", "bulk")


def make_replication_part(out: str | Path, part: str, size: str = "small", seed: int = 0) -> dict[str, int]:
    """Write one replication part under `out` (see `replication_parts`); returns structures written per corpus.

    Each part draws from its own generator seeded by (seed, part), so parts are independent of
    which others are written and in which order.
    """
    if size not in REPLICATION_SIZES:
        raise ValueError(f"size {size!r} unknown; expected one of {sorted(REPLICATION_SIZES)}")
    spec, out = REPLICATION_SIZES[size], Path(out)
    rng = np.random.default_rng([seed, *part.encode()])
    if part == "jmp":
        jmp = spec.jmp
        return {
            "oc20": surfaces.write_oc20(out / "oc20", rng, jmp.oc20_systems, jmp.relax_steps, jmp.oc20_systems_per_file),
            "oc22": surfaces.write_oc22(out / "oc22", rng, jmp.oc22_systems, jmp.relax_steps),
            "ani1x": molecules.write_ani1x(out / "ani1x" / "ani1x-demo.h5", rng, jmp.ani_molecules, jmp.ani_conformers),
            "transition1x": molecules.write_transition1x(out / "transition1x" / "transition1x-demo.h5",
                                                         jmp.t1x_reactions, jmp.t1x_images),
        }
    if part.startswith("rmd17_") and part[6:] in molecules.RMD17_MOLECULES:
        name = part[6:]
        path = out / "rmd17" / f"rmd17_{name}.npz"
        return {part: molecules.write_rmd17(path, seed, spec.md_frames, spec.md_stride, molecules.RMD17_MOLECULES[name])}
    if part == "water":
        return water.write_water(out / "water", rng, spec.water_pretrain_chains, spec.water_finetune_chains,
                                 spec.water_frames_per_chain, spec.water_sweeps, spec.water_equilibration)
    if part == "bulk":
        return bulk.write_bulk(out / "bulk", rng, spec.bulk_cells, spec.bulk_strained_per_cell, spec.bulk_downstream)
    raise ValueError(f"unknown replication part {part!r}; expected jmp, rmd17_<molecule>, water or bulk")
