"""A run folder: everything needed to resume, sample and evaluate a model.

::

    RUN/
      spec.yaml          the resolved spec the run trains with (defaults filled in; a resume's --set included)
      metrics.jsonl      one JSON object per logged step
      checkpoints/       step-XXXXXXXX/{model,optim}.safetensors + state.json; best.json
      samples/           sample grids (or 2D scatter/density plots) during and after training
      tensorboard/       TensorBoard events (train.tensorboard: true)
      evaluation.json    the metrics of the last evaluation
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import shlex
import sys
import time
import warnings
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from compose_gen.compiler import GenerativeModel, SamplingFailed, compile_spec
from compose_gen.compiler.build import build_data
from compose_gen.core import ContractError, EvalContext, Splits, class_columns, save_grid, save_scatter
from compose_gen.core.contracts import check_metric_result
from compose_gen.core.seeds import RANK_STRIDE, offset_seed
from compose_gen.registry import Catalogue
from compose_gen.runtime import rng
from compose_gen.runtime.acceleration import use_channels_last
from compose_gen.runtime.claim import claimed, refuse_if_busy
from compose_gen.runtime.checkpoint import (
    BEST_FILE,
    CheckpointError,
    list_checkpoints,
    load_checkpoint,
    load_latest,
    read_best,
    write_json_atomic,
    write_text_atomic,
)
from compose_gen.runtime.data import BatchStream
from compose_gen.runtime.distributed import Distributed, setup
from compose_gen.runtime.logging import read_metrics
from compose_gen.runtime.trainer import Trainer
from compose_gen.spec import Problem, Spec, SpecError, SpecWarning, format_path, load_spec

__all__ = ["EvaluationFailed", "Run", "build", "resolve_device"]


class EvaluationFailed(RuntimeError):
    """Some metrics failed; ``results`` holds the others (and ``failed``: spec path → message), as written to the folder."""

    def __init__(self, results: dict[str, Any], problems: SpecError, run_dir: Path | None) -> None:
        self.results = results
        written = f"; the other metrics are in {run_dir / 'evaluation.json'}" if run_dir is not None else ""
        lines = "\n".join(f"  {line}" for line in str(problems).splitlines())
        super().__init__(f"{len(problems.problems)} metric(s) failed (checkpoints are untouched{written}):\n{lines}")


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when present, else CPU; ``cpu``, ``cuda``, ``cuda:N`` and ``mps`` where this machine has them."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unknown device {name!r}: give cpu, cuda, cuda:N, mps or auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError(f"device {name!r} was asked for but this machine or torch build has no MPS (Apple GPU) support; use cpu")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {name!r} was asked for but CUDA is not available on this machine; use cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise RuntimeError(f"device {name!r} was asked for but there are {torch.cuda.device_count()} CUDA devices")
    return device


def _missing_data_files(data: Any, path: tuple[str, ...] = ("data",)) -> list[tuple[str, ...]]:
    """The keys of the data section (sources within it too) whose file or folder is not there."""
    missing: list[tuple[str, ...]] = []
    for key, value in data.items() if isinstance(data, dict) else ():
        if isinstance(value, dict):
            missing += _missing_data_files(value, (*path, key))
        elif isinstance(value, str) and Path(value).is_absolute() and not Path(value).exists():  # recorded absolute
            missing.append((*path, key))
    return missing


#: The run folder's record of the plugin (and package, with its version) that gave each type its spec uses.
PLUGINS_FILE = "plugins.json"


def _types_used(spec: Spec) -> list[str]:
    sections = spec.sections
    declared = [*sections.components.values(), *sections.losses.values(), *sections.metrics, sections.data, sections.sampler]
    return [d.type.name for d in declared if d is not None]


def _recorded_plugins(run_dir: Path) -> dict[str, str]:
    """The folder's :data:`PLUGINS_FILE` (empty if absent or unreadable: a record for messages, not for rebuilding)."""
    try:
        recorded = json.loads((run_dir / PLUGINS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in recorded.items() if isinstance(v, str)} if isinstance(recorded, dict) else {}


def _with_missing_plugin_remedy(error: SpecError, run_dir: Path, offer_set: bool = False) -> SpecError:
    """A run folder's unknown types, each with the plugin and package the run was trained with; for metrics, with
    ``offer_set`` (a command that records no spec: sample, evaluate), also the ``--set`` that leaves them out of it."""
    recorded = _recorded_plugins(run_dir)
    data = getattr(error.where, "data", None)  # the spec as loaded, overrides applied
    evaluate = data.get("evaluate") if isinstance(data, dict) else None
    metrics = evaluate.get("metrics") if isinstance(evaluate, dict) else None
    unknown = {p.path[2] for p in error.problems if p.path[:2] == ("evaluate", "metrics") and p.path[3:] == ("type",)}
    without = ""
    if offer_set and isinstance(metrics, list) and unknown:
        kept = [metric for i, metric in enumerate(metrics) if i not in unknown]
        without = f", or leave the metric(s) out of one command: --set {shlex.quote('evaluate.metrics=' + json.dumps(kept))}"

    def remedy(problem: Problem) -> str:
        for name, origin in recorded.items():
            if re.search(rf"unknown [\w/]+ type {re.escape(repr(name))}", problem.message):
                extra = without if problem.path[:2] == ("evaluate", "metrics") else ""
                return f"{problem.message}; {run_dir} was trained with it from {origin}: install that package{extra}"
        return problem.message

    return SpecError([Problem(p.path, remedy(p)) for p in error.problems], error.where)


def _with_moved_data_remedy(error: SpecError, spec: Spec, run_dir: Path) -> SpecError:
    """A run folder's data problem, with the README's remedy where a recorded file or folder is gone (it moved)."""
    missing = _missing_data_files(spec.source.data.get("data"))
    if not missing or not any(problem.path[:1] == ("data",) for problem in error.problems):
        return error
    keys = " ".join(f"--set {'.'.join(key)}=NEW" for key in missing)
    remedy = (
        f"; the run's spec.yaml records where the data were; if they moved, say where: `compose-gen evaluate {run_dir} {keys}` "
        f"(or sample) for one command, or `compose-gen train --resume {run_dir} {keys}` to record it"
    )
    problems = [Problem(p.path, p.message + remedy) if p.path[:1] == ("data",) else p for p in error.problems]
    return SpecError(problems, error.where)


def build(spec: Spec, device: str | torch.device | None = None) -> tuple[GenerativeModel, Splits]:
    """The spec's dataset and compiled model, moved to ``device`` (default: the spec's)."""
    device = resolve_device(str(device or spec.model.device))
    data = build_data(spec)
    return compile_spec(spec, data, device), data


@dataclass
class Run:
    """A model with its data, spec and (optional) folder."""

    spec: Spec
    model: GenerativeModel
    data: Splits
    #: The run folder, absolute: a change of working directory does not move it.
    dir: Path | None
    trainer: Trainer
    #: Set when the loaded checkpoint is not the folder's newest (a newer one was unreadable): why.
    behind: str | None = None
    #: The results of the last :meth:`evaluate` (with its ``step``), None before one.
    evaluation: dict[str, Any] | None = None
    #: The folder's checkpoints when this Run was made or loaded: any other but its trainer's is another writer's.
    seen_checkpoints: frozenset[str] = frozenset()
    #: Loaded for sampling and evaluation only (``Run.load(weights_only=True)``): no optimizer state to train on.
    weights_only: bool = False
    #: Set when the data built now are not those the loaded checkpoint was trained on (an edited spec or data file): why.
    data_changed: str | None = None

    @property
    def device(self) -> torch.device:
        return self.model.device

    @classmethod
    def create(cls, spec: Spec, out: str | Path | None = None, device: str | None = None, progress: bool = True) -> "Run":
        """A fresh run; ``out`` defaults to ``runs/<name>-<timestamp>`` and must not hold checkpoints yet."""
        dist, resolved = setup(resolve_device(str(device or spec.model.device)))
        default = Path("runs") / f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir = Path(dist.broadcast_text(str(out if out is not None else default)))
        if run_dir.exists() and not run_dir.is_dir():
            raise FileExistsError(f"{run_dir} is a file, not a folder: the run folder must be a folder (--out DIR)")
        above = next((folder for folder in run_dir.parents if folder.exists() and not folder.is_dir()), None)
        if above is not None:
            raise FileExistsError(f"{above} is a file, so no run folder can be made at {run_dir}, below it: choose another --out")
        refuse_if_busy(run_dir)
        if list_checkpoints(run_dir):
            raise FileExistsError(f"{run_dir} already holds checkpoints: resume it (--resume {run_dir}) or choose another folder")
        _refuse_to_start_over(run_dir, "choose another folder")
        model, data = build(spec, resolved)
        if dist.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
        run = cls._assemble(spec, model, data, run_dir, dist, progress)
        with run._writing():
            run._record_spec()
        return run

    @classmethod
    def load(
        cls,
        run_dir: str | Path,
        device: str | None = None,
        overrides: Iterable[str] = (),
        catalogue: Catalogue | None = None,
        progress: bool = True,
        checkpoint: str | Path | None = None,
        trained: bool = False,
        weights_only: bool = False,
    ) -> "Run":
        """Rebuild a run from its folder alone, at its newest readable checkpoint.

        ``checkpoint`` picks another one: ``"best"`` (see ``train.best_metric``) or a checkpoint folder.
        A folder with no checkpoint yet (stopped before its first) gives the freshly
        built model, to train from the start, or with ``trained`` an error.  So does
        one whose checkpoints are gone but whose records of training are not: starting
        over would overwrite them.  ``weights_only`` (which implies ``trained``) is for
        sampling and evaluating: the optimizer file is neither read nor checked, so a
        damaged one does not send the run back to an older checkpoint, and the run cannot train.
        """
        run_dir, overrides, trained = Path(run_dir), list(overrides), trained or weights_only
        if not (run_dir / "spec.yaml").exists():
            raise FileNotFoundError(f"{run_dir} is not a run folder (no spec.yaml)")
        if trained and checkpoint is None and not list_checkpoints(run_dir):
            refuse_if_busy(run_dir)  # a training still before its first checkpoint: say that, not "train it first"
            _refuse_to_start_over(run_dir, why="none was written before the training stopped, or they were removed, so there is no trained model to load")
            raise CheckpointError(f"{run_dir} holds no checkpoint yet; train it first: compose-gen train --resume {run_dir}")
        try:
            spec = load_spec(run_dir / "spec.yaml", overrides, catalogue)
        except SpecError as error:
            raise _with_missing_plugin_remedy(error, run_dir, offer_set=trained) from None
        dist, resolved = setup(resolve_device(str(device or spec.model.device)))
        try:
            with warnings.catch_warnings():  # said when the run was made; its resolved spec sets every default
                warnings.simplefilter("ignore", SpecWarning)
                model, data = build(spec, resolved)
        except SpecError as error:
            raise _with_moved_data_remedy(error, spec, run_dir) from None
        run = cls._assemble(spec, model, data, run_dir, dist, progress)
        recorded, now = _recorded_plugins(run_dir), spec.catalogue.provenance(_types_used(spec))
        for name in sorted(set(recorded) & set(now)):
            if recorded[name] != now[name]:
                run.trainer.say(f"warning: {run_dir} was trained with type {name!r} of {recorded[name]}; it is now of {now[name]}")
        if checkpoint is None:
            loaded, skipped = load_latest(run_dir, model, optimizer=not weights_only)
            for reason in skipped if loaded is not None else ():  # else the error below gives them
                run.trainer.say(f"warning: {reason}")
            if loaded is None and skipped:
                changed = ""
                if any("does not fit this model" in reason for reason in skipped):
                    told = [o for o in overrides if not o.startswith("train.steps=")]  # --steps says train.steps, which is no model
                    by = "the --set overrides" if told else f"an edit of {run_dir / 'spec.yaml'}"
                    changed = f"; {by} may have changed the model, which a run cannot change once trained"
                raise CheckpointError(f"{run_dir}: no checkpoint could be loaded{changed}: " + "; ".join(skipped))
            if loaded is None:
                _refuse_to_start_over(run_dir)
            elif skipped:
                run.behind = f"step {loaded.step} is loaded, but a newer checkpoint could not be"
        else:
            loaded = load_checkpoint(_checkpoint_path(run_dir, checkpoint), model, optimizer=not weights_only)
            newest = list_checkpoints(run_dir)[-1]
            if loaded.path.resolve() != newest.resolve():
                run.behind = f"step {loaded.step} is loaded, not the newest checkpoint ({newest.name})"
        keys = {o.split("=", 1)[0].strip() for o in overrides}
        moved = sorted(k for k in keys if k == "seed" or (k.startswith("data") and k.split(".")[-1] in _SPLIT_KEYS))
        if loaded is not None and moved:
            run.trainer.say(
                f"warning: --set {', '.join(moved)} may change the data's split or preprocessing, so the test split may hold "
                "examples this run trained on, and the metrics would no longer be of held-out data"
            )
        recorded = None if loaded is None else loaded.state.get("train_sha256")
        if recorded is not None and recorded != run.trainer.data_fingerprint:
            run.data_changed = "the train split is not the one this run was trained on"
            if not moved:  # said above
                run.trainer.say(
                    f"warning: {run.data_changed} (an edit of {run_dir / 'spec.yaml'}, or a changed data file): the test split may "
                    "hold examples it trained on, so its metrics are not of held-out data and are not recorded"
                )
        if loaded is not None:
            for note in loaded.notes:
                run.trainer.say(f"warning: {note}")
            run.trainer.restore(loaded)
        run.seen_checkpoints = frozenset(path.name for path in list_checkpoints(run_dir))
        run.weights_only = weights_only
        return run

    @classmethod
    def _assemble(cls, spec: Spec, model: GenerativeModel, data: Splits, run_dir: Path, dist: Distributed, progress: bool) -> "Run":
        train = spec.model.train
        memory_format = torch.contiguous_format
        if train.channels_last:
            if use_channels_last(model):
                memory_format = torch.channels_last
            elif dist.is_main:
                print("warning: train.channels_last has no effect: the model has no 4D (convolution) weights", file=sys.stderr)
        if dist.rank > 0:  # every process built the same parameters from the spec's seed; each draws its own noise
            torch.manual_seed(offset_seed(spec.model.seed, dist.rank, RANK_STRIDE))
        dist.broadcast_state(model, parameters=True)
        stream = BatchStream(data.train, train.batch_size, spec.model.seed, model.device, dist.rank, dist.world_size, memory_format)
        run_dir = Path(os.path.abspath(run_dir))  # absolute and without "..", not resolving links
        run = cls(spec, model, data, run_dir, None)  # type: ignore[arg-type]
        run.trainer = Trainer(model, stream, run_dir, progress, dist, run._samples_at if run._can_draw() else None)
        run.trainer.data_fingerprint = data.train.fingerprint()
        return run

    def train(self, steps: int | None = None) -> dict[str, float]:
        """Train to round ``steps`` (default: the spec's ``train.steps``), then sample and evaluate into the folder.

        A run stopped by SIGINT/SIGTERM (``trainer.interrupted``) is checkpointed but not sampled or evaluated.
        """
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps <= self.trainer.step):
            raise ValueError(f"train: steps is the round to train to, a whole number after the run's step {self.trainer.step}; got {steps!r}")
        total = self.spec.model.train.steps if steps is None else int(steps)
        if self.weights_only:
            raise RuntimeError(
                f"{self.dir}: loaded without its optimizer state, to sample and evaluate; to train it, load it with compose_gen.load_run"
            )
        with self._writing():
            overtaken = self._overtaken()
            if overtaken:
                raise CheckpointError(f"{overtaken}: training here would rewind its logs; load it again (compose_gen.load_run) to go on")
            with self._spec_kept_unless_checkpointed():
                self._record_spec()  # a run resumed with --set continues, and later resumes, with what it was told
                logs = self.trainer.fit(total)
            if self.behind is not None and self.dir is not None:  # loaded behind a damaged checkpoint: is this one newer now?
                newest = list_checkpoints(self.dir)[-1].name
                ahead = newest in self.trainer.written
                self.behind = None if ahead else f"step {self.trainer.step} is trained, but the folder's newest checkpoint, {newest}, could not be loaded"
            if self.trainer.interrupted or not self.trainer.dist.is_main:
                return logs
            failed = None
            if self.dir is not None and self._can_draw():
                try:
                    self._samples_at(self.trainer.step)
                except SamplingFailed as error:  # the metrics that need no samples still run; then this is raised
                    failed = error
            if self.spec.model.train.evaluate_at_end:
                try:
                    self.evaluate()
                except EvaluationFailed:
                    if failed is not None:  # the sampling failure is said too, not lost behind the metrics'
                        self.trainer.say(f"error: {failed}")
                    raise
        if failed is not None:
            raise failed
        return logs

    def _overtaken(self) -> str | None:
        """Which checkpoints another Run or process wrote into the folder since this Run was loaded, or None."""
        if self.dir is None or not self.trainer.dist.is_main:
            return None
        known = self.seen_checkpoints | self.trainer.written
        others = [path.name for path in list_checkpoints(self.dir) if path.name not in known]
        return f"{self.dir} holds {', '.join(others)}, written by another Run or process since this one was loaded" if others else None

    def _writing(self) -> AbstractContextManager[Any]:
        """This process as the one writer of the run folder (the main process's claim, :mod:`compose_gen.runtime.claim`)."""
        return claimed(self.dir) if self.dir is not None and self.trainer.dist.is_main else nullcontext()

    @contextmanager
    def _spec_kept_unless_checkpointed(self) -> Iterator[None]:
        """The folder's previous ``spec.yaml`` back if training fails before saving a checkpoint with the new one.

        A resume whose ``--set`` diverges at once (a learning rate of 1e6) must not
        leave that setting recorded, or a plain resume would diverge again.
        """
        path = None if self.dir is None or not self.trainer.dist.is_main else self.dir / "spec.yaml"
        before = path.read_text() if path is not None and path.exists() else None
        newest = list_checkpoints(self.dir)[-1:] if path is not None else []
        try:
            yield
        except BaseException:
            if before is not None and list_checkpoints(self.dir)[-1:] == newest:
                write_text_atomic(path, before)
            raise

    def _record_spec(self) -> None:
        """Write the spec this run trains with to ``spec.yaml``, the one its folder is rebuilt from (main process)."""
        if self.dir is None or not self.trainer.dist.is_main:
            return
        text = self.spec.to_yaml()
        path = self.dir / "spec.yaml"
        if not path.exists() or path.read_text() != text:
            write_text_atomic(path, text)
        plugins = self.spec.catalogue.provenance(_types_used(self.spec))
        if _recorded_plugins(self.dir) != plugins:
            write_json_atomic(self.dir / PLUGINS_FILE, plugins)

    def averaged(self) -> AbstractContextManager[Any]:
        """A context in which the model holds its moving-average weights (``train.ema``), if it keeps any."""
        return self.trainer.ema.applied() if self.trainer.ema is not None else nullcontext()

    @contextmanager
    def _as_evaluated(self, seed: int | None = None) -> Iterator[None]:
        """Eval mode with the averaged weights; training's mode and weights are restored after.  With a ``seed``,
        on a random stream of its own, seeded by it (the training stream is left as it was)."""
        was_training = self.model.training
        self.model.eval()
        try:
            with rng.isolated(self.device, seed) if seed is not None else nullcontext(), self.averaged():
                yield
        finally:
            self.model.train(was_training)

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, classes: Sequence[int | str] | None = None) -> Tensor:
        """``n`` samples in model space (drawn in eval mode with the averaged weights; training's are restored after).

        A model that samples by class draws example ``i`` of class ``classes[i mod len(classes)]``,
        every class by default: ``run.sample(8, classes=[3])`` draws eight 3s.  A class is its
        label, or its name where the data name their classes (a csv's label texts, an image
        folder's sub-folders): ``classes=["virginica"]``.
        """
        with self._as_evaluated():
            return self.model.sample(n, temperature, self.class_labels(classes))

    def class_labels(self, classes: Sequence[int | str] | None) -> list[int] | None:
        """``classes`` as labels: a name of the data's classes (``meta["classes"]``) becomes its label, a whole number
        (or its text) stays as it is; names win over numbers, since a renamed label ``"3"`` may not be label 3."""
        if classes is None:
            return None
        names = [str(name) for name in self.data.train.meta.get("classes") or []]
        labels = []
        for k in classes:
            if str(k) in names:
                labels.append(names.index(str(k)))
            elif isinstance(k, int) or (isinstance(k, str) and k.lstrip("-").isdigit()):
                labels.append(int(k))
            else:
                known = f"its classes are {', '.join(names)}" if names else "its classes have no names, only labels"
                raise ValueError(f"unknown class {k!r}: {known}")
        return labels

    @torch.no_grad()
    def log_prob(self, x: Any, y: Any = None, samples: int = 1000, loss: str | None = None, batch_size: int = 256) -> Tensor:
        """log p(x), or log p(x | y) for a model trained on labels, of new examples ``x`` in data space: nats per example.

        ``x`` holds values as the dataset's files do (digits: pixels 0..16), shaped like its
        examples (pixels of an image dataset off its grid, such as 3.5 or 17 for digits, are
        refused), and ``y`` labels or, where the data name their classes, names; they are mapped to model space as the data were (the dataset's own scaling, the
        spec's ``transforms``), and the log-determinant of that map is counted, so the numbers
        compare with the test NLL of ``evaluate``.  A flow's is exact; a latent-variable model's, or a
        dequantizing model's (over the noise), is estimated by importance sampling with ``samples`` draws.  Evaluated in eval mode with the
        averaged weights, on a random stream seeded by the spec.
        """
        to_model = self.data.test.to_model
        if to_model is None:
            raise ValueError(f"the dataset of spec {self.spec.name!r} cannot map new examples to model space, so log p(x) cannot be taken")
        for name, value in (("batch_size", batch_size), ("samples", samples)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"log_prob: {name} must be a whole number ≥ 1, got {value!r}")
        x = torch.as_tensor(x)
        if x.dim() == 0 or len(x) == 0:
            raise ValueError(f"log_prob: x holds no examples (shape {tuple(x.shape)})")
        if x.is_floating_point() and not bool(x.isfinite().all()):
            first = int((~x.isfinite()).reshape(len(x), -1).any(1).nonzero()[0])
            raise ValueError(f"log_prob: x holds values that are NaN or infinite (the first in example {first}); give finite examples")
        if y is not None and not isinstance(y, Tensor):
            given = np.asarray(y, dtype=object).reshape(-1).tolist()
            if any(isinstance(label, str) for label in given):  # class names, as sample takes them
                y = self.class_labels(given)
        labels = None if y is None else torch.as_tensor(y)
        if labels is not None and labels.is_floating_point() and not bool((labels.isfinite() & (labels == labels.round())).all()):
            raise ValueError("log_prob: the labels y must be whole numbers (class labels)")
        labels = None if labels is None else labels.long().reshape(-1)
        if labels is not None and "y" not in self.model.likelihood_fields(loss):
            raise ValueError(f"log_prob: spec {self.spec.name!r} models p(x), not p(x | y): it reads no labels, so drop y")
        model_x, ladj = to_model(x)
        if labels is not None and len(labels) != len(model_x):
            raise ValueError(f"{len(model_x)} examples but {len(labels)} labels")
        parts = []
        with self._as_evaluated(self.spec.model.seed):
            for start in range(0, len(model_x), batch_size):
                part = slice(start, start + batch_size)
                batch = {"x": model_x[part].to(self.device), **({"y": labels[part].to(self.device)} if labels is not None else {})}
                parts.append(self.model.log_likelihood(batch, ladj[part].to(self.device), samples, loss).cpu())
        return torch.cat(parts)

    def save_samples(
        self, path: str | Path, n: int | None = None, temperature: float = 1.0, classes: Sequence[int | str] | None = None
    ) -> Path:
        """Write samples as an image grid (image data; one class per column when sampled by class) or a scatter plot (2D);
        to a ``.npy`` file as an array in data space, or to ``.npz`` with ``x`` and, when sampled by class, labels ``y``.

        ``classes`` chooses the classes of a model that samples by class, as in :meth:`sample`.
        The samples are drawn from the spec's seed on a separate random stream, so
        successive pictures of one run show the same noise and training is not disturbed.
        """
        n = self.spec.model.evaluate.samples if n is None else n
        labels = self.model.labels(n, self.class_labels(classes))
        with rng.isolated(self.device, self.spec.model.seed):
            x = self.sample(n, temperature, classes)
        broken = int((~x.isfinite()).reshape(n, -1).any(1).sum())
        if broken:  # written all the same, as asked, but not without a word
            self.trainer.say(
                f"warning: {broken} of the {n} samples hold NaN or infinite values (written as they are): the model's sampling "
                f"direction breaks down at step {self.trainer.step}; a bijector whose inverse leaves its domain (a sigmoid's "
                "logit) is a common cause"
            )
        test = self.data.test
        cycle = None if labels is None else len(classes or range(self.model.conditions.classes))  # one column per class drawn
        if Path(path).suffix.lower() in (".npy", ".npz"):
            return _save_array(Path(path), test.to_display(x), labels)
        if test.image_shape is not None:
            return save_grid(test.to_display(x).reshape(n, *test.image_shape), path, nrow=class_columns(n, cycle))
        if x[0].numel() == 2:
            reference = test.to_display(test.fields["x"]).reshape(-1, 2)
            names = [str(name) for name in test.meta.get("classes") or []]
            return save_scatter(test.to_display(x).reshape(n, 2), path, reference, labels=labels, class_names=names)
        raise ValueError(
            f"samples of event shape {tuple(x.shape[1:])} are neither images nor 2D points, so they cannot be drawn; "
            f"write them as an array instead: -o {Path(path).with_suffix('.npy').name} (or .npz; Run.sample() in Python)"
        )

    def _can_draw(self) -> bool:
        test = self.data.test
        return self.model.sampler is not None and (test.image_shape is not None or test.event_shape("x").numel() == 2)

    def _samples_at(self, step: int) -> Path:
        assert self.dir is not None
        return self.save_samples(self.dir / "samples" / f"step-{step:08d}.png")

    def _keyed_apart(self, found: dict[str, float], results: dict[str, Any], index: int) -> dict[str, float]:
        """``found`` with each name an earlier metric already gave suffixed ``@metrics[index]``, so neither is lost
        (two ``frechet_distance`` of different references, say); a name given again with the same value (the
        ``classifier_accuracy`` every classifier metric reports) is the same number, kept once."""
        found = {key: value for key, value in found.items() if key not in results or results[key] != value}
        clashes = [key for key in found if key in results]
        if clashes:
            self.trainer.say(
                f"warning: evaluate.metrics[{index}] gives {', '.join(clashes)}, as an earlier metric does; "
                f"written as {clashes[0]}@metrics[{index}]{', ...' if len(clashes) > 1 else ''}"
            )
        return {f"{key}@metrics[{index}]" if key in results else key: value for key, value in found.items()}

    @torch.no_grad()
    def _measure(self, metric: Callable[[EvalContext], Any], ctx: EvalContext, results: dict[str, Any], index: int) -> tuple[dict[str, float], str | None]:
        """What ``metric`` gives (keyed apart from ``results``), or why it gave nothing: a broken contract or what it raised."""
        try:
            return self._keyed_apart(check_metric_result(metric(ctx)), results, index), None
        except ContractError as error:
            return {}, f"broke the metric contract: {error}"
        except Exception as error:  # one broken metric must not cost the others
            problem = f"raised {type(error).__name__}: {error}"
            culprit = self.model.culprit(error)  # a loss or component it called, whose code raised
            if culprit is not None:
                problem = f"failed in another part of the spec: {self.spec.blame(culprit, problem)}"
            return {}, problem

    def evaluate(self, out_dir: str | Path | None = None, record: bool = True) -> dict[str, Any]:
        """Run every metric of ``evaluate.metrics``; with ``record``, write ``evaluation.json`` into the folder.

        Metrics run in eval mode with the averaged weights (``train.ema``) on a random stream seeded by
        the spec (training's weights and random stream are left as they were).  A metric that raises or
        returns anything but named floats does not stop the others: their results are written, the
        failures too (under ``failed``), and then :class:`EvaluationFailed` names each failed metric.
        """
        folder = Path(out_dir) if out_dir else (self.dir or Path("."))
        if folder.exists() and not folder.is_dir():  # before any metric runs, so no result is lost to the mistake
            raise NotADirectoryError(f"{folder} is a file; the files metrics write (grids, plots) go to a folder: give a folder")
        ctx = EvalContext(
            model=self.model,
            data=self.data,
            device=self.device,
            out_dir=folder,
            batch_size=self.spec.model.evaluate.batch_size,
            seed=self.spec.model.seed,
        )
        results: dict[str, Any] = {"step": self.trainer.step}
        problems: list[Problem] = []
        with self._as_evaluated(self.spec.model.seed):
            for index, (declared, metric) in enumerate(zip(self.spec.sections.metrics, self.model.metrics, strict=True)):
                versions = _versions(self.data)
                measured, problem = self._measure(metric, ctx, results, index)
                results.update(measured)
                undefined = [f"{key} = {value}" for key, value in measured.items() if not math.isfinite(value)]
                if undefined:
                    where = format_path(declared.path)
                    self.trainer.say(f"warning: {where} ({declared.type.name}) gave {', '.join(undefined)}, recorded as null")
                changed = [f"{split} split's {name!r}" for (split, name), version in _versions(self.data).items() if version != versions[split, name]]
                if changed:  # the data every later metric reads: stop here rather than record numbers of altered data
                    problem = (
                        f"changed the {changed[0]} in place (a metric must leave ectx.data as it is); the metrics after it were "
                        "not run, and this run's data in memory stay altered: load the run again"
                    )
                if problem is not None:
                    problems += self.spec.blame(declared, problem).problems
                if changed:
                    break
        if problems:
            results["failed"] = {format_path(p.path): p.message for p in problems}
        self.evaluation = results
        behind = self.behind or self._overtaken()
        if self.dir is not None and record and self.data_changed is not None:
            self.trainer.say(f"warning: not recorded in {self.dir / 'evaluation.json'}: {self.data_changed}")
        elif self.dir is not None and record and behind is not None:
            self.trainer.say(f"warning: not recorded in {self.dir / 'evaluation.json'}, which is the newest checkpoint's: {behind}")
        elif self.dir is not None and record:
            try:
                write_json_atomic(self.dir / "evaluation.json", results)
            except OSError as error:  # a read-only folder: the results are still returned (and printed)
                self.trainer.say(f"warning: could not record {self.dir / 'evaluation.json'}: {error}")
        if problems:
            raise EvaluationFailed(results, SpecError(problems, self.spec.source), self.dir if record else None)
        return results


#: Data parameters whose change on a resume may move examples between the splits (a file's path does not).
_SPLIT_KEYS = frozenset({"seed", "test_fraction", "transforms", "n"})


def _checkpoint_path(run_dir: Path, which: str | Path) -> Path:
    """``which`` checkpoint of ``run_dir``: ``"best"``, or a folder of its own (a relative path is taken in the run folder)."""
    if str(which) != "best":
        path = Path(which)
        if not path.is_absolute():  # in the run folder, or its checkpoints folder (a bare step-00000040)
            path = next((p for p in (run_dir / path, run_dir / "checkpoints" / path) if p.exists()), path)
        if path.resolve().parent != (run_dir / "checkpoints").resolve():
            raise CheckpointError(f"{path} is not a checkpoint of {run_dir}: give one of its own, in {run_dir / 'checkpoints'}")
        return path
    best = read_best(run_dir)
    if best is None and (run_dir / "checkpoints" / BEST_FILE).exists():
        raise CheckpointError(
            f"{run_dir / 'checkpoints' / BEST_FILE}: unreadable (damaged or edited), so the best checkpoint is unknown; "
            "load another checkpoint, or resume the run, which writes it again at its next checkpoint"
        )
    if best is None:
        raise CheckpointError(f"{run_dir}: no best checkpoint recorded (set train.best_metric to track one)")
    return run_dir / "checkpoints" / f"step-{int(best['step']):08d}"


def _refuse_to_start_over(run_dir: Path, instead: str | None = None, why: str = "starting over would overwrite them") -> None:
    """A folder that has no checkpoint but records of training: training there would start over and overwrite them."""
    records = read_metrics(run_dir / "metrics.jsonl")
    evaluated = (run_dir / "evaluation.json").exists()
    if not records and not evaluated:
        return
    refuse_if_busy(run_dir)  # a live training that has not checkpointed yet: say that, not that it is stale
    step = max((r["step"] for r in records if isinstance(r.get("step"), int)), default=0)
    found = " and ".join(name for name, present in (("metrics.jsonl", records), ("evaluation.json", evaluated)) if present)
    raise CheckpointError(
        f"{run_dir} holds no checkpoint, but {found} (up to step {step}): {why}; "
        + (instead or f"train into a new folder instead: compose-gen train {run_dir / 'spec.yaml'} --out NEW_DIR")
    )


def _save_array(path: Path, x: Tensor, labels: Tensor | None) -> Path:
    """Samples as ``.npy`` (the array) or ``.npz`` (``x``, and the class ``y`` of each sample when drawn by class)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    array = x.detach().cpu().numpy()
    if path.suffix.lower() == ".npy":
        np.save(path, array, allow_pickle=False)
    else:
        np.savez(path, x=array, **({"y": labels.cpu().numpy()} if labels is not None else {}))
    return path


def _versions(data: Splits) -> dict[tuple[str, str], int]:
    """The version counter of every field of both splits, which each in-place change of the tensor moves on."""
    return {(split, name): values._version for split, half in (("train", data.train), ("test", data.test)) for name, values in half.fields.items()}
