"""Metrics as JSON lines and a live progress display."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

__all__ = ["MetricsLog", "TrainingProgress", "read_metrics"]


class MetricsLog:
    """Appends one JSON object per line to ``metrics.jsonl`` (flushed each line)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle = open(path, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        clean = {k: (v if not isinstance(v, float) or math.isfinite(v) else str(v)) for k, v in record.items()}
        self.handle.write(json.dumps(clean) + "\n")
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Every record of a ``metrics.jsonl``, skipping a torn last line."""
    records = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


class TrainingProgress:
    """A rich progress bar showing steps/s, ETA and the latest loss terms."""

    def __init__(self, total: int, start: int, enabled: bool = True) -> None:
        self.enabled = enabled
        self.started = time.perf_counter()
        self.start_step = start
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[losses]}"),
            console=Console(file=sys.stderr),
            disable=not enabled,
        )
        self.task = self.progress.add_task("train", total=total, completed=start, rate="", losses="")

    def __enter__(self) -> "TrainingProgress":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def update(self, step: int, logs: dict[str, float] | None = None) -> None:
        fields = {}
        if logs is not None:
            elapsed = time.perf_counter() - self.started
            fields["rate"] = f"{(step - self.start_step) / max(elapsed, 1e-9):.1f} steps/s"
            fields["losses"] = "  ".join(f"{k}={v:.4g}" for k, v in logs.items() if isinstance(v, float))
        self.progress.update(self.task, completed=step, **fields)
