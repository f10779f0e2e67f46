"""Decoded windows shared through files: what one process writes another maps; dropped windows free their memory."""

from __future__ import annotations

import numpy as np
from atomforge.columnar import RowBlock
from atomforge.window_store import FileStore


def block(seed: int) -> RowBlock:
    rng = np.random.default_rng(seed)
    return RowBlock({"natoms": rng.integers(1, 9, 5), "pos": rng.normal(size=(20, 3)).astype(np.float32)})


def mapped_deleted(store: FileStore) -> list[str]:
    with open("/proc/self/maps") as maps:
        return [line for line in maps if str(store.root) in line and "(deleted)" in line]


def test_a_builder_unmaps_the_windows_the_planner_dropped(tmp_path):
    planner, builder = FileStore(tmp_path, timeout=1.0), FileStore(tmp_path, timeout=1.0)
    for seed in range(3):
        planner.put((0, 0, seed), block(seed))
    first = builder.get((0, 0, 0))
    assert np.array_equal(first.arrays["pos"], block(0).arrays["pos"])
    del first
    builder.get((0, 0, 1))
    planner.drop((0, 0, 0))  # no batch reads window 0 again: its file goes, the builder still maps it
    assert len(mapped_deleted(builder)) == 1
    later = builder.get((0, 0, 2))  # the next window the builder opens unmaps it
    assert not mapped_deleted(builder)
    assert np.array_equal(later.arrays["natoms"], block(2).arrays["natoms"])
    assert np.array_equal(builder.get((0, 0, 1)).arrays["pos"], block(1).arrays["pos"])
