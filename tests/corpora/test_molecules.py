"""ANI-1x, Transition1x and rMD17 readers: real ANI samples, demo corpora, xTB forces, broken files."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
from atomforge import read_corpus
from atomforge.corpora import CorpusError
from atomforge.corpora.ani1x import HARTREE_TO_EV
from atomforge.corpora.rmd17 import KCAL_PER_MOL_TO_EV
from atomforge.schema import Structure


def test_real_ani1x_sample_exact_hartree_conversion(realdata):
    path = realdata / "ani1x" / "ani1_n5.hdf5"
    reader = read_corpus("ani1x", str(path), groups_per_unit=2)
    structures = list(reader)
    assert len(reader.work_units()) == 3
    assert len(structures) == 8 and len({s.group_id for s in structures}) == 5
    with h5py.File(path) as handle:
        stored = handle["C1H6N2O5"]["wb97x_dz.energy"][()]
        forces = handle["C1H6N2O5"]["wb97x_dz.forces"][()]
    s = next(s for s in structures if s.system_id == "ani1x/C1H6N2O5/1")
    assert s.energy == stored[1] * 27.211386245988 and s.group_id == "ani1x/C1H6N2O5"
    np.testing.assert_array_equal(s.forces, forces[1].astype(np.float64) * HARTREE_TO_EV)
    assert s.cell is None and not s.pbc.any()


def test_real_ani1x_nan_level_is_skipped_and_counted(realdata):
    reader = read_corpus("ani1x", str(realdata / "ani1x" / "ani1_n5.hdf5"), level="ccsd(t)_cbs", forces=False)
    assert len(list(reader)) == 6 and reader.counts["nan_label"] == 2
    assert {b.system_id for b in reader.bad_records} == {"ani1x/C1H6N2O5/1", "ani1x/C1H6N2O5/2"}
    assert "ani1_n5.hdf5[C1H6N2O5/1]" in reader.bad_records[0].detail


def test_real_ani2x_torchani_layout(realdata):
    structures = list(read_corpus("ani1x", str(realdata / "ani2x" / "ani2x_minimal.hdf5"), dataset="ani2x"))
    assert len(structures) == 5706 and all(s.num_atoms == 2 for s in structures[:50])
    assert structures[0].system_id == "ani2x/002/0" and structures[0].group_id.startswith("ani2x/")


def test_demo_ani1x_nan_conformers_counted(demo_dir):
    path = demo_dir / "ani1x" / "ani1x-demo.h5"
    with h5py.File(path) as handle:
        nan_ids = {f"ani1x/{c}" for c in handle.attrs["demo_nan_conformers"].split(",")}
        total = sum(handle[g]["coordinates"].shape[0] for g in handle)
    reader = read_corpus("ani1x", str(path))
    structures = list(reader)
    assert nan_ids and reader.counts == {"structures": total - len(nan_ids), "nan_label": len(nan_ids)}
    assert {b.system_id for b in reader.bad_records} == nan_ids
    tz = read_corpus("ani1x", str(path), level="wb97x_tz")
    assert list(tz) == [] and tz.counts["nan_label"] == total
    assert all(s.group_id == "ani1x/" + s.system_id.split("/")[1] for s in structures)


def test_demo_ani1x_forces_are_minus_xtb_gradient(demo_dir):
    from atomforge.corpora.demo.molecules import xtb
    from atomforge.schema import to_ase

    structures = list(read_corpus("ani1x", str(demo_dir / "ani1x")))
    for s in (structures[0], structures[-1]):
        atoms = xtb(to_ase(s))
        assert atoms.get_potential_energy() == pytest.approx(s.energy, abs=1e-5)
        h = 1e-3
        for axis in range(3):
            energies = []
            for sign in (1, -1):
                moved = xtb(atoms.copy())
                moved.positions[0, axis] += sign * h
                energies.append(moved.get_potential_energy())
            assert -(energies[0] - energies[1]) / (2 * h) == pytest.approx(s.forces[0, axis], abs=2e-3)


def _copy(src, tmp_path):
    dst = tmp_path / src.name
    shutil.copy(src, dst)
    return dst


def test_broken_ani_files_name_file_and_record(demo_dir, tmp_path):
    src = demo_dir / "ani1x" / "ani1x-demo.h5"
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    with pytest.raises(CorpusError, match=r"truncated\.h5: not a readable HDF5"):
        list(read_corpus("ani1x", str(truncated)))
    edited = _copy(src, tmp_path)
    with h5py.File(edited, "a") as handle:
        first, second, third = sorted(handle)[:3]
        del handle[first]["wb97x_dz.energy"]
        data = handle[second]["coordinates"][()]
        del handle[second]["coordinates"]
        handle[second]["coordinates"] = data[:, :-1]
        handle[third]["atomic_numbers"][0] = 0
    with h5py.File(edited) as handle:
        sizes = {name: handle[name]["coordinates"].shape[0] for name in handle}
    reader = read_corpus("ani1x", str(edited))
    records = [r for unit in reader.work_units() for r in reader.read(unit)]
    assert len(records) == sum(sizes.values())  # every conformer is accounted for, the broken groups' too
    by_group = {name: [r for r in records if r.system_id.split("/")[1] == name] for name in sizes}
    assert [r.system_id for r in by_group[first]] == [f"ani1x/{first}/{i}" for i in range(sizes[first])]
    assert all(r.reason == "missing_field" and "'wb97x_dz.energy' missing" in r.detail
               and "ani1x-demo.h5" in r.detail for r in by_group[first])
    assert all(r.reason == "bad_shape" and "'coordinates' has shape" in r.detail for r in by_group[second])
    assert by_group[third][0].reason == "validation" and f"[{third}/0]" in by_group[third][0].detail
    assert "atomic_numbers" in by_group[third][0].detail
    others = [r for name in sorted(sizes)[3:] for r in by_group[name]]
    assert others and all(isinstance(r, Structure) or r.reason == "nan_label" for r in others)


def test_demo_transition1x_splits_ids_and_endpoints(demo_dir):
    path = demo_dir / "transition1x" / "transition1x-demo.h5"
    reader = read_corpus("transition1x", str(path))
    structures = list(reader)
    with h5py.File(path) as handle:
        group_names = [f"{s}/{f}/{r}" for s in ("train", "val", "test") for f in handle[s] for r in handle[s][f]]
        num_frames = sum(handle[g]["positions"].shape[0] for g in group_names)
        key = group_names[0]
        stored = handle[key]["wB97x_6-31G(d).energy"][()]
    assert len(structures) == num_frames and {s.info["split"] for s in structures} == {"train", "val", "test"}
    first = next(s for s in structures if s.system_id == f"transition1x/{key.split('/', 1)[1]}/0")
    assert first.energy == stored[0] and first.frame_kind == "neb"
    assert first.group_id == "transition1x/" + key.split("/", 1)[1]
    with_ends = list(read_corpus("transition1x", str(path), include_endpoints=True))
    assert len(with_ends) == num_frames + 3 * len(group_names)
    assert {s.info["role"] for s in with_ends} == {"path", "reactant", "product", "transition_state"}
    assert len(list(read_corpus("transition1x", str(path), splits=("data",)))) == num_frames
    with pytest.raises(ValueError, match="double-count"):
        read_corpus("transition1x", str(path), splits=("train", "data"))


def test_transition1x_missing_forces_quarantines_that_reaction_only(demo_dir, tmp_path):
    edited = _copy(demo_dir / "transition1x" / "transition1x-demo.h5", tmp_path)
    with h5py.File(edited, "a") as handle:
        formula = sorted(handle["val"])[0]
        rxn = sorted(handle["val"][formula])[0]
        num_frames = handle[f"val/{formula}/{rxn}/positions"].shape[0]
        del handle[f"val/{formula}/{rxn}/wB97x_6-31G(d).forces"]
        del handle[f"test/{sorted(handle['test'])[0]}"][sorted(handle["test"][sorted(handle["test"])[0]])[0]]["product"]
    reader = read_corpus("transition1x", str(edited), splits=("val",))
    records = [r for unit in reader.work_units() for r in reader.read(unit)]
    assert len(records) == num_frames and all(r.reason == "missing_field" for r in records)
    assert [r.system_id for r in records] == [f"transition1x/{formula}/{rxn}/{i}" for i in range(num_frames)]
    assert f"record /val/{formula}/{rxn}: field 'wB97x_6-31G(d).forces' missing" in records[0].detail
    ends = read_corpus("transition1x", str(edited), splits=("test",), include_endpoints=True)
    records = [r for unit in ends.work_units() for r in ends.read(unit)]
    missing = [r for r in records if not isinstance(r, Structure)]
    assert [r.reason for r in missing] == ["missing_endpoint"] and missing[0].system_id.endswith("/product/0")
    assert "has no 'product' group" in missing[0].detail


def test_demo_rmd17_kcal_per_mol_conversion(demo_dir, tmp_path):
    path = demo_dir / "rmd17" / "rmd17_ethanol.npz"
    arrays = dict(np.load(path))
    reader = read_corpus("rmd17", str(path), frames_per_unit=8)
    structures = list(reader)
    assert len(reader.work_units()) == 3 and len(structures) == arrays["energies"].shape[0]
    assert KCAL_PER_MOL_TO_EV == pytest.approx(0.0433641, abs=1e-7)
    assert structures[4].energy == arrays["energies"][4] * KCAL_PER_MOL_TO_EV
    assert structures[4].system_id == "rmd17/ethanol/4" and structures[4].frame_kind == "md"
    np.testing.assert_allclose(structures[4].forces, arrays["forces"][4] * KCAL_PER_MOL_TO_EV)
    np.savez(tmp_path / "rmd17_bad.npz", **{**arrays, "forces": arrays["forces"][:, :-1]})
    records = list(read_corpus("rmd17", str(tmp_path / "rmd17_bad.npz")).read(
        read_corpus("rmd17", str(tmp_path / "rmd17_bad.npz")).work_units()[0]))
    assert len(records) == len(structures) and {r.reason for r in records} == {"bad_shape"}
    assert "rmd17_bad.npz[frame 0]: field 'forces': shape" in records[0].detail
    np.savez(tmp_path / "rmd17_bad.npz", **{k: v for k, v in arrays.items() if k != "coords"})
    reader = read_corpus("rmd17", str(tmp_path / "rmd17_bad.npz"))
    records = [r for unit in reader.work_units() for r in reader.read(unit)]
    assert len(records) == len(structures) and {r.reason for r in records} == {"missing_field"}
    assert "field 'coords': array missing" in records[-1].detail
    np.savez(tmp_path / "rmd17_bad.npz", **{k: v for k, v in arrays.items() if k != "energies"})
    with pytest.raises(CorpusError, match=r"rmd17_bad\.npz: array 'energies' missing"):
        read_corpus("rmd17", str(tmp_path / "rmd17_bad.npz")).work_units()
