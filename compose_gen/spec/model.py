"""The spec language's top level, as pydantic models.

Sections that hold plugin types (``data``, ``components``, ``losses``,
``sample``, ``evaluate.metrics``) are kept as raw ``{type: ..., **params}``
mappings here and validated against the catalogue in
:mod:`compose_gen.spec.resolve`, because the set of types is only known once the
plugins are loaded.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Annotated, Any, ClassVar, Literal, Union, get_args

import torch
from pydantic import BaseModel, BeforeValidator, Discriminator, Field, PositiveFloat, PositiveInt, Tag, field_validator, model_validator

from compose_gen.core import MAX_PICTURES
from compose_gen.registry.types import Seed, StrictModel

__all__ = [
    "EMASpec",
    "EvaluateSpec",
    "OptimizerSpec",
    "PlayerSpec",
    "ScheduleSpec",
    "SpecModel",
    "TrainSpec",
    "typed_section_models",
]

Raw = dict[str, Any]
#: Top-level keys that begin so are left to the spec's writer, to hold YAML anchors (``x-net: &net {...}``) that sections
#: then use (``net: *net``), as Docker Compose's extension fields do.
EXTENSION_PREFIX = "x-"
#: The device names a spec (and ``--device``) takes.
DEVICE_PATTERN = r"^(auto|cpu|cuda(:\d+)?|mps)$"


class _Strict(StrictModel):
    """Unknown keys, NaN and ±infinity in a float, true/false for a number and anything else for a boolean are errors."""


#: An exponential moving average's decay, as Adam's β₁ and β₂: in [0, 1).
Decay = Annotated[float, Field(ge=0.0, lt=1.0)]
NonNegative = Annotated[float, Field(ge=0.0)]


class _Optimizer(_Strict):
    """An optimizer: a torch class and its hyper-parameters, under torch's names."""

    torch_class: ClassVar[type[torch.optim.Optimizer]]
    #: torch has a fused kernel for it (``fused=True``): one kernel for all tensors instead of several per tensor.
    has_fused_kernel: ClassVar[bool] = False


class Adam(_Optimizer):
    torch_class = torch.optim.Adam
    has_fused_kernel = True

    type: Literal["adam"] = "adam"
    lr: PositiveFloat = 1e-3
    betas: tuple[Decay, Decay] = (0.9, 0.999)
    eps: PositiveFloat = 1e-8
    weight_decay: NonNegative = 0.0
    amsgrad: bool = False


class AdamW(_Optimizer):
    torch_class = torch.optim.AdamW
    has_fused_kernel = True

    type: Literal["adamw"]
    lr: PositiveFloat = 1e-3
    betas: tuple[Decay, Decay] = (0.9, 0.999)
    eps: PositiveFloat = 1e-8
    weight_decay: NonNegative = 1e-2
    amsgrad: bool = False


class RMSprop(_Optimizer):
    torch_class = torch.optim.RMSprop

    type: Literal["rmsprop"]
    lr: PositiveFloat = 1e-3
    alpha: Decay = 0.99
    eps: PositiveFloat = 1e-8
    momentum: NonNegative = 0.0
    weight_decay: NonNegative = 0.0
    centered: bool = False


class SGD(_Optimizer):
    torch_class = torch.optim.SGD

    type: Literal["sgd"]
    lr: PositiveFloat = 1e-2
    momentum: NonNegative = 0.0
    dampening: float = Field(0.0, ge=0.0, le=1.0)
    nesterov: bool = False
    weight_decay: NonNegative = 0.0

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> "SGD":
        if self.nesterov and (self.momentum == 0 or self.dampening != 0):
            raise ValueError("nesterov: true needs a momentum above 0 and dampening 0 (Sutskever et al. 2013)")
        return self


def _tag(default: str) -> Any:
    """A discriminator reading ``type`` and falling back to ``default`` when it is absent."""

    def tag(value: Any) -> str:
        return (value.get("type") if isinstance(value, dict) else getattr(value, "type", None)) or default

    return Discriminator(tag)


OptimizerSpec = Annotated[
    Union[
        Annotated[Adam, Tag("adam")],
        Annotated[AdamW, Tag("adamw")],
        Annotated[RMSprop, Tag("rmsprop")],
        Annotated[SGD, Tag("sgd")],
    ],
    _tag("adam"),
]


class _Schedule(_Strict):
    """A learning-rate schedule: a linear warm-up over ``warmup`` rounds, then the type's decay from 1."""

    type: str  # each schedule narrows it to its tag
    warmup: int = Field(0, ge=0)

    def factor(self, step: int, total: int) -> float:
        """Multiplier of the base lr at round ``step`` of ``total``: ``(step + 1)/warmup`` in the warm-up, then the decay."""
        if step < self.warmup:
            return (step + 1) / self.warmup
        return self.decay(step - self.warmup, max(1, total - self.warmup))

    @abstractmethod
    def decay(self, t: int, span: int) -> float:
        """The factor ``t`` rounds after the warm-up, of the ``span`` rounds from there to the end of training."""


class Constant(_Schedule):
    """lr stays at its initial value."""

    type: Literal["constant"] = "constant"
    warmup: int = Field(0, ge=0, description="steps of linear warm-up from 0")

    def decay(self, t: int, span: int) -> float:
        return 1.0


class Cosine(_Schedule):
    """Cosine decay to ``min_factor`` × lr over the run (Loshchilov & Hutter 2017)."""

    type: Literal["cosine"]
    min_factor: float = Field(0.0, ge=0.0, le=1.0)

    def decay(self, t: int, span: int) -> float:
        return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * min(1.0, t / span)))


class StepDecay(_Schedule):
    """lr × gamma every ``every`` steps."""

    type: Literal["step"]
    every: PositiveInt
    gamma: float = Field(0.1, gt=0.0, le=1.0, description="the factor every `every` steps, a decay: in (0, 1]")

    def decay(self, t: int, span: int) -> float:
        return self.gamma ** (t // self.every)


class Exponential(_Schedule):
    """lr × gamma^step."""

    type: Literal["exponential"]
    gamma: float = Field(..., gt=0.0, le=1.0, description="the factor per step, a decay: in (0, 1]")

    def decay(self, t: int, span: int) -> float:
        return self.gamma**t


class Linear(_Schedule):
    """Linear decay to ``min_factor`` × lr over the run."""

    type: Literal["linear"]
    min_factor: float = Field(0.0, ge=0.0, le=1.0)

    def decay(self, t: int, span: int) -> float:
        return 1 - (1 - self.min_factor) * min(1.0, t / span)


ScheduleSpec = Annotated[
    Union[
        Annotated[Constant, Tag("constant")],
        Annotated[Cosine, Tag("cosine")],
        Annotated[StepDecay, Tag("step")],
        Annotated[Exponential, Tag("exponential")],
        Annotated[Linear, Tag("linear")],
    ],
    _tag("constant"),
]


def _terms_form(value: Any) -> str:
    return "{term: weight}" if isinstance(value, dict) else "[term, ...]"


#: Loss terms with weights, or a list of terms of weight 1; one error for a bad value, from the form it is written in.
Terms = Annotated[
    Union[Annotated[dict[str, float], Tag("{term: weight}")], Annotated[list[str], Tag("[term, ...]")]],
    Discriminator(_terms_form),
]


def _once_each(names: list[str], what: str) -> list[str]:
    """``names``, refused if one is listed twice (a repeated term would count twice, or silently once)."""
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"names {', '.join(map(repr, repeated))} more than once; list each {what} once")
    return names


class PlayerSpec(_Strict):
    """A set of components one optimizer updates to minimise weighted loss terms."""

    params: list[str] | Literal["all"] = Field(
        "all", description="components whose parameters this player updates, or losses for their own (a VQ codebook)"
    )
    terms: Terms | None = Field(None, description="loss terms (`loss` or `loss.term`) and their weights; default: every term")
    optimizer: OptimizerSpec | None = Field(None, description="default: train.optimizer")
    steps: PositiveInt = Field(1, description="optimizer steps per round (n_critic)")
    clip_grad_norm: PositiveFloat | None = None
    clip_grad_value: PositiveFloat | None = None
    schedule: ScheduleSpec = Field(default_factory=Constant)

    @field_validator("params")
    @classmethod
    def _some_params(cls, params: list[str] | str) -> list[str] | str:
        """An empty ``params`` is refused: such a player could never change the model."""
        if not params:
            raise ValueError("names no component; list the components this player updates, or omit `params` for all of them")
        return params if params == "all" else _once_each(params, "component")

    @field_validator("terms")
    @classmethod
    def _some_terms(cls, terms: dict[str, float] | list[str] | None) -> dict[str, float] | list[str] | None:
        """An empty ``terms`` is refused: omitted, it means every term, which an empty one cannot mean."""
        if terms is not None and not terms:
            raise ValueError("names no loss term; name the terms this player minimises, or omit `terms` for every term")
        if isinstance(terms, dict) and not any(terms.values()):
            raise ValueError("weights every term 0, so the player minimises nothing (weight 0 only logs a term): give some term a weight")
        return _once_each(terms, "term (a weight says how much it counts)") if isinstance(terms, list) else terms

    def weights(self) -> dict[str, float] | None:
        if self.terms is None or isinstance(self.terms, dict):
            return self.terms
        return {term: 1.0 for term in self.terms}


class EMASpec(_Strict):
    """An exponential moving average of components' weights, kept during training and used to sample and evaluate."""

    components: list[str] = Field(..., min_length=1, description="components whose parameters are averaged")
    decay: float = Field(0.999, gt=0.0, lt=1.0, description="avg ← decay·avg + (1 − decay)·θ after each optimizer step")
    warmup: bool = Field(True, description="ramp the decay up as min(decay, (1 + t) / (10 + t)) at round t, so short runs average trained weights")

    @field_validator("components")
    @classmethod
    def _each_once(cls, components: list[str]) -> list[str]:
        return _once_each(components, "component")


class TrainSpec(_Strict):
    """How to train: rounds, batches, precision, checkpoints, logging and the NaN guard."""

    steps: PositiveInt = Field(1000, description="rounds; each player takes its `steps` optimizer steps per round")
    batch_size: PositiveInt = Field(128, description="global batch: split evenly over the processes under torchrun")
    optimizer: OptimizerSpec = Field(default_factory=Adam, description="default optimizer of every player")
    log_every: PositiveInt = 50
    checkpoint_every: int = Field(0, ge=0, description="0: only at the end")
    keep_checkpoints: PositiveInt = Field(3, description="newest checkpoints kept (the best one is kept besides)")
    best_metric: str | None = Field(None, description="a logged metric (e.g. `vae` or `vae.elbo`) that marks the best checkpoint")
    best_mode: Literal["min", "max"] = Field("min", description="whether a lower or a higher best_metric is better")
    sample_every: int = Field(0, ge=0, description="write a sample grid every N steps; 0: only at the end")
    evaluate_at_end: bool = True
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="autocast dtype; fp16 adds a gradient scaler per player; loss terms stay float32"
    )
    compile: bool = Field(False, description="run each player's loss through torch.compile (eager fallback on failure)")
    compile_backend: Literal["inductor", "aot_eager", "eager", "cudagraphs"] = "inductor"
    channels_last: bool = Field(False, description="channels-last memory format for 4D weights and batches (conv nets)")
    on_nan: Literal["stop", "skip"] = Field("stop", description="on a non-finite loss or gradient: stop, or skip the batch")
    max_nan_skips: PositiveInt = Field(10, description="with on_nan: skip, stop after this many skipped batches")
    tensorboard: bool = Field(False, description="also log scalars and sample images for TensorBoard (needs `tensorboard`)")
    ema: EMASpec | None = Field(None, description="average these components' weights for sampling and evaluation")


def _by_name(entry: object) -> object:
    """A metric given by its type's name alone (``metrics: [test_losses]``), as the mapping ``{type: NAME}``."""
    if isinstance(entry, str):
        return {"type": entry}
    if not isinstance(entry, dict):
        raise ValueError(f"a metric is a mapping {{type: NAME, ...}}, or NAME alone, got {type(entry).__name__} {entry!r}")
    return entry


class EvaluateSpec(_Strict):
    metrics: list[Annotated[Raw, BeforeValidator(_by_name)]] = Field(
        default_factory=list, description="metrics on the test split: {type: NAME, ...}, or NAME alone for one without required parameters"
    )
    batch_size: PositiveInt = 256
    samples: PositiveInt = Field(64, le=MAX_PICTURES, description=f"examples in the sample grid (at most {MAX_PICTURES:,})")


class SpecModel(_Strict):
    """The whole spec, before plugin types are resolved."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    seed: Seed = 0
    device: str = Field("auto", pattern=DEVICE_PATTERN)
    data: Raw
    components: dict[str, Raw] = Field(default_factory=dict)
    graph: dict[str, str] = Field(default_factory=dict)
    losses: dict[str, Raw] = Field(default_factory=dict)
    players: dict[str, PlayerSpec] = Field(default_factory=dict)
    train: TrainSpec = Field(default_factory=TrainSpec)
    sample: Raw | None = None
    evaluate: EvaluateSpec = Field(default_factory=EvaluateSpec)

    @field_validator("graph", mode="before")
    @classmethod
    def _calls_whole(cls, graph: Any) -> Any:
        """A call YAML cut at its comma: `graph: {c: cat(x, z)}` reads as `c: "cat(x"` and a key `z)`, which was refused
        as "graph.z): Input should be a valid string", not saying why."""
        for name, text in graph.items() if isinstance(graph, dict) else ():
            if isinstance(text, str) and text.count("(") > text.count(")"):
                raise ValueError(
                    f"{name}: {text!r} leaves its call's parenthesis open (in a {{...}} mapping, YAML ends a value at each comma: "
                    f"write the graph one value per line, or quote each call, {name}: \"{text}, ...)\")"
                )
        return graph


#: Sections of the top level that map names the user chooses to entries, with the form of a new entry.
NAMED_SECTIONS: dict[str, str] = {
    "components": "{type: ...}",
    "graph": "EXPRESSION",
    "losses": "{type: ...}",
    "players": "{params: [...], terms: [...]}",
}


#: Sections of the top level whose model is chosen by their ``type``, by path (``None`` matches any key).
_TYPED_SECTIONS: dict[tuple[str | None, ...], Any] = {
    ("train", "optimizer"): OptimizerSpec,
    ("players", None, "optimizer"): OptimizerSpec,
    ("players", None, "schedule"): ScheduleSpec,
}


def typed_section_models(path: tuple[Any, ...]) -> dict[str, type[BaseModel]] | None:
    """The models of the top-level typed section at ``path``, by type name; None if there is none."""
    for pattern, union in _TYPED_SECTIONS.items():
        if len(pattern) == len(path) and all(p is None or p == q for p, q in zip(pattern, path, strict=True)):
            members = get_args(get_args(union)[0])
            return {member.__metadata__[0].tag: get_args(member)[0] for member in members}
    return None
