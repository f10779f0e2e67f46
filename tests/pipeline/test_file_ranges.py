"""One OC20 file over many workers: byte-range units write every frame once, with the same values as one unit."""

from __future__ import annotations

import numpy as np
import pytest
from atomforge.corpora import read_corpus
from atomforge.pipeline import PipelineConfig, run_pipeline
from atomforge.shards import open_shards


@pytest.fixture(scope="module")
def oc20_pair(tmp_path_factory):
    """One uncompressed OC20 S2EF pair from the demo generator (3 relaxations, ~20 frames)."""
    from atomforge.corpora.demo import surfaces

    folder = tmp_path_factory.mktemp("oc20")
    surfaces.write_oc20(folder, np.random.default_rng(2), 3, 6, 3, compress_odd=False)
    return folder / "0.extxyz"


def build(pair, output, num_workers: int, unit_bytes: int | None = None, backend: str = "local") -> dict:
    """The pair preprocessed at 6 Å / K=20 into shards of 5; `unit_bytes` None: the reader's default."""
    options = {} if unit_bytes is None else {"unit_bytes": unit_bytes}
    config = PipelineConfig.for_corpus("oc20", str(pair), str(output), num_workers=num_workers, shard_size=5,
                                       cutoff=6.0, max_neighbors=20, reader_options=options)
    return run_pipeline(config, read_corpus("oc20", str(pair), **options), backend=backend)


def rows_by_id(output) -> dict:
    shards = open_shards(str(output))
    return {row["system_id"]: row for split in ("train", "val", "test") for row in shards.table(split).to_pylist()}


@pytest.mark.slow
def test_ranges_write_every_frame_once_with_the_same_values(oc20_pair, tmp_path):
    whole = build(oc20_pair, tmp_path / "whole", 1)  # a ~50 KB file: below the 4 MiB default, one unit
    split = build(oc20_pair, tmp_path / "split", 3, unit_bytes=2_000)  # small enough that this file splits
    num_frames = len(open(str(oc20_pair).replace(".extxyz", ".txt")).read().splitlines())
    assert whole["counts"]["written"] == split["counts"]["written"] == num_frames
    assert split["counts"]["read"] == num_frames and split["counts"]["quarantined"] == 0
    units = {shard["path"].split("-")[-2] for shard in split["shards"]}
    assert len(units) > 1 + len({shard["path"].split("-")[-2] for shard in whole["shards"]})
    a, b = rows_by_id(tmp_path / "whole"), rows_by_id(tmp_path / "split")
    assert a.keys() == b.keys() and len(a) == num_frames
    for sid, row in a.items():
        assert row == b[sid], sid
    again = build(oc20_pair, tmp_path / "again", 3, unit_bytes=2_000)  # same plan, same bytes
    assert [s["sha256"] for s in again["shards"]] == [s["sha256"] for s in split["shards"]]


def shard_rows(output) -> list[tuple[str, list]]:
    """(shard path, its rows in stored order) in the manifest's shard order."""
    import pyarrow.parquet as pq

    manifest = open_shards(str(output)).manifest
    return [(s["path"], pq.read_table(f"{output}/{s['path']}").to_pylist()) for s in manifest["shards"]]


def test_the_plan_and_the_rows_do_not_depend_on_the_worker_count(oc20_pair, tmp_path):
    """Same shards (names, bytes), same rows in the same order: 1 worker, 2 workers, and 2 on Ray."""
    one = build(oc20_pair, tmp_path / "one", 1, unit_bytes=8_000)
    two = build(oc20_pair, tmp_path / "two", 2, unit_bytes=8_000)
    assert len(one["shards"]) > 3  # several units, each with its own parts
    assert [(s["path"], s["sha256"]) for s in one["shards"]] == [(s["path"], s["sha256"]) for s in two["shards"]]
    assert shard_rows(tmp_path / "one") == shard_rows(tmp_path / "two")


@pytest.mark.ray
def test_two_ray_workers_publish_the_rows_of_one_local_worker(oc20_pair, ray_cluster, tmp_path):
    one = build(oc20_pair, tmp_path / "one", 1, unit_bytes=8_000)
    on_ray = build(oc20_pair, tmp_path / "ray", 2, unit_bytes=8_000, backend="ray")
    assert [(s["path"], s["sha256"]) for s in one["shards"]] == [(s["path"], s["sha256"]) for s in on_ray["shards"]]
    assert shard_rows(tmp_path / "one") == shard_rows(tmp_path / "ray")


@pytest.mark.ray
def test_two_ray_workers_run_two_units_at_once_from_the_start(ray_cluster):
    """The executor's Ray tasks: with 2 workers the first two units overlap (Ray Data's defaults ran
    the first ~1 s one task at a time), and so do the next two."""
    from atomforge.pipeline.executor import unit_tasks

    def body(batch):
        import os
        import time

        start = time.time()
        time.sleep(0.4)
        yield {"index": batch["index"].to_pylist(), "start": [start], "end": [time.time()], "pid": [os.getpid()]}

    rows = sorted(unit_tasks(4, body, 2).iter_rows(), key=lambda row: row["start"])
    assert sorted(row["index"] for row in rows) == [0, 1, 2, 3]
    assert rows[1]["start"] < rows[0]["end"] and rows[3]["start"] < rows[2]["end"], rows
    assert len({row["pid"] for row in rows}) == 2
