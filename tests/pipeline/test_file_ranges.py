"""One OC20 file over many workers: byte-range units write every frame once, with the same values as one unit."""

from __future__ import annotations

import numpy as np
import pytest
from atomforge.corpora import frame_ranges, read_corpus
from atomforge.pipeline import PipelineConfig, run_pipeline
from atomforge.shards import open_shards


@pytest.fixture(scope="module")
def oc20_pair(tmp_path_factory):
    """One uncompressed OC20 S2EF pair from the demo generator (3 relaxations, ~20 frames)."""
    from atomforge.corpora.demo import surfaces

    folder = tmp_path_factory.mktemp("oc20")
    surfaces.write_oc20(folder, np.random.default_rng(2), 3, 6, 3, compress_odd=False)
    return folder / "0.extxyz"


def build(pair, output, num_workers: int) -> dict:
    config = PipelineConfig.for_corpus("oc20", str(pair), str(output), num_workers=num_workers, shard_size=5,
                                       cutoff=6.0, max_neighbors=20)
    return run_pipeline(config, read_corpus("oc20", str(pair)), backend="local")


def rows_by_id(output) -> dict:
    shards = open_shards(str(output))
    return {row["system_id"]: row for split in ("train", "val", "test") for row in shards.table(split).to_pylist()}


@pytest.mark.slow
def test_ranges_write_every_frame_once_with_the_same_values(oc20_pair, tmp_path, monkeypatch):
    whole = build(oc20_pair, tmp_path / "whole", 1)  # a ~50 KB file: below the 1 MiB minimum, one unit
    monkeypatch.setattr(frame_ranges, "MIN_RANGE_BYTES", 2_000)  # small enough that this file splits
    split = build(oc20_pair, tmp_path / "split", 3)
    num_frames = len(open(str(oc20_pair).replace(".extxyz", ".txt")).read().splitlines())
    assert whole["counts"]["written"] == split["counts"]["written"] == num_frames
    assert split["counts"]["read"] == num_frames and split["counts"]["quarantined"] == 0
    units = {shard["path"].split("-")[-2] for shard in split["shards"]}
    assert len(units) > 1 + len({shard["path"].split("-")[-2] for shard in whole["shards"]})
    a, b = rows_by_id(tmp_path / "whole"), rows_by_id(tmp_path / "split")
    assert a.keys() == b.keys() and len(a) == num_frames
    for sid, row in a.items():
        assert row == b[sid], sid
    again = build(oc20_pair, tmp_path / "again", 3)  # same plan, same bytes
    assert [s["sha256"] for s in again["shards"]] == [s["sha256"] for s in split["shards"]]
