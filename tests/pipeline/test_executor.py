"""The executor in-process: counts, graphs, checksums, determinism, no-op reruns, resumption, quarantine."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from atomforge.corpora import read_corpus
from atomforge.corpora.base import BadRecord, WorkUnit
from atomforge.graph import neighbor_graph
from atomforge.pipeline import PipelineConfig, run_pipeline
from atomforge.schema import Structure, from_ase, from_row, graph_from_row
from atomforge.shards import open_shards
from corpus_files import molecules, tar_rows, write_bad_files


def build(corpus_dir: Path, output: Path, reader=None, **changes) -> dict:
    values = {"formats": ("parquet", "webdataset"), "shard_size": 4, "split_fractions": (0.5, 0.25, 0.25)} | changes
    config = PipelineConfig.for_corpus("ase", str(corpus_dir), str(output), **values)
    return run_pipeline(config, reader or read_corpus("ase", str(corpus_dir), group_by="frame"), backend="local")


@pytest.fixture(scope="module")
def built(corpus_dir, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("out") / "shards"
    build(corpus_dir, output)
    return output


def test_counts_reconcile_and_splits_cover_everything(built):
    manifest = open_shards(str(built)).manifest
    counts = manifest["counts"]
    assert counts["read"] == 24 and counts["written"] == 24 and counts["quarantined"] == 0
    assert sum(s["rows"] for s in counts["splits"].values()) == counts["written"]
    for fmt in ("parquet", "webdataset"):
        assert sum(s["rows"] for s in manifest["shards"] if s["format"] == fmt) == counts["written"]
    assert all(counts["splits"][name]["rows"] > 0 for name in ("train", "val", "test"))
    assert len(manifest["sources"]) == 4 and all(len(s["sha256"]) == 64 and s["bytes"] > 0 for s in manifest["sources"])
    stats = manifest["statistics"]["ase"]
    assert set(stats) >= {"linear_reference", "energy_mean", "energy_std", "force_rms", "num_atoms_histogram"}
    assert manifest["graph"] == {"cutoff": 6.0, "skin": 0.5, "storage_radius": 6.5, "max_neighbors": 30, "k_store": 40,
                                 "tie_rule": "strict", "storage_tie_rule": "strict",
                                 "ordering": "dst, distance, src, shift"}


def test_stored_graphs_equal_a_direct_neighbor_graph(built):
    shards = open_shards(str(built))
    seen = 0
    for split in ("train", "val", "test"):
        for row in shards.table(split).to_pylist():
            structure, graph = from_row(row), graph_from_row(row)
            direct = neighbor_graph(structure, 6.0, 40, skin=0.5, tie_rule="strict")
            np.testing.assert_array_equal(graph.edge_index, direct.edge_index)
            np.testing.assert_array_equal(graph.shifts, direct.shifts)
            seen += 1
    assert seen == 24


def test_checksums_verify_and_detect_corruption(built, tmp_path):
    shards = open_shards(str(built))
    assert shards.verify() == []
    for shard in shards.manifest["shards"]:
        assert hashlib.sha256((built / shard["path"]).read_bytes()).hexdigest() == shard["sha256"]
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(built, copy)
    victim = copy / shards.manifest["shards"][0]["path"]
    victim.write_bytes(victim.read_bytes()[:-1] + b"\0")
    assert open_shards(str(copy)).verify() == [shards.manifest["shards"][0]["path"]]


def test_parquet_and_webdataset_hold_the_same_rows(built):
    shards = open_shards(str(built))
    for split in ("train", "val", "test"):
        from_parquet = shards.table(split).to_pylist()
        from_tar = tar_rows(shards, split)
        assert len(from_parquet) == len(from_tar) > 0
        for a, b in zip(from_parquet, from_tar):
            assert a.keys() == b.keys()
            for key in a:
                if isinstance(a[key], float):
                    assert a[key] == b[key]  # float64 energies survive JSON exactly
                else:
                    np.testing.assert_array_equal(np.asarray(a[key], dtype=object), np.asarray(b[key], dtype=object))


def test_same_input_and_config_give_identical_shards(built, corpus_dir, tmp_path):
    again = build(corpus_dir, tmp_path / "again")
    first = open_shards(str(built)).manifest
    assert [(s["path"], s["sha256"]) for s in again["shards"]] == [(s["path"], s["sha256"]) for s in first["shards"]]
    assert again["statistics"] == first["statistics"]


def test_rerun_of_a_finished_job_is_a_no_op(built, corpus_dir):
    before = {p: p.stat().st_mtime_ns for p in built.rglob("*")}
    manifest = build(corpus_dir, built)
    assert manifest == open_shards(str(built)).manifest
    assert {p: p.stat().st_mtime_ns for p in built.rglob("*")} == before


def test_other_parameters_refuse_a_published_output(built, corpus_dir):
    with pytest.raises(ValueError, match="other parameters"):
        build(corpus_dir, built, cutoff=5.0)


class CrashingReader:
    """Wraps a reader; raises after `limit` records, like a worker killed mid-unit."""

    def __init__(self, reader, limit: int) -> None:
        self.reader, self.limit, self.count = reader, limit, 0
        self.name, self.energy_convention = reader.name, reader.energy_convention

    def work_units(self):
        return self.reader.work_units()

    def source_paths(self):
        return self.reader.source_paths()

    def read(self, unit):
        for record in self.reader.read(unit):
            self.count += 1
            if self.count > self.limit:
                raise RuntimeError("killed")
            yield record


def test_resume_after_a_crash_skips_finished_parts_and_matches_a_clean_run(built, corpus_dir, tmp_path):
    output = tmp_path / "resumed"
    with pytest.raises(RuntimeError, match="killed"):
        build(corpus_dir, output, CrashingReader(read_corpus("ase", str(corpus_dir), group_by="frame"), 15))
    assert not (output / "manifest.json").exists()
    finished = {p: p.stat().st_mtime_ns for p in output.rglob("*") if p.is_file() and "/_work/" not in str(p)}
    assert finished  # some shards were written before the crash
    manifest = build(corpus_dir, output)
    for path, mtime in finished.items():
        if path.name != "sources.json":
            assert path.stat().st_mtime_ns == mtime, f"{path} was rewritten"
    clean = open_shards(str(built)).manifest
    assert [(s["path"], s["sha256"]) for s in manifest["shards"]] == [(s["path"], s["sha256"]) for s in clean["shards"]]
    ids = [sid for split in ("train", "val", "test") for sid in open_shards(str(output)).table(split)["system_id"].to_pylist()]
    assert len(ids) == len(set(ids)) == 24


class ListReader:
    """An in-memory reader: one unit per list of records."""

    name, energy_convention = "ase", "total"

    def __init__(self, units: list[list], path: Path) -> None:
        self.units, self.path = units, str(path)  # `path`: any existing file, checksummed as the source

    def work_units(self):
        return [WorkUnit("ase", self.path, i, i + 1, {}) for i in range(len(self.units))]

    def source_paths(self):
        return [self.path]

    def read(self, unit):
        yield from self.units[unit.start]


def test_each_bad_input_kind_is_quarantined(tmp_path):
    bad_dir = write_bad_files(tmp_path / "bad")
    good = from_ase(molecules(1)[0], "good")
    tiny_cell = Structure("tiny", [1], [[0, 0, 0]], cell=np.diag([0.11, 10, 10]), pbc=[True, False, False],
                          energy=-1.0)
    bad_split = from_ase(molecules(1)[0], "badsplit")
    bad_split.info["split"] = "holdout"
    in_memory = ListReader([[good, good, good.replace(system_id="hot", forces=np.full((5, 3), 5e3)),
                             good.replace(system_id="huge", energy=-1e6), tiny_cell, bad_split,
                             BadRecord("r", "mem", "nan_label", "injected")]],
                           bad_dir / "defects.extxyz")
    manifest = build(bad_dir, tmp_path / "out-mem", in_memory, cutoff=15.0, max_neighbors=400)
    assert manifest["quarantine"]["counts"] == {"duplicate": 1, "energy_out_of_range": 1, "force_out_of_range": 1,
                                                "graph_error": 1, "invalid_split": 1, "nan_label": 1}
    files = build(bad_dir, tmp_path / "out-files", read_corpus("ase", str(bad_dir)))
    assert files["quarantine"]["counts"] == {"nan_label": 1, "unreadable_file": 1, "validation": 1}
    for m, name in ((manifest, "out-mem"), (files, "out-files")):
        c = m["counts"]
        assert c["read"] == c["written"] + c["quarantined"]
        table = open_shards(str(tmp_path / name)).quarantine().to_pylist()
        assert len(table) == c["quarantined"] and all(r["reason"] and r["detail"] and r["source"] for r in table)
    assert files["counts"]["written"] == 2
    assert json.dumps(manifest).count("hot") == 0  # ids live in the quarantine table, not the manifest


def test_units_differing_only_in_options_are_distinct_and_repeats_are_refused(tmp_path):
    from atomforge.pipeline.executor import check_unique, unit_id

    a = WorkUnit("transition1x", "f.h5", 0, 1, {"split": "train"})
    b = WorkUnit("transition1x", "f.h5", 0, 1, {"split": "val"})
    assert unit_id(a) != unit_id(b)
    check_unique([a, b])
    with pytest.raises(ValueError, match="identical"):
        check_unique([a, b, WorkUnit("transition1x", "f.h5", 0, 1, {"split": "train"})])


def test_unit_markers_hold_quarantine_counts_not_records(demo_dir, tmp_path):
    """The driver loads every unit marker, so they hold counts per reason, never one entry per record:
    its memory grows with work units, not with quarantined structures (the table streams from per-unit files)."""
    import pyarrow.parquet as pq

    path = str(demo_dir / "ani1x" / "ani1x-demo.h5")
    options = {"level": "wb97x_tz", "groups_per_unit": 2}  # the demo's TZ labels are NaN: every conformer is bad
    config = PipelineConfig.for_corpus("ani1x", path, str(tmp_path / "out"), reader_options=options)
    manifest = run_pipeline(config, read_corpus("ani1x", path, **options), backend="local", allow_empty=True)
    table = pq.read_table(tmp_path / "out" / manifest["quarantine"]["path"]).to_pylist()
    counts = manifest["counts"]
    assert counts["written"] == 0 and counts["quarantined"] == counts["read"] == len(table) > 10
    assert manifest["quarantine"]["counts"] == {"nan_label": len(table)}
    markers = list((tmp_path / "out" / "_work").rglob("units/*.json"))
    assert len(markers) > 1
    text = "".join(m.read_text() for m in markers)
    assert not [row["system_id"] for row in table if f'"{row["system_id"]}"' in text]
