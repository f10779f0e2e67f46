"""The fast extxyz path gives exactly ASE's values, or declines (None) where only ASE knows the meaning."""

from __future__ import annotations

import lzma
from pathlib import Path

import ase.io
import numpy as np
import pytest
from atomforge.corpora.extxyz_columns import frame_index, read_columns
from atomforge.schema import from_ase

REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata" / "oc20"
FIELDS = ("atomic_numbers", "positions", "cell", "pbc", "energy", "forces", "fixed", "tags")


def ase_fields(path: Path) -> list[dict]:
    """Per frame, what `schema.from_ase(ase.io.read(...))` makes of it."""
    out = []
    for atoms in ase.io.iread(str(path), index=":", format="extxyz"):
        s = from_ase(atoms, "x", energy=atoms.calc.results.get("energy") if atoms.calc else None)
        out.append({name: getattr(s, name) for name in FIELDS})
    return out


def fast_fields(path: Path, chunk: int = 7) -> list[dict]:
    offsets, _ = frame_index(str(path))
    out = []
    for start in range(0, len(offsets), chunk):  # ranges, as work units read them
        c = read_columns(str(path), start, min(start + chunk, len(offsets)))
        assert c is not None, f"fast path declined frames {start}.. of {path}"
        for i in range(len(c.atom_offsets) - 1):
            a, b = c.atom_offsets[i], c.atom_offsets[i + 1]
            out.append({"atomic_numbers": c.numbers[a:b], "positions": c.positions[a:b],
                        "cell": c.cell[i] if c.has_cell[i] else None, "pbc": c.pbc[i],
                        "energy": float(c.energy[i]) if c.has_energy[i] else None,
                        "forces": c.forces[a:b] if c.has_forces[i] else None,
                        "fixed": c.fixed[a:b] if c.has_fixed[i] else None,
                        "tags": c.tags[a:b] if c.has_tags[i] else None})
    return out


def assert_same(path: Path) -> int:
    want, got = ase_fields(path), fast_fields(path)
    assert len(got) == len(want)
    for index, (w, g) in enumerate(zip(want, got)):
        for name in FIELDS:
            if w[name] is None or g[name] is None:
                assert w[name] is None and g[name] is None, (index, name)
            else:
                assert np.asarray(w[name]).dtype.kind == np.asarray(g[name]).dtype.kind or name == "energy"
                assert np.array_equal(w[name], g[name]), (index, name)  # bit for bit
    return len(want)


def test_real_oc20_tutorial_file_equals_ase():
    path = REALDATA / "toy_c3h8_relax.extxyz"
    if not path.exists():
        pytest.skip(f"{path} absent (../shared/realdata not checked out)")
    assert assert_same(path) == 101


def test_generated_oc20_s2ef_files_equal_ase(tmp_path):
    from atomforge.corpora.demo import surfaces

    surfaces.write_oc20(tmp_path, np.random.default_rng(5), 3, 3, 2)
    (tmp_path / "1.extxyz").write_bytes(lzma.decompress((tmp_path / "1.extxyz.xz").read_bytes()))
    assert sum(assert_same(tmp_path / f"{i}.extxyz") for i in (0, 1)) >= 6


EDGE_FRAMES = {
    "lowercase species, T T F, no move_mask": (
        'Lattice="5 0 0 0 5 0 0 0 7.5" Properties=species:S:1:pos:R:3:forces:R:3 energy=-1.5 pbc="T T F"',
        ["cu 0 0 0 0.1 0.2 0.3", "O 1.25 1.5 1.75 0.0 0.0 0.1"]),
    "Lattice without pbc, integer energy, all fixed": (
        'Lattice="4 0 0 0.5 4 0 0 0 4" Properties=species:S:1:pos:R:3:move_mask:L:1:tags:I:1 energy=2',
        ["H 0 0 0 F 0", "H 0.7 0.1 0.2 F 2"]),
    "molecule, Z column, free_energy only": (
        "Properties=Z:I:1:pos:R:3:forces:R:3 free_energy=3.25",
        ["1 0 0 0 0.5 0 0", "8 0.96 0 0 -0.5 0 0"]),
    "species and Z disagree (ASE takes Z)": (
        'Properties=species:S:1:Z:I:1:pos:R:3 energy=1e-3 pbc="F F F"',
        ["C 6 0 0 0", "C 1 1.09 0 0"]),
}


@pytest.mark.parametrize("name", EDGE_FRAMES)
def test_edge_frames_equal_ase(tmp_path, name):
    comment, atoms = EDGE_FRAMES[name]
    path = tmp_path / "edge.extxyz"
    path.write_text("".join(f"{len(atoms)}\n{comment}\n" + "\n".join(atoms) + "\n" for _ in range(3)))
    assert assert_same(path) == 3


DECLINED = {
    "keys differ between frames": ("2\nProperties=species:S:1:pos:R:3 energy=1\nH 0 0 0\nH 0.7 0 0\n"
                                   "2\nLattice=\"5 0 0 0 5 0 0 0 5\" Properties=species:S:1:pos:R:3 energy=1\n"
                                   "H 0 0 0\nH 0.7 0 0\n"),
    "unknown element": "2\nProperties=species:S:1:pos:R:3 energy=1\nH 0 0 0\nQq 0.7 0 0\n",
    "short atom line": "2\nProperties=species:S:1:pos:R:3 energy=1\nH 0 0 0\nH 0.7 0\n",
    "stress": '1\nLattice="3 0 0 0 3 0 0 0 3" Properties=species:S:1:pos:R:3 stress="1 0 0 0 1 0 0 0 1" energy=1\n'
              "Cu 0 0 0\n",
    "per-direction move_mask": "1\nProperties=species:S:1:pos:R:3:move_mask:L:3 energy=1\nH 0 0 0 T F T\n",
    "plain xyz comment": "2\nwater dimer\nH 0 0 0\nH 0.7 0 0\n",
}


@pytest.mark.parametrize("name", DECLINED)
def test_fast_path_declines_what_only_ase_interprets(tmp_path, name):
    path = tmp_path / "frames.extxyz"
    path.write_text(DECLINED[name])
    offsets, _ = frame_index(str(path))
    assert read_columns(str(path), 0, len(offsets)) is None


def test_frame_index_gives_count_line_offsets(tmp_path):
    text = "".join(f"{n}\nProperties=species:S:1:pos:R:3 energy=1\n" + "H 0 0 0\n" * n for n in (1, 3, 2))
    path = tmp_path / "f.extxyz"
    path.write_text(text)
    offsets, counts = frame_index(str(path))
    assert counts.tolist() == [1, 3, 2]
    data = path.read_bytes()
    assert [data[o:].split(b"\n", 1)[0] for o in offsets] == [b"1", b"3", b"2"]
