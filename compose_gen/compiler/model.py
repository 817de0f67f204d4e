"""The compiled model: components, losses and sampler in one ``nn.Module``.

:func:`compile_spec` goes spec → graph → checks → modules → plans → dry run, so
every mistake it can find surfaces before the first training step.
"""

from __future__ import annotations

import functools
import itertools
import math
import numbers
import traceback
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from compose_gen.compiler.advice import advise, advise_average, advise_frozen, advise_losses, advise_model, advise_partly_trained
from compose_gen.compiler.build import Builder, build_all
from compose_gen.compiler.checks import broken, nonfinite_sources, watching
from compose_gen.compiler.dry_run import dry_run
from compose_gen.compiler.graph import SpecGraph, build_graph, named, node
from compose_gen.compiler.plan import Plan, loss_inputs, make_plans, run_plan
from compose_gen.compiler.values import make_evaluator
from compose_gen.core import ClassConditions, ContractError, Latch, Loss, Sampler, Splits
from compose_gen.core.contracts import describe_value
from compose_gen.core.errors import described, message_of
from compose_gen.core.modes import own_modes
from compose_gen.spec import Declared, Problem, Spec, SpecError

__all__ = ["GenerativeModel", "SamplingFailed", "compile_spec"]


class SamplingFailed(RuntimeError):
    """The sampler (or a component it called) raised; the message names that part of the spec, its type and plugin."""


class GenerativeModel(nn.Module):
    """Every built part of a spec, with one plan per player.

    ``components``, ``losses`` and ``sampler`` are submodules, so one
    ``state_dict`` (and one checkpoint) covers the whole model; so is ``unowned``,
    which holds the inline components that players train and that their parents
    call without holding them (a loss's inline critic), under their names with
    ``:`` for ``.`` (``adv:critic``).
    """

    def __init__(
        self,
        spec: Spec,
        graph: SpecGraph,
        components: dict[str, nn.Module],
        losses: dict[str, Loss],
        sampler: Sampler | None,
        plans: dict[str, Plan],
        metrics: list[Any],
        evaluators: dict[str, Callable[[dict[str, Any]], Any]] | None = None,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.graph = graph
        top_level = {n: m for n, m in components.items() if not spec.sections.components[n].inline}
        self.components = nn.ModuleDict(top_level)
        self.losses = nn.ModuleDict(losses)
        self.sampler = sampler
        self.unowned = nn.ModuleDict()
        trained = set().union(*(plan.param_ids for plan in plans.values()))
        for name, module in sorted(components.items(), key=lambda item: item[0].count(".")):  # a parent before its parts
            if any(id(p) in trained for p in module.parameters()) and all(module is not held for held in self.modules()):
                self.unowned[name.replace(".", ":")] = module
        self.plans = plans
        self.metrics = metrics
        self._all_components = components
        self._evaluators = evaluators or {}

    def component(self, name: str) -> nn.Module:
        return self._all_components[name]

    @property
    def all_components(self) -> dict[str, nn.Module]:
        """Every built component by name, the inline ones (``encoder.net``, ``adv.critic``) too."""
        return dict(self._all_components)

    def player_loss(self, player: str, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """The weighted loss a player minimises on ``batch``, and every logged term and metric.

        ``batch`` must already be on the model's device and in its precision (``evaluate_terms`` moves it; this,
        on the training path, does not).  A loop over several players must also restrict each one's gradients
        to its own parameters, as the trainer does (README, "The Python API").
        """
        if player not in self.plans:
            raise KeyError(f"spec {self.spec.name!r} has no player {player!r}; its players: {', '.join(self.plans)}")
        return run_plan(self.plans[player], batch)

    @torch.no_grad()
    def evaluate_terms(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Every player's terms and metrics on ``batch`` (moved to the model's device and precision), without gradients.

        A metric that several players' passes log (a GAN's ``d_fake``, which the generator's pass computes too, from
        noise of its own) is the first player's, so that a loss's metrics come from one pass: the critic's ``d_real``,
        ``d_fake`` and ``wasserstein`` agree.
        """
        missing = [f for f in self._loss_fields if f not in batch]
        if missing:
            raise KeyError(
                f"spec {self.spec.name!r}: the batch lacks field(s) {', '.join(missing)}; its losses read {', '.join(self._loss_fields)}"
            )
        batch = self._on_device(batch)
        logs: dict[str, Tensor] = {}
        for plan in self.plans.values():
            for name, value in run_plan(plan, batch)[1].items():
                logs.setdefault(name, value)
        return logs

    @torch.no_grad()
    def values(self, batch: dict[str, Tensor], names: Iterable[str]) -> dict[str, Any]:
        """The named graph values (or batch fields) on ``batch``, computing only their ancestors, without gradients.

        ``batch`` is moved to the model's device and precision.
        """
        batch, names = self._on_device(batch), list(names)
        unknown = [n for n in names if n not in self._evaluators and n not in batch]
        if unknown:
            known = ", ".join([*self._evaluators, *batch])
            raise KeyError(f"spec {self.spec.name!r}: unknown graph value(s) {unknown}; graph values and batch fields: {known}")
        values: dict[str, Any] = dict(batch)
        needed = self.graph.ancestors({node("value", n) for n in names if n in self._evaluators})
        for name in self.graph.values_in_order(needed):
            values[name] = self._evaluators[name](values)
        return {n: values[n] for n in names}

    @functools.cached_property
    def _loss_fields(self) -> list[str]:
        """The batch fields every player's losses are computed from (fixed once compiled, so found once)."""
        return self.fields_read({node("loss", call.name) for plan in self.plans.values() for call in plan.losses})

    def fields_read(self, nodes: set[str]) -> list[str]:
        """The batch fields that the graph ``nodes`` (``node("loss", name)``, say) are computed from, sorted."""
        return sorted(named(self.graph.ancestors(nodes), "field"))

    @property
    def dtype(self) -> torch.dtype:
        """The precision of the model's floating parameters (the default dtype if it has none)."""
        return next((p.dtype for p in self.parameters() if p.is_floating_point()), torch.get_default_dtype())

    def _on_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        """``batch`` as tensors on the model's device, floating ones in its precision (numpy's float64, say)."""
        device, dtype = self.device, self.dtype

        def moved(value: Any) -> Any:
            if not isinstance(value, (Tensor, np.ndarray)):
                return value
            value = torch.as_tensor(value)
            return value.to(device, dtype) if value.is_floating_point() else value.to(device)

        return {key: moved(value) for key, value in batch.items()}

    @torch.no_grad()
    def log_likelihood(self, batch: dict[str, Tensor], ladj: Tensor, samples: int = 1000, loss: str | None = None) -> Tensor:
        """log p(x) (log p(x | c) for a conditional model) of each example of ``batch``, in nats.

        ``batch`` holds model-space ``x`` (and the fields the model's condition is made from, such as
        labels ``y``), ``ladj`` each example's log|det| from data space to model space.  The loss
        that defines the likelihood (:meth:`Loss.log_likelihood`) gives it, ``loss`` naming one if several do.
        """
        name = self._likelihood_loss(loss)
        wanted = self._likelihood_inputs(name)
        needs = self.likelihood_fields(name)
        missing = [f for f in needs if f not in batch]
        if missing:
            raise ValueError(f"loss {name!r} computes log p(x) from the fields {', '.join(needs)}; give {', '.join(missing)} too")
        values = self.values(batch, list(wanted.values()))
        log_p = self.losses[name].log_likelihood({k: values[v] for k, v in wanted.items()}, samples, ladj.to(self.device, self.dtype))
        if not (isinstance(log_p, Tensor) and log_p.is_floating_point() and log_p.shape == ladj.shape):
            problem = f"log_likelihood returned {describe_value(log_p)} for {len(ladj)} examples, not one float per example (shape ({len(ladj)},))"
            raise self.spec.blame(self.spec.sections.losses[name], f"broke the loss contract: {problem}")
        return log_p

    def likelihood_fields(self, loss: str | None = None) -> list[str]:
        """The batch fields log p(x) is computed from (``x``, and ``y`` for a model conditioned on labels)."""
        wanted = self._likelihood_inputs(self._likelihood_loss(loss))
        return self.fields_read({node("value", v) if v in self._evaluators else node("field", v) for v in wanted.values()})

    def _likelihood_inputs(self, name: str) -> dict[str, str]:
        """The graph values or fields that loss ``name`` reads for its likelihood, by input name."""
        module = self.losses[name]
        return {k: v for k, v in loss_inputs(self.spec, name).items() if k in module.likelihood_inputs and isinstance(v, str)}

    def _likelihood_loss(self, chosen: str | None) -> str:
        """The loss that gives log p(x): ``chosen``, or the one loss that defines a likelihood."""
        offering = [n for n, m in self.losses.items() if m.likelihood_inputs]
        if chosen is not None and chosen not in offering:
            what = "is no loss of the spec" if chosen not in self.losses else "defines no likelihood"
            raise ValueError(f"{chosen!r} {what}; losses that define one: {', '.join(offering) or 'none'}")
        if chosen is None and len(offering) != 1:
            if not offering:
                raise ValueError(
                    f"no loss of spec {self.spec.name!r} defines a likelihood (a loss that does lists likelihood_inputs, as "
                    "density models' losses do; an adversarial loss has none)"
                )
            raise ValueError(f"losses {', '.join(offering)} each define a likelihood; name one")
        return chosen or offering[0]

    def nonfinite_source(self, player: str, batch: dict[str, Tensor]) -> Declared | None:
        """The component that first turns finite inputs into NaN or inf while ``player``'s loss is computed on ``batch``
        (computed again, without gradients), if one does."""
        with nonfinite_sources(self._all_components) as sources, torch.no_grad():
            run_plan(self.plans[player], batch)
        return self.spec.sections.components[sources[0]] if sources else None

    def culprit(self, error: BaseException) -> Declared | None:
        """The declaration (component, loss or sampler) whose code raised ``error``: the innermost on its traceback."""
        sections = self.spec.sections
        parts: dict[int, Declared] = {id(m): sections.components[n] for n, m in self._all_components.items()}
        parts.update({id(m): sections.losses[n] for n, m in self.losses.items()})
        if self.sampler is not None and sections.sampler is not None:
            parts[id(self.sampler)] = sections.sampler
        found = None
        for frame, _ in traceback.walk_tb(error.__traceback__):
            found = parts.get(id(frame.f_locals.get("self")), found)
        return found

    def sample(self, n: int, temperature: float = 1.0, classes: Sequence[int] | None = None) -> Tensor:
        """``n`` examples in model space from the spec's ``sample:`` section.

        A class-conditional sampler draws example ``i`` for class ``classes[i mod len(classes)]``
        (every class by default, see :meth:`labels`), its condition computed from those
        labels by the spec's graph.
        """
        if self.sampler is None:
            raise RuntimeError(
                f"spec {self.spec.name!r} has no `sample:` section, so the model cannot sample: give it one, to a trained run "
                "too (compose-gen sample RUN --set 'sample={type: ..., ...}', or compose_gen.load_run(folder, overrides=[...]); "
                "`compose-gen plugins sampler` lists the samplers and what each takes)"
            )
        n, temperature = (v.item() if isinstance(v, Tensor) and v.dim() == 0 else v for v in (n, temperature))
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"sample: n must be a whole number of samples, at least 1; got {n!r}")
        if not (isinstance(temperature, numbers.Real) and math.isfinite(temperature) and temperature >= 0):
            raise ValueError(f"sample: temperature must be a finite number ≥ 0; got {temperature!r}")
        n = int(n)
        labels = self.labels(n, classes)
        try:
            return self.draw(n, temperature, labels)
        except Exception as error:
            culprit = self.culprit(error) or self.spec.sections.sampler
            assert culprit is not None
            raise SamplingFailed(str(self.spec.blame(culprit, f"raised {type(error).__name__} while sampling: {message_of(error)}"))) from error

    def labels(self, n: int, classes: Sequence[int] | None = None) -> Tensor | None:
        """The class of each of ``n`` examples a class-conditional sampler draws: ``classes[i mod len(classes)]``.

        ``classes`` defaults to every class, ``0, 1, …, C-1``; None for a sampler that does not draw by class.
        Raises ``ValueError`` for classes given to such a sampler, or classes outside ``0..C-1``.
        """
        conditions = self.conditions
        if conditions is None:
            if classes is not None:
                raise ValueError(f"spec {self.spec.name!r} does not sample by class (its sampler has no `conditions`), so it cannot draw chosen classes")
            return None
        chosen = list(range(conditions.classes)) if classes is None else list(classes)
        outside = [k for k in chosen if not 0 <= k < conditions.classes]
        if not chosen or outside:
            what = f"class {', '.join(map(str, outside))}" if outside else "no class"
            raise ValueError(f"spec {self.spec.name!r} samples classes 0..{conditions.classes - 1}; {what} given")
        return torch.tensor(chosen, device=self.device).repeat((n + len(chosen) - 1) // len(chosen))[:n]

    def draw(self, n: int, temperature: float = 1.0, labels: Tensor | None = None) -> Tensor:
        """:meth:`sample` without naming the spec part a failure came from (the dry run says it itself).

        ``labels`` are the classes a class-conditional sampler draws (:meth:`labels` by default).
        """
        assert self.sampler is not None
        conditions = self.sampler.conditions
        if conditions is None:
            return self.sampler.sample(n, temperature)
        labels = self.labels(n) if labels is None else labels
        context = self.values({"y": labels}, [conditions.value])[conditions.value]
        return self.sampler.sample(n, temperature, context)

    @property
    def conditions(self) -> ClassConditions | None:
        """The sampler's :class:`ClassConditions` when it samples by class (see :meth:`labels`)."""
        return None if self.sampler is None else self.sampler.conditions

    @property
    def device(self) -> torch.device:
        first = next(itertools.chain(self.parameters(), self.buffers()), None)  # stops at the first, not walking the model twice
        return torch.device("cpu") if first is None else first.device


def compile_spec(
    spec: Spec, data: Splits, device: torch.device | str = "cpu", *, check: bool = True
) -> GenerativeModel:
    """Build the model a spec describes over ``data`` on ``device``, checked by a dry run unless ``check`` is false.

    Parameters are initialised under the spec's seed, so a spec always builds the same model, and in float32, whatever
    torch's default dtype is in the caller's process.
    """
    fields = tuple(data.train.fields)
    graph = build_graph(spec, fields)
    torch.manual_seed(spec.model.seed)
    with watching(spec) as watch, own_modes(torch.device(device).type):
        ctx = Builder(spec, data, watch)
        components, losses, sampler, metrics = build_all(spec, graph, ctx)
        evaluators = _evaluators(spec, graph, components)
        plans = make_plans(spec, graph, components, losses, evaluators)
        _check_conditions(spec, graph, sampler, data)
        _check_one_hot(spec, graph, data)
        _check_averaged(spec, components)
        advise(spec, data)
        advise_losses(spec, graph, components, losses, plans)
        advise_partly_trained(spec, components, plans)
        advise_average(spec, components, plans)
        advise_frozen(spec, components, plans)
        model = GenerativeModel(spec, graph, components, losses, sampler, plans, metrics, evaluators)
        advise_model(spec, model, torch.device(device))
        try:
            model.to(device)
        except Exception as error:  # a plugin's module that breaks nn.Module's machinery (overrides _apply, say)
            raise _unmovable(spec, model, device, error) from None
        if check:
            dry_run(model, data)
    return model


def _unmovable(spec: Spec, model: GenerativeModel, device: torch.device | str, error: Exception) -> Exception:
    """The spec error naming the innermost component that fails to move to ``device`` on its own (``error`` if none does)."""
    components = model.spec.sections.components
    for name, module in sorted(model._all_components.items(), key=lambda item: -item[0].count(".")):
        try:
            module.to(device)
        except Exception as own:
            return spec.blame(components[name], f"failed to move to {device}: {described(own)}")
    return error


def _check_conditions(spec: Spec, graph: SpecGraph, sampler: Sampler | None, data: Splits) -> None:
    """A class-conditional sampler draws classes the data has, its condition computable from the labels ``y`` alone."""
    conditions = sampler.conditions if sampler is not None else None
    if conditions is None:
        return
    value = conditions.value
    if "y" not in graph.fields:
        raise spec.error(("sample",), f"sampling by class needs labels, but the data has no field 'y' (it has {', '.join(graph.fields)})")
    available = data.train.classes()
    if available is not None and conditions.classes > available:
        raise spec.error(
            ("sample",), f"the sampler draws {conditions.classes} classes, but the data's labels have {available} (0..{available - 1})"
        )
    if value not in graph.calls and value not in graph.fields:
        known = ", ".join([*graph.calls, *graph.fields])
        raise spec.error(("sample",), f"the sampler is conditioned on {value!r}, which is no graph value or batch field ({known})")
    start = node("value", value) if value in graph.calls else node("field", value)
    needs = sorted(field for field in named(graph.ancestors({start}), "field") if field != "y")
    if needs:
        raise spec.error(
            ("sample",),
            f"the condition {value!r} is computed from {', '.join(needs)}, not from the labels y alone, "
            "so the sampler cannot make it for a class",
        )


def _check_one_hot(spec: Spec, graph: SpecGraph, data: Splits) -> None:
    """``one_hot(y, K)`` of the data's labels has room for all of their classes, not only those the dry run's batch holds."""
    available = data.train.classes()
    for name, call in graph.calls.items():
        if call.target == "one_hot" and call.method is None and call.args[:1] == ("y",) and available is not None:
            if call.args[1] < available:
                raise spec.error(
                    ("graph", name),
                    f"{call} has room for labels 0..{int(call.args[1]) - 1}, but the data's labels y have {available} classes "
                    f"(0..{available - 1}): use one_hot(y, {available})",
                )


def _check_averaged(spec: Spec, components: dict[str, nn.Module]) -> None:
    """The components of ``train.ema`` hold parameters to average; without warm-up, none initialises from data."""
    ema = spec.model.train.ema
    if ema is None:
        return
    empty = [n for n in ema.components if not any(True for _ in components[n].parameters())]
    if empty:
        raise spec.error(("train", "ema", "components"), f"{', '.join(empty)} hold(s) no parameters to average")
    initialising = [n for n in ema.components if any(isinstance(m, Latch) for m in components[n].modules())]
    if initialising and not ema.warmup:
        spec.warn(
            ("train", "ema", "warmup"),
            f"false, but {', '.join(initialising)} initialise(s) from the first training batch (actnorm, a codebook), after the "
            "average has started from the uninitialised weights, which a constant rate keeps in it for long: leave warmup on",
        )


def _evaluators(spec: Spec, graph: SpecGraph, components: dict[str, nn.Module]) -> dict[str, Callable[[dict[str, Any]], Any]]:
    """A function per graph value; a bad call is a problem at the value, a component's broken promise one at the component."""
    evaluators = {}
    problems = []
    for name, call in graph.calls.items():
        try:
            evaluators[name] = make_evaluator(call, components)
        except ValueError as error:
            problems.append(Problem(("graph", name), str(error)))
        except ContractError as error:
            problems += broken(spec, spec.sections.components[call.target], error).problems
    if problems:
        raise SpecError(problems, spec.source)
    return evaluators
