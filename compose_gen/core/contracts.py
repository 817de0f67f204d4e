"""Contracts of the non-bijector plugin kinds: losses, samplers, metrics, build context.

* A **loss** is an ``nn.Module`` whose ``forward(inputs, terms)`` returns a dict
  with one scalar per requested term (lower is better; each player minimises a
  weighted sum of terms) plus optional extra scalars, which are logged as metrics.
  ``inputs`` maps the loss's ``Value`` parameter fields to their tensors (or
  distributions); an optional field left unset is absent, so read it with
  ``inputs.get("context")``.  A two-sided loss lists two terms, e.g. ``("critic",
  "generator")``, and may say which inputs each term needs in ``term_inputs`` so a
  player computes nothing it does not use.  A loss whose settings run but likely
  not as meant, unless another loss that the players train settles it (a
  Wasserstein critic that nothing keeps Lipschitz), says so in
  ``advise(trained)``; ``validate`` warns of it at the loss.
* A **sampler** is an ``nn.Module`` with ``sample(n, temperature)`` returning
  ``n`` examples in model space.  A conditional one sets ``conditions``
  (:class:`ClassConditions`) and is called as ``sample(n, temperature, context)``
  with the graph value its model was trained on, computed from class labels.
* A **metric** is a callable taking an :class:`EvalContext` and returning named
  floats; it may write files (plots, grids) into ``ctx.out_dir``.  A metric that
  draws samples checks ``ctx.sampler`` when it is built, so ``validate`` can refuse
  a spec that cannot feed it; one that reads graph values may define
  ``check_values(values, data)``, which the dry run calls with every graph value
  computed on training examples, and which raises ``ValueError`` for one it could not use.
* A **prior**, **encoder**, **decoder** or **flow** returns a
  ``torch.distributions.Distribution`` from ``forward``.  A conditional model's
  encoder is called ``encoder(x, c)`` and its decoder ``decoder(z, c)``, with one
  row of the context ``c`` per example, while ``z`` may carry extra leading sample
  dimensions (IWAE's k, also 1 for the ELBO): broadcast ``c`` to them.  An
  encoder broadcasts over such dimensions too (the two-level VAE applies one to
  its draws of the top latent).
* A **component** whose methods a graph may call (``prior.sample(n)``) lists their names
  in ``graph_methods``, a tuple of strings, each one a method it has.

The ``check_*`` functions test what a plugin's object returned against these
contracts and raise :class:`ContractError` saying what is wrong; the compiler and
the runtime call them where values cross from plugin code into compose_gen (the
dry run, the build, the evaluation), never per training step.
"""

from __future__ import annotations

import inspect
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterable, Mapping, Protocol

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from compose_gen.core.data import MAX_CLASSES, Splits, TensorData

__all__ = [
    "BuildContext",
    "ClassConditions",
    "ContractError",
    "EvalContext",
    "Loss",
    "Metric",
    "Sampler",
    "batches",
    "check_conditions",
    "check_distribution",
    "check_graph_methods",
    "check_critic_scores",
    "check_loss_result",
    "check_loss_terms",
    "check_metric_result",
    "check_samples",
    "check_splits",
    "describe_value",
]


class ContractError(TypeError):
    """A plugin's object returned something its kind's contract does not allow; the message says what."""


class BuildContext(Protocol):
    """What a type's ``build(params, ctx)`` may ask of the compiler."""

    #: The dataset splits (``data.train``, ``data.test``), for shapes, sizes (a β-TCVAE's dataset size) or data-dependent
    #: initialisation; None while the dataset itself is built.
    data: Splits | None

    def component(self, ref: str) -> Any:
        """The built component that a ``Ref`` field names (already kind-checked)."""

    def loss(self, name: str) -> "Loss":
        """A built loss, by its name under ``losses:``."""

    def rebuild(self, ref: str, index: int) -> Any:
        """Copy ``index`` of the component ``ref`` for a repeated block (copy 0 is ``component(ref)``): built afresh,
        with its own initial values and a ``seed`` parameter made ``seed + index·1000003``.  Optional: a hand-made
        context may lack it (a flow then deep-copies its block)."""

    #: The built sampler when metrics are built (None for a spec without ``sample:``), for a metric that draws samples.
    sampler: "Sampler | None"


class Loss(nn.Module):
    """Base class of every loss plugin; see the module docstring for the contract."""

    terms: ClassVar[tuple[str, ...]] = ("loss",)
    #: Inputs each term needs; terms not listed need every input.
    term_inputs: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    #: Two terms that work against each other, the critic's side then the generator's: the first trains the
    #: components the loss names (its critic), the second what makes its inputs, never the critic.  With explicit players
    #: ``validate`` refuses a side on the other's parameters, both sides on the same ones (they cancel), and a
    #: side that no player trains.
    opposed: ClassVar[tuple[str, str] | None] = None
    #: For a loss that is the generator's side alone of a game against the critic it names (feature matching), that
    #: term: with explicit players ``validate`` refuses it on a player that would train the critic.
    generator_term: ClassVar[str | None] = None
    #: Optimizer steps over which the loss's own value changes its definition (a KL weight ramping up, the ELBO's
    #: warm-up): ``validate`` warns of a ``train.best_metric`` that judges checkpoints by it, since values from the
    #: warm-up and after it are measured by different yardsticks.  0: its value keeps one meaning.
    warmup_steps: int = 0

    def inputs_for(self, terms: Iterable[str], all_inputs: Iterable[str]) -> set[str]:
        names = set(all_inputs)
        needed: set[str] = set()
        for term in terms:
            needed |= set(self.term_inputs.get(term, names)) & names
        return needed

    def forward(self, inputs: Mapping[str, Any], terms: frozenset[str]) -> dict[str, Tensor]:
        raise NotImplementedError

    def after_step(self, terms: frozenset[str]) -> None:
        """Called after each optimizer step of a player minimising ``terms``, those of this loss's terms it weights
        other than 0 (parameter hooks); not after the steps of a player that only logs this loss (weight 0)."""

    def advise(self, trained: Mapping[str, "Loss"]) -> list[str]:
        """Warnings about this loss that only the losses the players train can settle, asked once the plans are made.

        ``trained`` holds, by name, every loss of the spec of which some player trains
        a term with a weight other than 0 (this one among them, if so); each message
        is said as a warning at this loss's declaration.  A list of strings, empty by default.
        """
        return []

    #: The inputs :meth:`log_likelihood` reads; empty for a loss whose model defines no likelihood (a GAN's).
    likelihood_inputs: ClassVar[tuple[str, ...]] = ()

    def log_likelihood(self, inputs: Mapping[str, Any], samples: int, ladj: Tensor) -> Tensor:
        """log p(x) (log p(x | c) given a context) of each example, for a loss whose model has a likelihood.

        ``inputs`` holds the ``likelihood_inputs``, computed for new examples as in training;
        ``ladj`` is each example's log|det| from data space to model space, which a density
        adds and a probability mass does not; a model that estimates log p(x) (by importance
        sampling) uses ``samples`` draws.
        """
        raise NotImplementedError(f"{type(self).__name__} defines no likelihood")


@dataclass(frozen=True)
class ClassConditions:
    """What a class-conditional sampler is conditioned on.

    Example ``i`` is drawn for class ``i mod classes``; the labels ``y`` go through the
    spec's graph to ``value``, the graph value (or batch field) the model read in
    training, e.g. ``c`` for ``c: one_hot(y, 10)``, or ``y`` itself.  So sampling
    encodes a class exactly as training did.
    """

    value: str
    classes: int


class Sampler(nn.Module):
    """Draws examples from a trained model, in model space."""

    #: Set by a conditional sampler: then ``sample`` receives ``context``, the value ``conditions.value`` of its labels.
    conditions: ClassConditions | None = None
    #: Set by a sampler whose draws are not the model's distribution, naming the setting and the one that draws from the
    #: model ("temperature 0.7 (temperature 1 draws from the model)"), for the metrics that score samples to warn; None:
    #: ``sample(n)`` draws from the model.
    distortion: str | None = None

    def sample(self, n: int, temperature: float = 1.0, context: Any = None) -> Tensor:
        raise NotImplementedError


@dataclass
class EvalContext:
    """What a metric sees: the compiled model, the data, a device and a folder for files.

    ``model`` is the compiled :class:`compose_gen.compiler.GenerativeModel`:
    ``model.sample(n, temperature)`` draws from the spec's sampler (by class when
    ``model.conditions`` is set: example ``i`` of class ``i mod classes``, the
    condition made for it), ``model.values(batch, names)`` computes graph values of
    a batch (a conditional model's condition, as in training), and
    ``model.component(name)`` and ``model.losses[name]`` are the built parts.
    """

    model: Any
    data: Splits
    device: torch.device
    out_dir: Path
    batch_size: int = 256
    seed: int = 0

    @property
    def test(self) -> TensorData:
        return self.data.test


class Metric(Protocol):
    """What a metric's build returns: a callable from an :class:`EvalContext` to named floats (NaN and ±inf are
    recorded as null), leaving ``ctx.data`` as it found it; see the module docstring for the whole contract."""

    def __call__(self, ctx: EvalContext) -> dict[str, float]: ...


def batches(data: TensorData, batch_size: int, device: torch.device) -> Iterable[dict[str, Tensor]]:
    """Iterate over ``data`` in order, in batches moved to ``device``."""
    for start in range(0, len(data), batch_size):
        yield {k: v.to(device) for k, v in data.batch(slice(start, start + batch_size)).items()}


def describe_value(value: Any) -> str:
    """``a Tensor of shape (2, 3)``, ``None``, or the type's name with its article (``an int``)."""
    if value is None:
        return "None"
    name = f"Tensor of shape {tuple(value.shape)}" if isinstance(value, Tensor) else type(value).__name__
    return f"{'an' if name[0] in 'aeiouAEIOU' else 'a'} {name}"


def check_critic_scores(value: Any, given: Any) -> None:
    """A critic's ``forward`` returns scores of each example of its first input ``given`` on its own: a float tensor
    whose first dimension is ``given``'s (``(N,)``, ``(N, 1)``, several scores ``(N, K)``, a PatchGAN's ``(N, 1, H, W)``);
    or a tuple or list whose first item those scores are (an AC-GAN critic's class logits follow).

    A score of the whole batch (its mean) passes every loss's arithmetic, but a gradient penalty
    on it sees each example's gradient divided by N, a penalty of nothing the critic does.
    """
    if isinstance(value, (tuple, list)) and value:
        value = value[0]
    if not isinstance(value, Tensor) or not value.is_floating_point():
        raise ContractError(f"forward returned {describe_value(value)}, not a float tensor of scores")
    if isinstance(given, Tensor) and given.dim() > 0 and (value.dim() == 0 or len(value) != len(given)):
        n = len(given)
        raise ContractError(
            f"forward returned scores of shape {tuple(value.shape)} for {n} examples; a critic scores each example "
            f"on its own: its scores' first dimension is the examples', ({n}, ...)"
        )


def check_distribution(value: Any, given: Tensor | None = None) -> None:
    """A prior, encoder, decoder or flow's ``forward`` returns a ``torch.distributions.Distribution`` whose ``log_prob`` sums events.

    Called with ``given`` (an encoder's x, a decoder's z), the distribution has one
    value per example of ``given``, so its batch shape is ``given``'s leading
    dimensions, sample dimensions (IWAE's k) included; called without (a prior), its
    batch shape is empty.  A distribution of elementwise densities not wrapped in
    ``Independent`` breaks this: its ``log_prob`` would be per coordinate and
    broadcast silently in every bound.  So does one that drops the sample dimensions:
    every importance weight would score the first draw.
    """
    if not isinstance(value, Distribution):
        raise ContractError(f"forward returned {describe_value(value)}, not a torch.distributions.Distribution")
    per_coordinate = len(value.batch_shape) >= given.dim() if isinstance(given, Tensor) else len(value.batch_shape) > 0
    if per_coordinate:
        of = f"for an input of shape {tuple(given.shape)}" if isinstance(given, Tensor) else "with no input"
        fix = "wrap it, Independent(..., reinterpreted_batch_ndims)"
        if value.event_shape:  # already wrapped: its parameters have a dimension too many
            fix = "it has an event already, so its parameters carry a stray leading dimension or it reinterprets too few"
        raise ContractError(
            f"forward returned {describe_value(value)} of batch shape {tuple(value.batch_shape)} {of}, so its log_prob is "
            f"per coordinate, not summed over the event: {fix}"
        )
    if isinstance(given, Tensor) and tuple(value.batch_shape) != tuple(given.shape[: len(value.batch_shape)]):
        raise ContractError(
            f"forward returned {describe_value(value)} of batch shape {tuple(value.batch_shape)} for an input of shape "
            f"{tuple(given.shape)}, whose leading dimensions it should be (one distribution per example and per draw of "
            "the sample dimensions before them, as IWAE's k): broadcast over leading dimensions instead of dropping them"
        )


def check_graph_methods(component: nn.Module) -> None:
    """``graph_methods``, if the component has it, is a tuple of names of its own methods; else the one a graph
    calls would fail when a spec first uses it, not when the plugin's author builds the component."""
    listed = getattr(component, "graph_methods", ())
    if not isinstance(listed, (tuple, list)) or not all(isinstance(name, str) for name in listed):
        raise ContractError(f"graph_methods is {describe_value(listed)}, not a tuple of method names such as ('sample',)")
    missing = [name for name in listed if not callable(getattr(component, name, None))]
    if missing:
        raise ContractError(f"it lists {', '.join(map(repr, missing))} in graph_methods, but has no such method")


def check_loss_terms(loss: Loss) -> None:
    """A loss class declares ``terms`` as a non-empty tuple of names (``("loss",)``, not ``"loss"``), and names only those
    terms in ``term_inputs``, ``opposed`` and ``generator_term``."""
    terms = loss.terms
    if not isinstance(terms, (tuple, list)) or not terms or not all(isinstance(t, str) for t in terms):
        raise ContractError(f"`terms` must be a non-empty tuple of names such as ('loss',), got {terms!r}")
    unknown = set(loss.term_inputs) - set(terms)
    if unknown:
        raise ContractError(f"`term_inputs` names {sorted(unknown)}, which are not among its terms {tuple(terms)}")
    opposed = loss.opposed
    if opposed is not None and not (isinstance(opposed, (tuple, list)) and len(set(opposed)) == len(opposed) == 2 and set(opposed) <= set(terms)):
        raise ContractError(f"`opposed` must be a pair of two of its terms {tuple(terms)}, the two sides of its game; got {opposed!r}")
    if loss.generator_term is not None and loss.generator_term not in terms:
        raise ContractError(f"`generator_term` names {loss.generator_term!r}, which is not among its terms {tuple(terms)}")
    if isinstance(loss.likelihood_inputs, str):  # "real" would be read as its letters
        raise ContractError(f"`likelihood_inputs` must be a tuple of its input fields, such as ({loss.likelihood_inputs!r},)")


def check_loss_result(result: Any, terms: Iterable[str]) -> None:
    """``forward`` returns a dict holding a real scalar tensor for every requested term; extra entries are real scalar tensors too."""
    if not isinstance(result, Mapping):
        raise ContractError(f"forward returned {describe_value(result)}, not a dict of scalar tensors such as {{'loss': ...}}")
    missing = [t for t in terms if t not in result]
    if missing:
        raise ContractError(f"forward returned no term {', '.join(map(repr, missing))} (it returned {', '.join(map(repr, result)) or 'nothing'})")
    for key, value in result.items():
        if not isinstance(value, Tensor) or value.dim() != 0:
            hint = ""
            if isinstance(value, numbers.Real):  # a term needs its graph; a logged extra may be made a tensor
                hint = " (return the tensor itself, without .item() or float())" if key in terms else " (wrap it: torch.tensor(value))"
            raise ContractError(f"forward returned {key!r} as {describe_value(value)}, not a scalar tensor{hint}")
        if value.is_complex():
            raise ContractError(f"forward returned {key!r} as a complex {value.dtype} scalar: terms and logs are real (log .real and .imag apart)")


def check_conditions(sampler: Sampler) -> None:
    """A sampler's ``conditions`` is None or a :class:`ClassConditions` of a value name and a positive whole class count,
    and a sampler that samples by class is called ``sample(n, temperature, context)``."""
    conditions = sampler.conditions
    if conditions is None:
        return
    if not isinstance(conditions, ClassConditions):
        raise ContractError(f"conditions is {describe_value(conditions)}, not None or a compose_gen.ClassConditions(value, classes)")
    if not isinstance(conditions.value, str) or isinstance(conditions.classes, bool) or not isinstance(conditions.classes, int):
        raise ContractError(f"conditions is {conditions!r}: value must be a graph value's name and classes a whole number")
    if conditions.classes < 1:
        raise ContractError(f"conditions is {conditions!r}: classes must be at least 1")
    try:
        inspect.signature(sampler.sample).bind(1, 1.0, None)
    except TypeError:
        raise ContractError("it samples by class, so it is called sample(n, temperature, context); its sample takes no context") from None


def check_samples(drawn: Any, n: int) -> None:
    """``Sampler.sample(n)`` returns one tensor with ``n`` examples along its first dimension."""
    if not isinstance(drawn, Tensor) or drawn.dim() == 0 or len(drawn) != n:
        raise ContractError(f"sample({n}) returned {describe_value(drawn)}, not a tensor of {n} examples")


def check_metric_result(result: Any) -> dict[str, float]:
    """A metric returns a dict of named numbers; they come back as floats."""
    if not isinstance(result, Mapping):
        raise ContractError(f"returned {describe_value(result)}, not a dict of named floats")
    unnamed = [repr(key) for key in result if not isinstance(key, str)]
    if unnamed:
        raise ContractError(f"returned keys {', '.join(unnamed)}, not names (strings) such as 'fid'")
    bad = [
        f"{key!r} ({describe_value(value)})"
        for key, value in result.items()
        if not isinstance(value, numbers.Real) or isinstance(value, bool)
    ]
    if bad:
        raise ContractError(f"returned {', '.join(bad)}, not floats (a tensor's value is tensor.item(), a flag's float(flag))")
    return {key: float(value) for key, value in result.items()}


def check_splits(splits: Splits) -> None:
    """A dataset's halves hold examples, the same fields of the same per-example shapes, finite float32 values, class labels
    from 0 one per example, an ``x`` of float32 values with an event dimension, no booleans and no autograd graph.

    compose_gen computes in float32; the built-in datasets convert and check what
    they read, and a plugin's data are held to the same.
    """
    halves = {"train": splits.train, "test": splits.test}
    for name, half in halves.items():
        for field_name, values in half.fields.items():
            if not isinstance(values, torch.Tensor):
                raise ContractError(
                    f"field {field_name!r} of the {name} split is a {type(values).__module__}.{type(values).__qualname__}, "
                    "not a torch.Tensor: give torch.as_tensor(...)"
                )
        if not half.fields or len(half) == 0:
            raise ContractError(f"its {name} split has no examples")
    if set(splits.train.fields) != set(splits.test.fields):
        raise ContractError(f"its splits have different fields: train {sorted(splits.train.fields)}, test {sorted(splits.test.fields)}")
    for field_name, values in splits.train.fields.items():
        other = splits.test.fields[field_name]
        if values.shape[1:] != other.shape[1:]:
            raise ContractError(f"field {field_name!r} has examples of shape {tuple(values.shape[1:])} in train, {tuple(other.shape[1:])} in test")
        for name, tensor in (("train", values), ("test", other)):
            where = f"field {field_name!r} of the {name} split"
            if tensor.requires_grad:  # every step would backpropagate into the graph that made it, freed after the first
                raise ContractError(f"{where} carries an autograd graph (it requires grad): give tensor.detach(), or build it under torch.no_grad()")
            if tensor.is_floating_point():
                if tensor.dtype != torch.float32:
                    raise ContractError(f"{where} is {tensor.dtype}; compose_gen computes in float32: give tensor.float()")
                bad = ~torch.isfinite(tensor)
                if bad.any():
                    index = tuple(int(i) for i in bad.nonzero()[0])
                    raise ContractError(f"{where} holds {tensor[index].item()} at {list(index)}: data must be finite")
            elif tensor.dtype == torch.bool:  # neither values to compute with nor class labels
                raise ContractError(f"{where} is torch.bool: give tensor.float() for values 0 and 1, or tensor.long() for class labels")
            elif field_name == "x":
                raise ContractError(f"{where} is {tensor.dtype}; models compute with x in float32: give tensor.float()")
            elif field_name == "y" and tensor.dim() != 1:
                raise ContractError(f"{where} has shape {tuple(tensor.shape)}; class labels are one per example, of shape (n,): give y.reshape(-1)")
            elif field_name == "y" and tensor.numel() and int(tensor.min()) < 0:
                raise ContractError(f"{where} holds the label {int(tensor.min())}: class labels are 0..K-1")
            elif field_name == "y" and tensor.numel() and int(tensor.max()) >= MAX_CLASSES:
                raise ContractError(
                    f"{where} holds the label {int(tensor.max())}: class labels are 0..K-1 with K at most {MAX_CLASSES} "
                    "(compose_gen.core.MAX_CLASSES), so that no table sized by the class count explodes"
                )
            if field_name == "x" and tensor.dim() < 2:
                raise ContractError(f"{where} has shape {tuple(tensor.shape)}: each example needs an event dimension, even of one value: give x.unsqueeze(1)")
