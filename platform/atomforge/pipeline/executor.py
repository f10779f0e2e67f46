"""The executor: owns work-unit sharding, resumption and completion markers; runs on Ray Data or in-process.

Output layout under the output root (any fsspec URL):
    v-<version>/<split>/<dataset>-<unit>-<part>.parquet|.tar   shards (version: config + source bytes)
    v-<version>/quarantine.parquet                            rejected records with reasons
    _work/v-<version>/parts/<unit>/<split>-<part>.json        a part's shards are complete
    _work/v-<version>/units/<unit>.json                       a whole work unit is complete
    _work/v-<version>/ids/<unit>.jsonl                        the unit's written ids, sorted (duplicates.py)
    _work/v-<version>/quarantine/<unit>.parquet               the unit's quarantined records
    _work/sources-<stamps>.json                               the sources' sha256, once per set of stamps
    manifest.json                                             written last: publishes the shards

Resumption: a killed run leaves markers for the parts and units it finished; a rerun skips those
(a finished part's structures are still read, to know where the next part starts, but not graphed
or written) and rewrites unfinished parts to the same names with the same bytes. A shard that no
manifest lists is invisible to readers, so a torn run never exposes partial data.

Staleness: the version hashes the config with every source's path, size and sha256
(provenance.py), so a rerun over changed inputs builds a new version beside the old one (never
resuming into it) and its manifest names the changed sources; a rerun over unchanged inputs
returns the published manifest without reading anything or starting a backend.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict
from functools import partial

import numpy as np

from atomforge.corpora.base import BadRecord, WorkUnit
from atomforge.pipeline import columnar, duplicates, provenance
from atomforge.pipeline import manifest as manifest_mod
from atomforge.pipeline.config import SPLITS, PipelineConfig
from atomforge.pipeline.formats import EXTENSIONS, encode_webdataset, write_parquet
from atomforge.pipeline.label_stats import StatsAccumulator
from atomforge.pipeline.stages import Validator, read_unit, split_of
from atomforge.storage import exists, filesystem, read_bytes, write_bytes
from atomforge.structure_batch import StructureBatch

log = logging.getLogger(__name__)


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


class EmptyDatasetError(ValueError):
    """Nothing would be published: every record was quarantined or the sources hold none."""


class Layout:
    """Paths of one output version under the output root (root has no protocol)."""

    def __init__(self, root: str, version: str) -> None:
        self.root = root
        self.version = f"v-{version}"

    def shard(self, split: str, dataset: str, uid: str, part: int, fmt: str) -> str:
        """Shard path relative to the root (as listed in the manifest)."""
        return f"{self.version}/{split}/{dataset}-{uid}-{part:04d}{EXTENSIONS[fmt]}"

    def part_marker(self, uid: str, split: str, part: int) -> str:
        return f"{self.root}/_work/{self.version}/parts/{uid}/{split}-{part:04d}.json"

    def unit_marker(self, uid: str) -> str:
        return f"{self.root}/_work/{self.version}/units/{uid}.json"

    def unit_ids(self, uid: str) -> str:
        return f"{self.root}/_work/{self.version}/ids/{uid}.jsonl"

    def unit_quarantine(self, uid: str) -> str:
        return f"{self.root}/_work/{self.version}/quarantine/{uid}.parquet"

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
               batch: StructureBatch) -> dict:
    """Graph and write one part (one shard per format) and its marker; a finished part is only loaded."""
    marker_path = layout.part_marker(uid, split, part)
    if exists(fs, marker_path):
        return _load_json(fs, marker_path)
    table, good, bad = columnar.graph_part(batch, config, split)
    stats: dict[str, StatsAccumulator] = {}
    datasets = sorted(set(good.dataset.tolist()))
    for name in datasets:
        members = good if len(datasets) == 1 else good.take(np.flatnonzero(good.dataset == name))
        stats.setdefault(name, StatsAccumulator()).add_batch(members)
    shards = []
    sizes, counts = np.unique(good.num_atoms, return_counts=True)
    histogram = {"num_atoms": sizes.tolist(), "count": counts.tolist()}  # atom-budget samplers never open data
    num_atoms = int(good.num_atoms.sum())
    for fmt in config.formats if table.num_rows else ():
        data = write_parquet(table) if fmt == "parquet" else encode_webdataset(table.to_pylist())
        path = layout.shard(split, datasets[0] if len(datasets) == 1 else "mixed", uid, part, fmt)
        write_bytes(fs, f"{layout.root}/{path}", data)
        shards.append({
            "path": path, "format": fmt, "split": split, "datasets": datasets, "rows": table.num_rows,
            "atoms": num_atoms, "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(), "num_atoms_histogram": histogram,
        })
    marker = {"split": split, "part": part, "num_input": len(batch), "num_rows": table.num_rows,
              "num_atoms": num_atoms, "shards": shards,
              "quarantine": [asdict(b) for b in bad], "statistics": {k: v.to_json() for k, v in stats.items()}}
    _dump_json(fs, marker_path, marker)
    return marker


def process_unit(reader, unit: WorkUnit, config: PipelineConfig, storage_options: dict | None,
                 version: str) -> Iterator[dict]:
    """Run read -> validate -> split -> graph -> write over one unit; yields progress summaries.

    Readers yield Structures or columnar `StructureBatch`es (checked, split and buffered as whole
    arrays); either way a part holds `shard_size` structures in arrival order.
    """
    fs, root = filesystem(config.output_url, storage_options)
    layout, uid = Layout(root, version), unit_id(unit)
    if exists(fs, layout.unit_marker(uid)):
        done = _load_json(fs, layout.unit_marker(uid))
        yield {"num_read": done["num_read"], "num_written": sum(p["num_rows"] for p in done["parts"])}
        return
    validate = Validator(config, unit.path)
    buffers = {split: columnar.SplitBuffer() for split in SPLITS}
    ordinals: dict[str, list[tuple[str, int]]] = {split: [] for split in SPLITS}  # (id, read index), buffer order
    next_part = dict.fromkeys(SPLITS, 0)
    quarantine, parts, written_ids, num_read = [], [], [], 0

    def flush(split: str) -> dict:
        batch = buffers[split].pop(config.shard_size)
        part = write_part(fs, layout, config, uid, unit.path, split, next_part[split], batch)
        failed = {q["system_id"] for q in part["quarantine"]}
        taken, ordinals[split] = ordinals[split][:len(batch)], ordinals[split][len(batch):]
        written_ids.extend((sid, ordinal, split, next_part[split]) for sid, ordinal in taken if sid not in failed)
        next_part[split] += 1
        parts.append(part)
        return {"num_read": part["num_input"], "num_written": part["num_rows"]}

    for record in read_unit(reader, unit):
        if isinstance(record, StructureBatch):
            good, splits, bad, kept = columnar.admit(record, config, validate.seen)
            quarantine.extend(asdict(b) for b in bad)
            if bad:
                yield {"num_read": len(bad), "num_written": 0}
            for split in SPLITS:
                members = np.flatnonzero(splits == split)
                buffers[split].add_batch(good.take(members))
                ordinals[split].extend((str(good.system_id[i]), num_read + int(kept[i])) for i in members)
                while len(buffers[split]) >= config.shard_size:
                    yield flush(split)
            num_read += len(record)
            continue
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
        buffers[split].add_structure(record)
        ordinals[split].append((record.system_id, num_read - 1))
        if len(buffers[split]) >= config.shard_size:
            yield flush(split)
    for split in SPLITS:
        if len(buffers[split]):
            yield flush(split)
    duplicates.write_ids(fs, layout.unit_ids(uid), written_ids)
    records = quarantine + [q for part in parts for q in part["quarantine"]]
    write_bytes(fs, layout.unit_quarantine(uid), manifest_mod.quarantine_parquet(records))
    _dump_json(fs, layout.unit_marker(uid), unit_marker(unit, num_read, records, parts))


def unit_marker(unit: WorkUnit, num_read: int, records: list[dict], parts: list[dict]) -> dict:
    """A finished unit as the driver loads it: counts per quarantine reason, never one entry per record.

    The records themselves are in the unit's quarantine file; `uncounted_sources` lists files
    unreadable as a whole (a few per unit at most), `first_detail` says what the first record was.
    """
    return {"unit": unit.key, "num_read": num_read,
            "quarantine": {"count": len(records), "reasons": dict(Counter(q["reason"] for q in records)),
                           "uncounted_sources": sorted({q["source"] for q in records if q.get("uncounted")}),
                           "first_detail": records[0]["detail"] if records else None},
            "parts": [{k: v for k, v in part.items() if k != "quarantine"} for part in parts]}


def _process_batch(batch, reader, units: list[WorkUnit], config: PipelineConfig, storage_options, version: str):
    """Ray Data map_batches body: a batch holds unit indices; yields one summary row per part.

    A user error (ValueError, OSError: a bad option, an unwritable output) comes back as a row
    with `error` set, because Ray Data's own wrapper drops the exception and keeps only its text.
    """
    for index in batch["index"].to_pylist():
        try:
            for summary in process_unit(reader, units[index], config, storage_options, version):
                yield {"num_read": [summary["num_read"]], "num_written": [summary["num_written"]],
                       "error": [""], "errno": [0]}
        except (ValueError, OSError) as error:
            message = str(error) if units[index].path in str(error) else f"{units[index].path}: {error}"
            yield {"num_read": [0], "num_written": [0], "error": [message],
                   "errno": [getattr(error, "errno", None) or 0]}
            return


def unit_tasks(num_units: int, body: Callable, num_workers: int):
    """A Ray Dataset of `body` over rows {"index": 0..num_units-1}, one row per task, at most
    `num_workers` 1-CPU tasks at once; `body(pyarrow batch)` yields dict-of-list rows."""
    import ray

    dataset = ray.data.from_items([{"index": i} for i in range(num_units)], override_num_blocks=num_units)
    # One operator whose outputs are a few summary rows, so no resources to share between operators
    # and no output queue worth throttling. With Ray Data's defaults, 2 workers on one 5,000-frame
    # file ran one unit at a time for the first ~1 s (the reservation held back half the CPUs) and
    # again later in the run (downstream-capacity backpressure against the driver reading the
    # rows). Set on this dataset's own copy of the context only.
    dataset.context.op_resource_reservation_enabled = False
    dataset.context.downstream_capacity_backpressure_ratio = None
    # Plain tasks (not an actor pool), 1 CPU each, at most num_workers at once: the driver-side
    # from_items needs no CPU, so a pool can never starve reads or writes (INFRA.md, ray#44687).
    return dataset.map_batches(body, batch_size=1, batch_format="pyarrow", num_cpus=1,
                               compute=ray.data.TaskPoolStrategy(size=num_workers))


def _run_ray(reader, units: list[WorkUnit], config: PipelineConfig, storage_options, version: str,
             on_progress) -> None:
    body = partial(_process_batch, reader=reader, units=units, config=config, storage_options=storage_options,
                   version=version)
    for row in unit_tasks(len(units), body, config.num_workers).iter_rows():
        if row["error"]:
            raise OSError(row["errno"], row["error"]) if row["errno"] else ValueError(row["error"])
        on_progress(row)


def _run_local(reader, units: list[WorkUnit], config: PipelineConfig, storage_options, version: str,
               on_progress) -> None:
    for unit in units:
        for summary in process_unit(reader, unit, config, storage_options, version):
            on_progress(summary)


def published_state(config: PipelineConfig, reader, storage_options: dict | None = None,
                    input_storage_options: dict | None = None) -> tuple[dict | None, list[dict], list[dict]]:
    """(published manifest or None, the sources' current stamps, changes since the published version).

    Raises ValueError when the output holds a dataset built with other parameters.
    """
    fs, root = filesystem(config.output_url, storage_options)
    published = manifest_mod.load_published(fs, f"{root}/{manifest_mod.MANIFEST_NAME}")
    current = provenance.stamps(reader.source_paths(), input_storage_options)
    if published is None:
        return None, current, []
    if published["fingerprint"] != config.fingerprint:
        raise ValueError(f"output {config.output_url} already holds a dataset built with other parameters "
                         f"(fingerprint {published['fingerprint']}, this run {config.fingerprint}); "
                         "write to a new output URL")
    return published, current, provenance.changed_sources(published["sources"], current, input_storage_options)


def up_to_date(config: PipelineConfig, reader, storage_options: dict | None = None,
               input_storage_options: dict | None = None) -> dict | None:
    """The published manifest if this config over the sources as they are now is built, else None.

    Cheap (a listing and one metadata call per source; a re-hash only for a touched file), so an
    entry script asks before starting Ray.
    """
    published, _, changes = published_state(config, reader, storage_options, input_storage_options)
    return published if published is not None and not changes else None


def run_pipeline(config: PipelineConfig, reader, storage_options: dict | None = None, backend: str = "ray",
                 on_progress: Callable[[dict], None] | None = None, input_storage_options: dict | None = None,
                 on_plan: Callable[[int], None] | None = None, allow_empty: bool = False) -> dict:
    """Preprocess `reader`'s corpus into shards + manifest at `config.output_url`; returns the manifest.

    A finished output with the same config and unchanged sources is a no-op; changed sources build
    a new version (its manifest lists `changed_sources`); an unfinished one resumes from its markers.
    `backend`: "ray" (Ray Data on the current `ray.init` cluster) or "local" (in-process).
    Raises EmptyDatasetError when nothing would be written, unless `allow_empty`.
    `storage_options` (endpoint, credentials) are used for I/O only, never recorded.
    """
    if backend not in ("ray", "local"):
        raise ValueError(f"backend must be 'ray' or 'local', got {backend!r}")
    published, current, changes = published_state(config, reader, storage_options, input_storage_options)
    if published is not None and not changes:
        log.info("output already complete (fingerprint %s, sources unchanged): nothing to do", config.fingerprint)
        return published
    if changes:
        log.warning("sources changed since the published version %s: %s; building a new version",
                    published.get("version"), ", ".join(f"{c['path']} ({c['change']})" for c in changes))
    fs, root = filesystem(config.output_url, storage_options)
    sources = provenance.with_checksums(fs, f"{root}/_work", current, input_storage_options)
    layout = Layout(root, provenance.version(config.fingerprint, sources))
    units = reader.work_units()  # a function of the inputs only: the same plan for any num_workers
    check_unique(units)
    if on_plan is not None:
        on_plan(len(units))
    run = _run_ray if backend == "ray" else _run_local
    run(reader, units, config, storage_options, layout.version.removeprefix("v-"), on_progress or (lambda s: None))
    markers = [_load_json(fs, layout.unit_marker(unit_id(unit))) for unit in units]
    _check_not_empty(config, markers, allow_empty)
    if provenance.stamps([s["path"] for s in current], input_storage_options) != current:
        raise ValueError(f"sources under {config.input_url} changed while they were read; run again")
    pairs = duplicates.find(fs, [layout.unit_ids(unit_id(unit)) for unit in units])
    duplicates.remove(fs, root, markers, pairs)
    previous = {"version": published.get("version"), "changed_sources": changes} if published is not None else None
    return manifest_mod.publish(fs, layout, config, reader, markers, sources,
                                [layout.unit_quarantine(unit_id(unit)) for unit in units],
                                duplicates.quarantine_records(pairs, [u.path for u in units]), previous)


def _check_not_empty(config: PipelineConfig, markers: list[dict], allow_empty: bool) -> None:
    """EmptyDatasetError naming what was quarantined when no row would be published."""
    if allow_empty or any(part["num_rows"] for marker in markers for part in marker["parts"]):
        return
    reasons = Counter()
    for marker in markers:
        reasons.update(marker["quarantine"]["reasons"])
    summary = ", ".join(f"{reason} {n}" for reason, n in sorted(reasons.items())) or "nothing"
    first = next((m["quarantine"]["first_detail"] for m in markers if m["quarantine"]["first_detail"]), None)
    raise EmptyDatasetError(
        f"{config.input_url}: no structure to publish ({sum(m['num_read'] for m in markers)} read; "
        f"quarantined: {summary}{f'; first: {first}' if first else ''}). Fix the input, or pass --allow-empty "
        "(allow_empty=True) to publish an empty dataset")
