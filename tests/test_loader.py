"""The shard loader: batches equal `collate`'s field by field; epochs, ranks, resume and workers; guards."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from atomforge.batch import collate
from atomforge.shards import open_shards

sys.path.insert(0, str(Path(__file__).resolve().parent))
from varied_structures import CUTOFF, GRAPH, SKIN, K, rows_of, varied  # noqa: E402


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, publish):
    rows = rows_of([varied(i) for i in range(24)])
    url = publish(tmp_path_factory.mktemp("varied"), {"train": rows, "val": rows[:6]}, GRAPH, shard_size=7)
    return url, {row["system_id"]: row for row in rows}


def assert_same_batch(mine, reference):
    """Every field, dtype and value (NaN = NaN), PyG's slices and increments, node counts."""
    assert sorted(mine.keys()) == sorted(reference.keys())
    for key in reference.keys():
        a, b = mine[key], reference[key]
        if isinstance(b, torch.Tensor):
            assert a.dtype == b.dtype and a.shape == b.shape, key
            if b.is_floating_point():
                assert torch.equal(torch.isnan(a), torch.isnan(b)), key
                a, b = torch.nan_to_num(a, nan=0.0), torch.nan_to_num(b, nan=0.0)
            assert torch.equal(a, b), key
        else:
            assert a == b, key
    assert mine.num_graphs == reference.num_graphs and mine._store._num_nodes == reference._store._num_nodes
    for key, value in reference._slice_dict.items():
        assert torch.equal(mine._slice_dict[key], value), key
    for key, value in reference._inc_dict.items():
        assert (value is None and mine._inc_dict[key] is None) or torch.equal(mine._inc_dict[key], value), key


@pytest.mark.parametrize("max_neighbors,tie_rule", [(K, "strict"), (3, "tolerant"), (None, "strict")])
def test_batches_equal_collate_of_the_same_rows(dataset, max_neighbors, tie_rule):
    url, by_id = dataset
    loader = open_shards(url).loader("train", max_atoms=40, max_neighbors=max_neighbors, tie_rule=tie_rule,
                                     cutoff=4.5, task=3, seed=5)
    batches = list(loader)
    assert sum(b.num_graphs for b in batches) == len(by_id)
    for batch in batches:
        rows = [by_id[sid] for sid in batch.system_id]
        reference = collate(rows, cutoff=4.5, max_neighbors=max_neighbors, tasks=[3] * len(rows), tie_rule=tie_rule)
        assert_same_batch(batch, reference)


def test_atom_budget_every_row_once_per_epoch_reshuffled(dataset):
    url, by_id = dataset
    loader = open_shards(url).loader("train", max_atoms=40, max_structures=3, seed=1, chunk_rows=4, shuffle_rows=8)
    epochs = []
    for _ in range(2):  # each iteration is the next epoch
        batches = list(loader)
        for b in batches:
            assert b.num_graphs <= 3 and (int(b.natoms.sum()) <= 40 or b.num_graphs == 1)
        epochs.append([sid for b in batches for sid in b.system_id])
    assert sorted(epochs[0]) == sorted(epochs[1]) == sorted(by_id)
    assert epochs[0] != epochs[1]
    again = open_shards(url).loader("train", max_atoms=40, max_structures=3, seed=1, chunk_rows=4, shuffle_rows=8)
    assert [sid for b in again for sid in b.system_id] == epochs[0]
    unshuffled = open_shards(url).loader("val", max_atoms=1000, shuffle=False)
    assert [sid for b in unshuffled for sid in b.system_id] == list(by_id)[:6]  # manifest order


@pytest.mark.parametrize("shuffle", [True, False])
def test_ranks_read_disjoint_rows_covering_the_split(dataset, shuffle):
    url, by_id = dataset
    seen = []
    for rank in range(3):
        loader = open_shards(url).loader("train", max_atoms=64, rank=rank, world=3, shuffle=shuffle, chunk_rows=4)
        seen.append([sid for b in loader for sid in b.system_id])
    assert sorted(sum(seen, [])) == sorted(by_id)


def ids(batches):
    return [list(b.system_id) for b in batches]


def test_resume_is_exact_and_workers_change_nothing(dataset):
    url, _ = dataset
    options = {"max_atoms": 30, "epochs": 3, "seed": 2, "chunk_rows": 4, "shuffle_rows": 8}
    straight = ids(open_shards(url).loader("train", **options))
    loader = open_shards(url).loader("train", **options)
    first = []
    for batch in loader:
        first.append(list(batch.system_id))
        if len(first) == 7:
            break
    resumed = open_shards(url).loader("train", num_workers=2, **options)
    resumed.load_state_dict(json.loads(json.dumps(loader.state_dict())))  # state survives JSON
    assert first + ids(resumed) == straight
    assert ids(open_shards(url).loader("train", num_workers=2, **options)) == straight


def test_a_corrupt_shard_is_an_error_naming_it(dataset, tmp_path):
    import shutil

    url, _ = dataset
    copy = tmp_path / "copy"
    shutil.copytree(url, copy)
    shard = copy / json.loads((copy / "manifest.json").read_text())["shards"][1]["path"]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    for workers in (0, 2):
        with pytest.raises(ValueError, match=f"{shard.name}: sha256 differs"):
            list(open_shards(str(copy)).loader("train", max_atoms=64, shuffle=False, num_workers=workers))


def test_inconsistent_rows_are_an_error_naming_shard_row_and_field(tmp_path, publish):
    rows = rows_of([varied(i) for i in range(6)])
    rows[4]["edge_src"] = np.asarray(rows[4]["edge_src"]).copy()
    rows[4]["edge_src"][3] = rows[4]["num_atoms"]  # a neighbor index past the structure's atoms
    url = publish(tmp_path / "bad", {"train": rows}, GRAPH, shard_size=4)
    for workers in (0, 2):  # decoded in this process, or in a worker's decoder thread
        with pytest.raises(ValueError, match=r"demo-0001\.parquet: row 0 \(bulk-4\): field 'edge_src' points outside"):
            list(open_shards(url).loader("train", max_atoms=64, shuffle=False, num_workers=workers))


def test_manifest_guards(dataset, tmp_path):
    import shutil

    url, _ = dataset
    copy = tmp_path / "old"
    shutil.copytree(url, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "schema_version": "0.9"}))
    with pytest.raises(ValueError, match="schema version '0.9'"):
        open_shards(str(copy))
    (copy / "manifest.json").write_text(json.dumps({**manifest, "shards": [
        {k: v for k, v in s.items() if k != "sha256"} for s in manifest["shards"]]}))
    with pytest.raises(ValueError, match="without bytes/sha256"):
        open_shards(str(copy)).loader("train", max_atoms=10)
    with pytest.raises(ValueError, match="exceeds the stored graph"):
        open_shards(url).loader("train", max_atoms=10, cutoff=CUTOFF + SKIN + 0.5)


def test_windows_ahead_are_dealt_to_consecutive_batches(dataset):
    """Each window is given to exactly one batch's builder, no later than the first batch reading it, and
    a batch is given at most one window beyond those its rows need: consecutive batches (different
    workers) decode the windows ahead at once, not the first worker all of them in turn."""
    from atomforge.loader import _Plan
    from atomforge.window_store import MemoryStore

    url, _ = dataset
    loader = open_shards(url).loader("train", max_atoms=30, epochs=2, seed=1, chunk_rows=4, shuffle_rows=4)
    loader.planner.load_state_dict(loader.state_dict()["planner"])
    loader.planner.begin()
    items = list(_Plan(loader, MemoryStore(1.0)))
    given = [[window.key for window in item.decode] for item in items]
    keys = [key for keys in given for key in keys]
    assert len(keys) == len(set(keys)) > 4
    first_read = {}
    for item in items:
        for key, _ in item.parts:
            first_read.setdefault(key, item.index)
    assert set(first_read) <= set(keys)
    for item, keys_here in zip(items, given):
        read = {key for key, _ in item.parts}
        assert len(set(keys_here) - read) <= 1 and (set(keys_here) <= read or len(keys_here) == 1)
        assert all(first_read.get(key, item.index) >= item.index for key in keys_here)
    assert given[:3] == [[items[0].parts[0][0]], [(0, 0, 1)], [(0, 0, 2)]]  # windows 0, 1, 2 to batches 0, 1, 2


def test_window_files_are_removed(dataset, tmp_path):
    url, _ = dataset
    loader = open_shards(url).loader("train", max_atoms=30, epochs=2, num_workers=1, chunk_rows=4, shuffle_rows=4,
                                     window_dir=str(tmp_path))
    count = 0
    for _ in loader:
        count += 1
        live = list(Path(tmp_path).rglob("*.block"))
        assert len(live) <= 2 + 3  # the windows in use and those decoded ahead
    assert count > 0 and not list(Path(tmp_path).iterdir())


@pytest.mark.parametrize("workers", [1, 2])
def test_worker_batches_equal_in_process_batches_also_when_kept(dataset, workers, monkeypatch):
    """Workers hand batches over through reused shared slots: every batch is bit-identical to num_workers=0,
    and a batch kept while later ones stream past (their slots rewritten) keeps its values."""
    url, _ = dataset
    options = {"max_atoms": 30, "epochs": 2, "seed": 4, "chunk_rows": 4, "shuffle_rows": 8}
    reference = list(open_shards(url).loader("train", **options))

    def no_fallback(arrays):
        raise AssertionError("a batch left the ring although the consumer freed its slots")

    monkeypatch.setattr("atomforge.batch_ring.pack", no_fallback)  # forked workers inherit it
    kept = None
    for index, batch in enumerate(open_shards(url).loader("train", num_workers=workers, **options)):
        assert_same_batch(batch, reference[index])
        if index == 1:
            kept = batch
    assert index + 1 == len(reference) > 10
    assert_same_batch(kept, reference[1])
    monkeypatch.undo()
    held = list(open_shards(url).loader("train", num_workers=workers, **options))  # more than the ring holds
    for mine, expected in zip(held, reference, strict=True):
        assert_same_batch(mine, expected)
