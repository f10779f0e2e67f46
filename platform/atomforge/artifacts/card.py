"""The model card (README.md of an export): what the model is, what it saw, how well it does, where it fails."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ase.data import chemical_symbols

LIMITATIONS = """- Predictions are only as good as the training data's level of theory and coverage: elements,
  bonding environments, temperatures and cell sizes outside them are extrapolation. Check errors on
  a held-out set of your own systems before running production simulations.
- Interactions beyond each task's cutoff (see the task table) are invisible to the model: no
  long-range electrostatics or dispersion beyond it.
- Energies are per task: a task's energy convention (total or referenced) and linear reference
  apply only to that task's head; do not mix heads.
- Direct-force heads are not conservative; use gradient forces (`forces="gradient"`) for molecular
  dynamics that must conserve energy.
- Demo-sized models (trained for minutes on the atomforge demo corpora, labelled by EMT and
  GFN2-xTB rather than DFT) are for testing the tooling, not for science."""


def model_card(config: Mapping[str, Any], name: str, license_id: str, num_parameters: int) -> str:
    """README.md text with a YAML header (license, library, tags) for the hub."""
    model, training = config["model"], config.get("training") or {}
    header = "\n".join(["---", f"license: {license_id}", "library_name: atomforge",
                        "tags: [atomistic, machine-learning-potential, graph-neural-network, ase]", "---"])
    sections = [
        header,
        f"# {name}",
        f"An atomistic model (graph neural network force field) exported by atomforge "
        f"{config['atomforge_version']}: backbone `{model['backbone_class'].rsplit('.', 1)[-1]}` "
        f"({num_parameters:,} parameters and buffers), weights: {config['weights']} copy.",
        "## Architecture\n```json\n" + json.dumps(model["backbone"], indent=2) + "\n```",
        "## Tasks (heads)\n" + task_table(config["tasks"]),
        "## Energy references\n" + reference_text(config["tasks"]),
        "## Training data and objectives\n" + training_text(training),
        "## Metrics\n" + metrics_text(training),
        "## Intended use\nEnergies (eV), forces (eV/Å) and, for periodic systems, stress (eV/Å³) of "
        "structures like those in the training data: screening, relaxations and molecular dynamics "
        "through the ASE calculator, and as a starting point for fine-tuning on a downstream set.\n\n"
        "```python\nimport atomforge\nmodel = atomforge.load_pretrained(\"<this folder or hub id>\")\n"
        f"atoms.calc = model.calculator(task=\"{next(iter(config['tasks']))}\")\n```",
        "## Limitations\n" + LIMITATIONS,
        f"## Licence\nWeights: {license_id}. The training data keep their own licences (e.g. OC20/OC22 "
        "CC-BY-4.0, ANI-1x CC-BY-4.0, Transition1x CC-BY-4.0, rMD17 CC0); check them for your use. "
        "No JMP code or weights are included.",
    ]
    return "\n\n".join(sections) + "\n"


def task_table(tasks: Mapping[str, Mapping[str, Any]]) -> str:
    lines = ["| task | cutoff (Å) | max neighbors | forces | energy convention | energy std (eV) | force std (eV/Å) |",
             "|---|---|---|---|---|---|---|"]
    for name, t in tasks.items():
        lines.append(f"| {name} | {t['cutoff']} | {t['max_neighbors']} | {t['forces']} | {t['energy_convention']} "
                     f"| {t['energy_std']:.4g} | {t['force_std']:.4g} |")
    return "\n".join(lines)


def reference_text(tasks: Mapping[str, Mapping[str, Any]]) -> str:
    """Each task's per-element linear reference (eV per atom) and how it was obtained."""
    lines = ["Each task's energy is its head's output plus Σ_atoms e_Z, a per-element linear reference in eV "
             "per atom (elements not listed: 0).", "",
             "| task | reference | obtained | e_Z (eV/atom) |", "|---|---|---|---|"]
    for name, t in tasks.items():
        reference = t.get("reference") or {"mode": "unrecorded"}
        values = ", ".join(f"{chemical_symbols[int(z)]} {float(v):.6g}" for z, v in t["linear_reference"].items())
        lines.append(f"| {name} | {reference['mode']} | {_obtained(reference)} | {values or '(none)'} |")
    return "\n".join(lines)


def _obtained(reference: Mapping[str, Any]) -> str:
    mode = reference["mode"]
    if mode == "fitted":
        return f"{reference.get('method', 'fitted')} on {reference.get('fitted_on', '(data not recorded)')}"
    if mode == "kept":
        return f"kept unchanged from `{reference.get('from', '(not recorded)')}`"
    if mode == "trainable":
        return f"trained with the model, starting from {reference.get('initial', '(not recorded)')}"
    if mode == "none":
        return "no reference"
    return "not recorded by the atomforge version that wrote this model"


def training_text(training: Mapping[str, Any]) -> str:
    if training.get("kind") == "finetune" and "datasets" in training:
        return finetune_text(training)
    if training.get("kind") == "finetune":  # exported before the one trainer (a `data.path` and a `target`)
        data, target = training.get("data", {}), training.get("target", {})
        text = (f"Fine-tuned (recipe `{training.get('recipe')}`) on `{data.get('path')}` "
                f"({data.get('num_train')} train / {data.get('num_val')} val structures, seed {data.get('seed')}), "
                f"target {target.get('kind')} with {target.get('forces')} forces; new heads, JMP layer-wise "
                f"learning rates, EMA, early stopping on validation.")
        source = training.get("pretrained_from")
        text += f"\n\nStarting point: `{source}`." if source else "\n\nTrained from scratch (no pretraining)."
        if training.get("pretraining"):
            text += "\n\nPretraining:\n" + training_text(training["pretraining"])
        return text
    if training.get("kind") == "pretraining":
        datasets = "\n".join(f"- `{t}`: {url or '(url not recorded)'}" for t, url in training.get("datasets", {}).items())
        objectives = "\n".join(f"- `{n}`: {json.dumps(e.get('objective', e))}" for n, e in training.get("objectives", {}).items())
        return (f"Pretrained with recipe `{training.get('recipe')}` for {training.get('max_steps')} steps.\n\n"
                f"Datasets (tasks):\n{datasets or '- (none recorded)'}\n\nObjectives:\n{objectives or '- (none recorded)'}")
    return "Not recorded in the checkpoint."


def finetune_text(training: Mapping[str, Any]) -> str:
    """A fine-tuning run on shard datasets: its tasks (and their exact counts), objectives, starting point."""
    lines = []
    for task, url in training.get("datasets", {}).items():
        subset = (training.get("subsets") or {}).get(task)
        counts = (f" ({subset.get('num_train')} train / {subset.get('num_val')} val structures, seed {subset.get('seed')})"
                  if subset else "")
        lines.append(f"- `{task}`: {url or '(url not recorded)'}{counts}")
    objectives = ", ".join(f"`{n}`" for n in training.get("objectives", {})) or "(none recorded)"
    text = (f"Fine-tuned (recipe `{training.get('recipe')}`, {training.get('max_steps')} steps) on:\n"
            + "\n".join(lines) + f"\n\nObjectives: {objectives}; EMA weights selected on validation.")
    source = training.get("pretrained_from")
    text += f"\n\nStarting point: `{source}`." if source else "\n\nTrained from scratch (no pretraining)."
    if training.get("pretraining"):
        text += "\n\nPretraining:\n" + training_text(training["pretraining"])
    return text


def metrics_text(training: Mapping[str, Any]) -> str:
    metrics = training.get("metrics") or {}
    if not metrics:
        return "No downstream evaluation recorded for this checkpoint (pretraining only)."
    lines = ["| split | metric | value |", "|---|---|---|"]
    for split, values in metrics.items():
        lines += [f"| {split} | {k} | {v:.4g} |" for k, v in values.items()]
    return "\n".join(lines)
