"""A live progress display for preprocessing: structures read and written, structures/s (rich)."""

from __future__ import annotations

import time

from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn


class ProgressDisplay:
    """Context manager; call it with each executor summary ({"num_read", "num_written"})."""

    def __init__(self, description: str, enabled: bool = True) -> None:
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"),
                                 TextColumn("{task.fields[read]} read, {task.fields[written]} written"),
                                 TextColumn("{task.fields[rate]:.1f} structures/s"), TimeElapsedColumn(),
                                 disable=not enabled)
        self.description = description
        self.num_read = 0
        self.num_written = 0
        self.start = time.perf_counter()

    def __enter__(self) -> ProgressDisplay:
        self.progress.start()
        self.task = self.progress.add_task(self.description, read=0, written=0, rate=0.0)
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def plan(self, num_units: int) -> None:
        self.progress.update(self.task, description=f"{self.description} ({num_units} work units)")

    def __call__(self, summary: dict) -> None:
        self.num_read += int(summary["num_read"])
        self.num_written += int(summary["num_written"])
        self.progress.update(self.task, read=self.num_read, written=self.num_written, rate=self.rate)

    @property
    def rate(self) -> float:
        """Structures read per second since the display started."""
        return self.num_read / max(time.perf_counter() - self.start, 1e-9)
