"""Fine-tune a pretrained checkpoint on a downstream set (new heads, layer-wise LR, EMA, early stopping).

    python jobs/finetune.py --checkpoint runs/debug_cpu --data data/demo/raw/rmd17/rmd17_ethanol.npz \
        --recipe rmd17_debug --compare --output runs/finetune/demo
    python jobs/finetune.py --checkpoint org/model --data train.extxyz --recipe rmd17 --set target.forces=direct

--checkpoint: a pretraining run directory (its newest checkpoint), a checkpoint directory (local or
fsspec URL), an exported model folder or a hub id. Runs in-process (single process). Metrics are
MAE / RMSE in meV, meV/atom and meV/Å on val and test. See docs/finetune.md.
"""

from __future__ import annotations

import argparse
import json
import sys

from atomforge.cli import add_debug_flag, run_main
from atomforge.finetune.plots import write_plots
from atomforge.finetune.run import compare, run_variant
from atomforge.recipes.finetune import RECIPES, recipe
from atomforge.training.config import apply_overrides


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="run dir | checkpoint dir/URL | export dir | hub id (org/name)")
    parser.add_argument("--data", help="downstream set: rMD17 .npz or anything ASE reads (default: the recipe's)")
    parser.add_argument("--recipe", required=True, choices=sorted(RECIPES), help="atomforge.recipes.finetune")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="A.B=VALUE",
                        help="override a typed config field, e.g. --set optim.max_epochs=50 (repeatable)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--from-scratch", action="store_true", help="same architecture and budget, no pretraining")
    mode.add_argument("--compare", action="store_true", help="run pretrained and scratch, print them side by side")
    parser.add_argument("--output", help="output directory (default: the recipe's)")
    add_debug_flag(parser)
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace):
    overrides = list(args.overrides)
    if args.data:
        overrides.append(f"data.path={args.data}")
    if args.output:
        overrides.append(f"output={args.output}")
    return apply_overrides(recipe(args.recipe), overrides)


def _main(argv: list[str] | None) -> int:
    args = parse_args(argv)
    config = build_config(args)
    if not args.from_scratch and not args.checkpoint:
        raise ValueError("--checkpoint is required unless --from-scratch")
    if args.compare:
        table, _ = compare(config, args.checkpoint)
        pictures = write_plots(config.output, args.checkpoint)
        print(f"\n{config.name}: pretrained vs from scratch (same architecture and budget)\n{table}")
        print(f"\nwritten: {config.output}/comparison.json, {config.output}/{{pretrained,scratch}}/, "
              + ", ".join(str(p) for p in pictures))
        return 0
    summary = run_variant(config, args.checkpoint, "scratch" if args.from_scratch else "pretrained")
    print(json.dumps(summary.metrics, indent=2))
    print(f"written: {summary.output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
