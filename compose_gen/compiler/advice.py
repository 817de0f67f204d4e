"""Warnings about training settings that run, but not as their author likely meant.

Each is a :class:`compose_gen.spec.SpecWarning` at the setting, issued when the model
is built (so ``validate`` says it too, and ``validate --static`` all but those about
the data); a component's own plugin warns about its parameters in its ``build``.
"""

from __future__ import annotations

import importlib.util
import os
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel
from torch import nn

from compose_gen.compiler.graph import SpecGraph, node
from compose_gen.compiler.plan import Plan, parameters_named
from compose_gen.core import Loss, Splits, ladj_field
from compose_gen.core.contracts import describe_value
from compose_gen.core.errors import described
from compose_gen.registry import listed
from compose_gen.spec import Spec
from compose_gen.spec.errors import PathPart
from compose_gen.spec.resolve import origin

__all__ = ["advise", "advise_losses", "advise_model", "advise_paths"]


def advise(spec: Spec, data: Splits | None) -> None:
    """Warn about negative term weights, schedules that never reach their rate or never decay, a default optimizer no player uses,
    learning rates far beyond any that trains, TensorBoard logs without TensorBoard, training through torch.compile's
    debugging backend, and batches larger than the ``data`` or fp16 on data beyond its range (when given)."""
    train, players = spec.model.train, spec.model.players
    optimizers = [(("train", "optimizer"), train.optimizer)]
    optimizers += [(("players", name, "optimizer"), player.optimizer) for name, player in players.items() if player.optimizer is not None]
    for path, optimizer in optimizers:
        usual = 10.0 if optimizer.type == "sgd" else 1.0  # an adaptive method's lr is the step size itself
        if optimizer.lr > usual:
            spec.warn((*path, "lr"), f"{optimizer.lr:g} is far above any learning rate that trains with {optimizer.type} (at most {usual:g}); "
                      "the first steps will likely diverge to NaN")
    if train.tensorboard and importlib.util.find_spec("tensorboard") is None:
        spec.warn(("train", "tensorboard"), "true, but TensorBoard is not installed here, so training refuses to start: "
                  "pip install 'compose-gen[tensorboard]'")
    if train.compile and train.compile_backend == "aot_eager":
        spec.warn(("train", "compile_backend"), "aot_eager is torch's backend for debugging torch.compile: its graphs may merge identical "
                  "random draws (two randn_like(x) in one loss then add the same noise), so it can train another model than eager "
                  "or inductor do; train with inductor")
    if data is not None:
        _advise_classes(spec, data)
        _advise_half_range(spec, data)
    if data is not None and train.batch_size > len(data.train):
        spec.warn(
            ("train", "batch_size"),
            f"{train.batch_size}, but the train split holds {len(data.train)} examples, so every batch is that whole split "
            "(under torchrun, its largest part that the processes share evenly)",
        )
    for name, player in players.items():
        for term, weight in (player.weights() or {}).items():
            if weight < 0:
                spec.warn(("players", name, "terms", term), f"{weight:g}: a negative weight makes player {name!r} maximise {term}, "
                          "which its loss defines to be minimised (a GAN's side then helps the other side)")
        schedule, path = player.schedule, ("players", name, "schedule")
        if schedule.warmup > train.steps:  # lr reaches its value at round `warmup`
            spec.warn(
                (*path, "warmup"),
                f"the warm-up of {schedule.warmup} rounds outlasts the run ({train.steps} rounds), so lr never reaches its set value",
            )
        elif getattr(schedule, "every", 0) and schedule.warmup + schedule.every >= train.steps:
            spec.warn((*path, "every"), f"lr would first decay in round {schedule.warmup + schedule.every + 1}, but the run has {train.steps} rounds")
    default = type(train).model_fields["optimizer"].get_default(call_default_factory=True)
    overridden = players and all(p.optimizer is not None for p in players.values())
    if overridden and "optimizer" in train.model_fields_set and train.optimizer != default:  # `--resolved` writes the default
        spec.warn(("train", "optimizer"), "every player sets its own optimizer, so this default is used by none; remove it")


def _advise_half_range(spec: Spec, data: Splits) -> None:
    """Warn of fp16 training on data beyond float16's range (±65504): autocast casts them to inf in the first layer."""
    if spec.model.train.precision != "fp16":
        return
    fields = data.train.fields
    determinants = {ladj_field(name) for name in fields}  # added to bounds in float32, never read by a layer
    for name, values in fields.items():
        largest = values.abs().max().item() if values.is_floating_point() and values.numel() and name not in determinants else 0.0
        if largest > torch.finfo(torch.float16).max:
            spec.warn(
                ("train", "precision"),
                f"fp16, but the data's {name} reach {largest:.3g} in size, beyond float16's ±65504: a layer reading them sees inf, "
                "and training will likely stop on NaN; train in bf16 or fp32, or standardise the data",
            )


def _advise_classes(spec: Spec, data: Splits) -> None:
    """Warn of classes the labels imply (0..K-1) that no training example has: nothing is learnt of them, yet a model that
    samples by class draws them, and class_accuracy counts them (labels 1, 4, 7 make 8 classes, 5 of them empty)."""
    y, classes = data.train.fields.get("y"), data.train.classes()
    if y is None or classes is None or y.is_floating_point() or y.dim() != 1:
        return
    empty = sorted(set(range(classes)) - set(y.unique().tolist()))
    if empty:
        test_y = data.test.fields.get("y")
        in_test = set() if test_y is None or test_y.dim() != 1 else set(test_y.unique().tolist()) & set(empty)
        fix = (
            f"the split put every example of {listed(sorted(in_test), 8)} in the test split: use another data seed, a "
            "smaller test_fraction, or more examples of them"
            if in_test
            else "number the labels 0..K-1 by the classes the data hold"
        )
        spec.warn(
            ("data",),
            f"the train split has no example of class(es) {listed(empty, 8)} of the {classes} its labels index (0..{classes - 1}): a "
            f"model learns nothing of them, yet sampling by class draws them and class_accuracy counts them; {fix}",
        )


def advise_losses(
    spec: Spec, graph: SpecGraph, components: Mapping[str, nn.Module], losses: Mapping[str, Loss], plans: Mapping[str, Plan]
) -> None:
    """Say each loss's own advice (:meth:`compose_gen.core.Loss.advise`, given the losses some player trains) at its declaration,
    and warn of a loss that no player's terms include and nothing else reads (its author likely forgot it in ``terms:``),
    and of one whose parameters of its own (a VQ codebook) no player's ``params`` holds."""
    trained = {call.name: call.module for plan in plans.values() for call in plan.losses if call.trained}
    computed = {call.name for plan in plans.values() for call in plan.losses}
    updated = set().union(*(plan.param_ids for plan in plans.values()))
    for name, loss in losses.items():
        declared = spec.sections.losses[name]
        if name not in computed and not any(graph.graph.successors(node("loss", name))):  # no metric or sampler names it
            spec.warn(
                declared.path,
                f"no player's terms include {name!r}, so it is neither trained nor logged, and test_losses leaves it out: add "
                "its terms to a player's terms (a weight of 0 logs them without training on them)",
            )
        if name in trained and any(p.requires_grad and id(p) not in updated for p in parameters_named(name, components, losses) or ()):
            spec.warn(
                declared.path,
                f"has parameters of its own that no player updates, so training leaves them as built: add {name!r} to the "
                "params of the player that minimises it",
            )
        best = spec.model.train.best_metric
        if loss.warmup_steps and best in (name, *(f"{name}.{term}" for term in loss.terms)):
            spec.warn(
                ("train", "best_metric"),
                f"{best!r} is the value of loss {name!r}, whose definition changes over its first {loss.warmup_steps} optimizer "
                "steps (its warm-up), so a checkpoint from then is judged the best by another yardstick than later ones: "
                f"judge by a logged value that keeps one meaning (an ELBO's {name}.elbo, best_mode: max)",
            )
        try:
            advice = loss.advise(trained)
        except Exception as error:
            raise spec.blame(declared, f"failed to advise: {described(error)}") from None
        if not (isinstance(advice, (list, tuple)) and all(isinstance(message, str) for message in advice)):
            raise spec.blame(declared, f"advise returned {describe_value(advice)}, not a list of messages (strings; [] for none)")
        for message in advice:
            spec.warn(declared.path, f"{origin(declared.type.name, spec.catalogue)}: {message}")


def advise_average(spec: Spec, components: Mapping[str, nn.Module], plans: Mapping[str, Plan]) -> None:
    """Warn of a weight average without warm-up in which a component's initial weights keep most of the weight at the
    run's end: decay^updates > 0.5, its updates those of the players that train it (``steps`` a round)."""
    train = spec.model.train
    ema = train.ema
    if ema is None or ema.warmup:
        return
    for name in ema.components:
        own = {id(p) for p in components[name].parameters()}
        updates = train.steps * max((plan.spec.steps for plan in plans.values() if own & plan.param_ids), default=0)
        if updates and ema.decay**updates > 0.5:  # θ₀'s weight in the average after the run
            spec.warn(
                ("train", "ema", "warmup"),
                f"false, with decay {ema.decay:g}: the initial weights of {name} still make {ema.decay**updates:.0%} of its average "
                f"after the run's {updates} updates of it (decay^updates), so sampling and evaluation use mostly untrained weights; "
                "keep warmup: true, or lower the decay",
            )
            return


def advise_partly_trained(spec: Spec, components: Mapping[str, nn.Module], plans: Mapping[str, Plan]) -> None:
    """Warn of a component of which the players update some parameters but leave others that no name reaches (the
    copies a flow's ``repeat:`` makes of a bijector a player names: it trains copy 0 alone).  Parts a player could name
    and does not (a bijector left out of params) are frozen on purpose, as is a component no player names."""
    updated = set().union(*(plan.param_ids for plan in plans.values()))
    names_reaching = Counter(id(p) for module in components.values() for p in module.parameters())  # by how many names
    for name, module in components.items():
        declared = spec.sections.components[name]
        if declared.inline:
            continue
        own = [p for p in module.parameters() if p.requires_grad]
        unnamed = sum(id(p) not in updated and names_reaching[id(p)] == 1 for p in own)  # its own name alone reaches it
        if unnamed and any(id(p) in updated for p in own):
            spec.warn(
                declared.path,
                f"the players update part of it and leave as built {unnamed} parameter tensors that only its own name reaches "
                f"(such as the copies a flow's repeat: makes of a bijector a player names, which trains copy 0 alone): list "
                f"{name!r} in a player's params to train all of it",
            )


def advise_frozen(spec: Spec, components: Mapping[str, nn.Module], plans: Mapping[str, Plan]) -> None:
    """Warn of a component a player's ``params`` names whose parameters its type froze, every one (``requires_grad=False``):
    the player trains none of them, as the spec may not mean."""
    for plan in plans.values():
        if plan.spec.params == "all":
            continue
        for i, name in enumerate(plan.spec.params):
            params = list(components[name].parameters()) if name in components else []
            if params and not any(p.requires_grad for p in params):
                spec.warn(
                    ("players", plan.player, "params", i),
                    f"{name!r} has only parameters its type froze (requires_grad=False), so no player trains it: drop it from "
                    "params, or configure it to train",
                )


def advise_model(spec: Spec, model: nn.Module, device: torch.device) -> None:
    """Warn of ``train.channels_last`` on a model without 4D (convolution) weights, where it changes nothing, and of fp16
    convolutions on the CPU, which has no fast float16 kernels for them."""
    convolutional = any(p.dim() == 4 for p in model.parameters())
    if spec.model.train.channels_last and not convolutional:
        spec.warn(("train", "channels_last"), "true, but the model has no 4D (convolution) weights, so it has no effect")
    # validate builds on the CPU whatever the spec's device: warn of the CPU the run will train on
    on_cpu = device.type == "cpu" and (spec.model.device == "cpu" or (spec.model.device == "auto" and not torch.cuda.is_available()))
    if spec.model.train.precision == "fp16" and convolutional and on_cpu:
        spec.warn(("train", "precision"), "fp16 on the CPU, which has no fast float16 convolution (specs/gan_digits.yaml's "
                  "step ran 14x slower than in float32): use bf16, the CPU's half precision, or fp32")


def advise_paths(spec: Spec) -> None:
    """Warn where a relative file path of the spec names nothing in the working directory, which it is read from, but
    names a file beside the spec: the spec was likely written to be run from its own folder."""
    if not Path(spec.source.name).is_file():  # a spec given as text or a dict has no folder
        return
    folder = Path(os.path.abspath(Path(spec.source.name).parent))
    sections = spec.sections
    declared = [sections.data, *sections.components.values(), *sections.losses.values(), sections.sampler, *sections.metrics]
    for item in filter(None, declared):
        for where, path in _paths(item.params, item.path):
            written = _written(spec.source.data, where)
            overridden = any(where[:end] in spec.source.overridden for end in range(len(where) + 1))  # typed at the shell, not beside the spec
            if written is None or overridden or Path(written).expanduser().is_absolute() or path.exists():
                continue
            beside = (folder / written).resolve()  # as the system resolves it: `..` of a linked folder is its target's parent
            if beside.exists():
                spec.warn(
                    where,
                    f"{written}: relative paths are read from the working directory ({Path.cwd()}), which has no such file, but the "
                    f"spec's folder has {beside}: run compose-gen from {folder}, or write the path as {os.path.relpath(beside)}",
                )


def _paths(params: BaseModel, where: tuple[PathPart, ...]) -> Iterator[tuple[tuple[PathPart, ...], Path]]:
    """Every ``Path`` among ``params``' fields, in nested parameter models and lists too, with its spec path."""
    for name, value in params:
        items = enumerate(value) if isinstance(value, list) else [(None, value)]
        for index, item in items:
            here = (*where, name) if index is None else (*where, name, index)
            if isinstance(item, Path):
                yield here, item
            elif isinstance(item, BaseModel):
                yield from _paths(item, here)


def _written(data: Any, where: tuple[PathPart, ...]) -> str | None:
    """The string the spec's source holds at ``where``, if it holds one there."""
    for part in where:
        if isinstance(data, dict) and part in data or isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            return None
    return data if isinstance(data, str) else None
