"""The entry script as a user runs it (subprocess), SIGKILL mid-run then resume, and the Ray Data backend."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from atomforge.corpora import read_corpus
from atomforge.pipeline import PipelineConfig, run_pipeline
from atomforge.shards import open_shards
from corpus_files import write_corpus

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "pipelines" / "preprocess.py"


def cli(*args: str, **popen) -> list[str]:
    return [sys.executable, str(SCRIPT), *args]


def shard_list(manifest: dict) -> list[tuple[str, str]]:
    return [(s["path"], s["sha256"]) for s in manifest["shards"]]


@pytest.mark.ray
@pytest.mark.slow
def test_cli_runs_as_documented_on_local_ray(corpus_dir, tmp_path):
    output = tmp_path / "out"
    result = subprocess.run(cli("--corpus", "ase", "--input", str(corpus_dir), "--output", str(output),
                                "--format", "both", "--num-cpus", "1", "--shard-size", "4"),
                            capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["read"] == summary["written"] == 24 and summary["quarantined"] == 0
    assert "structures/s" in result.stdout + result.stderr  # the progress display
    assert open_shards(str(output)).verify() == []


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_completes_without_duplicates_or_rework(tmp_path):
    corpus = write_corpus(tmp_path / "corpus", num_files=6, per_file=12)
    output = tmp_path / "out"
    args = cli("--corpus", "ase", "--input", str(corpus), "--output", str(output), "--shard-size", "2",
               "--backend", "local", "--no-progress", "--option", "group_by=\"frame\"")
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    parts = output / "_work"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(parts.rglob("parts/*/*.json"))) < 4:
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)  # the group this test started: the script and any children
    process.wait(timeout=30)
    assert not (output / "manifest.json").exists(), "the run finished before it could be killed"
    done = {p: p.stat().st_mtime_ns for p in parts.rglob("parts/*/*.json")}
    assert done

    rerun = subprocess.run(args, capture_output=True, text=True, timeout=240)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert all(p.stat().st_mtime_ns == t for p, t in done.items()), "finished parts were redone"
    resumed = open_shards(str(output))
    ids = [sid for split in ("train", "val", "test") for sid in resumed.table(split, ["system_id"])["system_id"].to_pylist()]
    assert len(ids) == len(set(ids)) == 72
    assert resumed.verify() == []

    config = PipelineConfig.for_corpus("ase", str(corpus), str(tmp_path / "clean"), shard_size=2,
                                       reader_options={"group_by": "frame"})
    clean = run_pipeline(config, read_corpus("ase", str(corpus), group_by="frame"), backend="local")
    assert shard_list(clean) == shard_list(resumed.manifest)

    again = subprocess.run(args, capture_output=True, text=True, timeout=240)  # finished: a no-op
    assert again.returncode == 0 and json.loads(again.stdout.strip().splitlines()[-1])["written"] == 72


@pytest.mark.ray
def test_ray_backend_with_two_workers_matches_local_and_reads_back(ray_cluster, corpus_dir, tmp_path):
    def run(backend: str, name: str, workers: int) -> dict:
        config = PipelineConfig.for_corpus("ase", str(corpus_dir), str(tmp_path / name), shard_size=4,
                                           num_workers=workers, reader_options={"group_by": "frame"})
        return run_pipeline(config, read_corpus("ase", str(corpus_dir), group_by="frame"), backend=backend)

    on_ray = run("ray", "ray", 2)
    assert shard_list(on_ray) == shard_list(run("local", "local", 1))
    shards = open_shards(str(tmp_path / "ray"))
    train_rows = shards.manifest["counts"]["splits"]["train"]["rows"]
    sizes = shards.table("train", ["num_atoms"])["num_atoms"].to_pylist()
    assert len(sizes) == train_rows and all(n in (3, 4, 5, 13) for n in sizes)
    assert sum(b.num_graphs for b in shards.loader("train", max_atoms=64, dataset="ase")) == train_rows
    with pytest.raises(ValueError, match="no rows of 'oc20'"):
        shards.loader("train", max_atoms=64, dataset="oc20")


def test_cli_options_are_frozen():
    import importlib.util

    spec = importlib.util.spec_from_file_location("preprocess_cli", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    args = module.parse_args(["--corpus", "oc20", "--input", "in", "--output", "out"])
    assert sorted(vars(args)) == sorted([
        "corpus", "input", "output", "format", "cutoff", "skin", "max_neighbors", "k_store", "shard_size",
        "split_fractions", "seed", "option", "num_cpus", "num_workers", "backend", "no_progress", "trust_pickle",
        "allow_empty", "debug"])
    config = module.PipelineConfig.for_corpus("oc20", "in", "out")
    assert (config.cutoff, config.max_neighbors, config.k_store, config.skin) == (12.0, 30, 40, 0.5)
    assert module.PipelineConfig.for_corpus("transition1x", "in", "out").cutoff == 8.0
