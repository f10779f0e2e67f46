"""Training throughput: optimizer steps/s and structures/s of debug_cpu with 1 and 2 Ray Train workers.

    python benchmarks/train.py [--json bench_out/train.json] [--steps N] [--workers 1 2]

Runs `jobs/jmp_pretrain.py`'s launcher on synthetic OC20/ANI-1x-like shards (the test fixture's
generator) and times the steady state from the run's metrics.jsonl (between the first and the last
logged step, so Ray start-up and worker-group creation are excluded and reported separately).
Per-worker atom budget is fixed, so 2 workers process twice the structures per step.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(workers: int, steps: int, shards: dict[str, str], output: Path) -> dict:
    from atomforge.recipes.jmp import debug_cpu, with_data
    from atomforge.training.launch import train
    from atomforge.training.overrides import apply_overrides

    config = apply_overrides(with_data(debug_cpu(), shards), [
        f"scaling.num_workers={workers}", f"checkpoint.output={output}", f"max_steps={steps}",
        f"checkpoint.every_steps={steps}", "log_every=5", "val_every=0", "scaling.max_failures=0",
    ])
    start = time.perf_counter()
    train(config)
    wall = time.perf_counter() - start
    records = [json.loads(line) for line in (output / "logs" / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["kind"] == "train"]
    first, last = train_records[0], train_records[-1]
    seconds = last["time"] - first["time"]
    steady_steps = last["step"] - first["step"]
    seen_first = sum(v for k, v in first.items() if k.startswith("seen/"))
    seen_last = sum(v for k, v in last.items() if k.startswith("seen/"))
    return {
        "workers": workers, "steps": steps, "wall_s": wall,
        "steps_per_s": steady_steps / seconds, "structures_per_s": (seen_last - seen_first) / seconds,
        "startup_and_first_steps_s": wall - seconds,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "tests" / "training"))
    import ray
    from conftest import write_tiny_shards  # the synthetic four-task shards of the training tests

    work = Path(tempfile.mkdtemp(prefix="atomforge-train-bench-"))
    shards = write_tiny_shards(work / "shards")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO / "platform")}})
    results = [run(n, args.steps, shards, work / f"run{n}") for n in args.workers]
    ray.shutdown()
    print(f"{'workers':>8s} {'steps/s':>9s} {'structures/s':>13s} {'startup s':>10s}")
    for r in results:
        print(f"{r['workers']:8d} {r['steps_per_s']:9.2f} {r['structures_per_s']:13.1f} {r['startup_and_first_steps_s']:10.1f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
