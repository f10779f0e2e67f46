"""open_shards: manifest, the loader over real pipeline output, visibility, the Parquet layout."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "pipeline"))
from atomforge.batch import collate  # noqa: E402
from atomforge.corpora import read_corpus  # noqa: E402
from atomforge.datasets import task_spec  # noqa: E402
from atomforge.pipeline import PipelineConfig, run_pipeline  # noqa: E402
from atomforge.shards import open_shards  # noqa: E402
from corpus_files import write_corpus  # noqa: E402


@pytest.fixture(scope="module")
def output(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shards")
    corpus = write_corpus(root / "corpus", num_files=2, per_file=5)
    config = PipelineConfig.for_corpus("ase", str(corpus), str(root / "out"), formats=("parquet", "webdataset"),
                                       shard_size=3, split_fractions=(1.0, 0.0, 0.0))
    run_pipeline(config, read_corpus("ase", str(corpus)), backend="local")
    return root / "out"


def test_loader_over_pipeline_output_equals_collate(output):
    shards = open_shards(str(output))
    assert shards.manifest["counts"]["splits"]["train"]["rows"] == 10
    rows = {row["system_id"]: row for row in shards.table("train").to_pylist()}
    graph = shards.manifest["graph"]
    batches = list(shards.loader("train", max_atoms=30, seed=3))
    assert sorted(sid for b in batches for sid in b.system_id) == sorted(rows)
    for batch in batches:
        reference = collate([rows[sid] for sid in batch.system_id], graph["cutoff"], graph["max_neighbors"])
        for key in reference.keys():
            value = reference[key]
            assert torch.equal(batch[key], value) if isinstance(value, torch.Tensor) else batch[key] == value, key
    assert shards.table("val").num_rows == 0
    with pytest.raises(ValueError, match="split 'val' has no rows"):
        shards.loader("val", max_atoms=30)


def test_statistics_feed_task_specs(output):
    stats = open_shards(str(output)).manifest["statistics"]["ase"]
    task = task_spec("ani1x").with_statistics(stats)
    assert task.energy_std == pytest.approx(stats["energy_std"]) and task.linear_reference


def test_only_listed_shards_are_visible(output, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(output, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    stray = copy / manifest["shards"][0]["path"].replace("-0000", "-9999")
    shutil.copy(copy / manifest["shards"][0]["path"], stray)  # e.g. a torn run's leftover
    rows = open_shards(str(copy)).table("train").to_pylist()
    assert len(rows) == 10 and len({r["system_id"] for r in rows}) == 10
    (copy / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="not a published dataset"):
        open_shards(str(copy))


def test_parquet_keeps_num_atoms_top_level(output):
    import pyarrow.parquet as pq

    shards = open_shards(str(output))
    table = pq.read_table(shards.paths("train")[0], columns=["num_atoms", "num_edges"])
    assert table.schema.names == ["num_atoms", "num_edges"] and np.all(table["num_atoms"].to_numpy() > 0)
    entry = shards.shards("train")[0]
    sizes, counts = np.unique(table["num_atoms"].to_numpy(), return_counts=True)
    assert entry["num_atoms_histogram"] == {"num_atoms": sizes.tolist(), "count": counts.tolist()}
