"""Training data: task sources from shard manifests, and the shard loaders that feed a worker.

A task's `url` is a shard dataset root with `manifest.json` (the pipeline's contract): its Parquet
shards per split (with the sizes and checksums the loader verifies), per-split row counts (the N_t
of temperature sampling) and the dataset's statistics (linear reference, energy mean/std, force
RMS), which replace the recipe's defaults. Training batches come from one `ShardLoader` whose
planner is the temperature `TaskMixer` over every task's stream; validation from one unshuffled
loader per task over the first `val_max_structures` rows of its val split.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch_geometric.data import Batch

from atomforge.loader import AtomBudgetPlanner, ShardLoader, Source
from atomforge.pipeline.config import SPLITS
from atomforge.shards import ShardSet, open_shards
from atomforge.streams import RowStream, ShardFile
from atomforge.tasks import TaskSpec
from atomforge.training.config import DataConfig
from atomforge.training.mixer import TaskMixer, mixing_probabilities


@dataclass(frozen=True)
class TaskSource:
    """What a manifest says about one task: its shard files per split and statistics."""

    name: str
    url: str
    files: Mapping[str, tuple[ShardFile, ...]]  # split -> Parquet shards holding this task's rows
    statistics: Mapping | None
    energy_convention: str | None
    graph: Mapping  # the manifest's graph block: cutoff, skin, max_neighbors, k_store, tie_rule
    shards: ShardSet

    def num_rows(self, split: str) -> int:
        return sum(f.num_rows for f in self.files.get(split, ()))


def open_source(name: str, url: str) -> TaskSource:
    """The Parquet shards and statistics of dataset `name` in the published dataset at `url`."""
    if not url:
        raise ValueError(f"task {name!r} has no data URL: pass --data {name}=URL or set it in the recipe")
    shard_set = open_shards(url)
    manifest = shard_set.manifest
    files = {split: shard_set.files(split, name) for split in SPLITS}
    files = {split: f for split, f in files.items() if f}
    if not files:
        raise ValueError(f"task {name!r}: {url} holds no Parquet shards of dataset {name!r}; "
                         f"datasets there: {sorted(manifest.get('statistics', {}))}")
    convention = manifest.get("datasets", {}).get(name, {}).get("energy_convention")
    return TaskSource(name, url, files, manifest.get("statistics", {}).get(name), convention,
                      manifest.get("graph", {}), shard_set)


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


def _source(task: TaskSource, split: str, spec: TaskSpec, index: int) -> Source:
    return task.shards.source(split, dataset=task.name, cutoff=spec.cutoff, max_neighbors=spec.max_neighbors,
                              task=index)


def train_loader(config: DataConfig, sources: Mapping[str, TaskSource], specs: Mapping[str, TaskSpec], seed: int,
                 rank: int, world: int, micro_batches: int, pin_memory: bool = False) -> ShardLoader:
    """Worker `rank` of `world`'s endless training batches: the temperature mixer over every task's stream.

    Batch i is micro-batch i % micro_batches of step i // micro_batches (the mixer's seeding).
    """
    names = list(config.tasks)
    loader_sources = [_source(sources[t], config.train_split, specs[t], i) for i, t in enumerate(names)]
    streams = {t: RowStream(s.files, seed=seed, source=i, rank=rank, world=world, chunk_rows=config.chunk_rows,
                            shuffle_rows=config.shuffle_rows) for i, (t, s) in enumerate(zip(names, loader_sources))}
    sizes = {t: sources[t].num_rows(config.train_split) for t in names}
    probabilities = mixing_probabilities(sizes, config.temperature, {t: d.weight for t, d in config.tasks.items()})
    mixer = TaskMixer(streams, probabilities, seed, rank, config.max_atoms, config.max_structures, micro_batches)
    return ShardLoader(loader_sources, mixer, num_workers=config.num_workers, pin_memory=pin_memory)


def validation_loaders(config: DataConfig, sources: Mapping[str, TaskSource], specs: Mapping[str, TaskSpec],
                       rank: int, world: int) -> dict[str, ShardLoader]:
    """Per task: the first `val_max_structures` rows of its val split, unshuffled, this rank's chunks of
    them (tasks without val rows, or with validation off, have none)."""
    out = {}
    for index, name in enumerate(config.tasks):
        if config.val_max_structures <= 0 or not sources[name].num_rows(config.val_split):
            continue
        source = _source(sources[name], config.val_split, specs[name], index)
        stream = RowStream(source.files, seed=0, source=0, rank=rank, world=world, chunk_rows=config.chunk_rows,
                           shuffle=False, limit=config.val_max_structures)
        if stream.epoch_rows:
            out[name] = ShardLoader([source], AtomBudgetPlanner(stream, config.max_atoms, config.max_structures))
    return out


def batch_to(batch: Batch, device: torch.device) -> Batch:
    """Move a PyG batch to `device` (Ray's prepare_data_loader does not: ray#46064); `non_blocking`
    copies overlap the step when the loader pinned the batch."""
    return batch.to(device, non_blocking=True) if device.type != "cpu" else batch
