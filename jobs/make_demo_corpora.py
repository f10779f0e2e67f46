"""Write demo corpora (OC20, OC22, ANI-1x, Transition1x, rMD17) in the real raw layouts, labelled by EMT / GFN2-xTB.

    python jobs/make_demo_corpora.py --output DIR [--size tiny|small|medium] [--seed N]

`tiny` takes seconds (tests, CI), `small` about a minute (demo). Output is bit-for-bit
reproducible for a seed (the `.aselmdb`'s row timestamps aside): xTB runs single-threaded
(OMP_NUM_THREADS=1 unless set), because multi-threaded reductions change the last digits. See DIR/README.md for what differs from the
real corpora.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, help="folder to write the corpora into")
    parser.add_argument("--size", choices=("tiny", "small", "medium"), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # before tblite loads: deterministic xTB sums
    from atomforge.corpora.demo import make_demo_corpora

    counts = make_demo_corpora(args.output, size=args.size, seed=args.seed)
    print(json.dumps({"output": args.output, "size": args.size, "seed": args.seed, **counts}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
