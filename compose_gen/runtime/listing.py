"""``compose-gen runs``: one line per run folder with its spec, step, best checkpoint and final metrics.

The step shown is the newest checkpoint whose files are whole (as long as their
headers say; loading also checks their hashes), the one ``load_run`` and
``--resume`` would take; damaged newer ones are counted.  Final metrics come from ``evaluation.json`` when it is of that step, or else from the last record of ``metrics.jsonl`` (marked
``train:``, or ``train @ N:`` when that record is of another step than the one
shown: a run still training past its last checkpoint, or whose newer
checkpoints are damaged), for runs that were stopped or are still running, or
were resumed after their evaluation: its metrics are of an older model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import yaml

from compose_gen.core.files import parse_json, read_json, read_text_file, regular_file_stat
from compose_gen.runtime.checkpoint import CheckpointError, checkpoint_step, list_checkpoints, read_best, recorded_best, verify_checkpoint
from compose_gen.runtime.layout import BEST_FILE, CHECKPOINTS_DIR, EVALUATION_FILE, METRICS_FILE, SPEC_FILE, step_folder_name
from compose_gen.spec.resolve import LOG_RECORD_KEYS

__all__ = ["list_runs"]


def list_runs(folder: Path) -> Iterator[str]:
    """A line for each run folder in ``folder``, or for ``folder`` itself when it holds none but is one."""
    if not folder.is_dir():
        return
    runs = sorted(p for p in folder.iterdir() if _is_run(p))
    for run in runs or ([folder] if _is_run(folder) else []):
        try:
            yield _line(run)
        except OSError as error:  # one folder the listing cannot read does not hide the others
            yield f"{run}  ? (unreadable: {error.strerror or error})"


def _is_run(folder: Path) -> bool:
    """A run folder: it has its spec, or checkpoints (a spec.yaml deleted by mistake leaves them listed, not hidden);
    a folder that cannot be read is listed too, as unreadable, rather than ending the listing of the others."""
    try:
        return (folder / SPEC_FILE).exists() or bool(list_checkpoints(folder))
    except OSError:
        return True


def _line(run: Path) -> str:
    try:
        spec = yaml.safe_load(read_text_file(run / SPEC_FILE))
        name = spec.get("name", "?") if isinstance(spec, dict) else "?"
    except FileNotFoundError:
        name = f"? (no {SPEC_FILE}: it cannot be loaded, resumed or evaluated until it is restored)"
    except OSError as error:
        name = f"? ({SPEC_FILE} cannot be read: {error.strerror or error})"
    except (yaml.YAMLError, ValueError, RecursionError):
        name = f"? ({SPEC_FILE} does not parse: it cannot be loaded, resumed or evaluated until it is mended)"
    step, damaged = _newest_sound_step(run)
    damage = "" if not damaged else f" (all {damaged} checkpoint(s) damaged)" if step == "-" else f" ({damaged} newer checkpoint(s) damaged)"
    return f"{run}  {name}  step {step}{damage}{_best(run)}  {_summary(run, step)}".rstrip()


def _best(run: Path) -> str:
    """``  best METRIC=VALUE @ STEP``, said to be damaged or unreadable when it is; nothing without a best checkpoint."""
    best, note = read_best(run), ""
    if best is None and (run / CHECKPOINTS_DIR / BEST_FILE).exists():  # torn or edited: `best [1, 2]=1` would say nothing true
        best, note = recorded_best(run), f" (unreadable {BEST_FILE}: the newest checkpoint's record)"
        if best is None:
            return f"  best ? (unreadable {BEST_FILE})"
    if best is None:
        return ""
    try:
        verify_checkpoint(run / CHECKPOINTS_DIR / step_folder_name(best["step"]), hashes=False)
    except CheckpointError:
        note += " (damaged or gone)"
    return f"  best {best['metric']}={best['value']:.4g} @ {best['step']}{note}"


def _newest_sound_step(run: Path) -> tuple[str, int]:
    """The step of the newest checkpoint whose files are whole (``-`` if none is), and how many newer ones are not: headers
    and sizes are checked, not hashes, which loading the run checks."""
    damaged = 0
    for path in reversed(list_checkpoints(run)):
        try:
            verify_checkpoint(path, hashes=False)  # a listing reads headers, not every run's weights
        except CheckpointError:
            damaged += 1
            continue
        return str(checkpoint_step(path)), damaged
    return "-", damaged


def _summary(run: Path, step: str) -> str:
    """The evaluation of ``step`` (as shown), or else the last logged training metrics."""
    if (run / EVALUATION_FILE).exists():
        try:
            results = read_json(run / EVALUATION_FILE)
        except (OSError, ValueError):
            return f"(unreadable {EVALUATION_FILE})"
        if not (isinstance(results, dict) and isinstance(results.get("step"), int)):  # JSON, but no record of a step's metrics
            return f"(unreadable {EVALUATION_FILE})"
        evaluated = str(results["step"]) == step
        if evaluated and _format(results):  # a spec without metrics records only the step
            return _format(results)
    try:
        last = _last_record(run / METRICS_FILE)
    except OSError:
        return f"(unreadable {METRICS_FILE})"
    if last is None:
        return ""
    logged, metrics = last
    return f"train{f' @ {logged}' if isinstance(logged, int) and str(logged) != step else ''}: {_format(metrics)}"


def _format(results: Any, width: int = 160) -> str:
    """The float results as ``key=value``, whole ones that fit in about ``width`` characters, then how many more there are."""
    if not isinstance(results, dict):
        return ""
    items = [f"{k}={v:.4g}" for k, v in results.items() if isinstance(v, float)]
    shown: list[str] = []
    for item in items:
        if shown and sum(len(s) + 2 for s in shown) + len(item) > width:
            break
        shown.append(item)
    more = len(items) - len(shown)
    return "  ".join(shown) + (f"  … (+{more} more)" if more else "")


def _last_record(path: Path, tail: int = 1 << 16) -> tuple[Any, dict[str, Any]] | None:
    """The step and the metrics of the last complete JSON line of ``path``, reading only its end (OSError for anything
    but a regular file: a FIFO would hang the listing, a link to a device feed it without end)."""
    if not path.exists():
        return None
    info = regular_file_stat(path)
    with open(path, "rb") as handle:
        handle.seek(max(0, info.st_size - tail), os.SEEK_SET)
        lines = handle.read(tail).decode("utf-8", errors="replace").splitlines()
    for line in reversed(lines):
        try:
            record = parse_json(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            return record.get("step"), {k: v for k, v in record.items() if k not in LOG_RECORD_KEYS}
    return None
