"""Preprocess a downstream set (an rMD17 .npz or anything ASE reads) into shards for fine-tuning, in this process.

    python pipelines/downstream.py --input rmd17_aspirin.npz --output shards/aspirin
    python pipelines/downstream.py --input cells.extxyz --output shards/bulk --dataset bulk_modulus \
        --property bulk_modulus --per-atom

Every structure goes into one pool split that fine-tuning recipes draw their exact, seeded counts
from (atomforge.pipeline.downstream). Then: python jobs/finetune.py --data shards/aspirin ...
"""

from __future__ import annotations

import argparse
import json
import sys

from atomforge.cli import add_debug_flag, run_main
from atomforge.pipeline.downstream import prepare_downstream


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--input", required=True, help="the downstream file or folder (local path or fsspec URL)")
    p.add_argument("--output", required=True, help="shard dataset root to write (local path or fsspec URL)")
    p.add_argument("--corpus", default="auto", choices=("auto", "rmd17", "ase"), help="reader (auto: by suffix)")
    p.add_argument("--dataset", help="dataset / task name of an ASE set (default 'ase'; rMD17: 'rmd17')")
    p.add_argument("--property", help="read this info / key_value_pairs key as the label (a per-structure property)")
    p.add_argument("--per-atom", action="store_true", help="the property is intensive (stored as N x value)")
    p.add_argument("--cutoff", type=float, help="Å of the stored graph (default per corpus; >= the model's)")
    p.add_argument("--max-neighbors", type=int, help="K (default per corpus)")
    add_debug_flag(p)
    return p.parse_args(argv)


def _main(argv: list[str] | None) -> int:
    args = parse_args(argv)
    manifest = prepare_downstream(args.input, args.output, args.corpus, dataset=args.dataset,
                                  property_key=args.property, property_per_atom=args.per_atom, cutoff=args.cutoff,
                                  max_neighbors=args.max_neighbors)
    counts = manifest["counts"]
    print(json.dumps({"output": args.output, "datasets": sorted(manifest["statistics"]), "read": counts["read"],
                      "written": counts["written"], "quarantined": counts["quarantined"]}))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
