"""Pictures of a run (matplotlib, Agg, PNG): pretraining curves per task, parity plots pretrained vs scratch.

    from atomforge.finetune.plots import write_plots
    write_plots("runs/finetune/demo", pretrain_run="runs/debug_cpu")   # -> [PNG paths]

Pretraining curves come from the trainer's `<run>/logs/metrics.jsonl` (one JSON object per logged
step, `kind` "train" or "val"; per-task keys `[<objective>/]energy_mae/<task>`, `[<objective>/]force_mae/<task>`,
`val/<task>/loss`). Parity plots come from the fine-tuning runs' `test_predictions.npz`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

VARIANT_STYLE = {"pretrained": ("tab:blue", "pretrained"), "scratch": ("tab:orange", "from scratch")}
_TRAIN_KEY = re.compile(r"^(?:[^/]+/)?(energy_mae|force_mae)/(.+)$")  # optionally prefixed by the objective
_VAL_KEY = re.compile(r"^val/([^/]+)/loss$")


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a metrics.jsonl file (blank lines skipped)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def find_metrics_log(ref: str | Path) -> Path | None:
    """`logs/metrics.jsonl` of a local run directory, or of the run holding a checkpoint directory."""
    ref = Path(ref)
    for folder in (ref, ref.parent):
        candidate = folder / "logs" / "metrics.jsonl"
        if candidate.is_file():
            return candidate
    return None


def curves(records: list[dict]) -> dict[str, dict[str, tuple[list[int], list[float]]]]:
    """panel -> task -> (steps, values): train energy/force MAE per task, val loss per task, train loss."""
    out: dict[str, dict[str, tuple[list[int], list[float]]]] = {"energy_mae": {}, "force_mae": {}, "val_loss": {}, "loss": {}}
    for record in records:
        step = int(record["step"])
        for key, value in record.items():
            if not isinstance(value, (int, float)) or not np.isfinite(value):
                continue
            train, val = _TRAIN_KEY.match(key), _VAL_KEY.match(key)
            if record.get("kind") == "train" and train:
                panel, task = train.group(1), train.group(2)
            elif record.get("kind") == "val" and val:
                panel, task = "val_loss", val.group(1)
            elif record.get("kind") == "train" and key == "loss":
                panel, task = "loss", "all tasks"
            else:
                continue
            steps, values = out[panel].setdefault(task, ([], []))
            steps.append(step)
            values.append(float(value))
    return out


def plot_pretraining_curves(metrics_jsonl: str | Path, out_png: str | Path) -> Path:
    """Four panels: total train loss, train energy MAE (eV) and force MAE (eV/Å) per task, val loss per task."""
    data = curves(read_metrics(metrics_jsonl))
    titles = {"loss": "train loss (objective mix)", "energy_mae": "train energy MAE per task (eV)",
              "force_mae": "train force MAE per task (eV/Å)", "val_loss": "validation loss per task"}
    fig, axes = plt.subplots(1, 4, figsize=(18, 4), constrained_layout=True)
    for ax, (panel, title) in zip(axes, titles.items()):
        for task, (steps, values) in sorted(data[panel].items()):
            ax.plot(steps, values, marker="o" if panel == "val_loss" else None, ms=3, label=task)
        ax.set(title=title, xlabel="optimizer step")
        if data[panel] and min(min(v) for _, v in data[panel].values()) > 0:
            ax.set_yscale("log")
        if data[panel]:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(f"Pretraining curves ({Path(metrics_jsonl)})", fontsize=10)
    return _save(fig, out_png)


def plot_parity(runs: dict[str, str | Path], out_png: str | Path) -> Path:
    """Energy (eV, relative to the mean label) and force-component (eV/Å) parity of each variant on test.

    runs: variant -> run directory holding test_predictions.npz.
    """
    fig, (ax_e, ax_f) = plt.subplots(1, 2, figsize=(11, 5), constrained_layout=True)
    for variant, folder in runs.items():
        arrays = np.load(Path(folder) / "test_predictions.npz")
        color, label = VARIANT_STYLE.get(variant, ("tab:gray", variant))
        offset = arrays["energy_true"].mean()
        e_true, e_pred = arrays["energy_true"] - offset, arrays["energy_pred"] - offset
        e_mae = 1000 * np.abs(e_pred - e_true).mean()
        ax_e.scatter(e_true, e_pred, s=10, alpha=0.6, color=color, label=f"{label}: MAE {e_mae:.1f} meV")
        if arrays["forces_true"].size:
            f_true, f_pred = arrays["forces_true"].reshape(-1), arrays["forces_pred"].reshape(-1)
            f_mae = 1000 * np.abs(f_pred - f_true).mean()
            ax_f.scatter(f_true, f_pred, s=4, alpha=0.4, color=color, label=f"{label}: MAE {f_mae:.1f} meV/Å")
    _diagonal(ax_e, "energy − mean label (eV)")
    _diagonal(ax_f, "force component (eV/Å)")
    ax_e.set_title("Test energies")
    ax_f.set_title("Test forces")
    return _save(fig, out_png)


def write_plots(finetune_output: str | Path, pretrain_run: str | Path | None = None,
                out_dir: str | Path | None = None) -> list[Path]:
    """The demo's pictures: parity (pretrained vs scratch) and, when its log is found, pretraining curves."""
    finetune_output = Path(finetune_output)
    out_dir = Path(out_dir) if out_dir else finetune_output
    runs = {v: finetune_output / v for v in VARIANT_STYLE if (finetune_output / v / "test_predictions.npz").exists()}
    written = []
    if runs:
        written.append(plot_parity(runs, out_dir / "parity_test.png"))
    log = find_metrics_log(pretrain_run) if pretrain_run else None
    if log is not None:
        written.append(plot_pretraining_curves(log, out_dir / "pretraining_curves.png"))
    return written


def _diagonal(ax, label: str) -> None:
    low, high = ax.get_xlim()
    low, high = min(low, ax.get_ylim()[0]), max(high, ax.get_ylim()[1])
    ax.plot([low, high], [low, high], color="black", lw=0.8)
    ax.set(xlabel=f"reference {label}", ylabel=f"predicted {label}", xlim=(low, high), ylim=(low, high))
    ax.legend(fontsize=8)


def _save(fig, out_png: str | Path) -> Path:
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    return out_png
