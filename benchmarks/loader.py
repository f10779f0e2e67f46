"""Training data path throughput: the shard loader against the row path it replaced, workers, S3, models.

    python benchmarks/loader.py [--json bench_out/loader.json] [--structures N] [--repeats R] [--window-rows W]

Same OC20-like shards (periodic, 24-64 atoms, 6 Å graphs stored with 0.5 Å skin and K_store 40,
re-filtered to K = 30; 250-row Parquet shards with a real manifest), one epoch of N structures in
batches of 512 atoms, shuffled in windows of W rows (default 512), arms interleaved in each of R
repeats (best and median reported). A training epoch spans thousands of the loader's default
4,096-row windows, decoded by the builders in turn; the benchmark's default epoch (2,000 rows)
would fit in one, decoded by one builder while any other waits. Windows of 512 rows give it four,
decoded by the builders in turn as in a real epoch (a window's rows are decoded chunk by chunk, so
its size changes the work per row little; `--window-rows 4096` measures the one-window epoch). The arms:
  rows+collate   the path training used before the loader: pyarrow `to_pylist()` rows, then
                 `atomforge.collate` per batch (Structure validation, per-row re-filter, PyG batching)
  loader/w0      `open_shards(url).loader(...)`, built in this process (its decoder thread included)
  loader/w1, w2  the same with 1 and 2 builder processes (torch DataLoader workers)
  loader/s3      loader/w0 reading the shards from SeaweedFS S3 on 127.0.0.1 (skipped without `weed`)
Rates are structures per wall second and per CPU second (this process and its workers: the
per-core figure). The model rates are PaiNN tiny/small forward + backward of the JMP objective on
the loader's batches; `train/*` is a training loop (PaiNN-tiny, AdamW) fed by the loader, split
into the time spent waiting for the next batch and the time of the step itself.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from atomforge.batch import atom_budget_batches, collate
from atomforge.graph import neighbor_graph
from atomforge.pipeline.formats import encode_parquet
from atomforge.schema import SCHEMA_VERSION, Structure, to_row
from atomforge.shards import open_shards
from atomforge.storage import filesystem
from atomforge.tasks import TaskSpec

MAX_ATOMS = 512  # atoms per batch
SHARD_ROWS = 250
CUTOFF, K = 6.0, 30


def oc20_like(index: int, rng: np.random.Generator) -> Structure:
    n = int(rng.integers(24, 65))
    side = (n * 12.0) ** (1 / 3)
    grid = np.stack(np.meshgrid(*[np.arange(4)] * 3, indexing="ij"), -1).reshape(-1, 3)[:n]
    pos = (grid + 0.5) * side / 4 + rng.normal(0, 0.1, (n, 3))
    z = rng.choice([1, 6, 8, 29, 78], size=n)
    return Structure(f"bench-{index}", z, pos, cell=np.eye(3) * side, pbc=True, energy=float(rng.normal()),
                     forces=rng.normal(size=(n, 3)), dataset="oc20", frame_kind="relax")


def write_dataset(root: Path, num: int) -> str:
    """Parquet shards and a manifest (schema version, sizes, sha256, graph) for `num` structures."""
    rng = np.random.default_rng(0)
    rows = [to_row(s, neighbor_graph(s, CUTOFF, 40, skin=0.5), split="train") for s in (oc20_like(i, rng) for i in range(num))]
    shards = []
    for part, start in enumerate(range(0, num, SHARD_ROWS)):
        data = encode_parquet(rows[start:start + SHARD_ROWS])
        rel = f"v-bench/train/oc20-{part:04d}.parquet"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        shards.append({"path": rel, "format": "parquet", "split": "train", "datasets": ["oc20"],
                       "rows": len(rows[start:start + SHARD_ROWS]), "bytes": len(data),
                       "sha256": hashlib.sha256(data).hexdigest()})
    manifest = {"schema_version": SCHEMA_VERSION, "formats": ["parquet"], "shards": shards, "statistics": {},
                "graph": {"cutoff": CUTOFF, "skin": 0.5, "storage_radius": CUTOFF + 0.5, "max_neighbors": K,
                          "k_store": 40, "tie_rule": "strict"}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return str(root)


def cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (DataLoader workers are joined at the end)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(batches) -> dict:
    wall, cpu, structures = time.perf_counter(), cpu_seconds(), 0
    for batch in batches:
        structures += batch.num_graphs
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    return {"structures": structures, "structures_per_s": structures / wall, "structures_per_cpu_s": structures / cpu}


def row_path(url: str):
    """Before the loader: Parquet rows as dicts, batched by atoms, collated row by row."""
    for path in open_shards(url).paths("train"):
        rows = pq.read_table(path).to_pylist()
        for batch in atom_budget_batches(rows, MAX_ATOMS):
            yield collate(batch, CUTOFF, K)


WINDOW_ROWS = 512  # --window-rows' default


def loader(url: str, workers: int, window_rows: int = WINDOW_ROWS, storage_options=None):
    return open_shards(url, storage_options).loader("train", max_atoms=MAX_ATOMS, num_workers=workers, seed=0,
                                                    shuffle_rows=window_rows)


def model_step(name: str):
    from atomforge.models.painn import PaiNNConfig
    from atomforge.objectives import JMPSupervised, ObjectiveContext, ObjectiveMix
    from atomforge.training.initialization import initial_model

    spec = {"oc20": TaskSpec("oc20", cutoff=CUTOFF, max_neighbors=K)}
    model = initial_model(getattr(PaiNNConfig, name)(), spec, (), seed=0)
    mix = ObjectiveMix([(JMPSupervised(), 1.0)], model)
    ctx = ObjectiveContext(torch.Generator().manual_seed(0), spec, ("oc20",))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(batch) -> None:
        optimizer.zero_grad()
        mix.run(model, batch, ctx).loss.backward()
        optimizer.step()

    return step


def model_rate(url: str, name: str, num_batches: int) -> dict:
    step, batches = model_step(name), []
    for batch in loader(url, 0):
        batches.append(batch)
        if len(batches) > num_batches:
            break
    step(batches[0])  # warm-up
    start = time.perf_counter()
    for batch in batches[1:]:
        step(batch)
    seconds = time.perf_counter() - start
    structures = sum(b.num_graphs for b in batches[1:])
    return {"structures": structures, "structures_per_s": structures / seconds}


def training_split(url: str, workers: int, num_batches: int, window_rows: int) -> dict:
    """Seconds waiting for the next batch vs in the step, for PaiNN-tiny fed by the loader."""
    step = model_step("tiny")
    waiting = stepping = 0.0
    it = iter(open_shards(url).loader("train", max_atoms=MAX_ATOMS, num_workers=workers, epochs=None,
                                      shuffle_rows=window_rows))
    step(next(it))  # warm-up (and the workers' start)
    for _ in range(num_batches):
        start = time.perf_counter()
        batch = next(it)
        middle = time.perf_counter()
        step(batch)
        waiting, stepping = waiting + middle - start, stepping + time.perf_counter() - middle
    it.close()
    return {"wait_s": waiting, "step_s": stepping, "wait_fraction": waiting / (waiting + stepping)}


def with_s3(local: str, work: Path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from s3_server import SeaweedServer, weed_binary

    binary = weed_binary()
    if binary is None:
        return None, None, None
    server = SeaweedServer(work / "seaweed", binary).start()
    os.environ.update(AWS_ENDPOINT_URL_S3=server.endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_DEFAULT_REGION="us-east-1")
    fs, _ = filesystem("s3://bench")
    fs.mkdir("bench")
    fs.put(local, "bench/oc20", recursive=True)
    return server, "s3://bench/oc20", None


def summarise(runs: list[dict]) -> dict:
    out = {"structures": runs[0]["structures"]}
    for key in ("structures_per_s", "structures_per_cpu_s"):
        if key in runs[0]:
            values = [r[key] for r in runs]
            out[key] = max(values)
            out[key.replace("per", "median_per", 1)] = statistics.median(values)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--structures", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--window-rows", type=int, default=WINDOW_ROWS, help="rows per shuffle window")
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="atomforge-loader-bench-"))
    url = write_dataset(work / "oc20", args.structures)
    rows = args.window_rows
    arms = {"rows+collate": lambda: row_path(url), "loader/w0": lambda: loader(url, 0, rows),
            "loader/w1": lambda: loader(url, 1, rows), "loader/w2": lambda: loader(url, 2, rows)}
    server, s3_url, options = with_s3(url, work)
    if server is not None:
        arms["loader/s3"] = lambda: loader(s3_url, 0, rows, options)
    runs: dict[str, list[dict]] = {name: [] for name in arms}
    try:
        timed(loader(url, 0, rows))  # warm-up: imports, page cache
        for _ in range(args.repeats):
            for name, make in arms.items():
                runs[name].append(timed(make()))
    finally:
        if server is not None:
            server.stop()
    results = {name: summarise(r) for name, r in runs.items()}
    for name in ("tiny", "small"):
        results[f"model PaiNN-{name} fwd+bwd"] = model_rate(url, name, 8 if name == "tiny" else 3)
    splits = {f"train/w{w}": training_split(url, w, 30, args.window_rows) for w in (0, 1)}
    report(results, splits, args.structures, args.window_rows)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"structures": args.structures, "max_atoms": MAX_ATOMS,
                                         "window_rows": args.window_rows, "results": results,
                                         "training": splits, "ratios": ratios(results)}, indent=1))
    return 0


def ratios(results: dict) -> dict:
    rate = {name: r["structures_per_s"] for name, r in results.items()}
    cpu = {name: r.get("structures_per_cpu_s") for name, r in results.items()}
    out = {"loader/w0 / rows+collate (per CPU s)": results["loader/w0"]["structures_per_cpu_s"]
           / results["rows+collate"]["structures_per_cpu_s"],
           "loader/w0 / PaiNN-tiny": rate["loader/w0"] / rate["model PaiNN-tiny fwd+bwd"],
           "loader/w2 / loader/w1": rate["loader/w2"] / rate["loader/w1"],
           "loader/w1 / loader/w0 (per CPU s)": cpu["loader/w1"] / cpu["loader/w0"],
           "loader/w2 / loader/w1 (per CPU s)": cpu["loader/w2"] / cpu["loader/w1"]}
    if "loader/s3" in rate:
        out["loader/w0 / loader/s3"] = rate["loader/w0"] / rate["loader/s3"]
        out["loader/w0 / loader/s3 (per CPU s)"] = cpu["loader/w0"] / cpu["loader/s3"]
    return out


def report(results: dict, splits: dict, structures: int, window_rows: int) -> None:
    print(f"{structures} OC20-like structures, batches of {MAX_ATOMS} atoms, windows of {window_rows} rows, "
          "best (median) of the repeats")
    print(f"{'arm':28s} {'structures/s':>22s} {'structures/CPU s':>22s}")
    for name, r in results.items():
        wall = f"{r['structures_per_s']:.0f}" + (f" ({r['structures_median_per_s']:.0f})" if "structures_median_per_s" in r else "")
        cpu = f"{r['structures_per_cpu_s']:.0f} ({r['structures_median_per_cpu_s']:.0f})" if "structures_per_cpu_s" in r else ""
        print(f"{name:28s} {wall:>22s} {cpu:>22s}")
    for name, split in splits.items():
        print(f"{name}: waiting for data {split['wait_s']:.2f} s, in the step {split['step_s']:.2f} s "
              f"({100 * split['wait_fraction']:.1f}% waiting)")
    for name, value in ratios(results).items():
        print(f"ratio {name}: {value:.2f}")


if __name__ == "__main__":
    sys.exit(main())
