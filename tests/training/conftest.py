"""Fixtures for training tests: small published shard datasets (Parquet + manifest) built in-process."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from atomforge.graph import neighbor_graph
from atomforge.pipeline.label_stats import StatsAccumulator
from atomforge.schema import Structure, rows_to_table, to_row

CUTOFF, SKIN, K = 5.0, 0.5, 20


def synthetic_structure(task: str, index: int, rng: np.random.Generator, periodic: bool) -> Structure:
    """A small molecule or periodic cell with smooth labels (a pair potential), for loop tests."""
    n = int(rng.integers(3, 9))
    if periodic:
        cell = np.eye(3) * 6.0
        pos = rng.uniform(0, 6.0, size=(n, 3))
    else:
        cell = None
        pos = rng.normal(scale=1.2, size=(n, 3))
    pos = _spread(pos, cell)
    z = rng.choice([1, 6, 8], size=n)
    diff = pos[:, None] - pos[None]
    if periodic:
        diff -= 6.0 * np.round(diff / 6.0)
    r = np.linalg.norm(diff, axis=-1) + np.eye(n)
    pair = np.exp(-r) * (1 - np.eye(n))
    energy = -0.5 * pair.sum() - 1.5 * n
    forces = -(pair / r)[..., None].__mul__(diff).sum(axis=1)
    return Structure(f"{task}-{index}", z, pos, cell=cell, pbc=np.full(3, periodic), energy=energy, forces=forces,
                     dataset=task, frame_kind="relax")


def _spread(pos, cell):
    for _ in range(50):
        diff = pos[:, None] - pos[None]
        if cell is not None:
            diff -= 6.0 * np.round(diff / 6.0)
        d = np.linalg.norm(diff, axis=-1) + np.eye(len(pos)) * 10
        if d.min() > 0.9:
            return pos
        i = np.unravel_index(np.argmin(d), d.shape)[0]
        pos[i] += 0.7
    return pos


def write_shards(root: Path, task: str, num: dict[str, int], periodic: bool, seed: int = 0, shard_size: int = 40) -> str:
    """Publish `num[split]` synthetic structures of `task` under root/task; returns the URL."""
    rng = np.random.default_rng(seed)
    splits, offset = {}, 0
    for split, count in num.items():
        splits[split] = [synthetic_structure(task, i + offset, rng, periodic) for i in range(count)]
        offset += 1000 * -(-count // shard_size)
    everything = [s for structures in splits.values() for s in structures]
    energies = [s.energy / s.num_atoms for s in everything]
    force_sq = [(s.forces**2).mean() for s in everything]
    natoms = [s.num_atoms for s in everything]
    statistics = {"linear_reference": {"1": -1.5, "6": -1.5, "8": -1.5}, "energy_mean": 0.0, "energy_mean_per_atom": 0.0,
                  "energy_std": float(np.std(energies) * np.mean(natoms)) or 1.0,
                  "force_rms": float(np.sqrt(np.mean(force_sq)))}
    return publish(root, task, splits, statistics, shard_size)


def publish(root: Path, task: str, splits: dict[str, list[Structure]], statistics: dict | None = None,
            shard_size: int = 40) -> str:
    """Write structures per split as Parquet shards + manifest under root/task; returns the URL.

    statistics: the manifest's block for `task`; None computes it with the pipeline's own
    accumulator over the train split (as `pipelines/preprocess.py` does).
    """
    out = root / task
    shards = []
    for split, structures in splits.items():
        for part, start in enumerate(range(0, len(structures), shard_size)):
            chunk = structures[start:start + shard_size]
            rows = [to_row(s, neighbor_graph(s, CUTOFF, K + 10, skin=SKIN), split=split) for s in chunk]
            rel = f"v-test/{split}/{task}-{part:04d}.parquet"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(rows_to_table(rows), out / rel)
            data = (out / rel).read_bytes()  # the loader checks every shard against these
            shards.append({"path": rel, "format": "parquet", "split": split, "datasets": [task], "rows": len(rows),
                           "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    if statistics is None:
        accumulator = StatsAccumulator()
        for structure in splits.get("train", []):
            accumulator.add(structure)
        statistics = accumulator.finalize()
    manifest = {
        "schema_version": "1.0", "formats": ["parquet"], "shards": shards,
        "graph": {"cutoff": CUTOFF, "skin": SKIN, "max_neighbors": K, "k_store": K + 10, "tie_rule": "strict"},
        "datasets": {task: {"energy_convention": "total"}},
        "counts": {"splits": {s: {"rows": len(c)} for s, c in splits.items()}},
        "statistics": {task: statistics},
    }
    (out / "manifest.json").write_text(json.dumps(manifest))
    return str(out)


TINY_TASKS = {  # task: (train rows, val rows, periodic)
    "oc20": (40, 8, True), "oc22": (24, 8, True), "ani1x": (120, 16, False), "transition1x": (60, 8, False),
}


def write_tiny_shards(root: Path) -> dict[str, str]:
    """The four pretraining tasks of the debug recipe as tiny synthetic datasets: task -> URL."""
    return {
        task: write_shards(root, task, {"train": train, "val": val}, periodic=periodic, seed=i)
        for i, (task, (train, val, periodic)) in enumerate(TINY_TASKS.items())
    }


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory) -> dict[str, str]:
    """Four tasks (two periodic, two molecular) with train/val splits: task -> URL."""
    return write_tiny_shards(tmp_path_factory.mktemp("shards"))


@pytest.fixture(scope="session")
def seaweed(seaweed_server):
    """The session's SeaweedFS S3 server, with one bucket `atomforge-train`."""
    return seaweed_server.make_bucket("atomforge-train")


@pytest.fixture
def s3_env(seaweed, monkeypatch):
    """AWS_* variables pointing s3fs/botocore (in this process and in Ray workers) at the test server."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", seaweed.endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL", seaweed.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return seaweed
