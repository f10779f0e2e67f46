"""extxyz parsers on OC20 S2EF files: frames/s of each maintained candidate against ASE, and whether its values equal ASE's.

    python benchmarks/extxyz_parsers.py FILE.extxyz [FILE ...] [--repeats 3] [--json bench_out/extxyz_parsers.json]

Every candidate that is importable is timed (the others are listed as not installed): ASE's
`ase.io.iread` (the reference), `extxyz` (libextxyz, C), `ase-extxyz` (ASE's `cextxyz` format on
libextxyz), `oxyz` (Rust, per frame and as columnar batches), `chemfiles` (C++), `extxyz-ng`
(Rust; it installs a module also named `extxyz`, so it needs its own environment). Each yields,
per frame, what a shard row needs: atomic numbers, positions (Å), cell, pbc, energy (eV), forces
(eV/Å), fixed (= not move_mask) and tags. Time is the whole conversion to those arrays, one
thread, best of `--repeats`. "equal" means every value of every frame is bit-identical to ASE's.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAYON_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

FIELDS = ("numbers", "positions", "cell", "pbc", "energy", "forces", "fixed", "tags")


def _symbols_to_numbers(symbols) -> np.ndarray:
    from ase.data import atomic_numbers

    unique, inverse = np.unique(np.asarray(symbols), return_inverse=True)
    return np.array([atomic_numbers[s] for s in unique], dtype=np.int64)[inverse.reshape(-1)]


def ase_frames(path: str) -> Iterator[dict]:
    import ase.io
    from ase.constraints import FixAtoms

    for atoms in ase.io.iread(path, index=":", format="extxyz"):
        yield _from_atoms(atoms, FixAtoms)


def _from_atoms(atoms, fix_atoms) -> dict:
    fixed = np.zeros(len(atoms), dtype=bool)
    for constraint in atoms.constraints:
        if isinstance(constraint, fix_atoms):
            fixed[constraint.get_indices()] = True
    if "move_mask" in atoms.arrays:  # ase-extxyz leaves move_mask as an array instead of FixAtoms
        fixed = ~atoms.arrays["move_mask"].astype(bool)
    results = atoms.calc.results
    return {"numbers": atoms.numbers.astype(np.int64), "positions": atoms.positions, "cell": atoms.cell.array,
            "pbc": atoms.pbc, "energy": results["energy"], "forces": results["forces"], "fixed": fixed,
            "tags": atoms.get_tags().astype(np.int64)}


def ase_extxyz_frames(path: str) -> Iterator[dict]:
    import ase.io
    from ase.constraints import FixAtoms

    for atoms in ase.io.iread(path, index=":", format="cextxyz", create_calc=True):
        yield _from_atoms(atoms, FixAtoms)


def libextxyz_frames(path: str, use_cleri: bool = True) -> Iterator[dict]:
    import extxyz

    for frame in extxyz.iread_dicts(path, use_cleri=use_cleri):
        arrays = frame.arrays
        yield {"numbers": _symbols_to_numbers(arrays["species"]), "positions": arrays["pos"],
               "cell": frame.cell.T, "pbc": frame.pbc, "energy": frame.info["energy"], "forces": arrays["forces"],
               "fixed": ~arrays["move_mask"], "tags": arrays["tags"].astype(np.int64)}


def oxyz_frames(path: str) -> Iterator[dict]:
    import oxyz

    for frame in oxyz.iter_frames(path):
        columns, meta = frame.columns, frame.metadata
        yield {"numbers": _symbols_to_numbers(columns["species"]), "positions": columns["pos"],
               "cell": np.asarray(meta["Lattice"], dtype=np.float64).reshape(3, 3), "pbc": meta["pbc"],
               "energy": meta["energy"], "forces": columns["forces"], "fixed": ~columns["move_mask"],
               "tags": columns["tags"]}


def oxyz_batches(path: str, frames_per_batch: int = 500) -> Iterator[dict]:
    import oxyz

    for batch in oxyz.iter_batches(path, frames_per_batch=frames_per_batch, threads=1):
        columns, meta, offsets = batch.columns, batch.metadata, batch.offsets
        numbers = _symbols_to_numbers(columns["species"])
        cells = np.asarray(meta["Lattice"], dtype=np.float64).reshape(-1, 3, 3)
        for i in range(batch.n_frames):
            a, b = offsets[i], offsets[i + 1]
            yield {"numbers": numbers[a:b], "positions": columns["pos"][a:b], "cell": cells[i],
                   "pbc": meta["pbc"][i], "energy": float(meta["energy"][i]), "forces": columns["forces"][a:b],
                   "fixed": ~columns["move_mask"][a:b], "tags": columns["tags"][a:b]}


def chemfiles_frames(path: str) -> Iterator[dict]:
    import chemfiles

    with chemfiles.Trajectory(path, format="XYZ") as trajectory:
        for frame in trajectory:
            atoms = frame.atoms
            yield {"numbers": _symbols_to_numbers([a.type for a in atoms]),
                   "positions": np.array(frame.positions, dtype=np.float64),
                   "cell": np.array(frame.cell.matrix, dtype=np.float64),
                   "pbc": np.array([c == "T" for c in frame["pbc"].split()]),
                   "energy": float(frame["energy"]),
                   "forces": np.array([a["forces"] for a in atoms], dtype=np.float64),
                   "fixed": ~np.array([a["move_mask"] for a in atoms], dtype=bool),
                   "tags": np.array([a["tags"] for a in atoms], dtype=np.int64)}


def extxyz_ng_frames(path: str) -> Iterator[dict]:
    import extxyz

    for frame in extxyz.read_frames_from_file(path):
        arrays, info = frame.arrs, frame.info
        yield {"numbers": _symbols_to_numbers(arrays["species"]), "positions": np.array(arrays["pos"], dtype=np.float64),
               "cell": np.array(info["Lattice"], dtype=np.float64), "pbc": np.array([c == "T" for c in info["pbc"].split()]),
               "energy": float(info["energy"]), "forces": np.array(arrays["forces"], dtype=np.float64),
               "fixed": ~np.array(arrays["move_mask"], dtype=bool), "tags": np.array(arrays["tags"], dtype=np.int64)}


def _is_extxyz_ng() -> bool:
    try:
        import extxyz
    except ImportError:
        return False
    return hasattr(extxyz, "read_frames_from_file")


def candidates() -> dict[str, tuple[str, Callable[[str], Iterator[dict]]]]:
    """name -> (module that must import, frames function)."""
    ng = _is_extxyz_ng()
    found = {"ase (reference)": ("ase", ase_frames)}
    if not ng:
        found["extxyz (libextxyz, cleri comment grammar)"] = ("extxyz", libextxyz_frames)
        found["extxyz (libextxyz, fast comment parser)"] = ("extxyz", lambda p: libextxyz_frames(p, use_cleri=False))
        found["ase-extxyz (ase.io format cextxyz)"] = ("ase_extxyz", ase_extxyz_frames)
    else:
        found["extxyz-ng"] = ("extxyz", extxyz_ng_frames)
    found["oxyz (per frame)"] = ("oxyz", oxyz_frames)
    found["oxyz (columnar batches of 500)"] = ("oxyz", oxyz_batches)
    found["chemfiles"] = ("chemfiles", chemfiles_frames)
    return found


def importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def differences(reference: list[dict], frames: list[dict]) -> list[str]:
    """Fields (with the first frame) where `frames` differ from ASE's values; [] = bit-identical."""
    if len(frames) != len(reference):
        return [f"{len(frames)} frames, ASE read {len(reference)}"]
    found = []
    for name in FIELDS:
        for index, (want, got) in enumerate(zip(reference, frames)):
            a, b = np.asarray(want[name]), np.asarray(got[name])
            if a.shape != b.shape or not np.array_equal(a, b):
                found.append(f"{name} (frame {index}: {a.ravel()[:3]} vs {b.ravel()[:3]})")
                break
    return found


def time_candidate(frames_of: Callable[[str], Iterator[dict]], paths: list[str], repeats: int) -> tuple[float, list]:
    best, frames = float("inf"), []
    for _ in range(repeats):
        start = time.perf_counter()
        frames = [frame for path in paths for frame in frames_of(path)]
        best = min(best, time.perf_counter() - start)
    return best, frames


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default="bench_out/extxyz_parsers.json")
    args = parser.parse_args()
    reference = [frame for path in args.paths for frame in ase_frames(path)]
    num_atoms = sum(len(f["numbers"]) for f in reference)
    rows, ase_rate = [], None
    for name, (module, frames_of) in candidates().items():
        if not importable(module):
            rows.append({"parser": name, "installed": False})
            continue
        try:
            seconds, frames = time_candidate(frames_of, args.paths, args.repeats)
        except Exception as err:  # noqa: BLE001 - a candidate that cannot read the file is a result
            rows.append({"parser": name, "installed": True, "error": f"{type(err).__name__}: {str(err)[:80]}"})
            continue
        rate = len(frames) / seconds
        ase_rate = ase_rate or rate
        rows.append({"parser": name, "installed": True, "frames_per_s": rate, "vs_ase": rate / ase_rate,
                     "differences": differences(reference, frames)})
    print(f"{len(reference)} frames, {num_atoms / len(reference):.1f} atoms/frame, one thread, best of {args.repeats}")
    print(f"{'parser':46} {'frames/s':>10} {'x ASE':>7}  equal to ASE")
    for row in rows:
        if not row["installed"]:
            print(f"{row['parser']:46} {'not installed':>10}")
            continue
        if "error" in row:
            print(f"{row['parser']:46} {'fails':>10} {'':>7}  {row['error']}")
            continue
        equal = "yes" if not row["differences"] else "NO: " + "; ".join(row["differences"])
        print(f"{row['parser']:46} {row['frames_per_s']:>10.0f} {row['vs_ase']:>7.2f}  {equal}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"frames": len(reference), "atoms": num_atoms, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
