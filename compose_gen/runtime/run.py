"""A run folder: everything needed to resume, sample and evaluate a model.

::

    RUN/
      spec.yaml          the resolved spec the run trains with (defaults filled in; a resume's --set included)
      metrics.jsonl      one JSON object per logged step
      checkpoints/       step-XXXXXXXX/{model,optim}.safetensors + state.json; best.json
      samples/           sample grids (or 2D scatter/density plots) during and after training
      tensorboard/       TensorBoard events (train.tensorboard: true)
      evaluation.json    the metrics of the last evaluation

:class:`Run` is the façade over the runtime's parts: :mod:`~compose_gen.runtime.device` (device names),
:mod:`~compose_gen.runtime.layout` (the names of the folder's files),
:mod:`~compose_gen.runtime.folder` (a folder's checks and the checkpoint it loads),
:mod:`~compose_gen.runtime.remedies` (messages for moved data and missing plugins),
:mod:`~compose_gen.runtime.inputs` (``log_prob``'s checks), :mod:`~compose_gen.runtime.export`
(sample files) and :mod:`~compose_gen.runtime.evaluation` (the metric loop).
"""

from __future__ import annotations

import json
import numbers
import os
import tempfile
import time
import warnings
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import torch
from torch import Tensor

from compose_gen.compiler import GenerativeModel, SamplingFailed, compile_spec
from compose_gen.compiler.build import build_data
from compose_gen.core import Splits
from compose_gen.core.files import read_json, write_json_atomic, write_text_atomic
from compose_gen.core.modes import own_modes
from compose_gen.core.seeds import RANK_STRIDE, offset_seed
from compose_gen.registry import Catalogue, listed, make_catalogue
from compose_gen.runtime import rng
from compose_gen.runtime.acceleration import use_channels_last
from compose_gen.runtime.checkpoint import (
    Checkpoint,
    CheckpointError,
    list_checkpoints,
)
from compose_gen.runtime.claim import claimed, refuse_if_busy
from compose_gen.runtime.data import BatchStream
from compose_gen.runtime.device import resolve_device
from compose_gen.runtime.distributed import Distributed, setup
from compose_gen.runtime.evaluation import EvaluationFailed, MetricLoop, metric_folder
from compose_gen.runtime.export import drawable, non_finite_warning, write_samples
from compose_gen.runtime.folder import check_loadable, check_new_folder, load_chosen, moved_split_keys, override_keys
from compose_gen.runtime.inputs import as_examples, as_labels, check_counts, class_names_in
from compose_gen.runtime.layout import CHECKPOINTS_DIR, EVALUATION_FILE, PLUGINS_FILE, SAMPLES_DIR, SPEC_FILE, dropped_evaluation_name
from compose_gen.runtime.remedies import (
    changed_plugins,
    recorded_plugins,
    types_used,
    with_missing_plugin_remedy,
    with_changed_data_note,
    with_moved_data_remedy,
)
from compose_gen.runtime.trainer import Trainer
from compose_gen.spec import MODEL_SECTIONS, Spec, SpecError, SpecWarning, load_spec, override_list

__all__ = ["EvaluationFailed", "Run", "build", "resolve_device"]


def build(spec: Spec, device: str | torch.device | None = None) -> tuple[GenerativeModel, Splits]:
    """The spec's dataset and compiled model, moved to ``device`` (default: the spec's)."""
    device = resolve_device(str(device or spec.model.device))
    data = build_data(spec)
    return compile_spec(spec, data, device), data


def _reserve_default_folder(name: str) -> Path:
    """Make ``runs/NAME-YYYYmmdd-HHMMSS`` (``-2``, ``-3``... when taken), so that trainings of one spec started in the
    same second each get a folder of their own."""
    base = Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    for n in range(1, 10_000):
        candidate = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:
            continue
    raise FileExistsError(f"{base} and 9,999 variants of it exist: give the run folder with --out")


@dataclass
class Run:
    """A model with its data, spec and (optional) folder."""

    spec: Spec
    model: GenerativeModel
    data: Splits
    #: The run folder, absolute: a change of working directory does not move it.
    dir: Path | None
    trainer: Trainer
    #: Set when the loaded checkpoint is not the folder's newest (a newer one was unreadable, or another was chosen): why.
    behind: str | None = None
    #: Loaded from a checkpoint chosen before the folder's newest (``Run.load(checkpoint=...)``): training it would overwrite
    #: the newer ones, so :meth:`train` refuses.
    branched: bool = False
    #: The results of the last :meth:`evaluate` (with its ``step``), None before one.
    evaluation: dict[str, Any] | None = None
    #: The folder the last :meth:`evaluate` gave its metrics for their files (grids, plots), None before one.
    metric_files: Path | None = None
    #: The folder's checkpoints when this Run was made or loaded: any other but its trainer's is another writer's.
    seen_checkpoints: frozenset[str] = frozenset()
    #: Loaded for sampling and evaluation only (``Run.load(weights_only=True)``): no optimizer state to train on.
    weights_only: bool = False
    #: Set when the data or the model built now are not those the loaded checkpoint was trained with (an edited spec or
    #: data file, or a resume on other data): why.  Its metrics are then not recorded.
    changed: str | None = None
    #: The run's own random stream (the state of torch's generators) between its calls to :meth:`train`: training draws
    #: the noise a run never paused would draw, whatever the caller drew in between.
    stream: dict[str, Tensor] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @classmethod
    def create(cls, spec: Spec, out: str | Path | None = None, device: str | None = None, progress: bool = True) -> "Run":
        """A fresh run; ``out`` defaults to ``runs/<name>-<timestamp>`` and must not hold checkpoints yet."""
        with rng.kept():  # the build seeds torch's generators: the run's stream, not the caller's
            run = cls._create(spec, out, device, progress)
            run.stream = rng.get_state(run.device)
        return run

    @classmethod
    def _create(cls, spec: Spec, out: str | Path | None, device: str | None, progress: bool) -> "Run":
        dist, resolved = setup(resolve_device(str(device or spec.model.device)))
        reserved = out is None and dist.is_main  # process 0 makes the default folder; the others take its name from it
        chosen = _reserve_default_folder(spec.name) if reserved else out
        run_dir = Path(dist.broadcast_text(str(chosen)))
        recorded = spec.to_yaml()  # what the folder's spec.yaml will hold
        made = reserved or (dist.is_main and not run_dir.exists())
        try:
            check_new_folder(run_dir, recorded)
            model, data = build(spec, resolved)
            if dist.is_main:
                run_dir.mkdir(parents=True, exist_ok=True)
            run = cls._assemble(spec, model, data, run_dir, dist, progress)
            with run._writing():
                if dist.is_main:  # again, claimed: another run may have begun there during the build (the others see the claim)
                    check_new_folder(run_dir, recorded)
                run._record_spec()
        except BaseException:
            if made:  # refused as it started (a spec error, no TensorBoard, a signal): no empty folder of a run that never was
                with suppress(OSError):  # not made yet, or holding what a start wrote
                    run_dir.rmdir()
            raise
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
        with rng.kept():  # the build and the checkpoint set torch's generators: the run's stream, not the caller's
            run = cls._load(Path(run_dir), device, override_list(overrides), catalogue, progress, checkpoint, trained or weights_only, weights_only)
            run.stream = rng.get_state(run.device)
        return run

    @classmethod
    def _load(
        cls,
        run_dir: Path,
        device: str | None,
        overrides: list[str],
        catalogue: Catalogue | None,
        progress: bool,
        checkpoint: str | Path | None,
        trained: bool,
        weights_only: bool,
    ) -> "Run":
        check_loadable(run_dir, trained, checkpoint)
        catalogue = catalogue or make_catalogue()
        try:
            spec = load_spec(run_dir / SPEC_FILE, overrides, catalogue)
        except SpecError as error:
            raise with_missing_plugin_remedy(error, run_dir, catalogue.failures, offer_set=trained) from None
        dist, resolved = setup(resolve_device(str(device or spec.model.device)))
        with warnings.catch_warnings():
            # said when the run was made, its resolved spec setting every default; a --set makes another spec, --steps not
            if all(override.startswith("train.steps=") for override in overrides):
                warnings.simplefilter("ignore", SpecWarning)
            try:
                data = build_data(spec)
            except SpecError as error:
                raise with_moved_data_remedy(error, spec, run_dir) from None
            try:
                model = compile_spec(spec, data, resolved)
            except SpecError as error:
                raise with_changed_data_note(error, data, run_dir, overrides) from None
        run = cls._assemble(spec, model, data, run_dir, dist, progress)
        for warning in changed_plugins(run_dir, spec):
            run.trainer.say(warning)
        loaded, run.behind = load_chosen(run_dir, model, checkpoint, overrides, weights_only, run.trainer.say)
        run.branched = checkpoint is not None and run.behind is not None
        if loaded is not None:
            run._resume(loaded, overrides, run_dir)
        run.seen_checkpoints = frozenset(path.name for path in list_checkpoints(run_dir))
        run.weights_only = weights_only
        return run

    def _resume(self, loaded: Checkpoint, overrides: list[str], run_dir: Path) -> None:
        """Continue from ``loaded`` (already in the model), warning where the data may not be those it was trained on
        (``run_dir``: the folder as given to :meth:`load`, for messages)."""
        moved = moved_split_keys(overrides)
        if moved:
            self.trainer.say(
                f"warning: --set {', '.join(moved)} may change the data's split or preprocessing, so the test split may hold "
                "examples this run trained on, and the metrics would no longer be of held-out data"
            )
        self._check_data(loaded.state, bool(moved), run_dir)
        if self.changed is None:
            self._check_model(loaded, overrides, run_dir)
        for note in loaded.notes:
            self.trainer.say(f"warning: {note}")
        self.trainer.restore(loaded)

    def _check_data(self, state: dict[str, Any], said: bool, run_dir: Path) -> None:
        """Set :attr:`changed` (and say why, unless ``said``) when the splits built now are not those the checkpoint's
        ``state`` records: a train split it did not train on, or another test split."""
        # Every split the run trained on stays recorded: after a resume on another split, no split is held out from it.
        recorded = state.get("trained_on") or [f for f in [state.get("train_sha256")] if f]  # older checkpoints: the last one
        current = self.trainer.trained_on[-1]
        tested = state.get("test_sha256")
        if not state.get("sources_counted"):  # older checkpoints: fingerprints of the transformed fields alone
            legacy = self.data.train.fingerprint(with_source=False)
            recorded = [current if fingerprint == legacy else fingerprint for fingerprint in recorded]
            if tested == self.data.test.fingerprint(with_source=False):
                tested = self.trainer.test_fingerprint
        self.trainer.trained_on = list(dict.fromkeys([*recorded, current]))
        if any(fingerprint != current for fingerprint in recorded):
            self.changed = "the run was trained on another train split than this one"
        elif tested is not None and tested != self.trainer.test_fingerprint:
            self.changed = "the test split is not the one this run was tested on while it trained"
        if self.changed is not None and not said:
            self.trainer.say(
                f"warning: {self.changed} (an edit of {run_dir / SPEC_FILE}, a changed data file, or a dataset type that "
                "draws its data without its seed, so that no two builds agree): the test split may "
                "hold examples it trained on, so its metrics are not of held-out data and are not recorded, "
                "and samples are shown through the transforms fitted on the data as they are now"
            )

    def _check_model(self, loaded: Checkpoint, overrides: list[str], run_dir: Path) -> None:
        """Set :attr:`changed` and say why when the spec's model, as its file holds it, is not every one ``loaded`` was
        trained with, and no override of the model (which the command that takes it says) explains it."""
        # Every model spec the weights were trained with stays recorded: after a resume on an edited one, they mean neither.
        recorded = loaded.state.get("trained_with") or [f for f in [loaded.state.get("model_sha256")] if f]  # older: the last
        told = any(key.split(".")[0] in MODEL_SECTIONS for key in override_keys(overrides))
        current = self.spec.model_fingerprint(as_written=True)
        if len(set(recorded)) <= 1 and (told or all(fingerprint == current for fingerprint in recorded)):
            return
        self.trainer.trained_with = list(dict.fromkeys([*recorded, *self.trainer.trained_with]))
        if told or recorded[-1] == current:
            self.changed = f"step {loaded.step} was trained in part with other components, graph or losses, before a resume on an edited spec"
            cause = ""
        else:
            self.changed = f"its components, graph or losses are not those step {loaded.step} was trained with"
            cause = " (an edit of the file, or a --set of a resume after that step)"
        self.trainer.say(
            f"warning: {run_dir / SPEC_FILE}: {self.changed}{cause}: the weights may not mean what it says, so its metrics are not recorded"
        )

    @classmethod
    def _assemble(cls, spec: Spec, model: GenerativeModel, data: Splits, run_dir: Path, dist: Distributed, progress: bool) -> "Run":
        train = spec.model.train
        memory_format = torch.contiguous_format
        if train.channels_last and use_channels_last(model):  # without 4D weights it does nothing, as the build warned
            memory_format = torch.channels_last
        trained_on, tested_on, model_fingerprint = data.train.fingerprint(), data.test.fingerprint(), spec.model_fingerprint()
        settings = json.dumps([spec.to_dict().get("train"), spec.model.seed], sort_keys=True, default=str)
        dist.refuse_disagreement(f"{model_fingerprint} {settings} {trained_on} {tested_on}")
        if dist.rank > 0:  # every process built the same parameters from the spec's seed; each draws its own noise
            torch.manual_seed(offset_seed(spec.model.seed, dist.rank, RANK_STRIDE))
        dist.broadcast([*model.buffers(), *model.parameters()])
        if train.batch_size % dist.world_size:  # a spec error, which process 0 alone says: every process would say it alike
            raise spec.error(
                ("train", "batch_size"),
                f"{train.batch_size} cannot be split evenly over {dist.world_size} processes: give a multiple of {dist.world_size}",
            )
        stream = BatchStream(data.train, train.batch_size, spec.model.seed, model.device, dist.rank, dist.world_size, memory_format)
        run_dir = Path(os.path.abspath(run_dir))  # absolute and without "..", not resolving links
        trainer = Trainer(model, stream, run_dir, progress, dist)
        trainer.trained_on, trainer.test_fingerprint = [trained_on], tested_on
        trainer.trained_with = [model_fingerprint]
        run = cls(spec, model, data, run_dir, trainer)
        if run._can_draw():
            trainer.on_sample = run._samples_at
        return run

    def __reduce__(self) -> Any:
        raise TypeError(
            "a Run does not pickle (it holds its folder, trainer and data): from a worker process return its folder, and "
            "compose_gen.load_run it where it is wanted"
        )

    def train(self, steps: int | None = None) -> dict[str, float]:
        """Train to round ``steps`` (default: the spec's ``train.steps``), then sample and evaluate into the folder.

        A run stopped by SIGINT/SIGTERM (``trainer.interrupted``) is checkpointed but not sampled or evaluated.
        """
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps <= self.trainer.step):
            raise ValueError(f"train: steps is the round to train to, a whole number after the run's step {self.trainer.step}; got {steps!r}")
        total = self.spec.model.train.steps if steps is None else int(steps)
        self._refuse_past_the_schedules(total)
        if self.weights_only:
            raise RuntimeError(
                f"{self.dir}: loaded without its optimizer state, to sample and evaluate; to train it, load it with compose_gen.load_run"
            )
        self._refuse_if_gone()
        if self.branched:
            raise CheckpointError(
                f"{self.dir}: {self.behind}; training on from it would overwrite the newer checkpoints and set their records "
                "aside: train on from the newest (compose_gen.load_run without checkpoint=), or train a copy of the folder "
                "without the newer checkpoints"
            )
        with self._writing():
            overtaken = self._overtaken()
            if overtaken:
                raise CheckpointError(f"{overtaken}: training here would rewind its logs; load it again to go on (compose-gen train --resume, or compose_gen.load_run)")
            self._set_aside_later_evaluation()
            self._refuse_unwritable_checkpoints()
            with self._own_stream():  # a run resumed with --set continues, and later resumes, with what it was told:
                self.trainer.before_save = self._record_spec  # recorded with its first checkpoint, not before (a kill)
                logs = self.trainer.fit(total)
            if self.behind is not None and self.dir is not None:  # loaded behind a damaged checkpoint: is this one newer now?
                newest = list_checkpoints(self.dir)[-1].name
                ahead = newest in self.trainer.written
                self.behind = None if ahead else f"step {self.trainer.step} is trained, but the folder's newest checkpoint, {newest}, could not be loaded"
            if not self.trainer.interrupted and self.trainer.dist.is_main:
                try:
                    self._sample_and_evaluate()
                except EvaluationFailed as failure:
                    failure.training = logs  # for a caller that reports them beside the metrics that worked, as on success
                    raise
        self.trainer.dist.wait_for_main()  # every process returns once process 0 has sampled and evaluated
        return logs

    def _refuse_past_the_schedules(self, total: int) -> None:
        """Refuse rounds past ``train.steps`` where a player's schedule has decayed to 0 (``linear`` or ``cosine`` with
        ``min_factor: 0``), which would train nothing; ``--steps`` (an override of ``train.steps``) stretches it instead.
        A schedule that ends above 0 trains on at its final rate, and a step or exponential decay goes on decaying."""
        planned = self.spec.model.train.steps
        ended = [f"{name}'s {plan.spec.schedule.type}" for name, plan in self.model.plans.items() if plan.spec.schedule.factor(total - 1, planned) == 0]
        if total > planned and ended:
            raise ValueError(
                f"train: rounds past train.steps ({planned}) would train at learning rate 0, where the {' and '.join(ended)} "
                f"schedule{'s end' if len(ended) > 1 else ' ends'}; to train to round {total}, stretch the schedule over it with train.steps={total}: "
                f"compose_gen.load_run(folder, overrides=['train.steps={total}']) (compose-gen train --resume FOLDER --steps {total}), "
                f"or for a run not yet trained, its spec loaded with that override"
            )

    @contextmanager
    def _own_stream(self) -> Iterator[None]:
        """Torch's generators on the run's own stream (:attr:`stream`); the caller's put back after, as it left them."""
        caller = rng.get_state(self.device)
        rng.set_state(self.stream, self.device)
        try:
            yield
        finally:
            self.stream = rng.get_state(self.device)
            rng.set_state(caller, self.device)

    def _sample_and_evaluate(self) -> None:
        """The end of training on process 0: the final samples, then the evaluation (``train.evaluate_at_end``)."""
        failed: SamplingFailed | OSError | None = None
        if self.dir is not None and self._can_draw():
            try:
                self._samples_at(self.trainer.step)
            except (SamplingFailed, OSError) as error:  # drawn or written: the metrics (those that need no samples) still run; then this is raised
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

    def _set_aside_later_evaluation(self) -> None:
        """An evaluation of a step after the one training goes on from (a resume behind a damaged checkpoint) is of weights
        this training replaces: it is moved aside (:func:`dropped_evaluation_name`, by its step, beside any set aside
        before), so the record never shows it as theirs."""
        if self.dir is None or not self.trainer.dist.is_main:
            return
        path = self.dir / EVALUATION_FILE
        try:
            step = read_json(path).get("step")
        except (OSError, ValueError, AttributeError):
            return
        if isinstance(step, int) and step > self.trainer.step:
            aside = self._set_aside(path, step)
            self.trainer.say(
                f"warning: {path} holds the evaluation of step {step}, after step {self.trainer.step} where training goes on, "
                f"so of weights it replaces: moved to {aside}"
            )

    def _refuse_unwritable_checkpoints(self) -> None:
        """Refuse to train when the folder's ``checkpoints/`` cannot be written: found at the first save, it cost every
        round trained since the last checkpoint."""
        folder = self.dir / CHECKPOINTS_DIR if self.dir is not None and self.trainer.dist.is_main else None
        if folder is None or not folder.is_dir():
            return
        try:
            tempfile.TemporaryFile(dir=folder).close()
        except OSError as error:
            raise OSError(error.errno, f"{folder} cannot be written ({error.strerror}), so no checkpoint of this training could be saved") from None

    def _set_aside(self, path: Path, step: int) -> Path:
        """Move the evaluation ``path`` of ``step`` to :func:`dropped_evaluation_name` (beside any set aside before)."""
        assert self.dir is not None
        copy = 1
        while (self.dir / dropped_evaluation_name(step, copy)).exists():  # one set aside before stays
            copy += 1
        aside = self.dir / dropped_evaluation_name(step, copy)
        os.replace(path, aside)
        return aside

    def _keep_what_failed_now(self, results: dict[str, Any]) -> None:
        """Before ``results`` with failed metrics replace ``evaluation.json``: set the recorded one aside if it holds
        numbers that ``results`` lack (a metric that ran then and fails now), so that no result is lost."""
        assert self.dir is not None
        path = self.dir / EVALUATION_FILE
        try:
            recorded = read_json(path)
            lost = sorted(set(recorded) - set(results) - {"failed"})
        except (OSError, ValueError, TypeError):
            return
        if lost and isinstance(recorded.get("step"), int):
            aside = self._set_aside(path, recorded["step"])
            self.trainer.say(f"warning: {path} held {listed(lost, 4)}, which this evaluation lacks (a metric failed): kept as {aside}")

    def _refuse_if_gone(self) -> None:
        """Refuse to write into the folder when it is gone, moved or deleted since this Run was made or loaded: writing would
        start another at its old path, beside none of its checkpoints and records."""
        if self.dir is not None and self.trainer.dist.is_main and not (self.dir / SPEC_FILE).is_file():
            raise FileNotFoundError(
                f"{self.dir}: the run folder is gone (moved or deleted since this Run was made or loaded), and writing would start "
                "another there; load it again from where it is now"
            )

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

    def _record_spec(self) -> None:
        """Write the spec this run trains with to ``spec.yaml``, the one its folder is rebuilt from (main process)."""
        if self.dir is None or not self.trainer.dist.is_main:
            return
        text = self.spec.to_yaml()
        path = self.dir / SPEC_FILE
        if not path.exists() or path.read_text() != text:
            write_text_atomic(path, text)
        plugins = self.spec.catalogue.provenance(types_used(self.spec))
        if recorded_plugins(self.dir) != plugins:
            write_json_atomic(self.dir / PLUGINS_FILE, plugins)

    def averaged(self) -> AbstractContextManager[Any]:
        """A context in which the model holds its moving-average weights (``train.ema``), if it keeps any."""
        return self.trainer.ema.applied() if self.trainer.ema is not None else nullcontext()

    @contextmanager
    def _as_evaluated(self, seed: int | None = None) -> Iterator[None]:
        """Eval mode with the averaged weights, in compose_gen's own modes (a caller's ``torch.autocast`` does not reach in);
        training's mode and weights are restored after.  With a ``seed``, on a random stream of its own, seeded by it."""
        was_training = self.model.training
        self.model.eval()
        try:
            with (
                rng.isolated(seed) if seed is not None else nullcontext(),
                self.averaged(),
                own_modes(self.device.type, grad=False),
            ):
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
            if isinstance(k, torch.Tensor) and k.dim() == 0 and not (k.is_floating_point() or k.is_complex() or k.dtype == torch.bool):
                k = int(k)  # an element of a tensor of classes, as a numpy integer is
            if str(k) in names:
                labels.append(names.index(str(k)))
            elif (isinstance(k, numbers.Integral) and not isinstance(k, bool)) or (isinstance(k, str) and k.lstrip("-").isdigit()):
                labels.append(int(k))  # a numpy or torch integer too; True is no class
            else:
                known = f"its classes are {', '.join(names)}" if names else "its classes have no names, only labels"
                raise ValueError(f"unknown class {k!r}: {known}")
        return labels

    @torch.no_grad()
    def log_prob(self, x: Any, y: Any = None, samples: int = 1000, loss: str | None = None, batch_size: int = 256) -> Tensor:
        """log p(x), or log p(x | y) for a model trained on labels, of new examples ``x`` in data space: nats per example.

        ``x`` holds values as the dataset's files do (digits: pixels 0..16), shaped like its
        examples (pixels of an image dataset off its grid, such as 3.5 or 17 for digits, are
        refused), and ``y`` the classes as :meth:`sample` takes them (a list: labels, or names where the data name their
        classes, names winning; a tensor: labels as the data's ``y`` holds them); they are mapped to model space as the data were (the dataset's own scaling, the
        spec's ``transforms``), and the log-determinant of that map is counted, so the numbers
        compare with the test NLL of ``evaluate``.  A flow's is exact; a latent-variable model's, or a
        dequantizing model's (over the noise), is estimated by importance sampling with ``samples`` draws.  Evaluated in eval mode with the
        averaged weights, on a random stream seeded by the spec.
        """
        to_model = self.data.test.to_model
        if to_model is None:
            raise ValueError(f"the dataset of spec {self.spec.name!r} cannot map new examples to model space, so log p(x) cannot be taken")
        check_counts("log_prob", batch_size=batch_size, samples=samples)
        x = as_examples(x)
        names = class_names_in(y, named=bool(self.data.train.meta.get("classes")))
        labels = as_labels(y if names is None else self.class_labels(names))
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
        to a ``.npy`` file as an array, or to ``.npz`` with ``x`` and, when sampled by class, labels ``y``: for image data,
        display pixels in [0, 1] (clipped) of shape (N, C, H, W), the dataset's white being 1; for other data, data space
        (the raw units, the transforms undone), which :meth:`log_prob` reads back.

        ``classes`` chooses the classes of a model that samples by class, as in :meth:`sample`.
        The samples are drawn from the spec's seed on a separate random stream, so
        successive pictures of one run show the same noise and training is not disturbed.
        """
        n = self.spec.model.evaluate.samples if n is None else n
        labels = self.model.labels(n, self.class_labels(classes))
        with rng.isolated(self.spec.model.seed):
            x = self.sample(n, temperature, classes)
        warning = non_finite_warning(x, n, self.trainer.step)
        if warning is not None:  # written all the same, as asked, but not without a word
            self.trainer.say(warning)
        cycle = None if labels is None else len(classes or range(self.model.conditions.classes))  # one column per class drawn
        return write_samples(path, x, n, labels, self.data.test, cycle)

    def _can_draw(self) -> bool:
        return self.model.sampler is not None and drawable(self.data.test)

    def _samples_at(self, step: int) -> Path:
        assert self.dir is not None
        return self.save_samples(self.dir / SAMPLES_DIR / f"step-{step:08d}.png")

    def evaluate(self, out_dir: str | Path | None = None, record: bool = True) -> dict[str, Any]:
        """Run every metric of ``evaluate.metrics``; with ``record``, write ``evaluation.json`` into the folder.

        Metrics run in eval mode with the averaged weights (``train.ema``) on a random stream seeded by
        the spec (training's weights and random stream are left as they were).  A metric that raises or
        returns anything but named floats does not stop the others: their results are written, the
        failures too (under ``failed``), and then :class:`EvaluationFailed` names each failed metric.  To be recorded,
        it is refused (:class:`FolderBusy`) while another process trains into the folder.
        """
        if record or out_dir is None:
            self._refuse_if_gone()
        if record and self.dir is not None:  # its results would go beside another training's, of a checkpoint it rotates
            refuse_if_busy(self.dir)
        folder = self.metric_files = metric_folder(out_dir, self.dir, self.trainer.say)
        with self._as_evaluated(self.spec.model.seed):
            results, problems = MetricLoop(self.spec, self.model, self.data, self.trainer.say).run(folder, self.trainer.step)
        self.evaluation = results
        self._record_evaluation(results, record)
        if problems:
            raise EvaluationFailed(results, SpecError(problems, self.spec.source), self.dir if record else None)
        return results

    def _record_evaluation(self, results: dict[str, Any], record: bool) -> None:
        """With ``record``, write ``results`` to the folder's ``evaluation.json``, unless they are not of its newest
        checkpoint (:attr:`behind`, or overtaken by another writer) or not of the data it was trained on."""
        behind = self.behind or self._overtaken()
        if self.dir is not None and record and self.changed is not None:
            self.trainer.say(f"warning: not recorded in {self.dir / EVALUATION_FILE}: {self.changed}")
        elif self.dir is not None and record and behind is not None:
            self.trainer.say(f"warning: not recorded in {self.dir / EVALUATION_FILE}, which is the newest checkpoint's: {behind}")
        elif self.dir is not None and record:
            try:
                if "failed" in results:
                    self._keep_what_failed_now(results)
                write_json_atomic(self.dir / EVALUATION_FILE, results)
            except OSError as error:  # a read-only folder: the results are still returned (and printed)
                self.trainer.say(f"warning: could not record {self.dir / EVALUATION_FILE}: {error.strerror or error}")
