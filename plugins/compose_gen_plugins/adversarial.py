"""Two-sided adversarial losses: each exposes a ``critic`` term and a ``generator`` term.

With ``d_r = D(real)`` and ``d_f = D(fake)`` the critic's raw scores (logits for the
Jensen-Shannon losses), every loss here is a sum of per-example sides::

    critic term    = E c(d_r, real) + E c(d_f, fake)
    generator term = E g(d_f, real) [+ E g(d_r, fake) with generator_on_real]

``generator_on_real`` is for BiGAN/ALI, where ``real = (x, E(x))`` depends on the
encoder: it pushes the critic's verdict on real pairs towards "fake" too (Donahue et
al. 2017).  Otherwise the generator term reads only ``fake`` (``term_inputs``), so a
generator step computes no ``real`` value.

Inputs.  ``real`` and ``fake`` each name one value or a list of values passed as
``critic(*values)`` (joint critics: ``real: [x, z_hat]``, ``fake: [fake, z]``);
``labels`` is appended to both for a conditional critic, ``fake_labels`` (default
``labels``) to ``fake`` only.  Real and fake inputs in the same place must have the same
per-example shape (the first dimension is the batch): a generator whose output is not
shaped like the data is refused here, naming both shapes (:func:`check_sides`).  A critic returning ``(score, class_logits)`` (AC-GAN) is
scored by its first output; scores are averaged over all their elements (patch critics).

Options common to all: instance noise (Sønderby et al. 2017; Arjovsky & Bottou 2017):
Gaussian noise of std ``σ_t = instance_noise · max(0, 1 - t / noise_decay_steps)`` added
to the first critic input of both sides, ``t`` counting critic updates (``after_step``).

Metrics: ``d_real`` and ``d_fake`` (mean scores), ``wasserstein`` for the Wasserstein loss.
The critic is referenced, not owned: it is a component of the model, so the loss does
not register it as a submodule (no duplicate parameters in state dicts).
"""

from __future__ import annotations

from typing import Any, Callable, Collection, Mapping

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn
from torch.nn.utils.parametrizations import _SpectralNorm
from torch.nn.utils.spectral_norm import SpectralNorm

from compose_gen import BuildContext, ComponentType, Loss, Params, Ref, Value, hookimpl

__all__ = [
    "AdversarialLoss",
    "CriticLoss",
    "batch_normalised",
    "check_sides",
    "critic_inputs",
    "score",
    "side_names",
    "spectrally_normalised",
]


def critic_inputs(inputs: Mapping[str, Any], side: str, with_labels: bool = True) -> list[Tensor]:
    """The critic's arguments for ``side`` (``real`` or ``fake``): its values, then its labels if any."""
    value = inputs[side]
    args = list(value) if isinstance(value, (list, tuple)) else [value]
    if not with_labels:
        return args
    label = inputs.get("fake_labels") if side == "fake" else None
    if label is None:
        label = inputs.get("labels")
    return args if label is None else [*args, label]


def side_names(params: Any) -> dict[str, list[str]]:
    """The value names a loss's ``real`` and ``fake`` parameters give, each as a list (for messages)."""
    names = {}
    for side in ("real", "fake"):
        value = getattr(params, side, None)
        names[side] = [] if value is None else [value] if isinstance(value, str) else list(value)
    return names


def _example(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape[1:])


def check_sides(inputs: Mapping[str, Any], names: Mapping[str, list[str]] | None = None) -> None:
    """Refuse ``real`` and ``fake`` critic inputs that differ in number or in per-example shape.

    The critic scores both sides alike, so each fake input must be shaped like the real one
    in its place; otherwise a critic that flattens its input scores one side as another
    number of examples (the losses would average scores of different things) or fails far
    from the cause.  Only shapes are read: no device sync.  ``names`` (from
    :func:`side_names`) names the values in the message.
    """
    real = critic_inputs(inputs, "real", with_labels=False)
    fake = critic_inputs(inputs, "fake", with_labels=False)
    names = names or {}

    def name(side: str, i: int) -> str:
        given = names.get(side) or []
        return f"{side} {given[i]!r}" if i < len(given) else side

    if len(real) != len(fake):
        listed = {side: ", ".join(names.get(side) or []) for side in ("real", "fake")}
        raise ValueError(
            f"real has {len(real)} critic input(s) ({listed['real'] or '?'}) but fake has {len(fake)} ({listed['fake'] or '?'}): "
            "the critic is called alike on both sides, so give real and fake the same inputs in the same order "
            "(a joint critic D(x, z): real: [x, z_hat], fake: [fake, z])"
        )
    for i, (r, f) in enumerate(zip(real, fake, strict=True)):
        if not (isinstance(r, Tensor) and isinstance(f, Tensor)) or _example(r) == _example(f):
            continue
        shapes = (
            f"{name('fake', i)} has examples of shape {_example(f)} (a batch {tuple(f.shape)}) "
            f"but {name('real', i)} has {_example(r)} (a batch {tuple(r.shape)})"
        )
        if len(real) > 1 and _reordered(real, fake):
            raise ValueError(
                f"critic input {i + 1} of {len(real)} differs between the sides: {shapes}, and the fake inputs have "
                "the real ones' shapes in another order: list real and fake in the same order, each fake input in the place of the real one "
                "it stands for (a joint critic D(x, z): real: [x, z_hat], fake: [fake, z])"
            )
        if i == 0:
            raise ValueError(
                f"real and fake examples differ in shape: {shapes}. The critic scores both alike, so fake must be "
                f"what the generator makes, shaped like the data: set the generator's image_shape or out_shape "
                f"to {list(_example(r))}, or leave it unset to take the data's"
            )
        raise ValueError(
            f"critic input {i + 1} of {len(real)} differs between the sides: {shapes}. A joint critic D(x, z) "
            "scores (x, E(x)) and (G(z), z) alike, so the encoder's output must have the size of z: make the "
            "encoder's out_features, the noise's shape and the critic's joint_dim agree"
        )


def _reordered(real: list[Any], fake: list[Any]) -> bool:
    """Whether the fake inputs have the real ones' per-example shapes in another order."""
    if not all(isinstance(t, Tensor) for t in (*real, *fake)):
        return False
    return sorted(map(_example, real)) == sorted(map(_example, fake))


def score(critic: nn.Module, args: list[Tensor]) -> Tensor:
    """``critic(*args)``, or its first output when it also returns class logits."""
    out = critic(*args)
    return out[0] if isinstance(out, tuple) else out


class CriticLoss(Loss):
    """A loss that calls a critic it references but does not own (so it is not a submodule)."""

    def __init__(self, critic: nn.Module, names: Mapping[str, list[str]] | None = None) -> None:
        super().__init__()
        self._critic = (critic,)
        self.names = dict(names or {})  # the real and fake values' names, for messages

    @property
    def critic(self) -> nn.Module:
        return self._critic[0]

    @property
    def keeps_critic_lipschitz(self) -> bool:
        """Whether this loss, trained, keeps its critic (near) Lipschitz: by clipping its weights, or a gradient penalty."""
        return False


class SideParams(Params):
    critic: Ref("critic", "network") = Field(..., description="critic D scoring real and fake")  # type: ignore[valid-type]
    real: Value | list[Value] = Field("x", description="critic input(s) for real data")
    fake: Value | list[Value] = Field(description="critic input(s) for generated data")
    labels: Value | None = Field(None, description="labels passed last to a conditional critic")
    fake_labels: Value | None = Field(None, description="labels for fake if they differ from labels")


class AdversarialParams(SideParams):
    instance_noise: float = Field(0.0, ge=0.0, description="std of Gaussian noise added to critic inputs")
    noise_decay_steps: int | None = Field(None, gt=0, description="critic steps over which the noise decays to 0")
    generator_on_real: bool = Field(False, description="generator term also scores real (BiGAN: real depends on E)")

    @model_validator(mode="after")
    def _decay_needs_noise(self) -> "AdversarialParams":
        if self.noise_decay_steps is not None and self.instance_noise == 0:
            raise ValueError("noise_decay_steps decays instance_noise, which is 0: set instance_noise (e.g. 0.1) or drop noise_decay_steps")
        return self


class AdversarialLoss(CriticLoss):
    """Base of the two-sided losses; subclasses define the per-example sides ``c`` and ``g``."""

    terms = ("critic", "generator")
    opposed = ("critic", "generator")

    def __init__(self, critic: nn.Module, params: AdversarialParams) -> None:
        super().__init__(critic, side_names(params))
        self.instance_noise = params.instance_noise
        self.noise_decay_steps = params.noise_decay_steps
        self.generator_on_real = params.generator_on_real
        self.register_buffer("critic_steps", torch.zeros((), dtype=torch.long))
        fake_side = ("fake", "labels", "fake_labels")
        self.term_inputs = {
            "critic": ("real", *fake_side),
            "generator": ("real", *fake_side) if params.generator_on_real else fake_side,
        }

    def critic_side(self, d: Tensor, real: bool) -> Tensor:
        """Per-element critic loss for scores ``d`` of real (``real=True``) or fake inputs."""
        raise NotImplementedError

    def generator_side(self, d: Tensor, real: bool) -> Tensor:
        """Per-element generator loss for scores ``d`` it wants judged real (``real=True``) or fake."""
        raise NotImplementedError

    def noise_std(self) -> float | Tensor:
        """The instance-noise std after ``critic_steps`` critic updates (a tensor when decaying: no device sync)."""
        if self.noise_decay_steps is None:
            return self.instance_noise
        return self.instance_noise * (1.0 - self.critic_steps / self.noise_decay_steps).clamp(min=0.0)

    def scores(self, inputs: Mapping[str, Any], side: str) -> Tensor:
        args = critic_inputs(inputs, side)
        if self.instance_noise > 0:
            x = args[0]
            args[0] = x + self.noise_std() * torch.randn_like(x)
        return score(self.critic, args)

    def forward(self, inputs: Mapping[str, Any], terms: Collection[str]) -> dict[str, Tensor]:
        needs_real = "critic" in terms or self.generator_on_real
        if needs_real:
            check_sides(inputs, self.names)
        d_fake = self.scores(inputs, "fake")
        d_real = self.scores(inputs, "real") if needs_real else None
        out: dict[str, Tensor] = {"d_fake": d_fake.detach().mean()}
        if "critic" in terms:
            out["critic"] = self.critic_side(d_real, True).mean() + self.critic_side(d_fake, False).mean()
        if "generator" in terms:
            out["generator"] = self.generator_side(d_fake, True).mean()
            if self.generator_on_real:
                out["generator"] = out["generator"] + self.generator_side(d_real, False).mean()
        if d_real is not None:
            out["d_real"] = d_real.detach().mean()
        return out

    def after_step(self, terms: Collection[str]) -> None:
        """Called by the trainer after an optimizer step on ``terms`` (this loss's term names)."""
        if "critic" in terms:
            self.critic_steps += 1


class JensenShannonParams(AdversarialParams):
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="one-sided: real targets are 1 - s")


class Minimax(AdversarialLoss):
    """Minimax GAN (Goodfellow et al. 2014) with ``D = σ(d)``; one-sided label smoothing (Salimans et al. 2016).

    critic:    -E[(1-s) log D(x) + s log(1 - D(x))] - E log(1 - D(G(z)))
    generator:  E log(1 - D(G(z)))          (saturates when D rejects the fakes)
    """

    def __init__(self, critic: nn.Module, params: JensenShannonParams) -> None:
        super().__init__(critic, params)
        self.real_target = 1.0 - params.label_smoothing

    def critic_side(self, d: Tensor, real: bool) -> Tensor:
        target = torch.full_like(d, self.real_target if real else 0.0)
        return F.binary_cross_entropy_with_logits(d, target, reduction="none")

    def generator_side(self, d: Tensor, real: bool) -> Tensor:
        # the negated critic objective: log(1 - σ(d)) = -softplus(d), log σ(d) = -softplus(-d)
        return -F.softplus(d if real else -d)


class NonSaturating(Minimax):
    """Non-saturating GAN (Goodfellow et al. 2014): the minimax critic, the generator minimising -E log D(G(z)).

    generator: -E log D(G(z)) = E softplus(-d_f); the critic term is :class:`Minimax`'s.
    """

    def generator_side(self, d: Tensor, real: bool) -> Tensor:
        return F.softplus(-d if real else d)


class WassersteinParams(AdversarialParams):
    clip: float | None = Field(None, gt=0.0, description="clamp the critic's trained parameters to [-clip, clip] after its steps")


class Wasserstein(AdversarialLoss):
    """Wasserstein GAN (Arjovsky et al. 2017), optionally with weight clipping to [-c, c].

    critic:    E D(G(z)) - E D(x)       generator: -E D(G(z))
    metric ``wasserstein`` = E D(x) - E D(G(z)), the critic's estimate of W1 (up to its Lipschitz constant).
    """

    def __init__(self, critic: nn.Module, params: WassersteinParams) -> None:
        super().__init__(critic, params)
        self.clip = params.clip

    def critic_side(self, d: Tensor, real: bool) -> Tensor:
        return -d if real else d

    def generator_side(self, d: Tensor, real: bool) -> Tensor:
        return -d if real else d

    def forward(self, inputs: Mapping[str, Any], terms: Collection[str]) -> dict[str, Tensor]:
        out = super().forward(inputs, terms)
        if "d_real" in out:
            out["wasserstein"] = out["d_real"] - out["d_fake"]
        return out

    def after_step(self, terms: Collection[str]) -> None:
        super().after_step(terms)
        if self.clip is not None and "critic" in terms:
            with torch.no_grad():
                for parameter in self.critic.parameters():
                    if parameter.requires_grad:  # as the critic's player trains it: a frozen one stays as it is
                        parameter.clamp_(-self.clip, self.clip)

    @property
    def keeps_critic_lipschitz(self) -> bool:
        return self.clip is not None

    def advise(self, trained: Mapping[str, Loss]) -> list[str]:
        """The critic must be kept K-Lipschitz for E D(x) − E D(G(z)) to estimate K·W1: by clipping, a gradient penalty
        (WGAN-GP's; R1's, at the real points alone, does not) or spectral norm; without any, its scores grow without bound (Arjovsky et al. 2017, §3).  Clipping or a penalty
        counts when a player trains it, on this loss or another of the same critic.
        Spectral norm does not count in a critic with batch norm, which divides by the batch's spread, a factor nothing bounds.
        """
        kept = any(isinstance(loss, CriticLoss) and loss.critic is self.critic and loss.keeps_critic_lipschitz for loss in trained.values())
        normalised = spectrally_normalised(self.critic)
        if kept or (normalised and not batch_normalised(self.critic)):
            return []
        spectral = "spectral_norm undone by its batch norm" if normalised else "no spectral_norm"
        return [
            f"trains a critic that nothing keeps Lipschitz (no clip, no gradient_penalty on it that a player trains, {spectral}), "
            "so its scores can grow without bound and `wasserstein` estimates nothing (Arjovsky et al. 2017): set clip (0.01 in the "
            "paper), add a gradient_penalty loss on the critic to the critic's terms (Gulrajani et al. 2017), or give the critic "
            "spectral_norm: true (Miyato et al. 2018) and no batch norm"
        ]


def spectrally_normalised(module: nn.Module) -> bool:
    """Whether a layer of ``module`` has a spectrally normalised weight (Miyato et al. 2018), by torch's parametrization or its older hook."""
    for layer in module.modules():
        parametrizations = [p for chain in getattr(layer, "parametrizations", {}).values() for p in chain]
        if any(isinstance(p, _SpectralNorm) for p in parametrizations) or any(isinstance(h, SpectralNorm) for h in layer._forward_pre_hooks.values()):
            return True
    return False


def batch_normalised(module: nn.Module) -> bool:
    """Whether a layer of ``module`` normalises by the statistics of the batch (``BatchNorm*``), so that its output for
    one example depends on the others in the batch."""
    return any(isinstance(layer, nn.modules.batchnorm._BatchNorm) for layer in module.modules())


class Hinge(AdversarialLoss):
    """Hinge loss (Lim & Ye 2017; Miyato et al. 2018).

    critic:    E max(0, 1 - D(x)) + E max(0, 1 + D(G(z)))       generator: -E D(G(z))
    """

    def critic_side(self, d: Tensor, real: bool) -> Tensor:
        return F.relu(1.0 - d) if real else F.relu(1.0 + d)

    def generator_side(self, d: Tensor, real: bool) -> Tensor:
        return -d if real else d


class LeastSquaresParams(AdversarialParams):
    real_target: float = Field(1.0, description="b: the critic's target for real data")
    fake_target: float = Field(0.0, description="a: the critic's target for fake data")
    generator_target: float = Field(1.0, description="c: the value the generator wants D to give fakes")


class LeastSquares(AdversarialLoss):
    """Least-squares GAN (Mao et al. 2017) with targets a (fake), b (real), c (generator).

    critic:    ½ E (D(x) - b)² + ½ E (D(G(z)) - a)²       generator: ½ E (D(G(z)) - c)²
    (with generator_on_real, ½ E (D(real) - a)² is added to the generator term)
    """

    def __init__(self, critic: nn.Module, params: LeastSquaresParams) -> None:
        super().__init__(critic, params)
        self.targets = {"real": params.real_target, "fake": params.fake_target, "gen": params.generator_target}

    def critic_side(self, d: Tensor, real: bool) -> Tensor:
        return 0.5 * (d - self.targets["real" if real else "fake"]) ** 2

    def generator_side(self, d: Tensor, real: bool) -> Tensor:
        return 0.5 * (d - self.targets["gen" if real else "fake"]) ** 2


def _builder(cls: type[AdversarialLoss]) -> Callable[[AdversarialParams, BuildContext], AdversarialLoss]:
    def build(params: AdversarialParams, ctx: BuildContext) -> AdversarialLoss:
        return cls(ctx.component(params.critic), params)

    build.__doc__ = cls.__doc__
    return build


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    losses = [
        ("minimax", Minimax, JensenShannonParams),
        ("non_saturating", NonSaturating, JensenShannonParams),
        ("wasserstein", Wasserstein, WassersteinParams),
        ("hinge", Hinge, AdversarialParams),
        ("least_squares", LeastSquares, LeastSquaresParams),
    ]
    return [ComponentType(name, "loss", params, _builder(cls)) for name, cls, params in losses]
