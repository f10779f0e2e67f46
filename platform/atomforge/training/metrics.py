"""Training metrics: one JSON line per logged step, TensorBoard scalars, and a one-line progress report.

Only rank 0 logs. Files go to `<output>/logs/` when the output is a local path; for object-store
outputs they are written to a local folder and copied to `<output>/logs/` at every checkpoint.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from atomforge.storage import filesystem


class MetricsLogger:
    """JSONL (`metrics.jsonl`) + TensorBoard (`tb/`) writer with a progress line on stdout."""

    def __init__(self, local_dir: Path, output: str | None = None, total_steps: int = 0):
        self.local_dir = Path(local_dir)
        self.local_dir.mkdir(parents=True, exist_ok=True)
        self.output, self.total_steps = output, total_steps
        self.jsonl = (self.local_dir / "metrics.jsonl").open("a")
        self.tb = SummaryWriter(str(self.local_dir / "tb"))
        self.started = time.time()

    def log(self, step: int, metrics: Mapping[str, float], kind: str = "train") -> None:
        record = {"kind": kind, "step": step, "time": round(time.time() - self.started, 3), **metrics}
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()
        for name, value in metrics.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.tb.add_scalar(f"{kind}/{name}", value, step)
        self.tb.flush()
        print(progress_line(step, self.total_steps, metrics, kind), flush=True)

    def warn(self, step: int, message: str) -> None:
        """A `kind: "warning"` record and a `[warning]` line: what the run does without (e.g. no stress term)."""
        self.jsonl.write(json.dumps({"kind": "warning", "step": step, "message": message}) + "\n")
        self.jsonl.flush()
        print(f"[warning] {message}", flush=True)

    def sync(self) -> None:
        """Copy the log folder to `<output>/logs` when the output is remote."""
        if self.output is None:
            return
        fs, root = filesystem(self.output)
        fs.put(str(self.local_dir), f"{root}/logs", recursive=True)

    def close(self) -> None:
        self.jsonl.close()
        self.tb.close()
        self.sync()


def log_dirs(output: str) -> tuple[Path, str | None]:
    """(local folder for a run's logs, remote output to copy them to or None) for a run directory URL."""
    fs, root = filesystem(output)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in ("file", "local"):
        return Path(root) / "logs", None
    return Path(tempfile.mkdtemp(prefix="atomforge-logs-")), output


def progress_line(step: int, total: int, metrics: Mapping[str, float], kind: str = "train") -> str:
    """`[train] step 40/200 loss 1.234 lr 2.1e-04 | oc20 0.31 (p 0.33) ... | 12.3 struct/s`."""
    parts = [f"[{kind}] step {step}/{total}"]
    for key in ("loss", "lr", "grad_norm"):
        if key in metrics:
            parts.append(f"{key} {metrics[key]:.3g}")
    shares = [
        f"{name[len('share/'):]} {value:.2f} (p {metrics.get('expected/' + name[len('share/'):], float('nan')):.2f})"
        for name, value in metrics.items() if name.startswith("share/")
    ]
    maes = [f"{k} {v:.3g}" for k, v in metrics.items() if "mae" in k or k.endswith("/score")]
    line = " ".join(parts)
    if shares:
        line += " | " + ", ".join(shares)
    if maes:
        line += " | " + ", ".join(maes[:8])
    if "structures_per_s" in metrics:
        line += f" | {metrics['structures_per_s']:.1f} struct/s"
    return line
