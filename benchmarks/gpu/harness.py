"""The GPU check's harness: what a part is given, how it records cases, how a part's rows become a table.

A part is a module with TITLE (one line), COLUMNS (the metric names its table shows, in order),
SHARE (its weight in the time budget) and `run(setup, record)`. `run` goes through its cases in
priority order; each case runs inside `record.case(name)`, which turns an exception into a `fail`
row naming the error and lets the next case run, and `record.skip` reports a case that did not fit
the part's time box. Rows are appended to a JSON-lines file as they are made, so a part killed at
its deadline still reports what it finished.
"""

from __future__ import annotations

import contextlib
import json
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STATUSES = ("ok", "fail", "skip")


@dataclass(frozen=True)
class Setup:
    """What every part gets: the device ("cuda" or "cpu"), the wall-clock deadline (time.time() s),
    a work folder, the demo shards (task -> dataset URL) and whether to run at tiny (CPU) sizes."""

    device: str
    deadline: float
    work: Path
    shards: Mapping[str, str]
    tiny: bool

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"

    def time_left(self) -> float:
        return self.deadline - time.time()


@dataclass
class Case:
    """One case being run: add metrics with `case.metrics[name] = value`; `case.fail(reason)` marks a
    check that did not hold (the case's other metrics are kept)."""

    name: str
    metrics: dict[str, Any] = field(default_factory=dict)
    failed: str = ""
    note: str = ""

    def fail(self, reason: str) -> None:
        self.failed = f"{self.failed}; {reason}" if self.failed else reason


class Recorder:
    """Appends one JSON object per case to `path`: {"case", "status", "reason", "seconds", metrics...}."""

    def __init__(self, path: Path, setup: Setup):
        self.path, self.setup = path, setup
        self.rows: list[dict[str, Any]] = []

    def write(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        with self.path.open("a") as handle:
            handle.write(json.dumps(row, default=float) + "\n")

    def skip(self, name: str, reason: str, **metrics: Any) -> None:
        """A case not run, and why (a time box, a device this machine lacks, a missing package)."""
        self.write({"case": name, "status": "skip", "reason": reason, **metrics})

    def fits(self, name: str, seconds: float) -> bool:
        """True when about `seconds` more fit before the deadline; otherwise records the case as skipped."""
        if self.setup.time_left() >= seconds:
            return True
        self.skip(name, f"time box: {self.setup.time_left():.0f} s left, the case needs about {seconds:.0f} s")
        return False

    @contextlib.contextmanager
    def case(self, name: str) -> Iterator[Case]:
        """Run one case; an exception becomes a `fail` row with its type, message and where it was raised."""
        current, start = Case(name), time.perf_counter()
        self.write({"case": name, "status": "running"})  # replaced by the result; left alone if the part is killed
        try:
            yield current
        except Exception as error:  # noqa: BLE001 - a failing case must not stop the part's other cases
            current.fail(describe(error))
        status = "fail" if current.failed else "ok"
        reason = current.failed or current.note
        self.write({"case": name, "status": status, "reason": reason,
                    "seconds": round(time.perf_counter() - start, 3), **current.metrics})


def describe(error: BaseException) -> str:
    """'Type: message (file:line in function)' of the innermost frame in atomforge or the check."""
    frames = traceback.extract_tb(error.__traceback__)
    ours = [f for f in frames if "atomforge" in f.filename or "benchmarks" in f.filename] or frames
    where = f" ({Path(ours[-1].filename).name}:{ours[-1].lineno} in {ours[-1].name})" if ours else ""
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {message[:300]}{where}"


def read_rows(path: Path, killed_note: str = "") -> list[dict[str, Any]]:
    """The rows a part wrote, the last per case (a torn last line, from a part killed while writing, is
    left out). A case still `running` when its part was killed becomes a `fail` row saying so."""
    if not path.exists():
        return []
    rows: dict[str, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            row = json.loads(line)
            rows.pop(row["case"], None)
            rows[row["case"]] = row
    for row in rows.values():
        if row["status"] == "running":
            row.update(status="fail", reason=f"still running when the part was {killed_note or 'ended'}")
    return list(rows.values())


def verdict(rows: Sequence[Mapping[str, Any]], exit_note: str = "") -> str:
    """A part's status: fail when a case failed or the part did not end cleanly, ok when some case ran
    and none failed, skip when every case was skipped (each row says why)."""
    if exit_note or any(r["status"] == "fail" for r in rows):
        return "fail"
    return "ok" if any(r["status"] == "ok" for r in rows) else "skip"


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:
            return "nan"
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return f"{value:.4g}"
        return f"{value:.2e}"
    return "" if value is None else str(value)


def table(title: str, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    """A plain-text table: case, status, the part's columns, and the reason (error or skip) last."""
    header = ["case", "status", *columns, "reason / note"]
    body = [[str(r.get("case", "")), r["status"], *(format_value(r.get(c)) for c in columns), str(r.get("reason", ""))]
            for r in rows]
    widths = [max(len(h), *(len(line[i]) for line in body)) if body else len(h) for i, h in enumerate(header)]
    widths[-1] = len(header[-1])  # the reason column is last and not padded
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in body]
    return "\n".join(lines)
