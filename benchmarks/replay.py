"""Forgetting with and without replay: a pretrained task's validation error after fine-tuning on another set.

    python benchmarks/replay.py [--checkpoint demo_out/pretrain] [--data demo_out/shards/rmd17]
                                [--task ani1x] [--task-url demo_out/shards/ani1x] [--weight 0.5]
                                [--steps 300] [--seeds 0 1 2] [--json bench_out/replay.json]

For each seed, two fine-tuning runs of `rmd17_debug` from the same pretrained model with the same
seed, steps, learning rate and kept heads: "plain" (the downstream set alone) and "replay" (the
pretraining task's shards mixed in at `--weight` against the downstream set's 1). Both train with
the pretraining's loss (JMP supervised, direct forces, as `debug_cpu` pretrained the task's head),
in one process. Reported: the pretrained task's validation MAE through its kept head (EMA weights
at the end) before fine-tuning and after each arm, and each arm's downstream test MAE (what replay
costs or gains on the task being fine-tuned). No arm is tuned: the recipe's settings, step budget
instead of epochs and no early stopping, so both arms run the same number of steps.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path


def finetune_config(data: str, checkpoint: str, output: Path, steps: int, seed: int):
    from atomforge.objectives import JMPSupervised, MixEntry
    from atomforge.recipes.finetune import rmd17_debug, with_downstream

    config = with_downstream(rmd17_debug(), {"rmd17": data})
    return dataclasses.replace(
        config, data=dataclasses.replace(config.data, batching="mixed"), objectives={"jmp": MixEntry(JMPSupervised())},
        epochs=None, early_stopping=None, max_steps=steps, val_every=steps, log_every=steps, seed=seed,
        validate_at_start=False, optim=dataclasses.replace(config.optim, warmup_steps=steps // 20),
        init=dataclasses.replace(config.init, source=checkpoint, keep_heads=True),
        checkpoint=dataclasses.replace(config.checkpoint, output=str(output), every_steps=steps))


def task_errors(model_ref: str, task: str, url: str, split: str) -> dict[str, float]:
    """MAEs (meV, meV/Å) of `model_ref`'s head `task` on the shards' `split` rows (direct forces)."""
    from atomforge.artifacts.reference import load_model
    from atomforge.finetune.evaluate import evaluate
    from atomforge.training.config import DataConfig
    from atomforge.training.data import Split, open_source, split_loader

    model = load_model(model_ref)
    source = open_source(task, url)
    loader = split_loader(source, Split(split, source.files[split]), model.specs[task], model.model.tasks.index(task),
                          DataConfig(max_atoms=4096))
    metrics = evaluate(model.model, loader, model.forces.get(task, "direct")).metrics
    return {"energy_mae_meV": metrics["energy_mae_meV"], "force_mae_meV_per_A": metrics["force_mae_meV_per_A"]}


def downstream_test(output: Path, config) -> dict[str, float]:
    from atomforge.artifacts.reference import load_model
    from atomforge.finetune.run import evaluate_task

    evaluations, _ = evaluate_task(load_model(str(output)), config, "rmd17")
    metrics = evaluations["test"].metrics
    return {"energy_mae_meV": metrics["energy_mae_meV"], "force_mae_meV_per_A": metrics["force_mae_meV_per_A"]}


def run_seed(args, seed: int, root: Path) -> dict:
    from atomforge.recipes.finetune import with_replay
    from atomforge.training.launch import train

    plain = finetune_config(args.data, args.checkpoint, root / f"plain-{seed}", args.steps, seed)
    replay = with_replay(finetune_config(args.data, args.checkpoint, root / f"replay-{seed}", args.steps, seed),
                         args.task, args.task_url, args.weight)
    result = {"seed": seed}
    for arm, config in (("plain", plain), ("replay", replay)):
        started = time.perf_counter()
        resolved = train(config).config
        output = Path(config.checkpoint.output)
        result[arm] = {"pretrained_task_val": task_errors(str(output), args.task, args.task_url, "val"),
                       "downstream_test": downstream_test(output, resolved),
                       "seconds": round(time.perf_counter() - started, 1)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="demo_out/pretrain")
    parser.add_argument("--data", default="demo_out/shards/rmd17")
    parser.add_argument("--task", default="ani1x")
    parser.add_argument("--task-url", default="demo_out/shards/ani1x")
    parser.add_argument("--weight", type=float, default=0.5)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.checkpoint, args.data, args.task_url = (str(Path(p).resolve()) for p in (args.checkpoint, args.data, args.task_url))
    before = task_errors(args.checkpoint, args.task, args.task_url, "val")
    with tempfile.TemporaryDirectory() as tmp:
        runs = [run_seed(args, seed, Path(tmp)) for seed in args.seeds]
    print(f"{args.task} val MAE before fine-tuning: energy {before['energy_mae_meV']:.1f} meV, "
          f"force {before['force_mae_meV_per_A']:.1f} meV/Å")
    print(f"{'seed':>4} {'arm':>7} {args.task + ' val E':>14} {args.task + ' val F':>14} {'rmd17 test E':>13} "
          f"{'rmd17 test F':>13} {'s':>6}")
    for run in runs:
        for arm in ("plain", "replay"):
            a, d = run[arm]["pretrained_task_val"], run[arm]["downstream_test"]
            print(f"{run['seed']:>4} {arm:>7} {a['energy_mae_meV']:>14.1f} {a['force_mae_meV_per_A']:>14.1f} "
                  f"{d['energy_mae_meV']:>13.1f} {d['force_mae_meV_per_A']:>13.1f} {run[arm]['seconds']:>6}")
    for key in ("energy_mae_meV", "force_mae_meV_per_A"):
        ratios = [r["replay"]["pretrained_task_val"][key] / r["plain"]["pretrained_task_val"][key] for r in runs]
        print(f"{args.task} val {key}: replay / plain = {statistics.mean(ratios):.3f} (per seed "
              f"{', '.join(f'{x:.3f}' for x in ratios)})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "before": before,
                                         "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
