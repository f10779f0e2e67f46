"""Replication benchmark: each seed paper's headline comparison in miniature, over seeds, on real-physics labels.

    python benchmarks/replicate.py [--quick | --smoke] [--seeds 0 1 2] [--molecules ethanol benzene]
                                   [--json F] [--output DIR] [--workers 2]

Corpora (EMT, GFN2-xTB, TIP3P labels) -> shards (atomforge.pipeline) -> one pretraining per
objective per seed -> fine-tuning of every arm on every downstream set -> a markdown table
(`replication.md`), JSON and one plot (`replication.png`) under --output. Same backbone, optimiser
and optimizer-step budget per arm; the design and why: docs/replication.md. Default run: ~90 min
on 2 idle cores; --quick (a short end-to-end run whose numbers carry little science) ~10 min;
--smoke (tiny data, a few steps; CI) ~2 min. Finished jobs are cached under --output, so a run
that stopped continues where it was.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from replication import runner  # noqa: E402
from replication.design import BACKBONE, BUDGETS, FINETUNINGS, PRETRAININGS  # noqa: E402
from replication.report import markdown, plot, rows  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="short budgets and small corpora (~10 min)")
    mode.add_argument("--smoke", action="store_true", help="tiny corpora and a few steps: structure only (CI)")
    parser.add_argument("--seeds", type=int, nargs="+", help="default: 0 1 2 (--smoke: 0)")
    parser.add_argument("--molecules", nargs="+", help="rMD17-format sets (default: ethanol benzene; --quick: ethanol)")
    parser.add_argument("--json", type=Path, help="also write the JSON report here")
    parser.add_argument("--output", type=Path, default=Path("replication_out"))
    parser.add_argument("--workers", type=int, default=2, help="single-threaded processes running jobs")
    args = parser.parse_args(argv)
    args.mode = "smoke" if args.smoke else "quick" if args.quick else "default"
    args.seeds = args.seeds or ([0] if args.mode == "smoke" else [0, 1, 2])
    if len(args.seeds) < 2 and args.mode != "smoke":
        parser.error("--seeds: at least two seeds (a std needs them; the benchmark's claims use >= 3)")
    args.molecules = args.molecules or (["ethanol", "benzene"] if args.mode == "default" else ["ethanol"])
    return args


def prepare(args: argparse.Namespace, log) -> tuple[Path, Path]:
    """Corpora (cached) and shards (the pipeline is a no-op on a finished output)."""
    from atomforge.corpora.demo import replication_parts

    budget = BUDGETS[args.mode]
    corpora, shards = args.output / "corpora" / budget.corpora, args.output / "shards" / budget.corpora
    corpora.mkdir(parents=True, exist_ok=True)
    parts = sorted(replication_parts(tuple(args.molecules)), key=lambda p: p != "jmp")  # the longest first
    log(f"corpora ({budget.corpora}): {', '.join(parts)}")
    runner.run_all([(runner.corpus_job, (str(corpora), part, budget.corpora), corpora / f".{part}.{budget.corpora}.done")
                    for part in parts], args.workers, log)
    log("shards")
    runner.run_all([(runner.shard_job, (str(corpora), str(shards), d), shards / d / "manifest.json")
                    for d in runner.DATASETS], args.workers, log)
    sets = [(family, d) for family, names in downstream_sets(args).items() for d in names]
    runner.run_all([(runner.downstream_job, (str(corpora), str(shards), family, d),
                     runner.downstream_shards(shards, family, d) / "manifest.json") for family, d in sets], args.workers, log)
    return corpora, shards


def downstream_sets(args: argparse.Namespace) -> dict[str, list[str]]:
    """family -> the downstream sets fine-tuned on."""
    return {"molecules": args.molecules, "bulk": ["bulk_modulus"], "water": ["water"]}


def experiments(args: argparse.Namespace, corpora: Path, shards: Path, log) -> dict:
    """Every pretraining arm per seed, then every fine-tuning arm per set and seed; results by arm and seed."""
    out = args.output / args.mode
    check_design(out, args.mode)
    datasets = downstream_sets(args)
    log(f"pretraining: {len(PRETRAININGS)} arms x {len(args.seeds)} seeds")
    jobs = []
    for s in args.seeds:
        for p in PRETRAININGS:
            target = out / "pretrain" / p.name / f"seed{s}"
            jobs.append((runner.pretrain_job, (p.name, args.mode, s, str(shards), str(target)), target / "result.json"))
    results: dict = {"pretrain": {}, "finetune": {}}
    for (_, job, _), result in zip(jobs, runner.run_all(jobs, args.workers, log)):
        results["pretrain"].setdefault(job[0], {})[job[2]] = result
    jobs = []
    for family, arms in FINETUNINGS.items():
        for dataset in datasets[family]:
            for s in args.seeds:
                for arm in arms:
                    checkpoint = str(out / "pretrain" / arm.pretraining / f"seed{s}") if arm.pretraining else None
                    target = out / "finetune" / family / dataset / arm.name / f"seed{s}"
                    jobs.append((runner.finetune_job, (arm, dataset, args.mode, s, str(shards), checkpoint, str(target)),
                                 target / "result.json"))
    log(f"fine-tuning: {len(jobs)} runs")
    for (_, job, _), result in zip(jobs, runner.run_all(jobs, args.workers, log)):
        arm, dataset, seed = job[0], job[1], job[3]
        results["finetune"].setdefault(arm.family, {}).setdefault(dataset, {}).setdefault(arm.name, {})[seed] = result
    return {"datasets": datasets, **results}


def check_design(out: Path, mode: str) -> None:
    """Finished jobs are reused by path, so a directory holds results of one design only: the budget, backbone
    and arms are recorded at the first run and a run under another design is refused."""
    design = json.dumps({"budget": dataclasses.asdict(BUDGETS[mode]), "backbone": repr(BACKBONE),
                         "pretrainings": [p.name for p in PRETRAININGS]}, sort_keys=True, indent=1)
    record = out / "design.json"
    if record.exists() and record.read_text() != design:
        raise SystemExit(f"{out}: its results were made under another design ({record} differs from this code's "
                         "budget, backbone or arms); pass a new --output or remove that directory")
    out.mkdir(parents=True, exist_ok=True)
    record.write_text(design)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[replicate {time.perf_counter() - started:6.0f} s] {message}", flush=True)

    corpora, shards = prepare(args, log)
    results = experiments(args, corpora, shards, log)
    table_rows = rows(results, args.seeds, results["datasets"])
    command = "python benchmarks/replicate.py " + " ".join(argv if argv is not None else sys.argv[1:])
    wall = time.perf_counter() - started
    times = os.times()  # job processes are reaped when each pool closes, so their CPU is counted here
    cpu = times.user + times.system + times.children_user + times.children_system
    header = (f"Replication ({args.mode}; seeds {args.seeds}; {wall / 60:.1f} min wall, {cpu:.0f} s of CPU "
              f"on this machine)\n\n"
              f"`{command.strip()}`")
    table = markdown(table_rows, header)
    report = {"mode": args.mode, "seeds": args.seeds, "budget": BUDGETS[args.mode].__dict__,
              "wall_s": wall, "cpu_s": cpu,
              "command": command.strip(), "rows": table_rows, "runs": results}
    out = args.output / args.mode
    (out / "replication.md").write_text(table)
    (out / "replication.json").write_text(json.dumps(report, indent=2, default=str))
    picture = plot(table_rows, out / "replication.png")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str))
    print("\n" + table)
    print(f"written: {out / 'replication.md'}, {out / 'replication.json'}, {picture}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
