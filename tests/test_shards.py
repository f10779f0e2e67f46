"""open_shards: manifest, rows and structures per split, torch DataLoader over WebDataset, visibility."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "pipeline"))
from atomforge.batch import collate  # noqa: E402
from atomforge.corpora import read_corpus  # noqa: E402
from atomforge.pipeline import PipelineConfig, run_pipeline  # noqa: E402
from atomforge.shards import open_shards  # noqa: E402
from atomforge.tasks import JMP_TASKS  # noqa: E402
from corpus_files import write_corpus  # noqa: E402


@pytest.fixture(scope="module")
def output(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shards")
    corpus = write_corpus(root / "corpus", num_files=2, per_file=5)
    config = PipelineConfig.for_corpus("ase", str(corpus), str(root / "out"), formats=("parquet", "webdataset"),
                                       shard_size=3, split_fractions=(1.0, 0.0, 0.0))
    run_pipeline(config, read_corpus("ase", str(corpus)), backend="local")
    return root / "out"


def test_manifest_and_structures_with_graphs(output):
    shards = open_shards(str(output))
    assert shards.manifest["counts"]["splits"]["train"]["rows"] == 10
    pairs = list(shards.iter_structures("train"))
    assert len(pairs) == 10
    structure, graph = pairs[0]
    assert graph.edge_index.shape[0] == 2 and graph.shifts.shape == (graph.num_edges, 3)
    assert structure.energy is not None and structure.forces.shape == (structure.num_atoms, 3)
    assert list(shards.iter_rows("val")) == []


def test_statistics_feed_task_specs(output):
    stats = open_shards(str(output)).manifest["statistics"]["ase"]
    task = JMP_TASKS["ani1x"].with_statistics(stats)
    assert task.energy_std == pytest.approx(stats["energy_std"]) and task.linear_reference


def test_torch_dataloader_over_webdataset_without_ray(output):
    import torch

    shards = open_shards(str(output))
    loader = torch.utils.data.DataLoader(shards.torch_iterable("train"), batch_size=4, collate_fn=collate,
                                         num_workers=0)
    batches = list(loader)
    assert sum(b.num_graphs for b in batches) == 10
    parquet_ids = sorted(r["system_id"] for r in shards.iter_rows("train"))
    assert sorted(sid for b in batches for sid in b.system_id) == parquet_ids
    shuffled = [r["system_id"] for r in shards.torch_iterable("train", shuffle_shards=True, seed=1)]
    assert sorted(shuffled) == parquet_ids


def test_only_listed_shards_are_visible(output, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(output, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    stray = copy / manifest["shards"][0]["path"].replace("-0000", "-9999")
    shutil.copy(copy / manifest["shards"][0]["path"], stray)  # e.g. a torn run's leftover
    rows = list(open_shards(str(copy)).iter_rows("train"))
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
