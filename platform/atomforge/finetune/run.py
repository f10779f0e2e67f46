"""One fine-tuning run (pretrained or from scratch) on the trainer, its evaluation, and the side-by-side comparison.

A fine-tuning recipe is a `TrainConfig` (`atomforge.recipes.finetune`); `run_variant` points it at a
pretrained model (or the same backbone from fresh weights), runs it with `training.launch.train`
(in this process or on Ray Train, per `scaling.num_workers`, exactly as pretraining), then
evaluates the selected weights on the validation and test rows in physical units.

Output of a run (`<output>/<variant>/`, variant = "pretrained" | "scratch"):
    best/              the selected (EMA) weights in the checkpoint layout, tasks.json with each task's
                       spec, force mode and how its linear reference was obtained, config.json with the
                       run config and the metrics: `jobs/export.py --checkpoint <output>/pretrained/best`
    checkpoint_*/      the resumable training state; logs/ the trainer's metrics.jsonl and TensorBoard
    metrics.json       MAE / RMSE per split in meV, meV/atom, meV/Å; sizes, epochs, seconds
    history.jsonl      one line per validation (epoch): train loss and metrics, val metrics, lr
    test_predictions.npz   energy_pred/true (G,) eV, natoms (G,), forces_pred/true (N, 3) eV/Å
`compare` also writes `<output>/comparison.json` and returns the printed table.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from atomforge.artifacts.reference import load_model
from atomforge.finetune.evaluate import evaluate
from atomforge.storage import filesystem
from atomforge.training.config import TrainConfig, absolute_local_paths, with_model
from atomforge.training.data import open_source, split_loader, task_splits
from atomforge.training.launch import RunResult, train

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
    optimizer_steps: int = 0
    tasks: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # task -> split -> metrics


def variant_config(config: TrainConfig, checkpoint: str | None, variant: str) -> TrainConfig:
    """`config` starting from `checkpoint` ("pretrained") or from fresh weights of the same backbone
    ("scratch": the checkpoint's backbone when there is one, else the recipe's), under `<output>/<variant>`."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    output = f"{config.checkpoint.output.rstrip('/')}/{variant}"
    config = replace(config, checkpoint=replace(config.checkpoint, output=output))
    if variant == "pretrained":
        if not checkpoint:
            raise ValueError("variant 'pretrained' needs --checkpoint")
        return absolute_local_paths(replace(config, init=replace(config.init, source=checkpoint)))
    if checkpoint:
        config = with_model(config, load_model(checkpoint).model.backbone_config)
    downstream = {t: config.data.tasks[t] for t in config.downstream_tasks()}
    if len(downstream) < len(config.data.tasks):  # replay needs the pretrained heads: none from scratch
        config = replace(config, data=replace(config.data, tasks=downstream))
    if config.model is None:
        raise ValueError("no --checkpoint and no model in the recipe: nothing defines the architecture")
    return absolute_local_paths(replace(config, init=replace(config.init, source="")))


def run_variant(config: TrainConfig, checkpoint: str | None, variant: str, log=print, hooks=()) -> RunSummary:
    """Fine-tune (`variant_config`), then evaluate the selected weights; writes the run's files.
    `hooks`: trainer hooks run after the config's own (`training.launch.train`)."""
    started = time.time()
    result = train(variant_config(config, checkpoint, variant), hooks=hooks)
    summary = evaluate_run(result, variant, time.time() - started)
    log(f"[finetune {config.name}] {variant}: {summary.sizes} structures, best epoch {summary.best_epoch}/"
        f"{summary.epochs}, test {summary.metrics['test']}")
    return summary


def evaluate_run(result: RunResult, variant: str, seconds: float) -> RunSummary:
    """The run's selected weights on every downstream task's val and test rows; metrics.json, history.jsonl,
    test_predictions.npz (the first task's), and the metrics recorded in best/config.json (the model card's).
    `RunSummary.metrics` is the first downstream task's; `tasks` every downstream task's."""
    config = result.config
    out = config.checkpoint.output
    selected = f"{out}/best" if config.early_stopping is not None else out
    model = load_model(selected)
    evaluations, sizes = {}, {}
    for name in config.downstream_tasks():
        evaluations[name], sizes[name] = evaluate_task(model, config, name)
    first = next(iter(evaluations))
    metrics = {split: e.metrics for split, e in evaluations[first].items()}
    epoch = result.steps_per_epoch or 1
    history = history_records(Path(out) / "logs" / "metrics.jsonl", epoch)
    best_step = int(model.meta.get("best_step", config.max_steps))
    summary = RunSummary(variant, metrics, sizes[first], math.ceil(best_step / epoch),
                         math.ceil(_last_step(history, config.max_steps) / epoch), round(seconds, 1),
                         sum(p.numel() for p in model.model.parameters()), out, _last_step(history, config.max_steps),
                         {t: {split: e.metrics for split, e in ev.items()} for t, ev in evaluations.items()})
    write_outputs(Path(out), summary, history, evaluations[first]["test"].arrays, selected)
    return summary


def evaluate_task(model, config: TrainConfig, name: str) -> tuple[dict[str, Any], dict[str, int]]:
    """({"val": Evaluation, "test": Evaluation}, rows per role) of task `name` in physical units."""
    task = config.data.tasks[name]
    source = open_source(task.dataset_name, task.url)
    splits = task_splits(source, config.data, task)
    forces = model.forces[name] if "forces" in (model.specs[name].labels or ("energy", "forces")) else None
    index = model.model.tasks.index(name)
    evaluations = {}
    for split in ("val", "test"):
        loader = split_loader(source, splits[split], model.specs[name], index, config.data) if split in splits else None
        evaluations[split] = evaluate(model.model, loader or [], forces, task.per_atom)
    return evaluations, {r: s.num_rows for r, s in splits.items()}


def history_records(metrics_jsonl: Path, steps_per_epoch: int) -> list[dict[str, Any]]:
    """One record per validation: epoch, step, the train record of that step (loss, lr, objective metrics)
    and the validation metrics, from the trainer's metrics.jsonl."""
    if not metrics_jsonl.exists():
        return []
    records = [json.loads(line) for line in metrics_jsonl.read_text().splitlines() if line.strip()]
    train = {r["step"]: r for r in records if r["kind"] == "train"}
    skip = ("kind", "step", "time", "loss", "lr", "structures_per_s")
    history = []
    for record in (r for r in records if r["kind"] == "val"):
        step, row = record["step"], train.get(record["step"], {})
        entry = {"epoch": step / steps_per_epoch, "step": step, "train_loss": row.get("loss"), "lr": row.get("lr")}
        entry |= {f"train/{k}": v for k, v in row.items() if k not in skip and not k.startswith(("seen/", "share/", "expected/", "time/"))}
        entry |= {k: v for k, v in record.items() if k.startswith("val/")}
        if history and history[-1]["step"] == step:
            history[-1].update(entry)
        else:
            history.append(entry)
    return history


def _last_step(history: list[dict[str, Any]], default: int) -> int:
    return int(history[-1]["step"]) if history else default


def write_outputs(out: Path, summary: RunSummary, history: list[dict], predictions: dict, selected: str) -> None:
    """metrics.json, history.jsonl, test_predictions.npz under `out`; the metrics into `selected`/config.json."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps({"variant": summary.variant, "metrics": summary.metrics,
                                                  "tasks": summary.tasks, "best_epoch": summary.best_epoch,
                                                  "epochs": summary.epochs, "sizes": summary.sizes,
                                                  "seconds": summary.seconds}, indent=2))
    (out / "history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    np.savez(out / "test_predictions.npz", **predictions)
    fs, root = filesystem(selected)
    if fs.exists(f"{root}/config.json"):
        meta = json.loads(fs.cat_file(f"{root}/config.json"))
        metrics = summary.metrics if len(summary.tasks) <= 1 else {
            f"{task} {split}": values for task, splits in summary.tasks.items() for split, values in splits.items()}
        fs.pipe_file(f"{root}/config.json", json.dumps({**meta, "metrics": metrics}, indent=2).encode())


def compare(config: TrainConfig, checkpoint: str, log=print) -> tuple[str, dict[str, Any]]:
    """Run pretrained and scratch with the same budget; (table text, JSON-able report) and comparison.json."""
    runs = {variant: run_variant(config, checkpoint, variant, log) for variant in VARIANTS}
    report = {"recipe": config.name, "checkpoint": checkpoint, "runs": {k: asdict(v) for k, v in runs.items()}}
    table = comparison_table(runs)
    report["table"] = table
    Path(config.checkpoint.output).mkdir(parents=True, exist_ok=True)
    (Path(config.checkpoint.output) / "comparison.json").write_text(json.dumps(report, indent=2))
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
