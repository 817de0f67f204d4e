"""Contracts of the non-bijector plugin kinds: losses, samplers, metrics, build context.

* A **loss** is an ``nn.Module`` whose ``forward(inputs, terms)`` returns a dict
  with one scalar per requested term (lower is better; each player minimises a
  weighted sum of terms) plus optional extra scalars, which are logged as metrics.
  ``inputs`` maps the loss's ``Value`` parameter fields to their tensors (or
  distributions).  A two-sided loss lists two terms, e.g. ``("critic",
  "generator")``, and may say which inputs each term needs in ``term_inputs`` so a
  player computes nothing it does not use.
* A **sampler** is an ``nn.Module`` with ``sample(n, temperature)`` returning
  ``n`` examples in model space.
* A **metric** is a callable taking an :class:`EvalContext` and returning named
  floats; it may write files (plots, grids) into ``ctx.out_dir``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Mapping, Protocol

import torch
from torch import Tensor, nn

from compose_gen.core.data import Splits, TensorData

__all__ = ["BuildContext", "EvalContext", "Loss", "Metric", "Sampler", "batches"]


class BuildContext(Protocol):
    """What a type's ``build(params, ctx)`` may ask of the compiler."""

    #: The dataset splits, for shapes or data-dependent initialisation.
    data: Splits | None

    def component(self, ref: str) -> Any:
        """The built component that a ``Ref`` field names (already kind-checked)."""

    def loss(self, name: str) -> "Loss":
        """A built loss, by its name under ``losses:``."""


class Loss(nn.Module):
    """Base class of every loss plugin; see the module docstring for the contract."""

    terms: ClassVar[tuple[str, ...]] = ("loss",)
    #: Inputs each term needs; terms not listed need every input.
    term_inputs: ClassVar[Mapping[str, tuple[str, ...]]] = {}

    def inputs_for(self, terms: Iterable[str], all_inputs: Iterable[str]) -> set[str]:
        names = set(all_inputs)
        needed: set[str] = set()
        for term in terms:
            needed |= set(self.term_inputs.get(term, names)) & names
        return needed

    def forward(self, inputs: Mapping[str, Any], terms: frozenset[str]) -> dict[str, Tensor]:
        raise NotImplementedError

    def after_step(self, terms: frozenset[str]) -> None:
        """Called after each optimizer step of a player minimising ``terms`` (parameter hooks)."""


class Sampler(nn.Module):
    """Draws examples from a trained model, in model space."""

    def sample(self, n: int, temperature: float = 1.0) -> Tensor:
        raise NotImplementedError


@dataclass
class EvalContext:
    """What a metric sees: the compiled model, the data, a device and a folder for files."""

    model: Any
    data: Splits
    device: torch.device
    out_dir: Path
    batch_size: int = 256
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def test(self) -> TensorData:
        return self.data.test


class Metric(Protocol):
    def __call__(self, ctx: EvalContext) -> dict[str, float]: ...


def batches(data: TensorData, batch_size: int, device: torch.device) -> Iterable[dict[str, Tensor]]:
    """Iterate over ``data`` in order, in batches moved to ``device``."""
    for start in range(0, len(data), batch_size):
        yield {k: v.to(device) for k, v in data.batch(slice(start, start + batch_size)).items()}
