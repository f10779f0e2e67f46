"""Work units inside big files: a file's bytes split into ranges, each range owning the frames that start in it.

Planning reads no data: a range is [start, stop) in bytes from the file's size alone, so the
driver's memory grows with the number of units, never with frames. A worker finds its frames
with an index pass over count lines (`extxyz_columns.frame_index`, ~1 GB/s): frame k belongs to
the range holding its count line's first byte. Every frame of a file is therefore in exactly one
range, whatever the split, and a unit's key (which holds the range) names the same frames on
every run: resumable and deterministic.

The plan is a function of the inputs only (file sizes and the reader's options), never of how
many workers run it, so a dataset's shards, ids and row order are the same on 1 worker or 128,
and a run resumed with another worker count resumes rather than recomputes:
- the unit size is `unit_bytes` (4 MiB), raised to total / `max_units` for a corpus above
  `max_units` x 4 MiB (16 GiB), so a corpus's split files give at most ~1.4 x `max_units` units
  (each writes its own shards: the shard count stays bounded at corpus scale);
- a file is cut into the power of two nearest its size / unit size (log scale: each range
  within 0.71-1.41 x the unit size), so its ranges divide evenly over 2, 4, 8, ... workers.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from atomforge.corpora.base import WorkUnit

UNIT_BYTES = 4 << 20  # ~600 OC20 frames: a 5,000-frame file (35 MB) spreads over 8 units, fixed costs stay small
MAX_UNITS = 4096  # ranges per corpus (about): a few thousand units, each with its own shards
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


def unit_size(total_bytes: int, unit_bytes: int = UNIT_BYTES, max_units: int = MAX_UNITS) -> int:
    """Bytes per range for a corpus whose splittable files hold `total_bytes`: `unit_bytes`, or more
    so that the corpus gives about `max_units` ranges (S2EF-All's ~1 TB of extxyz: 256 MiB)."""
    if unit_bytes < 1 or max_units < 1 or total_bytes < 0:
        raise ValueError(f"unit_bytes and max_units must be >= 1 and total_bytes >= 0, got {unit_bytes}, "
                         f"{max_units}, {total_bytes}")
    return max(unit_bytes, -(-total_bytes // max_units))


def num_ranges(size: int, unit_bytes: int) -> int:
    """The power of two nearest size / unit_bytes on a log scale (1 up to 1.41 x unit_bytes).

    Exact integer arithmetic (no log2), so every machine plans the same ranges.
    """
    parts = 1
    while 2 * (parts * unit_bytes) ** 2 < size ** 2:  # size > sqrt(2) x parts x unit_bytes: double
        parts *= 2
    return parts


def split_file(unit: WorkUnit, size: int, unit_bytes: int = UNIT_BYTES) -> list[WorkUnit]:
    """`unit` cut into `num_ranges(size, unit_bytes)` equal byte ranges (itself alone when that is 1).

    `size` is the file's size in bytes; the ranges replace the unit in place, in file order.
    """
    if unit_bytes < 1:
        raise ValueError(f"unit_bytes must be >= 1, got {unit_bytes}")
    if RANGE_OPTION in unit.options:
        raise ValueError(f"{unit.path}: unit already holds the byte range {unit.options[RANGE_OPTION]}")
    parts = num_ranges(size, unit_bytes)
    if parts < 2:
        return [unit]
    return [replace(unit, options={**unit.options, RANGE_OPTION: list(r)}) for r in byte_ranges(size, parts)]


def unit_range(unit: WorkUnit) -> tuple[int, int] | None:
    """The unit's byte range, or None when it reads its whole file."""
    value = unit.options.get(RANGE_OPTION)
    return None if value is None else (int(value[0]), int(value[1]))
