"""Part 1: every debug objective mix trains on the device in fp32, bf16 and fp16 with the training loop itself.

Mixes (the debug_cpu setup: tiny PaiNN, the four demo tasks, 192 atoms per micro-batch): JMP,
JMP + DeNS, SCD, coordinate denoising, H-masking. Each runs `build_trainer(config,
device=process_device(config)).fit()`, the trainer every Ray worker runs (autocast, GradScaler, generators on the device, the shard
loader with pinned memory, EMA, the checkpoint at the end), for 30 steps (3 at tiny sizes), and
its per-step loss and gradient norm are read back from the run's logs/metrics.jsonl.

Checks: every step's loss is finite; every gradient norm is finite except on steps fp16's
GradScaler skipped (counted from the scale in the final checkpoint, which halves per skipped step:
fewer than half the steps may be skipped); the step-1 loss is within TOLERANCE of the fp32 run's
step-1 loss. Same seed, so step 1 has the same initial weights, batch and noise in every precision:
the difference is rounding alone.

TOLERANCE, relative to the fp32 loss: 16 unit roundoffs of the autocast dtype (bf16 u = 2⁻⁸, so
6.3e-2; fp16 u = 2⁻¹¹, so 7.8e-3). Autocast runs the linear layers in the low precision (each
output carries about u of relative error, growing with depth: embedding, 2 message/update blocks,
the heads) while reductions, norms and the loss stay fp32; the losses are means of absolute errors
of O(1) normalised targets, whose rounding errors partly cancel. Measured on CPU bf16 (2 steps,
this commit): the largest step-1 difference over the five mixes is reported in the table
(docs/gpu.md); a difference above 16u means a term is not rounding but a dtype or device bug.
fp16 is CUDA-only (its GradScaler is CUDA's; the config refuses fp16 without a GPU), so on CPU its
rows are skips with that reason.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from gpu.data import train_config
from gpu.harness import Recorder, Setup

TITLE = "1. objective mixes under AMP (training loop, one device)"
COLUMNS = ("steps", "loss_step1", "loss_last", "rel_diff_step1", "tolerance", "skipped_steps", "steps_per_s")
SHARE = 3.0
PRECISIONS = ("fp32", "bf16", "fp16")
UNIT_ROUNDOFF = {"bf16": 2.0**-8, "fp16": 2.0**-11}
TOLERANCE = {dtype: 16 * u for dtype, u in UNIT_ROUNDOFF.items()}
GPU_STEPS, TINY_STEPS = 30, 3


def mixes() -> dict:
    """mix name -> recipe function, each the debug_cpu setup with one objective mix."""
    from atomforge.objectives import HydrogenMasking, MixEntry
    from atomforge.recipes.jmp import RECIPES, debug_cpu, with_objectives

    return {
        "jmp": debug_cpu,
        "jmp_dens": RECIPES["debug_jmp_dens"],
        "scd": RECIPES["debug_scd"],
        "denoise": RECIPES["debug_denoise"],
        "hmask": lambda: with_objectives(debug_cpu(), MixEntry(HydrogenMasking()), name="debug_hmask"),
    }


def train(recipe, setup: Setup, output: Path, precision: str, steps: int) -> dict:
    """Run the loop; per-step losses, gradient norms and step times, and the final GradScaler scale."""
    from atomforge.artifacts.checkpoint import latest_checkpoint, read_state
    from atomforge.training.build import build_trainer
    from atomforge.training.launch import process_device

    amp = "none" if precision == "fp32" else precision
    config = train_config(recipe, setup.shards, output, setup.device, amp, steps, "log_every=1")
    build_trainer(config, device=process_device(config)).fit()
    records = [json.loads(line) for line in (output / "logs" / "metrics.jsonl").read_text().splitlines()]
    train_records = sorted((r for r in records if r["kind"] == "train"), key=lambda r: r["step"])
    scaler = read_state(Path(latest_checkpoint(str(output))))["scaler"]
    return {"loss": [r["loss"] for r in train_records], "grad_norm": [r["grad_norm"] for r in train_records],
            "step_s": [r["time/step_s"] for r in train_records], "scale": scaler.get("scale")}


def skipped_steps(scale: float | None) -> int:
    """Steps fp16's GradScaler skipped: its scale starts at 2¹⁶ and halves on each (no growth within
    the 2000-step growth interval)."""
    return 0 if not scale else max(0, round(math.log2(65536.0 / scale)))


def check(case, result: dict, precision: str, reference: float | None, steps: int) -> None:
    losses, norms = result["loss"], result["grad_norm"]
    skipped = skipped_steps(result["scale"]) if precision == "fp16" else 0
    case.metrics.update(steps=len(losses), loss_step1=losses[0], loss_last=losses[-1], skipped_steps=skipped,
                        steps_per_s=len(losses[1:]) / max(sum(result["step_s"][1:]), 1e-9))
    if len(losses) != steps:
        case.fail(f"{len(losses)} logged steps, expected {steps}")
    if not all(math.isfinite(v) for v in losses):
        case.fail(f"non-finite loss at steps {[i + 1 for i, v in enumerate(losses) if not math.isfinite(v)]}")
    bad_norms = sum(not math.isfinite(v) for v in norms)
    if bad_norms > skipped:
        case.fail(f"{bad_norms} non-finite gradient norms, but the GradScaler skipped {skipped} steps")
    if skipped >= max(steps // 2, 1):
        case.fail(f"the GradScaler skipped {skipped} of {steps} steps: fp16 loss scaling never settled")
    if reference is None and precision in TOLERANCE:
        case.note = "no fp32 step-1 loss to compare with (the fp32 run failed or was skipped)"
    if reference is not None and precision in TOLERANCE:
        rel = abs(losses[0] - reference) / max(abs(reference), 1e-12)
        case.metrics.update(rel_diff_step1=rel, tolerance=TOLERANCE[precision])
        if not rel <= TOLERANCE[precision]:
            case.fail(f"step-1 loss {losses[0]:.6g} vs fp32 {reference:.6g}: relative {rel:.2e} > {TOLERANCE[precision]:.1e}")


def run(setup: Setup, record: Recorder) -> None:
    steps = TINY_STEPS if setup.tiny else GPU_STEPS
    estimate = 5.0
    for name, recipe in mixes().items():
        reference = None
        for precision in PRECISIONS:
            case_name = f"{name}/{precision}"
            if precision == "fp16" and not setup.cuda:
                record.skip(case_name, "fp16 needs CUDA (GradScaler is CUDA's; the config refuses fp16 on CPU)")
                continue
            if not record.fits(case_name, estimate):
                continue
            started = time.perf_counter()
            with record.case(case_name) as case:
                result = train(recipe, setup, setup.work / "amp" / case_name.replace("/", "_"), precision, steps)
                check(case, result, precision, reference, steps)
                if precision == "fp32":
                    reference = result["loss"][0]
            estimate = max(estimate, time.perf_counter() - started)
