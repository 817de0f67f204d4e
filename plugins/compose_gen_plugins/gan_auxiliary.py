"""Losses that accompany an adversarial loss: gradient penalties, feature matching, AC-GAN
class terms, and CycleGAN's cycle-consistency and identity losses.

They compose with any loss of :mod:`compose_gen_plugins.adversarial` through a player's
terms, e.g. WGAN-GP = ``wasserstein`` + ``gradient_penalty``::

    losses:
      adv: {type: wasserstein, critic: critic, real: x, fake: fake}
      gp:  {type: gradient_penalty, critic: critic, real: x, fake: fake, weight: 10}
    players:
      critic: {params: [critic], terms: [adv.critic, gp.critic], steps: 5, ...}

Critic inputs follow the conventions of :mod:`compose_gen_plugins.adversarial`
(``real``/``fake`` name one value or a list passed as ``critic(*values)``).
"""

from __future__ import annotations

from typing import Any, Collection, Literal, Mapping

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from compose_gen import BuildContext, ComponentType, Loss, Params, Ref, Value, hookimpl
from compose_gen_plugins.adversarial import CriticLoss, SideParams, batch_normalised, check_sides, critic_inputs, score, side_names

__all__ = ["AuxiliaryClassifier", "FeatureMatching", "GradientPenalty", "MeanDistance"]


class GradientPenaltyParams(Params):
    critic: Ref("critic", "network") = Field(  # type: ignore[valid-type]
        ..., description="critic D whose input gradient is penalised"
    )
    real: Value | list[Value] = Field("x", description="critic input(s) for real data")
    fake: Value | list[Value] = Field(..., description="critic input(s) for generated data, interpolated with real")
    labels: Value | None = Field(None, description="labels passed last to a conditional critic (kept, not mixed)")
    weight: float = Field(10.0, ge=0.0, description="λ")


class R1Params(Params):
    critic: Ref("critic", "network") = Field(  # type: ignore[valid-type]
        ..., description="critic D whose input gradient is penalised"
    )
    real: Value | list[Value] = Field("x", description="critic input(s) for real data, where the gradient is taken")
    labels: Value | None = Field(None, description="labels passed last to a conditional critic")
    gamma: float = Field(10.0, ge=0.0, description="γ; the term is γ/2 · E‖∇D(x)‖²")


def _interpolate(real: Tensor, fake: Tensor, alpha: Tensor) -> Tensor:
    """``alpha·real + (1 − alpha)·fake`` per example, in the wider precision (a generator under autocast gives bf16)."""
    dtype = torch.promote_types(real.dtype, fake.dtype)
    return torch.lerp(fake.to(dtype), real.to(dtype), alpha.view(-1, *[1] * (real.dim() - 1)).to(dtype))


class GradientPenalty(CriticLoss):
    """Critic term ``weight · E (‖∇ D(x̂)‖₂ - center)²`` with a metric ``grad_norm`` = E ‖∇ D(x̂)‖₂.

    * ``gradient_penalty`` (WGAN-GP, Gulrajani et al. 2017): ``x̂ = α·real + (1-α)·fake``,
      ``α ~ U[0, 1]`` per example, center 1, weight λ.
    * ``r1_penalty`` (Mescheder et al. 2018): ``x̂ = real``, center 0, weight γ/2.

    D(x̂) is the example's score as the adversarial losses read it: the mean of the
    critic's outputs for that example (one for most critics, K or a patch map for others).

    With several critic inputs (joint critics) every floating-point input is interpolated
    with the same α and the norm is over all of them; labels pass unchanged.  The first
    dimension is the batch.  The penalty is differentiable in the critic's parameters.
    """

    terms = ("critic",)

    def __init__(
        self,
        critic: nn.Module,
        weight: float,
        center: float,
        interpolate: bool,
        names: Mapping[str, list[str]] | None = None,
    ) -> None:
        super().__init__(critic, names)
        self.weight = weight
        self.center = center
        self.interpolate = interpolate
        self.term_inputs = {"critic": ("real", "fake", "labels") if interpolate else ("real", "labels")}

    @property
    def keeps_critic_lipschitz(self) -> bool:
        """WGAN-GP's penalty does, between and around the two distributions; R1's only flattens the critic at the real
        points, which bounds nothing where E D(x) − E D(G(z)) needs it."""
        return self.weight > 0 and self.interpolate

    def points(self, inputs: Mapping[str, Any]) -> list[Tensor]:
        """Where the gradient is taken: detached copies of real inputs or interpolates."""
        real = [r.detach() for r in critic_inputs(inputs, "real", with_labels=False)]
        if not self.interpolate:
            return real
        check_sides(inputs, self.names)
        fake = [f.detach() for f in critic_inputs(inputs, "fake", with_labels=False)]
        first = real[0]
        if fake[0].shape[:1] != first.shape[:1]:
            raise ValueError(
                f"gradient_penalty interpolates real and fake example by example, so they need the same batch size: "
                f"real has {first.shape[0]} examples, fake {fake[0].shape[0]}; draw as many fakes as real examples"
            )
        alpha = torch.rand(first.shape[0], device=first.device, dtype=first.dtype)
        return [_interpolate(r, f, alpha) if r.is_floating_point() else r for r, f in zip(real, fake, strict=True)]

    def forward(self, inputs: Mapping[str, Any], terms: Collection[str]) -> dict[str, Tensor]:
        labels = inputs.get("labels")
        create_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            points = [p.requires_grad_() if p.is_floating_point() else p for p in self.points(inputs)]
            d = score(self.critic, points if labels is None else [*points, labels])
            per_example = d.reshape(len(d), -1).mean(1)  # as the losses average a patch critic's scores
            wrt = [p for p in points if p.requires_grad]
            grads = torch.autograd.grad(per_example.sum(), wrt, create_graph=create_graph)
        flat = torch.cat([g.reshape(g.shape[0], -1) for g in grads], dim=1)
        norm = torch.linalg.vector_norm(flat, dim=1)
        penalty = flat.pow(2).sum(1) if self.center == 0 else (norm - self.center).pow(2)
        return {"critic": self.weight * penalty.mean(), "grad_norm": norm.detach().mean()}


class FeatureMatchingParams(SideParams):
    weight: float = Field(1.0, ge=0.0, description="weight of the feature-matching term")


class FeatureMatching(CriticLoss):
    """Feature matching (Salimans et al. 2016), a generator term: ``weight · ‖E f(real) - E f(fake)‖₂²``,

    with ``f = critic.features`` (the critic's representation under its output layer).
    """

    terms = ("generator",)
    generator_term = "generator"

    def __init__(self, critic: nn.Module, weight: float, names: Mapping[str, list[str]] | None = None) -> None:
        super().__init__(critic, names)
        self.weight = weight

    def forward(self, inputs: Mapping[str, Any], terms: Collection[str]) -> dict[str, Tensor]:
        check_sides(inputs, self.names)
        f_real = self.critic.features(*critic_inputs(inputs, "real"))
        f_fake = self.critic.features(*critic_inputs(inputs, "fake"))
        mean_real = f_real.reshape(-1, f_real.shape[-1]).mean(0).detach()
        mean_fake = f_fake.reshape(-1, f_fake.shape[-1]).mean(0)
        return {"generator": self.weight * (mean_real - mean_fake).pow(2).sum()}


class AuxiliaryClassifierParams(Params):
    critic: Ref("critic", "network") = Field(  # type: ignore[valid-type]
        ..., description="critic D returning (score, class_logits)"
    )
    real: Value | list[Value] = Field("x", description="critic input(s) for real data")
    fake: Value | list[Value] = Field(..., description="critic input(s) for generated data")
    labels: Value = Field("y", description="classes of real")
    fake_labels: Value | None = Field(None, description="classes the generator was given (default: labels)")
    weight: float = Field(1.0, ge=0.0, description="weight of the cross-entropy terms")


class AuxiliaryClassifier(CriticLoss):
    """AC-GAN class terms (Odena et al. 2017) on a critic returning ``(score, class_logits)``; CE = cross-entropy.

    critic:    weight · (CE(C(real), labels) + CE(C(fake), fake_labels))
    generator: weight · CE(C(fake), fake_labels)
    Metrics: ``accuracy_real``, ``accuracy_fake`` of the auxiliary classifier.
    """

    terms = ("critic", "generator")
    term_inputs = {"critic": ("real", "fake", "labels", "fake_labels"), "generator": ("fake", "labels", "fake_labels")}

    def __init__(self, critic: nn.Module, weight: float, names: Mapping[str, list[str]] | None = None) -> None:
        super().__init__(critic, names)
        self.weight = weight

    def _cross_entropy(self, inputs: Mapping[str, Any], side: str, labels: Tensor) -> tuple[Tensor, Tensor]:
        conditional = getattr(self.critic, "num_classes", None) is not None  # a projection critic scores (x, y)
        out = self.critic(*critic_inputs(inputs, side, with_labels=conditional))
        if not isinstance(out, tuple):
            raise TypeError("auxiliary_classifier: the critic returns no class logits; give it ac_classes")
        logits, labels = out[1].reshape(-1, out[1].shape[-1]), labels.reshape(-1).long()
        accuracy = (logits.detach().argmax(-1) == labels).to(logits.dtype).mean()
        return F.cross_entropy(logits, labels), accuracy

    def forward(self, inputs: Mapping[str, Any], terms: Collection[str]) -> dict[str, Tensor]:
        if "critic" in terms:
            check_sides(inputs, self.names)
        fake_labels = inputs.get("fake_labels")
        if fake_labels is None:
            fake_labels = inputs["labels"]
        ce_fake, accuracy_fake = self._cross_entropy(inputs, "fake", fake_labels)
        out = {"accuracy_fake": accuracy_fake}
        if "generator" in terms:
            out["generator"] = self.weight * ce_fake
        if "critic" in terms:
            ce_real, out["accuracy_real"] = self._cross_entropy(inputs, "real", inputs["labels"])
            out["critic"] = self.weight * (ce_real + ce_fake)
        return out


Distance = Literal["l1", "l2"]


class CycleParams(Params):
    real: Value = Field(..., description="a, the target of the reconstruction F(G(a))")
    reconstructed: Value = Field(description="F(G(real))")
    norm: Distance = Field("l1", description="distance: l1 (mean absolute) or l2 (mean squared) difference")
    weight: float = Field(10.0, ge=0.0, description="λ")


class IdentityParams(Params):
    real: Value = Field(..., description="b, the target of G(b)")
    mapped: Value = Field(description="G(real) for the generator G into real's own domain")
    norm: Distance = Field("l1", description="distance: l1 (mean absolute) or l2 (mean squared) difference")
    weight: float = Field(5.0, ge=0.0, description="0.5 λ in Zhu et al. 2017")


class MeanDistance(Loss):
    """``weight · mean |prediction - target|`` (l1) or ``weight · mean (prediction - target)²`` (l2), over all elements.

    * ``cycle_consistency`` (Zhu et al. 2017): target ``real`` a, prediction ``reconstructed`` F(G(a)).
    * ``identity_mapping`` (Zhu et al. 2017, after Taigman et al. 2017): target ``real`` b, prediction ``mapped`` G(b).
    """

    def __init__(
        self, target: str, prediction: str, norm: Distance, weight: float, names: Mapping[str, str] | None = None
    ) -> None:
        super().__init__()
        self.target, self.prediction = target, prediction
        self.norm = norm
        self.weight = weight
        self.names = dict(names or {})  # the values' names, for messages

    def forward(self, inputs: Mapping[str, Any], terms: Collection[str]) -> dict[str, Tensor]:
        prediction, target = inputs[self.prediction], inputs[self.target]
        if prediction.shape != target.shape:  # broadcasting would compare every example with every other
            given = {key: f"{key} {self.names[key]!r}" if key in self.names else key for key in (self.prediction, self.target)}
            raise ValueError(
                f"{given[self.prediction]} has shape {tuple(prediction.shape)} but {given[self.target]} has "
                f"{tuple(target.shape)}: the distance compares them element by element, so they need the same shape "
                "(the generators must map each domain's images to the other's shape and back)"
            )
        diff = prediction - target
        distance = diff.abs() if self.norm == "l1" else diff.pow(2)
        return {"loss": self.weight * distance.mean()}


def _per_example_critic(critic: nn.Module, penalty: str) -> nn.Module:
    """``critic``, unless batch norm makes each example's score depend on the others, which a gradient penalty cannot have.

    The penalty is on ∇ₓD(x) example by example; with batch norm D(x_i) reads the
    whole batch (Gulrajani et al. 2017, §4 recommend layer normalisation instead).
    """
    if batch_normalised(critic):
        raise ValueError(
            f"{penalty} penalises each example's gradient, but the critic has batch norm, which mixes the examples of a batch "
            "(Gulrajani et al. 2017): give the critic norm: layer or none (a conv_critic also takes instance); spectral_norm "
            "does not undo batch norm, so it needs one of those too"
        )
    return critic


def build_gradient_penalty(params: GradientPenaltyParams, ctx: BuildContext) -> GradientPenalty:
    """WGAN-GP critic term λ E (‖∇D(x̂)‖₂ - 1)² on random interpolates x̂ (Gulrajani et al. 2017)."""
    critic = _per_example_critic(ctx.component(params.critic), "gradient_penalty")
    return GradientPenalty(critic, params.weight, center=1.0, interpolate=True, names=side_names(params))


def build_r1_penalty(params: R1Params, ctx: BuildContext) -> GradientPenalty:
    """R1 critic term γ/2 E ‖∇D(x)‖² on real data (Mescheder et al. 2018)."""
    critic = _per_example_critic(ctx.component(params.critic), "r1_penalty")
    return GradientPenalty(critic, params.gamma / 2, center=0.0, interpolate=False, names=side_names(params))


def build_feature_matching(params: FeatureMatchingParams, ctx: BuildContext) -> FeatureMatching:
    """Feature-matching generator term ‖E f(x) - E f(G(z))‖² on critic features (Salimans et al. 2016)."""
    critic = ctx.component(params.critic)
    if not callable(getattr(critic, "features", None)):
        raise ValueError(f"feature_matching: critic {params.critic!r} has no features(x) method")
    return FeatureMatching(critic, params.weight, side_names(params))


def build_auxiliary_classifier(params: AuxiliaryClassifierParams, ctx: BuildContext) -> AuxiliaryClassifier:
    """AC-GAN cross-entropy terms of the critic's auxiliary classifier (Odena et al. 2017).

    With CE(C(x), c) = −log softmax(C(x))_c the classifier head's cross-entropy:
    critic = λ (CE(C(x_real), y) + CE(C(G(z, c)), c)), generator = λ CE(C(G(z, c)), c).

    Odena et al. 2017, "Conditional Image Synthesis with Auxiliary Classifier GANs".
    """
    critic = ctx.component(params.critic)
    if getattr(critic, "conditioning", None) == "concat":
        raise ValueError(
            f"critic {params.critic!r} reads the labels it would classify (num_classes with conditioning: concat), so its class "
            "logits could copy them: give it conditioning: projection, whose class head sees x alone, or no num_classes"
        )
    head = getattr(critic, "classifier", None)
    classes = ctx.data.train.classes() if ctx.data is not None and params.labels in ctx.data.train.fields else None
    if isinstance(head, nn.Linear) and classes is not None and classes > head.out_features:
        raise ValueError(
            f"the labels {params.labels!r} take {classes} classes (0..{classes - 1}), but critic {params.critic!r} "
            f"classifies {head.out_features} (its ac_classes); set `ac_classes: {classes}`"
        )
    return AuxiliaryClassifier(critic, params.weight, side_names(params))


def build_cycle(params: CycleParams, ctx: BuildContext) -> MeanDistance:
    """Cycle-consistency loss λ · mean |F(G(a)) - a| over every element (Zhu et al. 2017, as their code's L1Loss).

    L_cyc = λ · mean |F(G(a)) − a| (``norm: l1``) or λ · mean (F(G(a)) − a)² (``norm: l2``); each direction of a
    CycleGAN is one such loss.

    Zhu et al. 2017, "Unpaired Image-to-Image Translation using Cycle-Consistent Adversarial Networks".
    """
    return MeanDistance("real", "reconstructed", params.norm, params.weight, {"real": params.real, "reconstructed": params.reconstructed})


def build_identity(params: IdentityParams, ctx: BuildContext) -> MeanDistance:
    """Identity loss λ · mean |G(b) - b| over every element, for G mapping into b's domain (Zhu et al. 2017 use 0.5 of the cycle's λ).

    L_id = λ · mean |G(b) − b| (``norm: l1``) or λ · mean (G(b) − b)² (``norm: l2``): G leaves an image already
    in its target domain unchanged, which keeps colours in photo ↔ painting tasks.

    Zhu et al. 2017, "Unpaired Image-to-Image Translation using Cycle-Consistent Adversarial Networks", §5.2.
    """
    return MeanDistance("real", "mapped", params.norm, params.weight, {"real": params.real, "mapped": params.mapped})


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    return [
        ComponentType("gradient_penalty", "loss", GradientPenaltyParams, build_gradient_penalty),
        ComponentType("r1_penalty", "loss", R1Params, build_r1_penalty),
        ComponentType("feature_matching", "loss", FeatureMatchingParams, build_feature_matching),
        ComponentType("auxiliary_classifier", "loss", AuxiliaryClassifierParams, build_auxiliary_classifier),
        ComponentType("cycle_consistency", "loss", CycleParams, build_cycle),
        ComponentType("identity_mapping", "loss", IdentityParams, build_identity),
    ]
