"""Training loader throughput (structures/s, atoms/s) vs the model's consumption rate.

    python benchmarks/loader.py [--json bench_out/loader.json] [--structures N]

Same OC20-like shards (periodic, 24-64 atoms, 6 Å graphs, K_store 40) read by:
  stream/local      the training loader (training.streams.TaskStream) from local Parquet
  stream/s3         the same from a SeaweedFS S3 endpoint on 127.0.0.1 (skipped without `weed`)
  webdataset        shards.torch_iterable over WebDataset tars (local)
  ray_data          Ray Data read_parquet (shards.ray_dataset) iter_rows on a local Ray
  dataloader        plain torch DataLoader over the Parquet files (pyarrow, no Ray)
each to rows, and rows -> PyG batches (`+collate`: what a worker does per step). The model rate
is PaiNN tiny/small forward + backward of the JMP objective on the same batches (1 thread).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from atomforge.graph import neighbor_graph
from atomforge.pipeline.formats import encode_parquet, encode_webdataset
from atomforge.schema import Structure, to_row
from atomforge.shards import open_shards
from atomforge.storage import filesystem
from atomforge.tasks import TaskSpec
from atomforge.training.data import open_source, to_batch
from atomforge.training.streams import TaskStream

MAX_ATOMS = 512  # atoms per batch
SHARD_ROWS = 250


def oc20_like(index: int, rng: np.random.Generator) -> Structure:
    n = int(rng.integers(24, 65))
    side = (n * 12.0) ** (1 / 3)
    grid = np.stack(np.meshgrid(*[np.arange(4)] * 3, indexing="ij"), -1).reshape(-1, 3)[:n]
    pos = (grid + 0.5) * side / 4 + rng.normal(0, 0.1, (n, 3))
    z = rng.choice([1, 6, 8, 29, 78], size=n)
    return Structure(f"bench-{index}", z, pos, cell=np.eye(3) * side, pbc=True, energy=float(rng.normal()),
                     forces=rng.normal(size=(n, 3)), dataset="oc20", frame_kind="relax")


def write_dataset(root: Path, num: int) -> str:
    """Parquet + WebDataset shards and a manifest (the pipeline's layout) for `num` structures."""
    rng = np.random.default_rng(0)
    rows = [to_row(s, neighbor_graph(s, 6.0, 40, skin=0.5), split="train") for s in (oc20_like(i, rng) for i in range(num))]
    shards = []
    for part, start in enumerate(range(0, num, SHARD_ROWS)):
        chunk = rows[start:start + SHARD_ROWS]
        for fmt, encode, ext in (("parquet", encode_parquet, ".parquet"), ("webdataset", encode_webdataset, ".tar")):
            rel = f"v-bench/train/oc20-{part:04d}{ext}"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(encode(chunk))
            shards.append({"path": rel, "format": fmt, "split": "train", "datasets": ["oc20"], "rows": len(chunk)})
    manifest = {"formats": ["parquet", "webdataset"], "shards": shards, "statistics": {},
                "graph": {"cutoff": 6.0, "skin": 0.5, "max_neighbors": 30, "k_store": 40}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return str(root)


def timed(rows_iter, num: int, collate: bool) -> dict:
    spec = {"oc20": TaskSpec("oc20", cutoff=6.0, max_neighbors=30)}
    start, atoms, batch, count = time.perf_counter(), 0, [], 0
    for row in rows_iter:
        atoms += int(row["num_atoms"])
        count += 1
        if collate:
            batch.append(("oc20", row))
            if sum(int(r["num_atoms"]) for _, r in batch) >= MAX_ATOMS:
                to_batch(batch, spec, {"oc20": 0})
                batch = []
        if count >= num:
            break
    seconds = time.perf_counter() - start
    return {"structures_per_s": count / seconds, "atoms_per_s": atoms / seconds, "structures": count}


def stream_rows(url: str):
    source = open_source("oc20", url)
    fs, _ = filesystem(url)
    return iter(TaskStream(fs, source.files["train"], seed=0, task_index=0, chunk_rows=256, shuffle_rows=1024))


def dataloader_rows(url: str):
    import pyarrow.parquet as pq
    from torch.utils.data import DataLoader, IterableDataset

    paths = open_shards(url).paths("train")

    class Rows(IterableDataset):
        def __iter__(self):
            for path in paths:
                yield from pq.read_table(path).to_pylist()

    return iter(DataLoader(Rows(), batch_size=None, collate_fn=lambda row: row))  # rows as they are


def ray_rows(url: str):
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    return open_shards(url).ray_dataset("train").iter_rows()


def model_rate(url: str, config_name: str, num_batches: int = 6) -> dict:
    from atomforge.models.painn import PaiNNConfig
    from atomforge.objectives import JMPSupervised, ObjectiveContext, ObjectiveMix
    from atomforge.training.runtime import build_model

    spec = {"oc20": TaskSpec("oc20", cutoff=6.0, max_neighbors=30)}
    model = build_model(getattr(PaiNNConfig, config_name)(), spec)
    mix = ObjectiveMix([(JMPSupervised(), 1.0)], model)
    rows, batches = stream_rows(url), []
    for _ in range(num_batches + 1):
        items, total = [], 0
        while total < MAX_ATOMS:
            row = next(rows)
            items.append(("oc20", row))
            total += int(row["num_atoms"])
        batches.append(to_batch(items, spec, {"oc20": 0}))
    ctx = ObjectiveContext(torch.Generator().manual_seed(0), spec, ("oc20",))
    mix.run(model, batches[0], ctx).loss.backward()  # warm-up
    start, structures, atoms = time.perf_counter(), 0, 0
    for batch in batches[1:]:
        mix.run(model, batch, ctx).loss.backward()
        structures += batch.num_graphs
        atoms += batch.num_nodes
    seconds = time.perf_counter() - start
    return {"structures_per_s": structures / seconds, "atoms_per_s": atoms / seconds, "structures": structures}


def with_s3(local: str, work: Path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from s3_server import SeaweedServer, weed_binary

    binary = weed_binary()
    if binary is None:
        return None, None
    server = SeaweedServer(work / "seaweed", binary).start()
    import os

    os.environ.update(AWS_ENDPOINT_URL_S3=server.endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_DEFAULT_REGION="us-east-1")
    fs, _ = filesystem("s3://bench")
    fs.mkdir("bench")
    fs.put(local, "bench/oc20", recursive=True)
    return server, "s3://bench/oc20"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--structures", type=int, default=1500)
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="atomforge-loader-bench-"))
    url = write_dataset(work / "oc20", args.structures)
    n = args.structures
    results: dict[str, dict] = {}
    readers = {"stream/local": lambda: stream_rows(url), "webdataset": lambda: open_shards(url).torch_iterable("train"),
               "dataloader": lambda: dataloader_rows(url), "ray_data": lambda: ray_rows(url)}
    server, s3_url = with_s3(url, work)
    if server is not None:
        readers["stream/s3"] = lambda: stream_rows(s3_url)
    try:
        for collate in (False, True):
            for name, make in readers.items():  # best of two passes: the first pays imports and caches
                runs = [timed(make(), n, collate) for _ in range(2)]
                results[name + ("+collate" if collate else "")] = max(runs, key=lambda r: r["structures_per_s"])
    finally:
        if server is not None:
            server.stop()
    for name in ("tiny", "small"):
        results[f"model PaiNN-{name} fwd+bwd"] = model_rate(url, name)
    print(f"{'reader':32s} {'structures/s':>14s} {'atoms/s':>12s}")
    for name, r in results.items():
        print(f"{name:32s} {r['structures_per_s']:14.1f} {r['atoms_per_s']:12.0f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"structures": n, "max_atoms": MAX_ATOMS, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
