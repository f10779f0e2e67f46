"""Write demo corpora (OC20, OC22, ANI-1x, Transition1x, rMD17) in the real raw layouts, labelled by EMT / GFN2-xTB.

    python jobs/make_demo_corpora.py --output DIR [--size tiny|small|medium] [--seed N]
    python jobs/make_demo_corpora.py --suite replication --output DIR [--molecules ethanol benzene] [--part water ...]

`tiny` takes seconds (tests, CI), `small` about a minute (demo). Output is bit-for-bit
reproducible for a seed (the `.aselmdb`'s row timestamps aside): xTB runs single-threaded
(OMP_NUM_THREADS=1 unless set), because multi-threaded reductions change the last digits. See DIR/README.md for what differs from the
real corpora. `--suite replication` writes the replication benchmark's corpora (docs/replication.md):
the JMP corpora, rMD17 files per molecule, TIP3P water clusters and EMT bulk alloys.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from atomforge.cli import add_debug_flag, run_main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, help="folder to write the corpora into")
    parser.add_argument("--size", choices=("tiny", "small", "medium"), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--suite", choices=("demo", "replication"), default="demo")
    parser.add_argument("--molecules", nargs="+", default=["ethanol", "benzene"], help="replication: rMD17 molecules")
    parser.add_argument("--part", action="append", help="replication: only these parts (jmp, rmd17_<molecule>, water, bulk)")
    add_debug_flag(parser)
    return parser.parse_args(argv)


def _main(argv: list[str] | None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # before tblite loads: deterministic xTB sums
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # 3x3 solves in ASE's optimisers: threads only contend
    from atomforge.corpora.demo import make_demo_corpora, make_replication_part, replication_parts

    if args.suite == "replication":
        counts = {}
        for part in args.part or replication_parts(tuple(args.molecules)):
            counts.update(make_replication_part(args.output, part, size=args.size, seed=args.seed))
    else:
        counts = make_demo_corpora(args.output, size=args.size, seed=args.seed)
    print(json.dumps({"output": args.output, "size": args.size, "seed": args.seed, **counts}))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
