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


def _unpaired(folder) -> list:
    reader = read_corpus("oc20", str(folder))
    records = [r for unit in reader.work_units() for r in reader.read(unit)]
    assert all(r.reason == "unpaired_frame" for r in records)
    return records


def test_txt_with_too_few_too_many_or_bad_lines_quarantines_every_frame_of_the_pair(demo_dir, tmp_path):
    (tmp_path / "0.extxyz").write_bytes((demo_dir / "oc20" / "0.extxyz").read_bytes())
    lines = (demo_dir / "oc20" / "0.txt").read_text().splitlines()
    num_frames = len(lines)
    (tmp_path / "0.txt").write_text("\n".join(lines[:3] + lines[4:]) + "\n")  # a middle line lost
    records = _unpaired(tmp_path)
    assert [r.system_id for r in records] == [f"oc20/0/{i}" for i in range(num_frames)]
    assert f"{num_frames - 1} txt lines for {num_frames} frames" in records[0].detail
    assert "0.txt" in records[0].detail and "0.extxyz[frame 0]" in records[0].detail
    (tmp_path / "0.txt").write_text("\n".join(lines + ["random1,frame9,0.0"]) + "\n")
    assert f"{num_frames + 1} txt lines" in _unpaired(tmp_path)[0].detail
    (tmp_path / "0.txt").write_text("\n".join(["random1;frame0"] + lines[1:]) + "\n")
    assert "0.txt: line 1: expected" in _unpaired(tmp_path)[-1].detail
    (tmp_path / "0.txt").unlink()
    assert len(_unpaired(tmp_path)) == num_frames


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
    lmdb_rows = [s for s in structures if s.system_id.startswith("oc22/system1/")]  # ids from the rows' sid/fid
    assert lmdb_rows and {s.group_id for s in lmdb_rows} == {"oc22/system1"}
    assert [s.system_id for s in lmdb_rows] == [f"oc22/system1/frame{i}" for i in range(len(lmdb_rows))]
    assert all(s.fixed.sum() == 8 and (s.forces[s.fixed] == 0).all() for s in structures)


def _write_aselmdb(path, structures, references) -> None:
    """An OC20 `.aselmdb` as fairchem writes it (ase-db-backends), sid/fid and reference in each row's data."""
    import ase.db
    from ase.calculators.singlepoint import SinglePointCalculator

    with ase.db.connect(str(path), type="aselmdb") as db:
        for s in structures:
            sid, fid = s.system_id.split("/")[1:]
            atoms = to_ase(s)
            atoms.calc = SinglePointCalculator(atoms, energy=s.total_energy, forces=s.forces)  # raw DFT total
            db.write(atoms, data={"sid": int(sid.removeprefix("random")), "fid": int(fid.removeprefix("frame")),
                                      "ref_energy": references[s.system_id]})


def test_one_identity_per_frame_across_extxyz_pickled_lmdb_and_aselmdb(demo_dir, tmp_path):
    structures = list(read_corpus("oc20", str(demo_dir / "oc20")))
    references = {s.system_id: s.total_energy - s.energy for s in structures}
    (tmp_path / "pickled").mkdir()
    _write_pickled_lmdb(tmp_path / "pickled" / "data.lmdb", structures)
    (tmp_path / "ase").mkdir()
    _write_aselmdb(tmp_path / "ase" / "data.aselmdb", structures, references)
    pickled = list(read_corpus("oc20", str(tmp_path / "pickled"), trust_pickle=True))
    aselmdb = list(read_corpus("oc20", str(tmp_path / "ase")))
    ids = [s.system_id for s in structures]
    assert [s.system_id for s in pickled] == ids and [s.system_id for s in aselmdb] == ids
    assert [s.group_id for s in aselmdb] == [s.group_id for s in structures]
    for a, b in zip(aselmdb, structures):
        assert a.energy == pytest.approx(b.energy, abs=1e-9) and a.total_energy == b.total_energy
        np.testing.assert_array_equal(a.fixed, b.fixed)


def test_undecodable_aselmdb_row_is_one_bad_record(demo_dir, tmp_path):
    import lmdb

    structures = list(read_corpus("oc20", str(demo_dir / "oc20")))[:6]
    references = {s.system_id: s.total_energy - s.energy for s in structures}
    _write_aselmdb(tmp_path / "data.aselmdb", structures, references)
    env = lmdb.open(str(tmp_path / "data.aselmdb"), subdir=False, lock=False)
    with env.begin(write=True) as txn:
        txn.put(b"3", b"not zlib-compressed json")  # the third row (ids start at 1)
    env.close()
    reader = read_corpus("oc20", str(tmp_path), records_per_unit=4)
    records = [r for unit in reader.work_units() for r in reader.read(unit)]
    assert len(records) == 6 and [type(r).__name__ for r in records].count("BadRecord") == 1
    assert records[2].reason == "parse_error" and "row 3" in records[2].detail and "data.aselmdb" in records[2].detail
    assert [r.system_id for i, r in enumerate(records) if i != 2] == [s.system_id for i, s in enumerate(structures) if i != 2]
