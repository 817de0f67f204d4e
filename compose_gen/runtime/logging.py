"""Metrics as JSON lines, optional TensorBoard, and a live progress display.

Nothing here synchronises with the GPU per step: the trainer accumulates terms
on the device and converts them to floats only every ``log_every`` rounds.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from compose_gen.core.files import parse_json
from compose_gen.runtime.layout import DROPPED_METRICS_FILE

__all__ = ["MetricsLog", "TensorBoardLog", "TrainingProgress", "prune_metrics", "read_metrics", "require_tensorboard"]


class MetricsLog:
    """Appends one JSON object per line to ``metrics.jsonl`` (flushed each line).

    A line torn by a crash is closed off first, so it never swallows the next record.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        torn = False
        if path.exists() and path.stat().st_size > 0:
            with open(path, "rb") as existing:
                existing.seek(-1, os.SEEK_END)
                torn = existing.read(1) != b"\n"
        self.handle = open(path, "a", encoding="utf-8")
        if torn:
            self.handle.write("\n")

    def write(self, record: dict[str, Any]) -> None:
        clean = {k: (v if not isinstance(v, float) or math.isfinite(v) else str(v)) for k, v in record.items()}
        self.handle.write(json.dumps(clean) + "\n")
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Every record of a ``metrics.jsonl``, skipping torn lines."""
    if not path.exists():
        return []
    return [record for line in _lines(path) if (record := _record_of(line))]


def _lines(path: Path) -> list[str]:
    """The lines of a ``metrics.jsonl``; bytes that are no UTF-8 (a damaged line) are replaced, so that line reads as no record."""
    return path.read_bytes().decode("utf-8", errors="replace").splitlines()


def _record_of(line: str) -> dict[str, Any] | None:
    """One line's record, or None for a line that is no JSON mapping."""
    try:
        record = parse_json(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def prune_metrics(path: Path, step: int) -> list[int]:
    """Drop records after ``step`` (logged after the checkpoint a run resumes from), atomically; return the numbers
    of the lines that are no JSON record (torn by a kill, or edited), which are dropped too.

    Every dropped line is appended to :data:`DROPPED_METRICS_FILE` beside ``path`` first, so nothing written is lost.
    """
    if not path.exists():
        return []
    kept, dropped, torn = [], [], []
    for number, line in enumerate(_lines(path), 1):
        record = _record_of(line)
        if record is not None and isinstance(record.get("step"), int) and record["step"] <= step:
            kept.append(record)
        elif line.strip():
            dropped.append(line)
            if record is None:
                torn.append(number)
    if dropped:
        with open(path.with_name(DROPPED_METRICS_FILE), "a", encoding="utf-8") as aside:
            aside.write("".join(f"{line}\n" for line in dropped))
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
    os.replace(tmp, path)
    return torn


def require_tensorboard() -> type:
    """TensorBoard's ``SummaryWriter``, or a clear error if the package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise RuntimeError(
            "train.tensorboard is true but TensorBoard is not installed: pip install 'compose-gen[tensorboard]'"
        ) from None
    return SummaryWriter


class TensorBoardLog:
    """Scalars and sample images in ``RUN/tensorboard`` (``tensorboard --logdir RUN``)."""

    def __init__(self, folder: Path) -> None:
        self.writer = require_tensorboard()(str(folder))

    def scalars(self, step: int, record: dict[str, Any]) -> None:
        for key, value in record.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def image(self, tag: str, path: Path, step: int) -> None:
        picture = np.asarray(Image.open(path).convert("RGB"))
        self.writer.add_image(tag, picture, step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class TrainingProgress:
    """A rich progress bar showing steps/s, ETA and the latest loss terms.

    Where stderr is not a terminal (a pipe, a log file, a batch job), or a dumb one
    (``TERM=dumb``, an editor's shell), a bar redrawn in place would leave one
    truncated line; each logged step is printed as a line of its own instead.
    """

    def __init__(self, total: int, start: int, enabled: bool = True) -> None:
        self.enabled = enabled
        self.total = total
        self.started = time.perf_counter()
        self.start_step = start
        console = Console(file=sys.stderr) if enabled else None  # rich's objects cost 0.2 ms a fit, too much for short fits
        self.lines = console is not None and (not console.is_terminal or console.is_dumb_terminal)
        #: The bar, where one is drawn (enabled, on a terminal that redraws in place).
        self.progress: Progress | None = None
        if console is not None and not self.lines:
            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[losses]}"),
                console=console,
            )
            self.task = self.progress.add_task("train", total=total, completed=start, rate="", losses="")

    def __enter__(self) -> "TrainingProgress":
        if self.progress is not None:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def update(self, step: int, logs: dict[str, float] | None = None) -> None:
        if not self.enabled:
            return
        fields = {}
        if logs is not None:
            elapsed = time.perf_counter() - self.started
            fields["rate"] = f"{(step - self.start_step) / max(elapsed, 1e-9):.1f} steps/s"
            fields["losses"] = "  ".join(f"{k}={v:.4g}" for k, v in logs.items() if isinstance(v, float))
            if self.lines:
                print(f"step {step}/{self.total}  {fields['rate']}  {fields['losses']}", file=sys.stderr, flush=True)
        if self.progress is not None:
            self.progress.update(self.task, completed=step, **fields)
