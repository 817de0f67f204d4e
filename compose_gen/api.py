"""The four calls most users need: load a spec, build it, train it, load a run back."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from compose_gen.compiler import GenerativeModel
from compose_gen.core import Splits
from compose_gen.registry import Catalogue
from compose_gen.runtime import Run, build as build_spec
from compose_gen.runtime.inputs import check_counts
from compose_gen.runtime.rng import kept
from compose_gen.spec import Spec, load_spec, override_list

__all__ = ["build", "load_run", "load_spec", "train"]


def build(spec: Spec | str | Path | Mapping[str, Any], device: str | torch.device | None = None) -> tuple[GenerativeModel, Splits]:
    """The compiled model of ``spec`` (a :class:`Spec`, or a spec file or mapping to load) and its dataset, on ``device``
    (default: the spec's): ``model.player_loss(player, batch)`` for a loop of your own.

    Built from the spec's seed, as a :class:`Run` is, and like one it puts torch's random stream back as it found it.
    """
    with kept():
        return build_spec(spec if isinstance(spec, Spec) else load_spec(spec), device)


def train(
    spec: Spec | str | Path,
    out: str | Path | None = None,
    *,
    steps: int | None = None,
    device: str | None = None,
    overrides: Iterable[str] = (),
    progress: bool = True,
) -> Run:
    """Train ``spec`` (a :class:`Spec`, or a file or mapping to load with ``overrides``) into a run folder (``out``),
    then sample and evaluate; return the :class:`Run`."""
    if steps is not None:  # refused before the run folder is made, as the CLI's --steps is: a half-made one would refuse a retry
        check_counts("train", steps=steps)
    if isinstance(spec, Spec) and override_list(overrides):
        raise ValueError("overrides apply when a spec is loaded: give them to load_spec, or give train the spec's file or mapping")
    if not isinstance(spec, Spec):
        spec = load_spec(spec, overrides)
    if steps is not None and steps > spec.model.train.steps:  # as the CLI's --steps: the schedule reaches the rounds asked for
        spec = load_spec(spec, [f"train.steps={steps}"])
    run = Run.create(spec, out, device, progress)
    run.train(steps)
    return run


def load_run(
    run_dir: str | Path,
    device: str | None = None,
    checkpoint: str | Path | None = None,
    *,
    progress: bool = True,
    catalogue: Catalogue | None = None,
    overrides: Iterable[str] = (),
) -> Run:
    """A trained run back from its folder: ``run.sample(16)``, ``run.evaluate()``, ``run.train(more)``.

    At its newest readable checkpoint, or ``checkpoint``: ``"best"`` (see ``train.best_metric``) or a
    checkpoint folder.  ``overrides`` change its recorded spec as ``compose-gen train --resume --set`` does
    (``["train.steps=2000"]`` stretches a learning-rate schedule over more rounds).  A folder with no checkpoint yet is an error (``Run.load`` without ``trained`` starts it over).
    ``progress=False`` keeps further training quiet, as for :func:`train` (in a worker process, say).  A run built
    with a catalogue of your own (``load_spec(..., catalogue=...)``) is loaded with it too.
    """
    return Run.load(run_dir, device, overrides, progress=progress, trained=True, checkpoint=checkpoint, catalogue=catalogue)
