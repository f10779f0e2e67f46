"""One fine-tuning run (pretrained or from scratch) and the side-by-side comparison of both.

Output of a run (`<output>/<variant>/`, variant = "pretrained" | "scratch"):
    checkpoint/        the best EMA weights in the checkpoint layout (`atomforge.artifacts.checkpoint`:
                       state.pt, model.json, config.json with the fine-tuning config and metrics,
                       tasks.json with each task's spec, force mode and how its linear reference was
                       obtained): `jobs/export.py --checkpoint <output>/pretrained/checkpoint` exports it
    metrics.json       MAE / RMSE per split in meV, meV/atom, meV/Å; sizes, epochs, seconds
    history.jsonl      one line per epoch (train loss, val metrics, lr)
    test_predictions.npz   energy_pred/true (G,) eV, natoms (G,), forces_pred/true (N, 3) eV/Å
`compare` also writes `<output>/comparison.json` and returns the printed table.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from atomforge.artifacts import checkpoint as ckpt
from atomforge.artifacts.pretrained import LEAST_SQUARES, Pretrained, reference_record, task_record
from atomforge.artifacts.reference import load_model
from atomforge.finetune.config import FinetuneConfig
from atomforge.finetune.data import DownstreamData, load_downstream
from atomforge.finetune.pretrained import downstream_model
from atomforge.finetune.trainer import FinetuneResult, finetune
from atomforge.training.config import to_jsonable

VARIANTS = ("pretrained", "scratch")
SINGLE_RUN_NOTE = ("one run of one seed: differences of this size come and go with the seed; "
                   "the comparison over seeds is `make replicate` (docs/replication.md)")


@dataclass
class RunSummary:
    """What a run reports: metrics per split (physical units) and where its files are."""

    variant: str
    metrics: dict[str, dict[str, float]]
    sizes: dict[str, int]
    best_epoch: int
    epochs: int
    seconds: float
    num_parameters: int
    output: str


def run_variant(config: FinetuneConfig, checkpoint: str | None, variant: str, log=print) -> RunSummary:
    """Fine-tune from `checkpoint` ("pretrained") or the same architecture from a fresh init ("scratch")."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    source = load_model(checkpoint, config.use_ema_weights) if checkpoint else None
    if source is None and config.backbone is None:
        raise ValueError("no --checkpoint and no backbone in the recipe: nothing defines the architecture")
    backbone = source.model.backbone_config if source is not None else config.backbone
    cutoff = float(backbone.cutoff)
    if config.target.cutoff is not None and config.target.cutoff != cutoff:
        raise ValueError(f"target.cutoff {config.target.cutoff} Å differs from the backbone's {cutoff} Å: the graphs "
                         "would hold other pairs than the model uses; leave target.cutoff unset (= the backbone's)")
    data = load_downstream(config.data, config.target, cutoff)
    log(f"[finetune {config.name}] {variant}: {data.sizes()} structures ({data.num_skipped} skipped), "
        f"task {data.spec.name!r} cutoff {cutoff} Å, forces {config.target.forces}")
    start_from = source if variant == "pretrained" else None
    if variant == "pretrained" and source is None:
        raise ValueError("variant 'pretrained' needs --checkpoint")
    heads = sorted({head for entry in config.objective_entries() for head in entry.objective.heads})
    model = downstream_model(start_from, backbone, data.spec, config.keep_pretrained_heads, config.seed, heads)
    result = finetune(model, data, config, log)
    out = Path(config.output) / variant
    write_run(out, config, data, result, source, variant)
    return RunSummary(variant, result.metrics, data.sizes(), result.best_epoch, len(result.history),
                      round(result.seconds, 1), sum(p.numel() for p in model.parameters()), str(out))


def write_run(out: Path, config: FinetuneConfig, data: DownstreamData, result: FinetuneResult,
              source: Pretrained | None, variant: str) -> None:
    """Checkpoint (with task records), metrics, history and test predictions under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    model, spec = result.model, data.spec
    specs = {name: to_jsonable(s) for name, s in (source.specs.items() if source else [])}
    specs[spec.name] = to_jsonable(spec)
    meta: dict[str, Any] = {
        **to_jsonable(config), "kind": "finetune", "variant": variant,
        "task_specs": {t: specs[t] for t in model.tasks if t in specs},
        "forces": {t: (config.target.forces if t == spec.name else (source.forces.get(t, "direct") if source else "direct"))
                   for t in model.tasks},
        "target": to_jsonable(config.target), "metrics": result.metrics,
        "pretrained_from": source.source if source and variant == "pretrained" else None,
        "pretraining": source.meta if source and variant == "pretrained" else None,
    }
    weights = model.state_dict()  # the best EMA weights when EMA is on: export them as the EMA copy
    ema = {f"module.{k}": v for k, v in weights.items()} if config.optim.ema_decay > 0 else None
    state = {"step": result.best_epoch, "model": weights, "ema": ema}
    tasks = task_records(model.tasks, config, data, source, meta["forces"])
    ckpt.write_checkpoint(out / "checkpoint", state, meta, model.config_dict(), tasks)
    (out / "metrics.json").write_text(json.dumps({"variant": variant, "metrics": result.metrics,
                                                  "best_epoch": result.best_epoch, "seconds": result.seconds}, indent=2))
    (out / "history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in result.history))
    np.savez(out / "test_predictions.npz", **result.predictions)


def task_records(tasks, config: FinetuneConfig, data: DownstreamData, source: Pretrained | None,
                 forces: dict[str, str]) -> dict[str, dict]:
    """Each task's record: the new task's linear reference was fitted on the train split
    (`finetune.data.fit_statistics`), kept pretraining tasks' references come unchanged from the source."""
    records = {}
    for name in tasks:
        if name != data.spec.name:
            records[name] = task_record(source.specs[name], forces[name], reference_record("kept", **{"from": source.source}))
            continue
        mean = config.target.kind == "property" and config.target.pooling == "mean"
        fitted = reference_record("fitted", fitted_on=f"{config.data.path} train split ({data.sizes()['train']} "
                                  f"structures, split seed {config.data.seed})",
                                  method="mean per atom of the train split" if mean else LEAST_SQUARES)
        records[name] = task_record(data.spec, forces[name], fitted)
    return records


def compare(config: FinetuneConfig, checkpoint: str, log=print) -> tuple[str, dict[str, Any]]:
    """Run pretrained and scratch with the same budget; (table text, JSON-able report) and comparison.json."""
    runs = {variant: run_variant(config, checkpoint, variant, log) for variant in VARIANTS}
    report = {"recipe": config.name, "checkpoint": checkpoint, "runs": {k: asdict(v) for k, v in runs.items()}}
    table = comparison_table(runs)
    report["table"] = table
    Path(config.output).mkdir(parents=True, exist_ok=True)
    (Path(config.output) / "comparison.json").write_text(json.dumps(report, indent=2))
    return table, report


def comparison_table(runs: dict[str, RunSummary]) -> str:
    """Metrics side by side (val and test), with the relative improvement of pretrained over scratch."""
    pre, scratch = runs["pretrained"], runs["scratch"]
    lines = [f"{'metric':<34}{'pretrained':>12}{'scratch':>12}{'improvement':>13}"]
    for split in ("val", "test"):
        for name, value in pre.metrics[split].items():
            other = scratch.metrics[split][name]
            gain = f"{100 * (1 - value / other):+.1f}%" if other > 0 else "n/a"
            lines.append(f"{split + ' ' + name:<34}{value:>12.3f}{other:>12.3f}{gain:>13}")
    lines.append(f"{'best epoch / epochs run':<34}{f'{pre.best_epoch}/{pre.epochs}':>12}{f'{scratch.best_epoch}/{scratch.epochs}':>12}")
    lines.append(f"{'seconds':<34}{pre.seconds:>12.1f}{scratch.seconds:>12.1f}")
    lines.append(SINGLE_RUN_NOTE)
    return "\n".join(lines)
