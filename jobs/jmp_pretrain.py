"""JMP-style multi-task pretraining on Ray Train.

    python jobs/jmp_pretrain.py --recipe debug_cpu --data oc20=data/demo/shards/oc20 ...
    ray job submit --working-dir . -- python jobs/jmp_pretrain.py --recipe jmp_s --output s3://bucket/runs/x

Runs on the Ray cluster at RAY_ADDRESS (a `ray job submit` sets it) or starts a local one. Storage
credentials and endpoints come from the environment (AWS_* variables, read by s3fs/botocore on
every node), never from flags. Before any worker starts, every task's manifest must parse and
every shard it lists must exist with its listed size (--verify-data: and its sha256). Errors are
one line and exit code 2 (--debug: the traceback). See docs/training.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from atomforge.artifacts.checkpoint import latest_checkpoint
from atomforge.cli import add_debug_flag, run_main
from atomforge.recipes.jmp import RECIPES, only_tasks, recipe, with_data
from atomforge.training.config import absolute_local_paths, worker_overrides
from atomforge.training.launch import train
from atomforge.training.overrides import apply_overrides
from atomforge.training.ray_train import connect

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", required=True, choices=sorted(RECIPES), help="run recipe (atomforge.recipes.jmp)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="A.B=VALUE",
                        help="override a typed config field, e.g. --set optim.lr=1e-4 (repeatable)")
    parser.add_argument("--data", action="append", default=[], metavar="TASK=URL",
                        help="shard dataset (manifest root) of a task, any fsspec URL (repeatable); when given, "
                             "the tasks named are the run's task set")
    parser.add_argument("--output", help="run directory (local path or s3://...); checkpoints and logs go here")
    parser.add_argument("--resume", action="store_true", help="continue the run in --output from its last checkpoint")
    parser.add_argument("--num-workers", metavar="N|MIN..MAX",
                        help="Ray Train workers (0 = in the driver process); MIN..MAX (e.g. 1..4) is elastic")
    parser.add_argument("--verify-data", action="store_true", help="check every shard's sha256 before training")
    add_debug_flag(parser)
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace):
    config = recipe(args.recipe)
    urls = dict(item.split("=", 1) for item in args.data if "=" in item)
    if len(urls) != len(args.data):
        raise ValueError(f"--data expects TASK=URL, got {args.data}")
    if urls:  # --data names the task set: the recipe's other tasks are not trained
        config = only_tasks(with_data(config, urls), tuple(t for t in config.data.tasks if t in urls))
    overrides = list(args.overrides)
    if args.output:
        overrides.append(f"checkpoint.output={args.output}")
    if args.num_workers is not None:
        overrides.extend(worker_overrides(args.num_workers))
    return absolute_local_paths(apply_overrides(config, overrides))


def _main(argv: list[str] | None) -> int:
    args = parse_args(argv)
    config = build_config(args)
    if config.scaling.num_workers > 0:
        connect(os.environ.get("RAY_ADDRESS"), str(REPO / "platform"), os.environ.get("PYTHONPATH"))
    result = train(config, resume=args.resume, verify_data=args.verify_data)
    step = result.metrics.get("step") if result.metrics else None
    print(f"done: step {step}, checkpoint {latest_checkpoint(config.checkpoint.output)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
