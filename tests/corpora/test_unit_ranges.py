"""Record-range work units inside HDF5 and LMDB files: every record once, the values of the unsplit read.

ANI-1x units are ranges of formula groups, Transition1x units ranges of reactions, LMDB units
ranges of keys / row ids. Whatever the range size, reading every unit gives the records of the
one-unit read in the same order, bad records included (a broken group or row stays one set of
BadRecords in the unit that holds it), and the plan is the same on every call.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from atomforge import read_corpus
from atomforge.corpora.base import BadRecord

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_oc20 import _write_aselmdb, _write_pickled_lmdb  # noqa: E402

ONE_UNIT = 10**9  # records per unit large enough that a file is one unit


def records(reader) -> list:
    """(system_id, kind, payload) of every record of every unit, in plan order."""
    out = []
    for unit in reader.work_units():
        for r in reader.read(unit):
            if isinstance(r, BadRecord):
                out.append((r.system_id, "bad", (r.reason, r.detail)))
            else:
                out.append((r.system_id, "ok", (r.atomic_numbers, r.positions, r.energy, r.forces, r.group_id,
                                                r.info)))
    return out


def assert_same(split: list, whole: list) -> None:
    assert [(sid, kind) for sid, kind, _ in split] == [(sid, kind) for sid, kind, _ in whole]
    assert len({sid for sid, _, _ in whole}) == len(whole)  # every record once
    for (sid, kind, a), (_, _, b) in zip(split, whole):
        if kind == "bad":
            assert a == b, sid
            continue
        for x, y in zip(a[:4], b[:4]):
            np.testing.assert_array_equal(x, y, err_msg=sid)
        assert a[4:] == b[4:], sid


def plans_agree(make) -> None:
    assert [u.key for u in make().work_units()] == [u.key for u in make().work_units()]


@pytest.fixture
def ani1x_with_a_broken_group(demo_dir, tmp_path):
    """The demo ANI-1x file with one group's forces deleted (its conformers: missing_field)."""
    path = tmp_path / "ani1x.h5"
    shutil.copy(demo_dir / "ani1x" / "ani1x-demo.h5", path)
    with h5py.File(path, "a") as handle:
        names = sorted(handle)
        del handle[names[len(names) // 2]]["wb97x_dz.forces"]
    return path


@pytest.mark.parametrize("groups_per_unit", [1, 2, 3])
def test_ani1x_group_ranges(ani1x_with_a_broken_group, groups_per_unit):
    path = str(ani1x_with_a_broken_group)
    whole = records(read_corpus("ani1x", path, groups_per_unit=ONE_UNIT))
    split_reader = read_corpus("ani1x", path, groups_per_unit=groups_per_unit)
    assert len(split_reader.work_units()) > 1
    assert_same(records(split_reader), whole)
    assert {r for _, kind, (r, *_) in whole if kind == "bad"} >= {"missing_field", "nan_label"}
    plans_agree(lambda: read_corpus("ani1x", path, groups_per_unit=groups_per_unit))


@pytest.mark.parametrize("rows_per_unit", [1, 2, 3])
def test_ani1x_conformer_row_ranges(ani1x_with_a_broken_group, rows_per_unit):
    """Groups above `rows_per_unit` conformers are cut into row ranges: same records, bad ones included."""
    path = str(ani1x_with_a_broken_group)
    whole = records(read_corpus("ani1x", path, groups_per_unit=ONE_UNIT, rows_per_unit=ONE_UNIT))
    split_reader = read_corpus("ani1x", path, rows_per_unit=rows_per_unit)
    plan = split_reader.work_units()
    cut = [u for u in plan if "rows" in u.options]
    assert cut and all(u.stop == u.start + 1 for u in cut)  # a row range lies inside one group
    assert all(u.options["rows"][1] - u.options["rows"][0] <= rows_per_unit for u in cut)
    assert_same(records(split_reader), whole)
    plans_agree(lambda: read_corpus("ani1x", path, rows_per_unit=rows_per_unit))


def test_torchani_layout_row_ranges_give_the_unsplit_records(realdata):
    """The torchani layout (species per conformer) cut into row ranges: same records, same order."""
    path = str(realdata / "ani2x" / "ani2x_minimal.hdf5")  # one group of 5,706 conformers
    whole = records(read_corpus("ani1x", path, dataset="ani2x", rows_per_unit=ONE_UNIT))
    split_reader = read_corpus("ani1x", path, dataset="ani2x", rows_per_unit=1000)
    assert len([u for u in split_reader.work_units() if "rows" in u.options]) == 6
    assert_same(records(split_reader), whole)


def test_ani1x_packing_keeps_units_within_both_limits():
    from atomforge.corpora.ani1x import plan_rows

    counts = [5, 5, 30, 1, 1, 1, 12, 4, 100_000]
    plan = plan_rows(counts, groups_per_unit=2, rows_per_unit=10)
    covered = []
    for start, stop, rows in plan:
        if rows is None:
            assert stop - start <= 2 and (sum(counts[start:stop]) <= 10 or stop - start == 1)
            covered += [(g, r) for g in range(start, stop) for r in range(counts[g])]
        else:
            assert stop == start + 1 and rows[1] - rows[0] <= 10
            covered += [(start, r) for r in range(*rows)]
    assert covered == [(g, r) for g, n in enumerate(counts) for r in range(n)]  # every conformer once, in order
    assert plan[:3] == [(0, 2, None), (2, 3, (0, 10)), (2, 3, (10, 20))]


@pytest.mark.parametrize("reactions_per_unit", [1, 2])
def test_transition1x_reaction_ranges(demo_dir, tmp_path, reactions_per_unit):
    path = tmp_path / "t1x.h5"
    shutil.copy(demo_dir / "transition1x" / "transition1x-demo.h5", path)
    with h5py.File(path, "a") as handle:  # 4 train reactions (copies of one); the first loses its product
        formula = sorted(handle["train"])[0]
        first = f"train/{formula}/{sorted(handle['train'][formula])[0]}"
        for name in ("rxn_copy1", "rxn_copy2", "rxn_copy3"):
            handle.copy(handle[first], f"train/{formula}/{name}")
        del handle[f"{first}/product"]
    whole = records(read_corpus("transition1x", str(path), include_endpoints=True, reactions_per_unit=ONE_UNIT))
    reader = read_corpus("transition1x", str(path), include_endpoints=True, reactions_per_unit=reactions_per_unit)
    assert len(reader.work_units()) >= 2 + 4 // reactions_per_unit  # val, test, train's ranges
    assert_same(records(reader), whole)
    assert [payload[0] for _, kind, payload in whole if kind == "bad"] == ["missing_endpoint"]
    plans_agree(lambda: read_corpus("transition1x", str(path), reactions_per_unit=reactions_per_unit))


@pytest.mark.parametrize("records_per_unit", [1, 2, 5])
def test_aselmdb_row_ranges(demo_dir, tmp_path, records_per_unit):
    import lmdb

    structures = list(read_corpus("oc20", str(demo_dir / "oc20")))[:9]
    _write_aselmdb(tmp_path / "data.aselmdb", structures, {s.system_id: s.total_energy - s.energy for s in structures})
    env = lmdb.open(str(tmp_path / "data.aselmdb"), subdir=False, lock=False)
    with env.begin(write=True) as txn:
        txn.put(b"5", b"not zlib-compressed json")  # row 5 cannot be decoded
    env.close()
    whole = records(read_corpus("oc20", str(tmp_path), records_per_unit=ONE_UNIT))
    reader = read_corpus("oc20", str(tmp_path), records_per_unit=records_per_unit)
    assert len(reader.work_units()) == -(-9 // records_per_unit)
    assert_same(records(reader), whole)
    assert len(whole) == 9 and [kind for _, kind, _ in whole].count("bad") == 1
    plans_agree(lambda: read_corpus("oc20", str(tmp_path), records_per_unit=records_per_unit))


def test_pickled_lmdb_key_ranges(demo_dir, tmp_path):
    structures = list(read_corpus("oc20", str(demo_dir / "oc20")))[:7]
    _write_pickled_lmdb(tmp_path / "data.lmdb", structures)
    whole = records(read_corpus("oc20", str(tmp_path), trust_pickle=True, records_per_unit=ONE_UNIT))
    reader = read_corpus("oc20", str(tmp_path), trust_pickle=True, records_per_unit=3)
    assert len(reader.work_units()) == 3
    assert_same(records(reader), whole)
    assert [sid for sid, _, _ in whole] == [s.system_id for s in structures]
