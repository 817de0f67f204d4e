"""The means of the logged scalars over a log window, metrics as JSON lines, optional TensorBoard, and a live
progress display.

The trainer reads each step's scalars in the host sync its NaN guard makes anyway,
so nothing here synchronises with the GPU; :class:`RunningMeans` sums them in double.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from compose_gen.core.files import fsync, parse_json, regular_file_stat, write_text_atomic
from compose_gen.runtime.distributed import Distributed
from compose_gen.runtime.layout import DROPPED_METRICS_FILE

__all__ = [
    "MetricsLog", "RunningMeans", "TensorBoardLog", "TrainingProgress", "prune_metrics", "read_metrics", "require_tensorboard", "tell",
]


class RunningMeans:
    """Sums of the logged scalars since the last log line, averaged over processes when read.

    Each step's numbers are added as one group, by their names (a player logs the
    same names every step; several players, several groups).  Checkpoints hold the
    sums (:meth:`state_dict`) so that a log window survives a stop.
    """

    def __init__(self) -> None:
        self.sums: dict[tuple[str, ...], list[float]] = {}
        self.counts: dict[tuple[str, ...], int] = {}

    def add(self, logs: dict[str, float]) -> None:
        if not logs:
            return
        names = tuple(logs)
        sums = self.sums.get(names)
        if sums is None:
            self.sums[names], self.counts[names] = list(logs.values()), 1
            return
        for i, value in enumerate(logs.values()):
            sums[i] += value
        self.counts[names] += 1

    def _totals(self, dist: Distributed) -> Iterator[float]:
        """The sums of every group in order, summed over processes (one all-reduce)."""
        flat = [value for sums in self.sums.values() for value in sums]
        return iter(dist.sum(torch.tensor(flat, dtype=torch.float64)).tolist() if dist.active and flat else flat)

    def read(self, dist: Distributed, start_over: bool = True) -> dict[str, float]:
        """The means since the last read; then start over, unless told not to (a look that is no log line)."""
        groups = list(self.sums)
        totals = self._totals(dist)
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        for group in groups:
            for name in group:
                sums[name] = sums.get(name, 0.0) + next(totals)
                counts[name] = counts.get(name, 0) + self.counts[group]
        if start_over:
            self.sums, self.counts = {}, {}
        return {name: sums[name] / (counts[name] * dist.world_size) for name in sorted(sums)}

    def state_dict(self, dist: Distributed) -> list[dict[str, Any]]:
        """The sums so far as JSON for a checkpoint.

        Each group's sums are averaged over processes, so a resume under another
        number of processes still gives each saved step its due weight in the window's mean.
        """
        totals = self._totals(dist)
        return [
            {"names": list(group), "count": self.counts[group], "sums": [next(totals) / dist.world_size for _ in group]}
            for group in self.sums
        ]

    def load_state_dict(self, groups: list[dict[str, Any]]) -> None:
        """Continue the window saved by :meth:`state_dict`."""
        self.sums = {tuple(g["names"]): [math.nan if s is None else float(s) for s in g["sums"]] for g in groups}
        self.counts = {tuple(g["names"]): int(g["count"]) for g in groups}


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
        try:
            self.handle.write(json.dumps(clean) + "\n")
            self.handle.flush()
        except OSError as error:  # a full disk: the checkpoints stay, and the next run closes off the torn line
            raise OSError(
                error.errno, f"{error.strerror}; the training log's line of step {record.get('step')} was not written (the checkpoints stay)", str(self.path)
            ) from None

    def close(self) -> None:
        """Close the file; a line that could not be flushed was reported by :meth:`write` already."""
        with contextlib.suppress(OSError):
            self.handle.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Every record of a ``metrics.jsonl``, skipping torn lines."""
    if not path.exists():
        return []
    return [record for line in _lines(path) if (record := _record_of(line))]


def _lines(path: Path) -> list[str]:
    """The lines of a ``metrics.jsonl``; bytes that are no UTF-8 (a damaged line) are replaced, so that line reads as no record.

    OSError for anything but a regular file: a FIFO would hang a resume (and the loading of a folder without
    checkpoints), a link to a device feed it without end.  No size limit: a long run's log may well pass 64 MiB."""
    regular_file_stat(path)
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
    if dropped:  # on the disk before the log that held them is replaced: a crash between the two loses none of them
        if path.with_name(DROPPED_METRICS_FILE).exists():  # a FIFO there would hang the resume, waiting for a reader
            regular_file_stat(path.with_name(DROPPED_METRICS_FILE))
        with open(path.with_name(DROPPED_METRICS_FILE), "a", encoding="utf-8") as aside:
            aside.write("".join(f"{line}\n" for line in dropped))
        fsync(path.with_name(DROPPED_METRICS_FILE))
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))
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
    """Scalars and sample images in ``RUN/tensorboard`` (``tensorboard --logdir RUN``).

    Written from round ``start`` on: TensorBoard hides what earlier event files hold of the rounds after it
    (``purge_step``), which a run resumed from an older checkpoint logs afresh, so each curve has one point per step.
    """

    def __init__(self, folder: Path, start: int = 0) -> None:
        self.writer = require_tensorboard()(str(folder), purge_step=start + 1 if start else None)

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


def tell(message: str) -> None:
    """Print ``message`` on stderr; once its reader has gone (``train ... 2>&1 | head``), go on without one: a training
    must not die of a closed pipe, which would lose every step since its last checkpoint."""
    try:
        print(message, file=sys.stderr, flush=True)
    except BrokenPipeError:
        nowhere = os.open(os.devnull, os.O_WRONLY)
        os.dup2(nowhere, sys.stderr.fileno())  # where later messages and Python's own go
        os.close(nowhere)


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
                tell(f"step {step}/{self.total}  {fields['rate']}  {fields['losses']}")
        if self.progress is not None:
            self.progress.update(self.task, completed=step, **fields)
