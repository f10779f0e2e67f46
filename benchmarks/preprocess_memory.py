"""Peak memory of preprocessing against corpus size: the same pipeline on 10k and 100k OC20 frames, and manifest load time.

    python benchmarks/preprocess_memory.py [--sizes 10000 100000] [--frames-per-file 5000] [--repeats 2]
        [--manifest-shards 10000] [--json bench_out/preprocess_memory.json]

Each size runs `pipelines/preprocess.py --corpus oc20 --backend local` in a fresh subprocess on
OC20 S2EF pairs of `--frames-per-file` frames (demo-generator EMT relaxations, cycled with fresh
sids), so one process is both the driver and the only worker; its peak RSS (ru_maxrss) is the
number, `--repeats` times per size, interleaved (a peak is the largest of many transient
allocations and moves by ~10% between identical runs). Flat memory means the 100k run peaks
within 10% of the 10k one: buffers are bounded by the shard size and work units, not by the corpus.

Manifest load: a real manifest from a small run, its shard entries replicated to
`--manifest-shards` (each with a ~150-size atom histogram, as a 10^4-row OC20 shard has) and
26,800 source files (OC20 S2EF-All's count), written as `manifest.publish` writes it, then
`open_shards` timed (CPU and wall seconds, best of 5).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from preprocess import generated_frames, write_pair  # noqa: E402

# Runs a script as __main__ in this process, then prints the process's own peak RSS (KB on Linux).
WITH_PEAK = """
import resource, runpy, sys
script, sys.argv = sys.argv[1], sys.argv[1:]
try:
    runpy.run_path(script, run_name="__main__")
except SystemExit as stop:
    assert not stop.code, stop.code
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_rss_mb(script: Path, args: list[str]) -> tuple[float, float, dict]:
    """(peak RSS MB, wall seconds, the CLI's JSON summary) of `script args` in a fresh child process."""
    start = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAYON_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", WITH_PEAK, str(script), *args], capture_output=True, text=True,
                            check=True, env=env)
    seconds = time.perf_counter() - start
    lines = result.stdout.strip().splitlines()
    return int(lines[-1]) / 1024, seconds, json.loads(lines[-2])


def corpus_of(work: Path, frames, txt, num_frames: int, per_file: int) -> Path:
    folder = work / f"corpus-{num_frames}-{per_file}"
    if not folder.exists():
        for index, start in enumerate(range(0, num_frames, per_file)):
            count = min(per_file, num_frames - start)
            # distinct sids per file: write_pair offsets each cycled copy by 10^7, so files are 10^9 apart
            shifted = [f"random{int(line.split(',')[0][6:]) + 1_000_000_000 * index},{line.split(',', 1)[1]}"
                       for line in txt]
            write_pair(folder / f"{index}", frames, shifted, count)
    return folder


def manifest_load(work: Path, manifest_path: Path, num_shards: int) -> dict:
    """open_shards on a manifest like `manifest_path`'s with `num_shards` shards (see the module docstring)."""
    from atomforge.shards import open_shards

    manifest = json.loads(manifest_path.read_text())
    rng = np.random.default_rng(0)
    template = manifest["shards"][0]
    shards = []
    for k in range(num_shards):
        sizes = np.unique(rng.integers(8, 230, 200))
        counts = rng.integers(1, 130, len(sizes))
        shards.append(dict(template, path=f"{template['path'].rsplit('/', 1)[0]}/oc20-{k:012x}-0000.parquet",
                           rows=int(counts.sum()), atoms=int((sizes * counts).sum()), sha256=f"{k:064x}",
                           num_atoms_histogram={"num_atoms": sizes.tolist(), "count": counts.tolist()}))
    source = manifest["sources"][0]
    manifest["shards"] = shards
    manifest["sources"] = [dict(source, path=f"{source['path']}.{k}") for k in range(26_800)]
    folder = work / "big-manifest"
    folder.mkdir(exist_ok=True)
    text = json.dumps(manifest, indent=1, sort_keys=True)  # as manifest.publish writes it
    (folder / "manifest.json").write_text(text)
    cpu = wall = np.inf
    for _ in range(5):
        c, w = time.process_time(), time.perf_counter()
        loaded = open_shards(str(folder))
        cpu, wall = min(cpu, time.process_time() - c), min(wall, time.perf_counter() - w)
    assert len(loaded.manifest["shards"]) == num_shards
    return {"shards": num_shards, "sources": 26_800, "megabytes": len(text) / 1e6, "cpu_s": cpu, "wall_s": wall}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--frames-per-file", type=int, default=5_000)
    parser.add_argument("--cutoff", type=float, default=6.0)
    parser.add_argument("--max-neighbors", type=int, default=50)
    parser.add_argument("--manifest-shards", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each size, interleaved")
    parser.add_argument("--json", default="bench_out/preprocess_memory.json")
    parser.add_argument("--workdir")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-memory-"))
    frames, txt = generated_frames(work / "generated", 6, 30, (2, 2, 3))  # demo-sized slabs: a short 100k run
    runs = {size: [] for size in args.sizes}
    for repeat in range(args.repeats):  # interleaved: each repeat runs every size once
        for size in args.sizes:
            folder = corpus_of(work, frames, txt, size, args.frames_per_file)
            output = work / f"out-{size}"
            shutil.rmtree(output, ignore_errors=True)
            cli = ["--corpus", "oc20", "--input", str(folder), "--output", str(output), "--backend", "local",
                   "--no-progress", "--cutoff", str(args.cutoff), "--max-neighbors", str(args.max_neighbors)]
            peak, seconds, summary = peak_rss_mb(HERE.parent / "pipelines" / "preprocess.py", cli)
            assert summary["written"] == size, summary
            runs[size].append({"peak_rss_mb": peak, "wall_s": seconds})
            print(f"{size:>8} structures, run {repeat + 1}: peak RSS {peak:7.1f} MB ({seconds:.0f} s)", flush=True)
    peaks = {size: sorted(r["peak_rss_mb"] for r in rs) for size, rs in runs.items()}
    small, large = peaks[args.sizes[0]], peaks[args.sizes[-1]]
    ratio = float(np.median(large) / np.median(small))
    for size, values in peaks.items():
        print(f"{size:>8} structures: peak RSS min {values[0]:.1f}, median {np.median(values):.1f}, "
              f"max {values[-1]:.1f} MB")
    print(f"peak RSS {args.sizes[-1]} / {args.sizes[0]}: {ratio:.3f} of the medians, {large[-1] / small[0]:.3f} "
          f"largest over smallest (target <= 1.10)")
    load = manifest_load(work, work / f"out-{args.sizes[0]}" / "manifest.json", args.manifest_shards)
    print(f"manifest with {load['shards']} shards and {load['sources']} sources ({load['megabytes']:.1f} MB): "
          f"open_shards {load['cpu_s']:.2f} s CPU, {load['wall_s']:.2f} s wall (target < 1 s)")
    results = {"runs": {str(k): v for k, v in runs.items()}, "peak_ratio_of_medians": ratio,
               "peak_ratio_worst": large[-1] / small[0], "manifest_load": load}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=1))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
