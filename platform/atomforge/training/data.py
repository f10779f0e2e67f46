"""Training data: task sources from shard manifests, per-worker streams and the mixer, rows -> PyG batches.

A task's `url` is a shard dataset root with `manifest.json` (the pipeline's contract): its Parquet
shards for a split, per-split row counts (the N_t of temperature sampling) and the dataset's
statistics (linear reference, energy mean/std, force RMS), which replace the recipe's defaults.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch_geometric.data import Batch

from atomforge.batch import structure_data
from atomforge.pipeline.config import SPLITS
from atomforge.shards import open_shards
from atomforge.storage import filesystem
from atomforge.tasks import TaskSpec
from atomforge.training.config import DataConfig
from atomforge.training.mixer import TaskMixer, mixing_probabilities
from atomforge.training.streams import ShardFile, TaskStream, read_rows


@dataclass(frozen=True)
class TaskSource:
    """What a manifest says about one task: its shard files per split and statistics."""

    name: str
    url: str
    files: Mapping[str, tuple[ShardFile, ...]]  # split -> Parquet shards holding this task's rows
    statistics: Mapping | None
    energy_convention: str | None
    graph: Mapping  # the manifest's graph block: cutoff, skin, max_neighbors, k_store, tie_rule

    def num_rows(self, split: str) -> int:
        return sum(f.num_rows for f in self.files.get(split, ()))


def open_source(name: str, url: str) -> TaskSource:
    """The Parquet shards and statistics of dataset `name` in the published dataset at `url`."""
    if not url:
        raise ValueError(f"task {name!r} has no data URL: pass --data {name}=URL or set it in the recipe")
    shard_set = open_shards(url)
    manifest = shard_set.manifest
    files: dict[str, tuple[ShardFile, ...]] = {}
    for split in SPLITS:
        entries = shard_set.shards(split, "parquet", name)
        mixed = [e["path"] for e in entries if len(e["datasets"]) > 1]
        if mixed:
            raise ValueError(f"task {name!r}: shards {mixed} mix datasets; train needs one dataset per shard")
        if entries:
            files[split] = tuple(ShardFile(f"{shard_set.root}/{e['path']}", int(e["rows"])) for e in entries)
    if not files:
        raise ValueError(f"task {name!r}: {url} holds no Parquet shards of dataset {name!r}; "
                         f"datasets there: {sorted(manifest.get('statistics', {}))}")
    convention = manifest.get("datasets", {}).get(name, {}).get("energy_convention")
    return TaskSource(name, url, files, manifest.get("statistics", {}).get(name), convention, manifest.get("graph", {}))


def resolve_spec(spec: TaskSpec, source: TaskSource) -> TaskSpec:
    """The recipe's spec with the manifest's statistics (normalisers, linear reference, labels).

    Raises ValueError when the stored graphs cannot give the spec's graph: built at a smaller cutoff
    or with fewer stored neighbours (K_store) than the spec's K (pairs would be missing silently)."""
    stored_cutoff, k_store = source.graph.get("cutoff"), source.graph.get("k_store")
    if stored_cutoff is not None and float(stored_cutoff) < spec.cutoff:
        raise ValueError(f"task {spec.name!r}: {source.url} stores graphs built at {stored_cutoff} Å, but the task "
                         f"(and model) use {spec.cutoff} Å; re-run preprocessing with --cutoff {spec.cutoff}")
    if k_store is not None and spec.max_neighbors is not None and int(k_store) < spec.max_neighbors:
        raise ValueError(f"task {spec.name!r}: {source.url} stores {k_store} neighbours per atom, fewer than the "
                         f"task's max_neighbors {spec.max_neighbors}; re-run preprocessing with a larger --max-neighbors")
    if source.statistics is None:
        return spec
    return spec.with_statistics(source.statistics)


def build_mixer(config: DataConfig, sources: Mapping[str, TaskSource], seed: int, rank: int, world: int) -> TaskMixer:
    """The mixer of worker `rank` of `world` over every task's train split."""
    sizes, streams = {}, {}
    for index, (name, task) in enumerate(config.tasks.items()):
        source = sources[name]
        files = source.files.get(config.train_split, ())
        sizes[name] = source.num_rows(config.train_split)
        fs, _ = filesystem(task.url)
        streams[name] = TaskStream(fs, files, seed=seed, task_index=index, rank=rank, world=world,
                                   chunk_rows=config.chunk_rows, shuffle_rows=config.shuffle_rows)
    probabilities = mixing_probabilities(sizes, config.temperature, {t: d.weight for t, d in config.tasks.items()})
    return TaskMixer(streams, probabilities, seed, rank, config.max_atoms, config.max_structures)


def validation_rows(config: DataConfig, sources: Mapping[str, TaskSource], rank: int, world: int
                    ) -> dict[str, list[dict]]:
    """Each task's first `val_max_structures` validation rows, dealt to ranks (empty where no val split)."""
    out = {}
    for name, task in config.tasks.items():
        files = sources[name].files.get(config.val_split, ())
        fs, _ = filesystem(task.url)
        out[name] = read_rows(fs, files, config.val_max_structures, rank, world) if files else []
    return out


def to_batch(items: Sequence[tuple[str, dict]], specs: Mapping[str, TaskSpec], task_index: Mapping[str, int]) -> Batch:
    """A PyG Batch of (task name, shard row) pairs, each graph re-filtered at its task's cutoff and K."""
    graphs = [
        structure_data(row, specs[task].cutoff, specs[task].max_neighbors, task_index[task])
        for task, row in items
    ]
    return Batch.from_data_list(graphs)


def batch_to(batch: Batch, device: torch.device) -> Batch:
    """Move a PyG batch to `device` (Ray's prepare_data_loader does not: ray#46064)."""
    return batch.to(device, non_blocking=True) if device.type != "cpu" else batch
