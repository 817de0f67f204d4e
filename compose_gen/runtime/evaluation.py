"""The evaluation loop: every metric of ``evaluate.metrics`` run in turn, none lost to another's failure.

A metric that raises or breaks the metric contract is recorded as failed (blamed on its
place in the spec, or on the loss or component whose code raised under it) and the
others still run; two metrics that give the same name are keyed apart; a metric that
changes the data (a split or field replaced, a field added, removed or changed in place,
a split's setting) stops the loop, since every later one would read altered data.
:class:`EvaluationFailed` is raised by :meth:`compose_gen.runtime.Run.evaluate` once the results are recorded.
"""

from __future__ import annotations

import math
import stat
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Collection

import torch

from compose_gen.compiler import GenerativeModel
from compose_gen.core import ContractError, EvalContext, Splits
from compose_gen.core.contracts import check_metric_result
from compose_gen.core.unchanged import data_change, snapshot
from compose_gen.core.errors import described
from compose_gen.runtime.layout import EVALUATION_FILE
from compose_gen.runtime import rng
from compose_gen.spec import Problem, Spec, SpecError, format_path

__all__ = ["EvaluationFailed", "MetricLoop", "metric_folder"]


class EvaluationFailed(RuntimeError):
    """Some metrics failed; ``results`` holds the others (and ``failed``: spec path → message), as written to the folder."""

    def __init__(self, results: dict[str, Any], problems: SpecError, run_dir: Path | None) -> None:
        self.results = results
        #: The means of the training log window that ends at the evaluated step, when training preceded the evaluation.
        self.training: dict[str, float] = {}
        written = f"; the other metrics are in {run_dir / EVALUATION_FILE}" if run_dir is not None else ""
        lines = "\n".join(f"  {line}" for line in str(problems).splitlines())
        super().__init__(f"{len(problems.problems)} metric(s) failed (checkpoints are untouched{written}):\n{lines}")


def metric_folder(out_dir: str | Path | None, run_dir: Path | None, say: Callable[[str], None]) -> Path:
    """The folder for the files metrics write: ``out_dir``, else the run folder, else the working directory.

    Made and tried with a file before any metric runs, so that no metric fails on it and no evaluation
    of the others replaces a whole one in ``evaluation.json``.  Where the run folder (or a folder in it)
    cannot be written, an archived, read-only run, the files go to a new temporary folder, which ``say``
    names, and the metrics still run; any other folder that cannot be written is an error.
    """
    folder = Path(out_dir) if out_dir else (run_dir or Path("."))
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder} is a file; the files metrics write (grids, plots) go to a folder: give a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        problem = f"{folder}: the files metrics write (grids, plots) cannot go there ({error.strerror})"
        if run_dir is None or not folder.resolve().is_relative_to(run_dir.resolve()):
            raise OSError(error.errno, f"{problem}; give a folder you can write") from None
        spare = Path(tempfile.mkdtemp(prefix=f"compose-gen-{run_dir.name}-"))
        say(f"warning: {problem}; they go to {spare}")
        return spare
    return folder


def _file_states(folder: Path) -> dict[Path, tuple[int, ...]]:
    """The files directly in ``folder`` (where metrics write their pictures), each with what writing it again changes."""
    states: dict[Path, tuple[int, ...]] = {}
    for path in folder.iterdir():
        try:
            status = path.stat()
        except OSError:  # gone meanwhile
            continue
        if stat.S_ISREG(status.st_mode):
            states[path] = (status.st_mtime_ns, status.st_ino, status.st_size)
    return states


@dataclass
class MetricLoop:
    """The metrics of ``spec`` (built into ``model``) over ``data``; warnings go to ``say``."""

    spec: Spec
    model: GenerativeModel
    data: Splits
    say: Callable[[str], None]

    def run(self, folder: Path, step: int) -> tuple[dict[str, Any], list[Problem]]:
        """Every metric's results (with ``step``, and ``failed``: spec path → message where any failed) and the failures.

        The caller sets the mode and weights the metrics run with; each metric draws from a stream of its own, seeded by
        the spec's seed.
        """
        results: dict[str, Any] = {"step": step}
        given_by: dict[str, str] = {}  # each name in results, and the type of the metric that gave it
        problems: list[Problem] = []
        modes = {module: module.training for module in self.model.modules()}
        writers: dict[Path, str] = {}  # each file a metric wrote into the folder, and that metric
        for index, (declared, metric) in enumerate(zip(self.spec.sections.metrics, self.model.metrics, strict=True)):
            ctx = EvalContext(  # each its own: one that reassigns ectx.data does so for itself alone
                model=self.model,
                data=self.data,
                device=self.model.device,
                out_dir=folder,
                batch_size=self.spec.model.evaluate.batch_size,
                seed=self.spec.model.seed,
            )
            before, files = snapshot(self.data), _file_states(folder)
            # a metric's own warnings are said where it is declared; its random draws come from the spec's seed, whichever
            # metrics came before it
            with warnings.catch_warnings(record=True) as caught, rng.isolated(ctx.seed):
                warnings.simplefilter("always")
                measured, problem = self.measure(metric, ctx, results, index, declared.type.name, given_by)
            changed = data_change(self.data, before)
            if changed:  # the data every later metric reads: stop here rather than record numbers of altered data
                measured, problem = {}, (
                    f"{changed} (a metric must leave ectx.data as it is); the metrics after it were not run, and this "
                    "run's data in memory stay altered: load the run again"
                )
            results.update(measured)
            for key in measured:
                given_by.setdefault(key, declared.type.name)
            where = format_path(declared.path)
            self._note_files_written(folder, files, writers, f"{where} ({declared.type.name})")
            for warning in caught:
                self.say(f"warning: {where} ({declared.type.name}): {warning.message}")
            switched = [module for module, training in modes.items() if module.training != training]
            if switched:  # model.train() in a metric: dropout and batch statistics would have changed every later number
                for module in switched:
                    module.training = modes[module]  # each as it was: train() would set its children too
                self.say(
                    f"warning: {where} ({declared.type.name}) switched {len(switched)} module(s) of the model between training and "
                    "evaluation mode (a metric must leave the mode as it is); they are put back for the metrics after it"
                )
            undefined = [f"{key} = {value}" for key, value in measured.items() if not math.isfinite(value)]
            if undefined:
                self.say(f"warning: {where} ({declared.type.name}) gave {', '.join(undefined)}, recorded as null")
            if problem is not None:
                problems += self.spec.blame(declared, problem).problems
            if changed:
                break
        if problems:
            results["failed"] = {format_path(p.path): p.message for p in problems}
        return results, problems

    def _note_files_written(self, folder: Path, before: dict[Path, tuple[int, ...]], writers: dict[Path, str], metric: str) -> None:
        """Record the files ``metric`` wrote into ``folder`` (changed since ``before``), warning of one an earlier metric wrote:
        two metrics of one type write the same picture, and only the later one's is kept."""
        for path, state in _file_states(folder).items():
            if before.get(path) == state:
                continue
            if path in writers:
                self.say(
                    f"warning: {metric} wrote {path} over the one {writers[path]} wrote, which is lost: give them other file "
                    "names where the type takes one (file:), or keep one of them"
                )
            writers[path] = metric

    @torch.no_grad()
    def measure(
        self, metric: Callable[[EvalContext], Any], ctx: EvalContext, results: dict[str, Any], index: int, kind: str, given_by: dict[str, str]
    ) -> tuple[dict[str, float], str | None]:
        """What ``metric`` (of type ``kind``) gives, keyed apart from ``results`` (:meth:`keyed_apart`), or why it gave
        nothing: a broken contract or what it raised."""
        try:
            shared = getattr(metric, "shared_results", frozenset())
            return self.keyed_apart(check_metric_result(metric(ctx)), results, index, kind, given_by, shared), None
        except ContractError as error:
            return {}, f"broke the metric contract: {error}"
        except Exception as error:  # one broken metric must not cost the others
            culprit = self.model.culprit(error)  # a loss or component it called, whose code raised
            problem = f"raised {described(error)}{self.spec.catalogue.where_raised(error, (culprit.type.name if culprit else kind))}"
            if culprit is not None:
                problem = f"failed in another part of the spec: {self.spec.blame(culprit, problem)}"
            return {}, problem

    def keyed_apart(
        self, found: dict[str, float], results: dict[str, Any], index: int, kind: str, given_by: dict[str, str], shared: Collection[str]
    ) -> dict[str, float]:
        """``found``, from a metric of type ``kind``, with each name an earlier metric already gave suffixed
        ``@metrics[index]``, so neither is lost (two ``frechet_distance`` of different references, say).  A name that
        a metric of another type gave (``given_by``) with the same value is the same number, kept once, and so is one
        of the metric's ``shared`` results (its ``shared_results``: the ``classifier_accuracy`` of the classifier all
        the sample metrics judge by).  Two metrics of one type differ in their settings, so their other numbers that
        agree by chance (two ``mode_coverage`` both covering every mode) are each kept."""
        found = {
            key: value
            for key, value in found.items()
            if not ((key in shared or given_by.get(key, kind) != kind) and key in results and results[key] == value)
        }
        clashes = [key for key in found if key in results]
        if clashes:
            self.say(
                f"warning: evaluate.metrics[{index}] gives {', '.join(clashes)}, as an earlier metric does; "
                f"written as {clashes[0]}@metrics[{index}]{', ...' if len(clashes) > 1 else ''}"
            )
        return {f"{key}@metrics[{index}]" if key in results else key: value for key, value in found.items()}
