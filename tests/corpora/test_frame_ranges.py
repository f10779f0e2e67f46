"""Byte-range work units: every frame in exactly one range, whatever the split; the plan from file sizes alone."""

from __future__ import annotations

import numpy as np
import pytest
from atomforge.corpora.base import WorkUnit
from atomforge.corpora.extxyz_columns import frame_index
from atomforge.corpora.frame_ranges import (
    MAX_UNITS,
    UNIT_BYTES,
    byte_ranges,
    frames_in_range,
    num_ranges,
    split_file,
    unit_range,
    unit_size,
)


@pytest.fixture(scope="module")
def frame_file(tmp_path_factory):
    """200 frames of 1..9 atoms (uneven sizes, so ranges cut frames at many points)."""
    rng = np.random.default_rng(0)
    text = []
    for k in range(200):
        n = int(rng.integers(1, 10))
        atoms = "".join(f"H {x:.6f} 0 0\n" for x in rng.uniform(0, 10, n))
        text.append(f"{n}\nProperties=species:S:1:pos:R:3 energy={k}\n{atoms}")
    path = tmp_path_factory.mktemp("ranges") / "f.extxyz"
    path.write_text("".join(text))
    return path


@pytest.mark.parametrize("parts", [1, 2, 3, 7, 50, 199, 5000])
def test_every_frame_is_in_exactly_one_range(frame_file, parts):
    offsets, _ = frame_index(str(frame_file))
    owned = []
    for byte_range in byte_ranges(frame_file.stat().st_size, parts):
        first, stop = frames_in_range(offsets, byte_range)
        owned.extend(range(first, stop))
    assert owned == list(range(len(offsets)))


def test_byte_ranges_tile_the_file():
    ranges = byte_ranges(1001, 7)
    assert ranges[0][0] == 0 and ranges[-1][1] == 1001
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    with pytest.raises(ValueError, match="parts"):
        byte_ranges(10, 0)


def unit(name: str, **options) -> WorkUnit:
    return WorkUnit("oc20", f"/data/{name}.extxyz", 0, None, {"root": "/data", **options})


def test_a_big_file_is_cut_into_equal_ranges_from_its_size_alone():
    plan = split_file(unit("0"), 35_000_000)  # a 5,000-frame OC20 file: 8.3 x 4 MiB
    assert len(plan) == 8  # the nearest power of two: 4 + 4 on 2 workers, 2 each on 4
    assert [unit_range(u) for u in plan] == byte_ranges(35_000_000, 8)
    assert len({u.key for u in plan}) == 8
    assert [u.key for u in split_file(unit("0"), 35_000_000)] == [u.key for u in plan]  # stable


@pytest.mark.parametrize("ratio", [0.1, 1.0, 1.41, 1.42, 2.0, 2.9, 3.0, 8.3, 11.3, 11.4, 1000.0])
def test_ranges_are_a_power_of_two_each_within_a_root_two_of_the_unit_size(ratio):
    size = int(ratio * UNIT_BYTES)
    parts = num_ranges(size, UNIT_BYTES)
    assert parts & (parts - 1) == 0  # 1, 2, 4, ...
    if parts > 1:
        assert UNIT_BYTES / 2 ** 0.5 < size / parts <= UNIT_BYTES * 2 ** 0.5
    else:
        assert size <= UNIT_BYTES * 2 ** 0.5


def test_the_unit_size_grows_with_the_corpus_so_the_plan_stays_a_few_thousand_ranges():
    assert unit_size(35_000_000) == UNIT_BYTES  # one file: 4 MiB ranges
    s2ef_all = 1_040_000_000_000  # ~134M frames of ~7.8 KB
    size = unit_size(s2ef_all)
    assert size == -(-s2ef_all // MAX_UNITS) and 250e6 < size < 260e6
    files = [39_000_000 * k for k in (1, 3, 7, 100, 20_000)] + [s2ef_all]
    units = sum(num_ranges(f, unit_size(sum(files))) for f in files)
    assert units <= 2 ** 0.5 * MAX_UNITS + len(files)
    with pytest.raises(ValueError, match="max_units"):
        unit_size(10, max_units=0)


def test_a_file_that_fits_one_unit_stays_whole_and_a_range_is_not_cut_again():
    assert split_file(unit("s"), UNIT_BYTES) == [unit("s")]
    assert split_file(unit("s"), int(1.4 * UNIT_BYTES)) == [unit("s")]
    assert split_file(unit("e"), 0) == [unit("e")]
    assert len(split_file(unit("t"), int(1.5 * UNIT_BYTES))) == 2
    with pytest.raises(ValueError, match="already holds"):
        split_file(split_file(unit("t"), 2 * UNIT_BYTES)[0], 10)
    with pytest.raises(ValueError, match="unit_bytes"):
        split_file(unit("t"), 10, unit_bytes=0)


def test_a_terabyte_corpus_plans_a_bounded_number_of_units(tmp_path):
    """Sparse files of S2EF-All's size (nothing written): the reader's plan stays ~MAX_UNITS ranges."""
    from atomforge.corpora import read_corpus

    sizes = [600 << 30, 300 << 30, 100 << 30, 5 << 20]  # ~1 TB in all, and one small file
    for k, size in enumerate(sizes):
        with open(tmp_path / f"{k}.extxyz", "wb") as fobj:
            fobj.truncate(size)
        (tmp_path / f"{k}.txt").write_text("")
    plan = read_corpus("oc20", str(tmp_path)).work_units()
    assert MAX_UNITS / 2 ** 0.5 <= len(plan) <= 2 ** 0.5 * MAX_UNITS
    assert len({u.key for u in plan}) == len(plan)
    assert [u.key for u in read_corpus("oc20", str(tmp_path)).work_units()] == [u.key for u in plan]
    assert [u.path for u in plan].count(str(tmp_path / "3.extxyz")) == 1  # 5 MiB < 256 MiB: whole
    assert len(read_corpus("oc20", str(tmp_path), max_units=64).work_units()) <= 2 ** 0.5 * 64 + 1
