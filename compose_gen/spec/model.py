"""The spec language's top level, as pydantic models.

Sections that hold plugin types (``data``, ``components``, ``losses``,
``sample``, ``evaluate.metrics``) are kept as raw ``{type: ..., **params}``
mappings here and validated against the catalogue in
:mod:`compose_gen.spec.resolve`, because the set of types is only known once the
plugins are loaded.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, model_validator

__all__ = [
    "EvaluateSpec",
    "OptimizerSpec",
    "PlayerSpec",
    "ScheduleSpec",
    "SpecModel",
    "TrainSpec",
]

Raw = dict[str, Any]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Adam(_Strict):
    type: Literal["adam"] = "adam"
    lr: PositiveFloat = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: PositiveFloat = 1e-8
    weight_decay: float = 0.0
    amsgrad: bool = False


class AdamW(_Strict):
    type: Literal["adamw"]
    lr: PositiveFloat = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: PositiveFloat = 1e-8
    weight_decay: float = 1e-2
    amsgrad: bool = False


class RMSprop(_Strict):
    type: Literal["rmsprop"]
    lr: PositiveFloat = 1e-3
    alpha: float = 0.99
    eps: PositiveFloat = 1e-8
    momentum: float = 0.0
    weight_decay: float = 0.0
    centered: bool = False


class SGD(_Strict):
    type: Literal["sgd"]
    lr: PositiveFloat = 1e-2
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0


OptimizerSpec = Annotated[Union[Adam, AdamW, RMSprop, SGD], Field(discriminator="type")]


class Constant(_Strict):
    """lr stays at its initial value."""

    type: Literal["constant"] = "constant"
    warmup: int = Field(0, ge=0, description="steps of linear warm-up from 0")


class Cosine(_Strict):
    """Cosine decay to ``min_factor`` × lr over the run (Loshchilov & Hutter 2017)."""

    type: Literal["cosine"]
    warmup: int = Field(0, ge=0)
    min_factor: float = Field(0.0, ge=0.0, le=1.0)


class StepDecay(_Strict):
    """lr × gamma every ``every`` steps."""

    type: Literal["step"]
    warmup: int = Field(0, ge=0)
    every: PositiveInt
    gamma: PositiveFloat = 0.1


class Exponential(_Strict):
    """lr × gamma^step."""

    type: Literal["exponential"]
    warmup: int = Field(0, ge=0)
    gamma: PositiveFloat


class Linear(_Strict):
    """Linear decay to ``min_factor`` × lr over the run."""

    type: Literal["linear"]
    warmup: int = Field(0, ge=0)
    min_factor: float = Field(0.0, ge=0.0, le=1.0)


ScheduleSpec = Annotated[Union[Constant, Cosine, StepDecay, Exponential, Linear], Field(discriminator="type")]


class PlayerSpec(_Strict):
    """A set of components one optimizer updates to minimise weighted loss terms."""

    params: list[str] | Literal["all"] = Field("all", description="components whose parameters this player updates")
    terms: dict[str, float] | list[str] | None = Field(
        None, description="loss terms (`loss` or `loss.term`) and their weights; default: every term"
    )
    optimizer: OptimizerSpec | None = Field(None, description="default: train.optimizer")
    steps: PositiveInt = Field(1, description="optimizer steps per round (n_critic)")
    clip_grad_norm: PositiveFloat | None = None
    clip_grad_value: PositiveFloat | None = None
    schedule: ScheduleSpec = Field(default_factory=Constant)

    def weights(self) -> dict[str, float] | None:
        if self.terms is None or isinstance(self.terms, dict):
            return self.terms
        return {term: 1.0 for term in self.terms}


class TrainSpec(_Strict):
    steps: PositiveInt = Field(1000, description="rounds; each player takes its `steps` optimizer steps per round")
    batch_size: PositiveInt = 128
    optimizer: OptimizerSpec = Field(default_factory=Adam, description="default optimizer of every player")
    log_every: PositiveInt = 50
    checkpoint_every: int = Field(0, ge=0, description="0: only at the end")
    keep_checkpoints: PositiveInt = 3
    sample_every: int = Field(0, ge=0, description="write a sample grid every N steps; 0: only at the end")
    evaluate_at_end: bool = True


class EvaluateSpec(_Strict):
    metrics: list[Raw] = Field(default_factory=list)
    batch_size: PositiveInt = 256
    samples: PositiveInt = Field(64, description="examples in the sample grid")


class SpecModel(_Strict):
    """The whole spec, before plugin types are resolved."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    seed: int = 0
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$")
    data: Raw
    components: dict[str, Raw] = Field(default_factory=dict)
    graph: dict[str, str] = Field(default_factory=dict)
    losses: dict[str, Raw] = Field(default_factory=dict)
    players: dict[str, PlayerSpec] = Field(default_factory=dict)
    train: TrainSpec = Field(default_factory=TrainSpec)
    sample: Raw | None = None
    evaluate: EvaluateSpec = Field(default_factory=EvaluateSpec)

    @model_validator(mode="after")
    def _names(self) -> "SpecModel":
        clashes = set(self.components) & set(self.graph)
        if clashes:
            raise ValueError(f"names used both as component and graph value: {sorted(clashes)}")
        return self
