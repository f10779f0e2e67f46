"""Work units inside big files: a file's bytes split into ranges, each range owning the frames that start in it.

Planning reads no data: a range is [start, stop) in bytes from the file's size alone, so the
driver's memory grows with the number of units, never with frames. A worker finds its frames
with an index pass over count lines (`extxyz_columns.frame_index`, ~1 GB/s): frame k belongs to
the range holding its count line's first byte. Every frame of a file is therefore in exactly one
range, whatever the split, and a unit's key (which holds the range) names the same frames on
every run: resumable and deterministic.

The plan is a function of the inputs only (file sizes and the reader's `unit_bytes`), never of
how many workers run it: a file above `unit_bytes` is cut into ceil(size / unit_bytes) equal
ranges. So a dataset's shards, ids and row order are the same on 1 worker or 128, and a run
resumed with another worker count resumes rather than recomputes.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from atomforge.corpora.base import WorkUnit

UNIT_BYTES = 4 << 20  # ~600 OC20 frames: a 5,000-frame file (35 MB) spreads over 9 units, fixed costs stay small
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


def split_file(unit: WorkUnit, size: int, unit_bytes: int = UNIT_BYTES) -> list[WorkUnit]:
    """`unit` cut into ceil(size / unit_bytes) equal byte ranges (itself alone when it fits in one).

    `size` is the file's size in bytes; the ranges replace the unit in place, in file order.
    """
    if unit_bytes < 1:
        raise ValueError(f"unit_bytes must be >= 1, got {unit_bytes}")
    if RANGE_OPTION in unit.options:
        raise ValueError(f"{unit.path}: unit already holds the byte range {unit.options[RANGE_OPTION]}")
    parts = -(-size // unit_bytes)  # ceil
    if parts < 2:
        return [unit]
    return [replace(unit, options={**unit.options, RANGE_OPTION: list(r)}) for r in byte_ranges(size, parts)]


def unit_range(unit: WorkUnit) -> tuple[int, int] | None:
    """The unit's byte range, or None when it reads its whole file."""
    value = unit.options.get(RANGE_OPTION)
    return None if value is None else (int(value[0]), int(value[1]))
