"""The ASE-files reader on the real OC20/oxide samples, on fsspec URLs and on broken files."""

from __future__ import annotations

import fsspec
import numpy as np
import pytest
from atomforge import read_corpus
from atomforge.corpora import BadRecord, CorpusError


def test_real_oc20_frame_json_db(realdata):
    (s,) = list(read_corpus("ase", str(realdata / "oc20" / "oc20_frame_atoms.json")))
    assert s.energy == -135.66393572 and s.num_atoms == 34
    assert s.system_id == "ase/oc20_frame_atoms/1" and s.pbc.all()
    assert s.fixed.sum() == 24 and s.tags is not None
    assert np.all(s.forces[s.fixed] == 0.0) and np.abs(s.forces[~s.fixed]).max() > 0


def test_real_traj_and_vasprun(realdata):
    (traj,) = list(read_corpus("ase", str(realdata / "oc20" / "27998_all.traj")))
    assert traj.energy == -140.07475979 and traj.num_atoms == 16
    assert np.flatnonzero(traj.fixed).tolist() == list(range(8))
    assert np.all(traj.forces[traj.fixed] == 0.0)
    (xml,) = list(read_corpus("ase", str(realdata / "oc20" / "27998_vasprun.xml")))
    # ASE reports the final ionic step's energy(sigma->0) line; the traj was written from another
    # snapshot of the same run, 6.6e-5 eV apart
    assert xml.energy == -140.07469344 and xml.num_atoms == 16
    assert xml.fixed.sum() == 8


def test_real_oxides_db_in_row_ranges(realdata):
    reader = read_corpus("ase", str(realdata / "oxides" / "oxides.db"), dataset="oxides", rows_per_unit=100)
    units = reader.work_units()
    assert [(u.start, u.stop) for u in units] == [(0, 100), (100, 200), (200, 295)]
    structures = list(reader)
    assert len(structures) == 295 and reader.counts == {"structures": 295}
    assert structures[0].system_id == "oxides/oxides/1" and structures[0].energy == -41.358821
    assert structures[0].forces.shape == (6, 3) and len({s.system_id for s in structures}) == 295


def test_real_toy_extxyz_streams_with_labels(realdata):
    reader = read_corpus("ase", str(realdata / "oc20" / "toy_c3h8_relax.extxyz"), frame_kind="relax")
    structures = list(reader)
    assert len(structures) == 101
    assert structures[0].energy == 15.804699620277187 and structures[0].fixed.sum() == 18
    assert {s.group_id for s in structures} == {"ase/toy_c3h8_relax"}
    assert structures[5].system_id == "ase/toy_c3h8_relax/5" and structures[5].frame_kind == "relax"


def test_fsspec_url_reads_like_a_local_path(realdata):
    fs = fsspec.filesystem("memory")
    fs.pipe("/corpus/sub/toy.extxyz", (realdata / "oc20" / "toy_c3h8_relax.extxyz").read_bytes())
    fs.pipe("/corpus/oxides.db", (realdata / "oxides" / "oxides.db").read_bytes())
    reader = read_corpus("ase", "memory://corpus")
    structures = list(reader)
    assert len(structures) == 101 + 295
    assert structures[0].system_id == "ase/oxides/1" and structures[-1].system_id == "ase/sub/toy/100"


def _extxyz_frame(symbol: str, energy: str) -> str:
    return (f'2\nLattice="5 0 0 0 5 0 0 0 5" Properties=species:S:1:pos:R:3 energy={energy} pbc="T T T"\n'
            f"H 0 0 0\n{symbol} 0 0 1.0\n")


def test_unknown_element_is_one_bad_record_naming_file_frame_and_field(tmp_path):
    path = tmp_path / "bad.extxyz"
    path.write_text(_extxyz_frame("H", "-1.0") + _extxyz_frame("Xq", "-1.0") + _extxyz_frame("H", "-3.0"))
    reader = read_corpus("ase", str(path))
    records = list(reader.read(reader.work_units()[0]))
    assert [type(r).__name__ for r in records] == ["Structure", "BadRecord", "Structure"]
    bad = records[1]
    assert bad.reason == "parse_error" and bad.system_id == "ase/bad/1"
    assert "bad.extxyz" in bad.detail and "frame 1" in bad.detail and "species" in bad.detail and "Xq" in bad.detail
    assert records[2].system_id == "ase/bad/2" and records[2].energy == -3.0


def test_nan_energy_and_overlapping_atoms_become_bad_records(tmp_path):
    path = tmp_path / "labels.extxyz"
    text = _extxyz_frame("H", "-1.0") + _extxyz_frame("H", "nan") + _extxyz_frame("H", "-2.0").replace("0 0 1.0", "0 0 0.01")
    path.write_text(text)
    reader = read_corpus("ase", str(path))
    records = list(reader.read(reader.work_units()[0]))
    assert [type(r).__name__ for r in records] == ["Structure", "BadRecord", "BadRecord"]
    assert records[1].reason == "nan_label" and "labels.extxyz[1]" in records[1].detail and "energy" in records[1].detail
    assert records[2].reason == "validation" and "positions" in records[2].detail
    assert isinstance(records[2], BadRecord)
    assert len(list(reader)) == 1 and reader.counts == {"structures": 1, "nan_label": 1, "validation": 1}


def test_missing_path_and_bad_options(tmp_path):
    with pytest.raises(CorpusError, match="no such file"):
        read_corpus("ase", str(tmp_path / "absent")).work_units()
    with pytest.raises(ValueError, match="frame_kind"):
        read_corpus("ase", str(tmp_path), frame_kind="bogus")
    with pytest.raises(ValueError, match="unknown corpus"):
        read_corpus("oc21", str(tmp_path))
    with pytest.raises(ValueError, match="corpus 'ase': bad option"):
        read_corpus("ase", str(tmp_path), level="x")
