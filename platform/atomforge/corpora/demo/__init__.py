"""Demo corpora in the real raw layouts, labelled by real physics codes (ASE EMT, GFN2-xTB via tblite).

`make_demo_corpora(out, size, seed)` writes under `out`:
    oc20/<i>.extxyz + <i>.txt (odd i: .xz)     EMT relaxations, OC20 S2EF flavour
    oc22/system<i>.traj, relaxations.aselmdb   EMT total-energy relaxations
    ani1x/ani1x-demo.h5                        xTB conformers, ANI-1x layout, Hartree
    transition1x/transition1x-demo.h5          xTB reaction paths, Transition1x layout, eV
    rmd17/rmd17_ethanol.npz                    xTB Langevin MD, kcal/mol
    README.md                                  what differs from the real corpora
Deterministic for a given (size, seed).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from atomforge.corpora.demo import molecules, surfaces


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
