"""Work units inside big files: a file's bytes split into ranges, each range owning the frames that start in it.

Planning reads no data: a range is [start, stop) in bytes from the file's size alone, so the
driver's memory grows with the number of units, never with frames. A worker finds its frames
with an index pass over count lines (`extxyz_columns.frame_index`, ~1 GB/s): frame k belongs to
the range holding its count line's first byte. Every frame of a file is therefore in exactly one
range, whatever the split, and a unit's key (which holds the range) names the same frames on
every run: resumable and deterministic.

Units are split only when a corpus has fewer files than the workers can use (`split_units`):
at corpus scale (OC20 S2EF-All: ~27,000 files of ~5,000 frames) every file stays one unit and
one shard set, and a single 5,000-frame file still spreads over every worker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from atomforge.corpora.base import WorkUnit

UNITS_PER_WORKER = 4  # enough units that the slowest worker waits for at most ~1/4 of a unit
MIN_RANGE_BYTES = 1 << 20  # ~150 OC20 frames: below this a unit's fixed costs dominate
RANGE_OPTION = "byte_range"  # WorkUnit.options key holding [start, stop)


def byte_ranges(size: int, parts: int) -> list[tuple[int, int]]:
    """`parts` contiguous [start, stop) ranges covering bytes 0..size (the last ends at `size`)."""
    if size < 0 or parts < 1:
        raise ValueError(f"size must be >= 0 and parts >= 1, got size={size}, parts={parts}")
    edges = [size * k // parts for k in range(parts + 1)]
    return [(edges[k], edges[k + 1]) for k in range(parts)]


def frames_in_range(frame_offsets: np.ndarray, byte_range: tuple[int, int] | None) -> tuple[int, int]:
    """[first, stop) frame indices whose count line starts inside `byte_range` (None = the whole file)."""
    if byte_range is None:
        return 0, len(frame_offsets)
    start, stop = byte_range
    return int(np.searchsorted(frame_offsets, start)), int(np.searchsorted(frame_offsets, stop))


def split_units(units: list[WorkUnit], num_workers: int, size_of: Callable[[WorkUnit], int | None]) -> list[WorkUnit]:
    """Units with the largest splittable files cut into byte ranges until there are enough for the workers.

    `size_of(unit)` is the file's size in bytes, or None when the unit cannot be split (compressed,
    already a range, not a text format). Order is kept: a split file's ranges replace it in place.
    """
    target = UNITS_PER_WORKER * num_workers
    if len(units) >= target:
        return units
    sizes = [size_of(unit) if RANGE_OPTION not in unit.options else None for unit in units]
    splittable = sum(1 for s in sizes if s)
    if not splittable:
        return units
    parts_each = -(-(target - (len(units) - splittable)) // splittable)  # ceil: ranges per split file
    out = []
    for unit, size in zip(units, sizes):
        parts = min(parts_each, max(1, (size or 0) // MIN_RANGE_BYTES))
        if not size or parts < 2:
            out.append(unit)
            continue
        for byte_range in byte_ranges(size, parts):
            out.append(replace(unit, options={**unit.options, RANGE_OPTION: list(byte_range)}))
    return out


def unit_range(unit: WorkUnit) -> tuple[int, int] | None:
    """The unit's byte range, or None when it reads its whole file."""
    value = unit.options.get(RANGE_OPTION)
    return None if value is None else (int(value[0]), int(value[1]))
