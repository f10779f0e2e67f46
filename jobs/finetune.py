"""Fine-tune a pretrained model on downstream shards, on the same trainer as pretraining (in-process or Ray Train).

    python pipelines/downstream.py --input rmd17_ethanol.npz --output data/shards/rmd17_ethanol
    python jobs/finetune.py --checkpoint runs/debug_cpu --data data/shards/rmd17_ethanol \
        --recipe rmd17_debug --compare --output runs/finetune/demo
    python jobs/finetune.py --checkpoint org/model --data rmd17=s3://bucket/shards/aspirin --recipe rmd17 --num-workers 2
    python jobs/finetune.py --checkpoint runs/debug_cpu --recipe rmd17_debug --data ethanol=shards/ethanol \
        --data aspirin=shards/aspirin --replay ani1x=data/demo/shards/ani1x:0.5

--checkpoint: a pretraining run directory (its newest checkpoint), a checkpoint directory (local or
fsspec URL), an exported model folder or a hub id. --data: a downstream task's shard dataset (URL, or
TASK=URL; several name several tasks). --replay TASK=URL:WEIGHT: pretraining data mixed in. Metrics
are MAE / RMSE in meV, meV/atom and meV/Å on val and test. See docs/finetune.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from atomforge.cli import add_debug_flag, run_main
from atomforge.finetune.plots import write_plots
from atomforge.finetune.run import compare, run_variant
from atomforge.recipes.finetune import RECIPES, recipe, with_downstream, with_replay
from atomforge.training.config import worker_overrides
from atomforge.training.overrides import apply_overrides
from atomforge.training.ray_train import connect

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="run dir | checkpoint dir/URL | export dir | hub id (org/name)")
    parser.add_argument("--data", action="append", default=[], metavar="[TASK=]URL",
                        help="downstream shard dataset (pipelines/downstream.py writes one), any fsspec URL")
    parser.add_argument("--replay", action="append", default=[], metavar="TASK=URL:WEIGHT",
                        help="replay pretraining task TASK's shards at URL with mixing weight WEIGHT against the "
                             "downstream tasks' 1 (repeatable): less forgetting of TASK")
    parser.add_argument("--recipe", required=True, choices=sorted(RECIPES), help="atomforge.recipes.finetune")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="A.B=VALUE",
                        help="override a typed config field, e.g. --set epochs.max_epochs=50 (repeatable)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--from-scratch", action="store_true", help="same architecture and budget, no pretraining")
    mode.add_argument("--compare", action="store_true", help="run pretrained and scratch, print them side by side")
    parser.add_argument("--output", help="output directory (default: the recipe's)")
    parser.add_argument("--num-workers", metavar="N|MIN..MAX",
                        help="Ray Train workers (0 = in this process, the recipes' default); MIN..MAX (e.g. 1..4) is elastic")
    add_debug_flag(parser)
    return parser.parse_args(argv)


def data_urls(config, items: list[str]) -> dict[str, str]:
    """--data values: TASK=URL (a recipe task, or a new downstream task with the recipe task's settings),
    or a bare URL for the recipe's one task."""
    urls = {}
    for item in items:
        task, sep, url = item.partition("=")
        if sep and "://" not in task and "/" not in task:
            urls[task] = url
        elif len(config.data.tasks) == 1:
            urls[next(iter(config.data.tasks))] = item
        else:
            raise ValueError(f"--data {item!r}: name the task (TASK=URL); tasks of {config.name}: {sorted(config.data.tasks)}")
    return urls


def replay_specs(items: list[str]) -> list[tuple[str, str, float]]:
    """--replay values TASK=URL:WEIGHT -> (task, url, weight); the weight follows the URL's last colon."""
    out = []
    for item in items:
        task, sep, rest = item.partition("=")
        url, colon, weight = rest.rpartition(":")
        try:
            value = float(weight)
        except ValueError:
            value = None
        if not (sep and task and colon and url) or value is None or not value > 0:
            raise ValueError(f"--replay {item!r}: expected TASK=URL:WEIGHT with a positive weight, "
                             "e.g. --replay ani1x=data/shards/ani1x:0.5")
        out.append((task, url, value))
    return out


def build_config(args: argparse.Namespace):
    config = recipe(args.recipe)
    config = with_downstream(config, data_urls(config, args.data))
    for task, url, weight in replay_specs(args.replay):
        config = with_replay(config, task, url, weight)
    overrides = list(args.overrides)
    if args.output:
        overrides.append(f"checkpoint.output={args.output}")
    if args.num_workers is not None:
        overrides.extend(worker_overrides(args.num_workers))
    return apply_overrides(config, overrides)


def _main(argv: list[str] | None) -> int:
    args = parse_args(argv)
    config = build_config(args)
    if not args.from_scratch and not args.checkpoint:
        raise ValueError("--checkpoint is required unless --from-scratch")
    if config.scaling.num_workers > 0:
        connect(os.environ.get("RAY_ADDRESS"), str(REPO / "platform"), os.environ.get("PYTHONPATH"))
    output = config.checkpoint.output
    if args.compare:
        table, _ = compare(config, args.checkpoint)
        pictures = write_plots(output, args.checkpoint)
        print(f"\n{config.name}: pretrained vs from scratch (same architecture and budget)\n{table}")
        print(f"\nwritten: {output}/comparison.json, {output}/{{pretrained,scratch}}/, "
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
