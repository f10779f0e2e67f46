"""Training data: task sources from shard manifests, the rows each role reads, statistics, and the loaders.

A task's `url` is a shard dataset root with `manifest.json` (the pipeline's contract): its Parquet
shards per split (with the sizes and checksums the loader verifies), per-split row counts (the N_t
of temperature sampling) and the dataset's statistics (linear reference, energy mean/std, force
RMS). `task_splits` says which rows train, validate and test: the shards' own splits, or a seeded
`Subset` of exact counts from one pool split (fine-tuning sets). `resolve_spec` gives the task's
normalisers: the manifest's, fitted on the training rows used (`label_stats.StatsAccumulator`, the
pipeline's own fitter, over Arrow columns) or the pretrained model's. Training batches come from one
`ShardLoader` whose planner runs this rank's lanes of the global batch (`training.lanes`), each the
temperature `TaskMixer` over its own stream of every task (or, batching "epochs", epoch-aligned
batches of one task); validation and test from unshuffled one-epoch loaders.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from atomforge.artifacts.pretrained import with_model_statistics
from atomforge.loader import AtomBudgetPlanner, ShardLoader
from atomforge.pipeline.config import SPLITS
from atomforge.pipeline.label_stats import StatsAccumulator
from atomforge.shard_reader import Source
from atomforge.shards import ShardSet, open_shards
from atomforge.storage import read_bytes
from atomforge.streams import RowStream, ShardFile
from atomforge.tasks import TaskSpec, labels_in
from atomforge.training.config import DataConfig, Subset, TaskData
from atomforge.training.lanes import LanePlanner
from atomforge.training.mixer import TaskMixer, mixing_probabilities

ROLES = ("train", "val", "test")
_STATS_COLUMNS = ["num_atoms", "atomic_numbers", "energy", "forces", "stress"]


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


@dataclass(frozen=True)
class Split:
    """The rows one role reads: the shard files of split `name`, all their rows or a sorted subset."""

    name: str
    files: tuple[ShardFile, ...]
    rows: np.ndarray | None = None  # indices into the files' rows in manifest order; None = all

    @property
    def num_rows(self) -> int:
        return sum(f.num_rows for f in self.files) if self.rows is None else len(self.rows)


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


def task_splits(source: TaskSource, data: DataConfig, task: TaskData) -> dict[str, Split]:
    """role -> Split: the shards' train / val / test splits, or `task.subset`'s seeded draw from its pool."""
    if task.subset is None:
        named = {"train": data.train_split, "val": data.val_split, "test": "test"}
        return {role: Split(split, source.files[split]) for role, split in named.items() if split in source.files}
    return subset_splits(source, task.subset)


def subset_splits(source: TaskSource, subset: Subset) -> dict[str, Split]:
    """num_train, num_val, then num_test (or the rest) rows of a seeded permutation of the pool split."""
    files = source.files.get(subset.pool, ())
    total = sum(f.num_rows for f in files)
    needed = subset.num_train + subset.num_val + 1
    if total < needed:
        raise ValueError(f"task {source.name!r}: {source.url} split {subset.pool!r} has {total} structures, the "
                         f"subset needs at least {needed} (num_train {subset.num_train} + num_val {subset.num_val} "
                         "+ 1 test)")
    order = np.random.default_rng(subset.seed).permutation(total)
    cut = subset.num_train + subset.num_val
    test = order[cut:] if subset.num_test is None else order[cut:cut + subset.num_test]
    parts = {"train": order[:subset.num_train], "val": order[subset.num_train:cut], "test": test}
    return {role: Split(subset.pool, files, np.sort(rows)) for role, rows in parts.items()}


def check_graph(spec: TaskSpec, source: TaskSource) -> None:
    """ValueError when the stored graphs cannot give the spec's graph: built at a smaller cutoff or
    with fewer stored neighbours (K_store) than the spec's K (pairs would be missing silently)."""
    stored_cutoff, k_store = source.graph.get("cutoff"), source.graph.get("k_store")
    if stored_cutoff is not None and float(stored_cutoff) < spec.cutoff:
        raise ValueError(f"task {spec.name!r}: {source.url} stores graphs built at {stored_cutoff} Å, but the task "
                         f"(and model) use {spec.cutoff} Å; re-run preprocessing with --cutoff {spec.cutoff}")
    if k_store is not None and spec.max_neighbors is not None and int(k_store) < spec.max_neighbors:
        raise ValueError(f"task {spec.name!r}: {source.url} stores {k_store} neighbours per atom, fewer than the "
                         f"task's max_neighbors {spec.max_neighbors}; re-run preprocessing with a larger --max-neighbors")


def resolve_spec(spec: TaskSpec, source: TaskSource) -> TaskSpec:
    """The recipe's spec with the manifest's statistics (normalisers, linear reference, labels)."""
    check_graph(spec, source)
    return spec if source.statistics is None else spec.with_statistics(source.statistics)


def task_spec(task: TaskData, source: TaskSource, train: Split, pretrained=None) -> TaskSpec:
    """The spec a run trains `task` with, its statistics as `task.statistics` says (config.TaskData).

    pretrained: the init model (`artifacts.pretrained.Pretrained`) for statistics "pretrained", which
    also keeps the pretrained task's graph (cutoff, K): the task continues exactly as it was trained."""
    if task.statistics == "manifest":
        return resolve_spec(task.spec, source)
    if task.statistics == "train":
        check_graph(task.spec, source)
        given = kept_reference(task, pretrained) if task.reference == "pretrained" else None
        return task.spec.with_statistics(fit_statistics(source, train, task.reference_fit, given))
    spec = pretrained_spec(task, source, pretrained)
    check_graph(spec, source)
    return spec


def pretrained_spec(task: TaskData, source: TaskSource, pretrained) -> TaskSpec:
    """The recipe's loss weights on the pretrained task's graph settings and statistics (its weights' buffers)."""
    name = task.spec.name
    if pretrained is None or name not in pretrained.specs:
        tasks = [] if pretrained is None else list(pretrained.specs)
        raise ValueError(f"task {name!r}: statistics 'pretrained' needs a pretrained task {name!r} "
                         f"(init.source tasks: {tasks})")
    kept = pretrained.specs[name]
    labels = labels_in(source.statistics) if source.statistics is not None else task.spec.labels
    stats = pretrained.model.config_dict()["task_statistics"][name]
    return dataclasses.replace(with_model_statistics(task.spec, stats), cutoff=kept.cutoff,
                               max_neighbors=kept.max_neighbors, labels=labels)


def kept_reference(task: TaskData, pretrained) -> dict[int, float]:
    """The per-element linear reference (eV per atom) of the init model's task `task.reference_source`."""
    name = task.reference_source
    if pretrained is None or name not in pretrained.specs:
        tasks = [] if pretrained is None else list(pretrained.specs)
        raise ValueError(f"task {task.spec.name!r}: reference 'pretrained' needs a pretrained task {name!r} "
                         f"(init.source tasks: {tasks}; set reference_task)")
    reference = dict(pretrained.specs[name].linear_reference)
    if not reference:
        raise ValueError(f"task {task.spec.name!r}: the pretrained task {name!r} has no linear reference to keep")
    return reference


def fit_statistics(source: TaskSource, split: Split, reference: str = "least_squares",
                   given: Mapping[int, float] | None = None) -> dict:
    """The statistics block (`label_stats` keys) of exactly the rows of `split`, fitted columnar
    (`given`: a fixed linear reference, the mean and spread fitted around it)."""
    tables = []
    fs = source.shards.fs
    for file in split.files:
        tables.append(pq.read_table(io.BytesIO(read_bytes(fs, file.path)), columns=_STATS_COLUMNS))
    table = pa.concat_tables(tables) if tables else None
    if table is None or table.num_rows == 0:
        raise ValueError(f"task {source.name!r}: no rows to fit statistics on in split {split.name!r}")
    if split.rows is not None:
        table = table.take(pa.array(split.rows))
    try:
        return StatsAccumulator().add_table(table).finalize(reference, given)
    except ValueError as error:
        raise ValueError(f"task {source.name!r}: {source.url} split {split.name!r}: {error}") from error


def _source(task: TaskSource, split: Split, spec: TaskSpec, index: int) -> Source:
    return task.shards.source(split.name, dataset=task.name, cutoff=spec.cutoff, max_neighbors=spec.max_neighbors,
                              task=index)


def train_loader(config: DataConfig, sources: Mapping[str, TaskSource], splits: Mapping[str, Mapping[str, Split]],
                 specs: Mapping[str, TaskSpec], index: Mapping[str, int], seed: int, lanes: Sequence[int],
                 num_lanes: int, micro_batches: int, pin_memory: bool = False) -> tuple[ShardLoader, dict[str, float]]:
    """The endless training batches of the lanes `lanes` (of `num_lanes`: `training.lanes`) and each task's
    sampling probability.

    Per lane, batching "mixed": the temperature mixer over every task's stream (the lane's batch i is
    micro-batch i % micro_batches of step i // micro_batches, the mixer's seeding); "epochs": one
    task's rows in batches that end with each epoch. `index`: task name -> the model's task id its
    graphs carry.
    """
    names = list(config.tasks)
    loader_sources = [_source(sources[t], splits[t]["train"], specs[t], index[t]) for t in names]
    probabilities = (task_probabilities(config, {t: splits[t]["train"].num_rows for t in names})
                     if config.batching == "mixed" else {names[0]: 1.0})
    planners = {}
    for k, lane in enumerate(lanes):
        streams = {t: RowStream(s.files, seed=seed, source=i, rank=lane, world=num_lanes, chunk_rows=config.chunk_rows,
                                shuffle_rows=config.shuffle_rows, rows=splits[t]["train"].rows, slot=k * len(names) + i)
                   for i, (t, s) in enumerate(zip(names, loader_sources))}
        if config.batching == "epochs":
            planners[lane] = AtomBudgetPlanner(streams[names[0]], config.max_atoms, config.max_structures, epochs=None)
        else:
            planners[lane] = TaskMixer(streams, probabilities, seed, lane, config.max_atoms, config.max_structures,
                                       micro_batches)
    loader = ShardLoader(loader_sources * len(lanes), LanePlanner(planners, micro_batches),
                         num_workers=config.num_workers, pin_memory=pin_memory)
    return loader, probabilities


def task_probabilities(config: DataConfig, sizes: Mapping[str, int]) -> dict[str, float]:
    """Each task's share of the mixer's draws, from its training rows `sizes`.

    Without replay tasks: temperature sampling (or every task's explicit weight). With them, replay
    task r has weight w_r against the other tasks' total of 1, which they share among themselves by
    temperature (or their own weights): p_r = w_r / (1 + Σw), p_d = q_d / (1 + Σw). So
    `--replay oc20=URL:0.5` makes a third of the structures oc20's, whatever the downstream sizes."""
    replay = {t: float(config.tasks[t].weight) for t in sizes if config.tasks[t].replay}
    if not replay:
        return mixing_probabilities(sizes, config.temperature, {t: config.tasks[t].weight for t in sizes})
    rest = {t: n for t, n in sizes.items() if t not in replay}
    if not rest:
        raise ValueError(f"tasks {sorted(replay)} are all replay: nothing to fine-tune on")
    shares = mixing_probabilities(rest, config.temperature, {t: config.tasks[t].weight for t in rest})
    total = 1.0 + sum(replay.values())
    return {t: (replay[t] if t in replay else shares[t]) / total for t in sizes}


def split_loader(source: TaskSource, split: Split, spec: TaskSpec, index: int, config: DataConfig, rank: int = 0,
                 world: int = 1, limit: int | None = None) -> ShardLoader | None:
    """One unshuffled pass over this rank's chunks of `split` (its first `limit` rows), or None when it has none."""
    loader_source = _source(source, split, spec, index)
    stream = RowStream(loader_source.files, seed=0, source=0, rank=rank, world=world, chunk_rows=config.chunk_rows,
                       shuffle=False, limit=limit, rows=split.rows)
    if not stream.epoch_rows:
        return None
    return ShardLoader([loader_source], AtomBudgetPlanner(stream, config.max_atoms, config.max_structures))


def validation_loaders(config: DataConfig, sources: Mapping[str, TaskSource], splits: Mapping[str, Mapping[str, Split]],
                       specs: Mapping[str, TaskSpec], index: Mapping[str, int], rank: int,
                       world: int) -> dict[str, ShardLoader]:
    """Per task: its validation rows (a subset's all, else the first `val_max_structures` of the val split),
    unshuffled, this rank's chunks of them (tasks without val rows, or with validation off, have none)."""
    out = {}
    for name, task in config.tasks.items():
        split = splits[name].get("val")
        if config.val_max_structures <= 0 or split is None or not split.num_rows:
            continue
        limit = None if task.subset is not None else config.val_max_structures
        loader = split_loader(sources[name], split, specs[name], index[name], config, rank, world, limit)
        if loader is not None:
            out[name] = loader
    return out
