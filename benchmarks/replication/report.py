"""The replication's report: per-claim paired statistics over seeds, the markdown table, the JSON and the plot.

For each claim and seed s, Δ_s = 1 − arm_s / baseline_s (the relative error reduction of the arm;
positive = the arm is better, as the paper claims). Seeds pair the arms: the same seed gives both
the same data split, initialisation and data order. Over seeds: mean ± sample std of the arms and
of Δ. Verdict for a "better" claim: "yes" when mean Δ > std Δ, "opposite" when mean Δ < −std Δ,
otherwise "no (within 1 std)"; for "matches or better": "yes" when mean Δ > −std Δ. One seed
(the smoke run) gives no verdict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from replication.design import ARM_LABELS, CLAIMS, Claim

METRICS = {  # claim metric -> (split, key in the fine-tuning metrics, scale)
    "test force MAE (meV/Å)": ("test", "force_mae_meV_per_A", 1.0),
    "test force RMSE (meV/Å)": ("test", "force_rmse_meV_per_A", 1.0),
    "test energy RMSE (meV)": ("test", "energy_rmse_meV", 1.0),
    "test bulk modulus MAE (GPa)": ("test", "property_mae", 1.0),
}


ONE_SEED = "no verdict (1 seed)"  # a smoke run: a std and so a verdict need two seeds or more


def metric_value(claim: Claim, arm: str, seed: int, dataset: str, results: Mapping) -> float:
    """The claim's metric for one arm and seed (pretraining validation or fine-tuning test)."""
    if claim.pretraining_metric:
        task, val = claim.metric.split()[0], results["pretrain"][arm][seed]["val"]
        keys = [k for k in val if k.startswith(f"val/{task}/") and k.endswith("/force_mae")]
        if not keys:
            raise LookupError(f"pretraining run {arm} seed {seed} has no {task} validation force MAE")
        return 1000.0 * float(val[min(keys, key=len)])  # eV/Å -> meV/Å
    split, key, scale = METRICS[claim.metric]
    return scale * float(results["finetune"][claim.family][dataset][arm][seed]["metrics"][split][key])


def summarise(values: list[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(array.mean()), "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0}


def verdict(kind: str, gain: Mapping[str, float]) -> str:
    mean, std = gain["mean"], gain["std"]
    if kind == "matches_or_better":
        return "yes" if mean > -std else "no (worse beyond 1 std)"
    if mean > std:
        return "yes"
    return "opposite" if mean < -std else "no (within 1 std)"


def rows(results: Mapping, seeds: list[int], datasets: Mapping[str, list[str]]) -> list[dict[str, Any]]:
    """One row per claim and downstream set (pretraining-metric claims: one row)."""
    out = []
    for claim in CLAIMS:
        if not all(arm in ran(claim, results) for arm in (claim.arm, claim.baseline)):
            out.append({**asdict(claim), "dataset": "-", "seeds": seeds, "verdict": "not run",
                        "reason": "an arm of this claim is not in the design yet"})
            continue
        for dataset in ([None] if claim.pretraining_metric else datasets[claim.family]):
            try:
                arm = [metric_value(claim, claim.arm, s, dataset, results) for s in seeds]
                base = [metric_value(claim, claim.baseline, s, dataset, results) for s in seeds]
            except LookupError as missing:
                out.append({**asdict(claim), "dataset": dataset or "pretraining val", "seeds": seeds,
                            "verdict": "not run", "reason": str(missing)})
                continue
            gain = summarise([1.0 - a / b for a, b in zip(arm, base)])
            out.append({**asdict(claim), "dataset": dataset or "pretraining val", "seeds": seeds,
                        "arm_values": arm, "baseline_values": base, "arm_summary": summarise(arm),
                        "baseline_summary": summarise(base), "gain": gain,
                        "verdict": verdict(claim.kind, gain) if len(seeds) > 1 else ONE_SEED})
    return out


def ran(claim: Claim, results: Mapping) -> set[str]:
    """The arms that have results for `claim`'s metric."""
    if claim.pretraining_metric:
        return set(results["pretrain"])
    sets = results["finetune"].get(claim.family, {})
    return {arm for per_set in sets.values() for arm in per_set}


def markdown(table_rows: list[dict[str, Any]], header: str) -> str:
    """The table: paper, claim (direction and number), set, ours (arm and baseline mean ± std), Δ, verdict."""
    lines = [header, "",
             "| paper | claim | set | metric | arm | baseline | Δ = 1 − arm/baseline | reproduces? |",
             "|---|---|---|---|---|---|---|---|"]
    for r in table_rows:
        if r["verdict"] == "not run":
            lines.append(f"| {r['paper']} | {r['claim']} | {r['dataset']} | {r['metric']} | {ARM_LABELS[r['arm']]} | "
                         f"{ARM_LABELS[r['baseline']]} | - | not run: {r['reason']} |")
            continue
        a, b, g = r["arm_summary"], r["baseline_summary"], r["gain"]
        lines.append(
            f"| {r['paper']} | {r['claim']} | {r['dataset']} | {r['metric']} | "
            f"{ARM_LABELS[r['arm']]}: {a['mean']:.4g} ± {a['std']:.2g} | "
            f"{ARM_LABELS[r['baseline']]}: {b['mean']:.4g} ± {b['std']:.2g} | "
            f"{100 * g['mean']:+.1f}% ± {100 * g['std']:.1f}% | {r['verdict']} |")
    return "\n".join(lines) + "\n"


def plot(table_rows: list[dict[str, Any]], path: Path) -> Path:
    """One PNG: Δ mean ± std per row (bars), the paper's number where it gives one (diamonds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table_rows = [r for r in table_rows if r["verdict"] != "not run"]
    labels = [f"{r['paper']}: {ARM_LABELS[r['arm']]} vs {ARM_LABELS[r['baseline']]} ({r['dataset']})" for r in table_rows]
    y = np.arange(len(table_rows))[::-1]
    means = [100 * r["gain"]["mean"] for r in table_rows]
    stds = [100 * r["gain"]["std"] for r in table_rows]
    colors = ["tab:green" if r["verdict"] == "yes" else "tab:red" if r["verdict"] == "opposite" else "tab:gray"
              for r in table_rows]
    fig, ax = plt.subplots(figsize=(11, 0.42 * len(table_rows) + 1.5))
    ax.barh(y, means, xerr=stds, color=colors, alpha=0.8, capsize=3, label="ours: mean ± std over seeds")
    papers = [(yy, 100 * r["paper_gain"]) for yy, r in zip(y, table_rows) if r["paper_gain"] is not None]
    if papers:
        ax.scatter([p for _, p in papers], [yy for yy, _ in papers], marker="D", color="black", zorder=3,
                   label="paper")
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_xlabel("error reduction of the arm vs its baseline, Δ = 1 − arm/baseline (%)")
    ax.set_title("Seed-paper claims in miniature (green: reproduces beyond 1 std; red: opposite)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
