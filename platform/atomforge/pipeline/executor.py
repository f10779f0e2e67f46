"""The executor: owns work-unit sharding, resumption and completion markers; runs on Ray Data or in-process.

Output layout under the output root (any fsspec URL):
    v-<fingerprint>/<split>/<dataset>-<unit>-<part>.parquet|.tar   shards (content-addressed by config)
    v-<fingerprint>/quarantine.parquet                            rejected records with reasons
    _work/v-<fingerprint>/parts/<unit>/<split>-<part>.json        a part's shards are complete
    _work/v-<fingerprint>/units/<unit>.json                       a whole work unit is complete
    manifest.json                                                 written last: publishes the shards

Resumption: a killed run leaves markers for the parts and units it finished; a rerun skips those
(a finished part's structures are still read, to know where the next part starts, but not graphed
or written) and rewrites unfinished parts to the same names with the same bytes. A shard that no
manifest lists is invisible to readers, so a torn run never exposes partial data.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict
from functools import partial

import numpy as np

from atomforge.corpora.base import BadRecord, WorkUnit
from atomforge.pipeline import manifest as manifest_mod
from atomforge.pipeline.config import SPLITS, PipelineConfig
from atomforge.pipeline.formats import EXTENSIONS, encode_parquet, encode_webdataset
from atomforge.pipeline.label_stats import StatsAccumulator
from atomforge.pipeline.stages import Validator, graph_rows, read_unit, split_of
from atomforge.storage import exists, filesystem, read_bytes, write_bytes

log = logging.getLogger(__name__)
ENCODERS = {"parquet": encode_parquet, "webdataset": encode_webdataset}


def unit_id(unit: WorkUnit) -> str:
    """Short stable name of a work unit: a hash of its key (which includes its options)."""
    return hashlib.sha256(unit.key.encode()).hexdigest()[:12]


def check_unique(units: list[WorkUnit]) -> None:
    """Raise ValueError if two work units would share markers and shard names."""
    seen: dict[str, WorkUnit] = {}
    for unit in units:
        other = seen.setdefault(unit_id(unit), unit)
        if other is not unit:
            raise ValueError(f"work units {other} and {unit} are identical: the reader listed one twice")


class Layout:
    """Paths of one config version under the output root (root has no protocol)."""

    def __init__(self, root: str, fingerprint: str) -> None:
        self.root = root
        self.version = f"v-{fingerprint}"

    def shard(self, split: str, dataset: str, uid: str, part: int, fmt: str) -> str:
        """Shard path relative to the root (as listed in the manifest)."""
        return f"{self.version}/{split}/{dataset}-{uid}-{part:04d}{EXTENSIONS[fmt]}"

    def part_marker(self, uid: str, split: str, part: int) -> str:
        return f"{self.root}/_work/{self.version}/parts/{uid}/{split}-{part:04d}.json"

    def unit_marker(self, uid: str) -> str:
        return f"{self.root}/_work/{self.version}/units/{uid}.json"

    @property
    def manifest(self) -> str:
        return f"{self.root}/manifest.json"

    @property
    def quarantine(self) -> str:
        return f"{self.version}/quarantine.parquet"


def _load_json(fs, path: str) -> dict:
    return json.loads(read_bytes(fs, path))


def _dump_json(fs, path: str, data: dict) -> None:
    write_bytes(fs, path, json.dumps(data, sort_keys=True, indent=1).encode())


def write_part(fs, layout: Layout, config: PipelineConfig, uid: str, source: str, split: str, part: int,
               structures: list) -> dict:
    """Graph and write one part (one shard per format) and its marker; a finished part is only loaded."""
    marker_path = layout.part_marker(uid, split, part)
    if exists(fs, marker_path):
        return _load_json(fs, marker_path)
    rows, bad = graph_rows(structures, config, split, source)
    bad_ids = {b.system_id for b in bad}
    stats: dict[str, StatsAccumulator] = {}
    for s in structures:
        if s.system_id not in bad_ids:
            stats.setdefault(s.dataset, StatsAccumulator()).add(s)
    shards = []
    datasets = sorted({row["dataset"] for row in rows})
    sizes, counts = np.unique([row["num_atoms"] for row in rows], return_counts=True)
    histogram = {"num_atoms": sizes.tolist(), "count": counts.tolist()}  # atom-budget samplers never open data
    for fmt in config.formats if rows else ():
        data = ENCODERS[fmt](rows)
        path = layout.shard(split, datasets[0] if len(datasets) == 1 else "mixed", uid, part, fmt)
        write_bytes(fs, f"{layout.root}/{path}", data)
        shards.append({
            "path": path, "format": fmt, "split": split, "datasets": datasets, "rows": len(rows),
            "atoms": int(sum(row["num_atoms"] for row in rows)), "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(), "num_atoms_histogram": histogram,
        })
    marker = {"split": split, "part": part, "num_input": len(structures), "num_rows": len(rows),
              "num_atoms": int(sum(row["num_atoms"] for row in rows)), "shards": shards,
              "quarantine": [asdict(b) for b in bad], "statistics": {k: v.to_json() for k, v in stats.items()}}
    _dump_json(fs, marker_path, marker)
    return marker


def process_unit(reader, unit: WorkUnit, config: PipelineConfig, storage_options: dict | None) -> Iterator[dict]:
    """Run read -> validate -> split -> graph -> write over one unit; yields progress summaries."""
    fs, root = filesystem(config.output_url, storage_options)
    layout, uid = Layout(root, config.fingerprint), unit_id(unit)
    if exists(fs, layout.unit_marker(uid)):
        done = _load_json(fs, layout.unit_marker(uid))
        yield {"num_read": done["num_read"], "num_written": sum(p["num_rows"] for p in done["parts"])}
        return
    validate = Validator(config, unit.path)
    buffers: dict[str, list] = {split: [] for split in SPLITS}
    next_part = dict.fromkeys(SPLITS, 0)
    quarantine, parts, num_read = [], [], 0

    def flush(split: str) -> dict:
        part = write_part(fs, layout, config, uid, unit.path, split, next_part[split], buffers[split])
        next_part[split] += 1
        buffers[split] = []
        parts.append(part)
        return {"num_read": part["num_input"], "num_written": part["num_rows"]}

    for record in read_unit(reader, unit):
        num_read += 1
        record = validate(record)
        if isinstance(record, BadRecord):
            quarantine.append(asdict(record))
            yield {"num_read": 1, "num_written": 0}
            continue
        try:
            split = split_of(record, config.split_fractions, config.seed)
        except ValueError as error:
            quarantine.append(asdict(BadRecord(record.system_id, unit.path, "invalid_split", str(error))))
            yield {"num_read": 1, "num_written": 0}
            continue
        buffers[split].append(record)
        if len(buffers[split]) >= config.shard_size:
            yield flush(split)
    for split in SPLITS:
        if buffers[split]:
            yield flush(split)
    _dump_json(fs, layout.unit_marker(uid), {"unit": unit.key, "num_read": num_read, "quarantine": quarantine,
                                             "parts": parts})


def _process_batch(batch, reader, units: list[WorkUnit], config: PipelineConfig, storage_options):
    """Ray Data map_batches body: a batch holds unit indices; yields one summary row per part."""
    for index in batch["index"].to_pylist():
        for summary in process_unit(reader, units[index], config, storage_options):
            yield {name: [value] for name, value in summary.items()}


def _run_ray(reader, units: list[WorkUnit], config: PipelineConfig, storage_options, on_progress) -> None:
    import ray

    dataset = ray.data.from_items([{"index": i} for i in range(len(units))], override_num_blocks=len(units))
    body = partial(_process_batch, reader=reader, units=units, config=config, storage_options=storage_options)
    # Plain tasks (not an actor pool), 1 CPU each, at most num_workers at once: the driver-side
    # from_items needs no CPU, so a pool can never starve reads or writes (INFRA.md, ray#44687).
    summaries = dataset.map_batches(body, batch_size=1, batch_format="pyarrow", num_cpus=1,
                                    compute=ray.data.TaskPoolStrategy(size=config.num_workers))
    for row in summaries.iter_rows():
        on_progress(row)


def _run_local(reader, units: list[WorkUnit], config: PipelineConfig, storage_options, on_progress) -> None:
    for unit in units:
        for summary in process_unit(reader, unit, config, storage_options):
            on_progress(summary)


def run_pipeline(config: PipelineConfig, reader, storage_options: dict | None = None, backend: str = "ray",
                 on_progress: Callable[[dict], None] | None = None, input_storage_options: dict | None = None,
                 on_plan: Callable[[int], None] | None = None) -> dict:
    """Preprocess `reader`'s corpus into shards + manifest at `config.output_url`; returns the manifest.

    A finished output with the same config is a no-op; an unfinished one resumes from its markers.
    `backend`: "ray" (Ray Data on the current `ray.init` cluster) or "local" (in-process).
    `storage_options` (endpoint, credentials) are used for I/O only, never recorded.
    """
    if backend not in ("ray", "local"):
        raise ValueError(f"backend must be 'ray' or 'local', got {backend!r}")
    fs, root = filesystem(config.output_url, storage_options)
    layout = Layout(root, config.fingerprint)
    published = manifest_mod.load_published(fs, layout.manifest)
    if published is not None:
        if published["fingerprint"] != config.fingerprint:
            raise ValueError(f"output {config.output_url} already holds a dataset built with other parameters "
                             f"(fingerprint {published['fingerprint']}, this run {config.fingerprint}); "
                             "write to a new output URL")
        log.info("output already complete (fingerprint %s): nothing to do", config.fingerprint)
        return published
    units = reader.work_units()
    check_unique(units)
    if on_plan is not None:
        on_plan(len(units))
    sources = manifest_mod.source_files(fs, f"{root}/_work/{layout.version}/sources.json", units,
                                        input_storage_options)
    run = _run_ray if backend == "ray" else _run_local
    run(reader, units, config, storage_options, on_progress or (lambda summary: None))
    unit_markers = [_load_json(fs, layout.unit_marker(unit_id(unit))) for unit in units]
    return manifest_mod.publish(fs, layout, config, reader, unit_markers, sources)
