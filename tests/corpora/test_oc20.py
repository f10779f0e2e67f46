"""OC20 / OC22 readers on the demo corpora: referenced energies, fixed atoms, EMT forces, LMDBs, bad pairs."""

from __future__ import annotations

import lzma
import pickle

import numpy as np
import pytest
from atomforge import read_corpus
from atomforge.corpora import CorpusError
from atomforge.schema import to_ase


def _txt_lines(demo_dir) -> list[str]:
    return ((demo_dir / "oc20" / "0.txt").read_text().splitlines()
            + lzma.decompress((demo_dir / "oc20" / "1.txt.xz").read_bytes()).decode().splitlines())


def test_referenced_energy_ids_and_tags(demo_dir):
    reader = read_corpus("oc20", str(demo_dir / "oc20"))
    structures = list(reader)
    lines = _txt_lines(demo_dir)
    assert len(structures) == len(lines) and reader.counts == {"structures": len(lines)}
    for s, line in zip(structures, lines):
        sid, fid, reference = line.split(",")
        assert s.system_id == f"oc20/{sid}/{fid}" and s.group_id == f"oc20/{sid}"
        assert s.energy == s.total_energy - float(reference)
        assert s.dataset == "oc20" and s.frame_kind == "relax" and s.pbc.all()
        assert set(s.tags.tolist()) == {0, 1, 2} and not s.fixed[s.tags == 2].any()
        assert np.all(s.forces[s.fixed] == 0.0)


def test_forces_are_minus_emt_energy_gradient(demo_dir):
    from ase.calculators.emt import EMT

    structures = list(read_corpus("oc20", str(demo_dir / "oc20")))
    for s in (structures[0], structures[-1]):
        atoms = to_ase(s)
        atoms.set_constraint()
        atoms.calc = EMT()
        assert atoms.get_potential_energy() == pytest.approx(s.total_energy, abs=1e-6)
        atom, h = int(np.flatnonzero(~s.fixed)[-1]), 1e-4
        for axis in range(3):
            energies = []
            for sign in (1, -1):
                moved = atoms.copy()
                moved.calc = EMT()
                moved.positions[atom, axis] += sign * h
                energies.append(moved.get_potential_energy())
            assert -(energies[0] - energies[1]) / (2 * h) == pytest.approx(s.forces[atom, axis], abs=2e-4)


def test_txt_with_too_few_or_too_many_lines_names_both_files(demo_dir, tmp_path):
    (tmp_path / "0.extxyz").write_bytes((demo_dir / "oc20" / "0.extxyz").read_bytes())
    lines = (demo_dir / "oc20" / "0.txt").read_text().splitlines()
    (tmp_path / "0.txt").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(CorpusError, match=r"0\.txt: has \d+ lines but .*0\.extxyz has more frames"):
        list(read_corpus("oc20", str(tmp_path)))
    (tmp_path / "0.txt").write_text("\n".join(lines + ["random1,frame9,0.0"]) + "\n")
    with pytest.raises(CorpusError, match=r"0\.txt: has \d+ lines but .*0\.extxyz has \d+ frames"):
        list(read_corpus("oc20", str(tmp_path)))
    (tmp_path / "0.txt").write_text("random1;frame0\n")
    with pytest.raises(CorpusError, match=r"0\.txt: line 1"):
        list(read_corpus("oc20", str(tmp_path)))


def _write_pickled_lmdb(path, structures) -> None:
    import lmdb
    import torch
    from torch_geometric.data import Data

    env = lmdb.open(str(path), subdir=False, map_size=1 << 26, lock=False)
    with env.begin(write=True) as txn:
        for index, s in enumerate(structures):
            sid, fid = s.system_id.split("/")[1:]
            data = Data(pos=torch.tensor(s.positions, dtype=torch.float32), cell=torch.tensor(s.cell[None]),
                        atomic_numbers=torch.tensor(s.atomic_numbers, dtype=torch.float32),
                        natoms=s.num_atoms, tags=torch.tensor(s.tags), fixed=torch.tensor(s.fixed),
                        y=s.energy, force=torch.tensor(s.forces, dtype=torch.float32),
                        sid=int(sid.removeprefix("random")), fid=int(fid.removeprefix("frame")))
            txn.put(str(index).encode(), pickle.dumps(data))
        txn.put(b"length", pickle.dumps(len(structures)))
    env.close()


def test_pickled_lmdb_needs_explicit_trust(demo_dir, tmp_path):
    structures = list(read_corpus("oc20", str(demo_dir / "oc20")))[:5]
    _write_pickled_lmdb(tmp_path / "data.lmdb", structures)
    with pytest.raises(CorpusError, match=r"data\.lmdb: .*pickled.*trust_pickle=True"):
        read_corpus("oc20", str(tmp_path)).work_units()
    reader = read_corpus("oc20", str(tmp_path), trust_pickle=True, records_per_unit=2)
    assert [(u.start, u.stop) for u in reader.work_units()] == [(0, 2), (2, 4), (4, 5)]
    untrusted = read_corpus("oc20", str(tmp_path))
    with pytest.raises(CorpusError, match="trust_pickle"):
        list(untrusted.read(reader.work_units()[0]))
    loaded = list(reader)
    assert [s.system_id for s in loaded] == [s.system_id for s in structures]
    assert loaded[3].energy == pytest.approx(structures[3].energy)
    np.testing.assert_array_equal(loaded[3].fixed, structures[3].fixed)
    np.testing.assert_allclose(loaded[3].forces, structures[3].forces, atol=1e-6)


def test_oc22_traj_and_aselmdb_total_energies(demo_dir):
    from ase.io import read

    reader = read_corpus("oc22", str(demo_dir / "oc22"))
    structures = list(reader)
    assert reader.energy_convention == "total" and structures and reader.num_bad == 0
    by_id = {s.system_id: s for s in structures}
    first_traj = read(str(demo_dir / "oc22" / "system0.traj"), index=0)
    assert by_id["oc22/system0/0"].energy == first_traj.get_potential_energy()
    assert by_id["oc22/system0/0"].total_energy is None
    lmdb_rows = [s for s in structures if s.system_id.startswith("oc22/relaxations/")]
    assert lmdb_rows and {s.group_id for s in lmdb_rows} == {"oc22/system1"}
    assert all(s.fixed.sum() == 8 and (s.forces[s.fixed] == 0).all() for s in structures)
