"""Read throughput (structures/s) of every corpus reader on the demo corpora.

    python benchmarks/readers.py [--corpora DIR] [--size small] [--output bench_out/readers.json]

Generates the demo corpora into DIR when DIR has none, then streams each corpus once
(work_units + read, validation included) after a warm-up pass over the first unit, so that
import costs are not counted. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform as host
import sys
import time
from pathlib import Path

CORPORA = {"oc20": "oc20", "oc22": "oc22", "ani1x": "ani1x", "transition1x": "transition1x",
           "rmd17": "rmd17", "ase": "oc22"}  # corpus -> demo folder (the ase reader reads the OC22 traj/aselmdb)


def measure(name: str, url: str) -> dict:
    """Structures, atoms, seconds and rates of one full streaming pass."""
    from atomforge import read_corpus

    warm = read_corpus(name, url)
    next(iter(warm.read(warm.work_units()[0])), None)
    reader = read_corpus(name, url)
    start = time.perf_counter()
    num_atoms = sum(s.num_atoms for s in reader)
    seconds = time.perf_counter() - start
    num = reader.counts["structures"]
    return {"corpus": name, "structures": num, "atoms": num_atoms, "skipped": reader.num_bad,
            "seconds": round(seconds, 3), "structures_per_s": round(num / seconds, 1),
            "atoms_per_s": round(num_atoms / seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", default="bench_out/demo_small", help="demo corpora folder")
    parser.add_argument("--size", default="small", choices=("tiny", "small", "medium"))
    parser.add_argument("--json", default="bench_out/readers.json")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    root = Path(args.corpora)
    if not (root / "demo.json").exists():
        from atomforge.corpora.demo import make_demo_corpora

        make_demo_corpora(root, args.size, seed=0)
    rows = [measure(name, str(root / folder)) for name, folder in CORPORA.items()]
    print(f"{'corpus':<14}{'structures':>11}{'atoms':>9}{'skipped':>9}{'seconds':>9}{'struct/s':>10}{'atoms/s':>10}")
    for r in rows:
        print(f"{r['corpus']:<14}{r['structures']:>11}{r['atoms']:>9}{r['skipped']:>9}{r['seconds']:>9.2f}"
              f"{r['structures_per_s']:>10.0f}{r['atoms_per_s']:>10.0f}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    meta = {"demo": json.loads((root / "demo.json").read_text()), "python": sys.version.split()[0],
            "machine": host.machine(), "cpu_count": os.cpu_count()}
    Path(args.json).write_text(json.dumps({"readers": rows, **meta}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
