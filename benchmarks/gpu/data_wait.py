"""Part 2: the training loader with num_workers 0 / 4 / 8 and pinned memory, as the training loop sees it.

The debug_cpu tasks (the four demo datasets through the temperature mixer) with PaiNN-small at
jmp_s's atom budget (1,024 atoms per micro-batch, bf16): the model of the loader's cores-per-GPU
estimate in docs/training.md (2-4 builder cores per H200 for an assumed 2,000-5,000 structures/s).
Each setting runs `Trainer.fit()` in one process (loader batches pinned on CUDA, copied with
non_blocking) and reads per-step `time/data_s` (waiting for the next batch) and `time/step_s` from
the run's metrics.jsonl; the first steps (worker start-up, CUDA warm-up) are left out. At tiny
sizes: PaiNN-tiny, debug_cpu's 192 atoms, fp32, num_workers 0 and 2.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from gpu.data import train_config, with_model
from gpu.harness import Recorder, Setup

TITLE = "2. training loader: data wait as the loop sees it"
COLUMNS = ("num_workers", "pinned", "steps", "steps_per_s", "structures_per_s", "data_wait_share", "data_ms",
           "step_ms_median")
SHARE = 1.5
GPU_WORKERS, TINY_WORKERS = (0, 4, 8), (0, 2)
WARMUP, GPU_STEPS, TINY_STEPS = 5, 40, 4


def config_for(setup: Setup, output: Path, num_workers: int, steps: int):
    from atomforge.models.painn import PaiNNConfig
    from atomforge.recipes.jmp import debug_cpu, jmp_s

    overrides = ("log_every=1", f"data.num_workers={num_workers}")
    if setup.tiny:
        return train_config(debug_cpu, setup.shards, output, setup.device, "none", steps, *overrides)
    config = train_config(debug_cpu, setup.shards, output, setup.device, "bf16", steps, *overrides)
    return with_model(config, PaiNNConfig.small(), jmp_s().data.max_atoms)


def measure(setup: Setup, output: Path, num_workers: int, steps: int) -> dict:
    from atomforge.training.build import build_trainer
    from atomforge.training.launch import process_device

    config = config_for(setup, output, num_workers, steps)
    trainer = build_trainer(config, device=process_device(config))
    trainer.fit()
    records = sorted((json.loads(line) for line in (output / "logs" / "metrics.jsonl").read_text().splitlines()),
                     key=lambda r: r["step"])
    steady = [r for r in records if r["kind"] == "train" and r["step"] > min(WARMUP, steps - 2)]
    step_s = [r["time/step_s"] for r in steady]
    data_s = [r["time/data_s"] for r in steady]
    seen = [sum(v for k, v in r.items() if k.startswith("seen/")) for r in steady]
    return {"num_workers": num_workers, "pinned": pinned(trainer.parts.train_loader) if setup.cuda else False, "steps": len(steady),
            "steps_per_s": len(steady) / sum(step_s), "structures_per_s": (seen[-1] - seen[0]) / sum(step_s[1:]),
            "data_wait_share": sum(data_s) / sum(step_s), "data_ms": 1000 * statistics.mean(data_s),
            "step_ms_median": 1000 * statistics.median(step_s)}


def pinned(loader) -> bool:
    """Whether the loader's batches arrive in page-locked memory (what non_blocking copies need)."""
    batches = iter(loader)
    try:
        return bool(next(batches).pos.is_pinned())
    finally:
        batches.close()


def run(setup: Setup, record: Recorder) -> None:
    workers, steps = (TINY_WORKERS, TINY_STEPS) if setup.tiny else (GPU_WORKERS, WARMUP + GPU_STEPS)
    estimate = 10.0
    for num_workers in workers:
        name = f"num_workers={num_workers}"
        if not record.fits(name, estimate):
            continue
        with record.case(name) as case:
            case.metrics.update(measure(setup, setup.work / "loader" / f"w{num_workers}", num_workers, steps))
            if setup.cuda and not case.metrics["pinned"]:
                case.fail("the loader did not pin its batches on a CUDA run")
        estimate = max(estimate, case.metrics.get("steps", 0) / max(case.metrics.get("steps_per_s", 1), 1e-9) + 5)
