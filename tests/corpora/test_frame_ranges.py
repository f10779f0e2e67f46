"""Byte-range work units: every frame in exactly one range, whatever the split; splitting only when too few files."""

from __future__ import annotations

import numpy as np
import pytest
from atomforge.corpora.base import WorkUnit
from atomforge.corpora.extxyz_columns import frame_index
from atomforge.corpora.frame_ranges import (
    MIN_RANGE_BYTES,
    byte_ranges,
    frames_in_range,
    split_units,
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


def test_one_big_file_is_split_for_the_workers_and_the_plan_is_stable():
    units = [unit("0")]
    sizes = {"/data/0.extxyz": 35_000_000}
    plan = split_units(units, 2, lambda u: sizes[u.path])
    assert len(plan) == 8  # 4 per worker
    assert [unit_range(u) for u in plan] == byte_ranges(35_000_000, 8)
    assert len({u.key for u in plan}) == 8
    assert [u.key for u in split_units(units, 2, lambda u: sizes[u.path])] == [u.key for u in plan]


def test_many_files_small_files_and_compressed_files_stay_whole():
    many = [unit(str(i)) for i in range(8)]
    assert split_units(many, 2, lambda u: 35_000_000) == many
    small = [unit("s")]
    assert split_units(small, 2, lambda u: MIN_RANGE_BYTES) == small  # one range would be under the minimum
    assert split_units([unit("x")], 2, lambda u: None) == [unit("x")]
    mixed = split_units([unit("a"), unit("b")], 2, lambda u: None if u.path.endswith("a.extxyz") else 40_000_000)
    assert mixed[0] == unit("a") and len(mixed) == 8 and unit_range(mixed[1]) is not None
