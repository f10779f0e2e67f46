"""Outputs on a real S3 endpoint (SeaweedFS on 127.0.0.1), retries through a fault-injecting proxy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from atomforge.corpora import read_corpus
from atomforge.pipeline import PipelineConfig, run_pipeline
from atomforge.shards import open_shards
from corpus_files import tar_rows
from s3_server import FaultProxy

pytestmark = pytest.mark.s3
SCRIPT = Path(__file__).resolve().parents[2] / "pipelines" / "preprocess.py"


def build(corpus_dir, url: str, storage_options: dict, **changes) -> dict:
    values = {"formats": ("parquet", "webdataset"), "shard_size": 4, "reader_options": {"group_by": "frame"}} | changes
    config = PipelineConfig.for_corpus("ase", str(corpus_dir), url, **values)
    return run_pipeline(config, read_corpus("ase", str(corpus_dir), group_by="frame"), storage_options, backend="local")


def test_s3_output_matches_local_and_reads_back(seaweed, corpus_dir, tmp_path):
    options = seaweed.storage_options()
    manifest = build(corpus_dir, "s3://atomforge-test/plain", options)
    local = build(corpus_dir, str(tmp_path / "local"), None)
    assert [(s["path"], s["sha256"]) for s in manifest["shards"]] == [(s["path"], s["sha256"]) for s in local["shards"]]
    text = json.dumps(manifest)
    assert seaweed.endpoint not in text and "127.0.0.1" not in text and "test-secret" not in text
    shards = open_shards("s3://atomforge-test/plain", options)
    assert shards.verify() == []
    rows = [r for split in ("train", "val", "test") for r in shards.table(split).to_pylist()]
    assert len(rows) == manifest["counts"]["written"] == 24
    from_tars = [r for split in ("train", "val", "test") for r in tar_rows(shards, split)]
    assert sorted(r["system_id"] for r in from_tars) == sorted(r["system_id"] for r in rows)
    batches = list(shards.loader("train", max_atoms=64))  # the training read path, from S3
    assert sum(b.num_graphs for b in batches) == manifest["counts"]["splits"]["train"]["rows"]
    assert build(corpus_dir, "s3://atomforge-test/plain", options) == manifest  # finished: a no-op


def test_transient_errors_are_retried_and_output_is_complete(seaweed, corpus_dir, caplog):
    with FaultProxy(seaweed.s3, failure_rate=0.15, seed=1) as proxy:
        options = seaweed.storage_options(proxy.endpoint)
        manifest = build(corpus_dir, "s3://atomforge-test/faulty", options, formats=("parquet",))
        shards = open_shards("s3://atomforge-test/faulty", options)
        assert shards.verify() == []
        assert sum(shards.table(split).num_rows for split in ("train", "val", "test")) == 24
    assert sum(proxy.faults.values()) > 0, proxy.faults
    assert manifest["counts"]["written"] == 24 and manifest["counts"]["quarantined"] == 0
    assert proxy.endpoint not in caplog.text


@pytest.mark.slow
def test_cli_takes_the_endpoint_from_the_environment_and_never_prints_it(seaweed, corpus_dir):
    env = os.environ | {"AWS_ENDPOINT_URL": seaweed.endpoint, "AWS_ACCESS_KEY_ID": "test-key",
                        "AWS_SECRET_ACCESS_KEY": "test-secret", "AWS_DEFAULT_REGION": "us-east-1"}
    result = subprocess.run([sys.executable, str(SCRIPT), "--corpus", "ase", "--input", str(corpus_dir),
                             "--output", "s3://atomforge-test/cli", "--backend", "local"],
                            capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert seaweed.endpoint not in result.stdout + result.stderr and "test-secret" not in result.stdout + result.stderr
    manifest = open_shards("s3://atomforge-test/cli", seaweed.storage_options()).manifest
    assert manifest["counts"]["written"] == 24
