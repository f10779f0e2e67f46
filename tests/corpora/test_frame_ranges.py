"""Byte-range work units: every frame in exactly one range, whatever the split; the plan from file sizes alone."""

from __future__ import annotations

import numpy as np
import pytest
from atomforge.corpora.base import WorkUnit
from atomforge.corpora.extxyz_columns import frame_index
from atomforge.corpora.frame_ranges import (
    UNIT_BYTES,
    byte_ranges,
    frames_in_range,
    split_file,
    unit_range,
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
    plan = split_file(unit("0"), 35_000_000)  # a 5,000-frame OC20 file
    assert len(plan) == 9 == -(-35_000_000 // UNIT_BYTES)
    assert [unit_range(u) for u in plan] == byte_ranges(35_000_000, 9)
    assert len({u.key for u in plan}) == 9
    assert [u.key for u in split_file(unit("0"), 35_000_000)] == [u.key for u in plan]  # stable


def test_a_file_that_fits_one_unit_stays_whole_and_a_range_is_not_cut_again():
    assert split_file(unit("s"), UNIT_BYTES) == [unit("s")]
    assert split_file(unit("e"), 0) == [unit("e")]
    assert len(split_file(unit("t"), UNIT_BYTES + 1)) == 2
    with pytest.raises(ValueError, match="already holds"):
        split_file(split_file(unit("t"), UNIT_BYTES + 1)[0], 10)
    with pytest.raises(ValueError, match="unit_bytes"):
        split_file(unit("t"), 10, unit_bytes=0)
