r"""The flow as a distribution, its negative log-likelihood loss and its sampler.

A flow pushes a base distribution :math:`p_Z` through the inverse of a bijector
chain :math:`f` (``forward`` maps data to noise):

.. math:: \log p_X(x) = \log p_Z(f(x)) + \log|\det J_f(x)|, \qquad x = f^{-1}(z),\ z \sim p_Z.

(Rezende & Mohamed 2015, arXiv:1505.05770; Papamakarios et al. 2021, arXiv:1912.02762.)

A spec lists the chain in three parts, applied in this order to data: ``head``
(preprocessing such as dequantization or ``logit``), ``bijectors`` repeated
``repeat`` times, then ``tail`` (e.g. NICE's scaling), nearest the base.  Copy
``k > 0`` of the block is built again from its spec (with the inline components
inside it), as nflows and zuko build each layer: fresh initial values by each
bijector's own scheme (a zero-initialised last layer still starts as the identity),
and a ``seed`` parameter becomes ``seed + k·1000003``, so a ``random_permutation`` or
a MAF's ``order: random`` is a new draw per copy; copy 0 is the block as written::

    flow:
      type: flow
      base: {type: standard_normal, shape: [64]}
      head: [{type: logit, shape: [64]}]
      bijectors:
        - {type: affine_coupling, shape: [64], hidden: [128, 128]}
        - {type: reverse, shape: [64]}
      repeat: 8
"""

from __future__ import annotations

import copy
import math
import warnings
from itertools import pairwise
from typing import Any, Mapping

import torch
from pydantic import ConfigDict, Field, PositiveFloat, PositiveInt
from torch import Tensor, nn
from torch.distributions import Distribution, constraints

from compose_gen import (
    Bijector,
    BuildContext,
    Chain,
    ClassConditions,
    ComponentType,
    Loss,
    Params,
    Ref,
    Sampler,
    SpecWarning,
    Value,
    broadcast_value,
    draw_count,
    hookimpl,
    importance_sampled_log_likelihood,
    repeat_for_draws,
)
from compose_gen.core import bits_per_dim, check_ladj, continuous_density_caveat, first_flagged, not_in_data_space
from compose_gen_plugins.flows import context_shape_of
from compose_gen_plugins.sampling import ByClassParams

__all__ = ["Flow", "FlowDistribution", "FlowNLL", "FlowSampler"]


class FlowDistribution(Distribution):
    r"""The distribution of :math:`x = f^{-1}(z)`, :math:`z \sim p_Z`, given an optional context.

    With a context its batch shape is the context's.  Draws come from ``draw_base``
    (default ``base``): :class:`Flow` passes the base at a temperature :math:`T`, as the
    prior defines it (``prior(temperature=T)``: a Gaussian's σ times :math:`T`, which
    samples :math:`p_Z(z)^{1/T^2}`, Kingma & Dhariwal 2018; a mixture's σ_k times
    :math:`T`, each component about its own mean, so low temperatures sharpen draws
    around the modes).  ``log_prob`` is always the base's, at :math:`T = 1`, and
    :math:`-\infty` outside the support (a bounded first bijector's domain, such as a
    logit's (0, 1)), where the bijectors would give NaN.
    """

    has_rsample = True
    arg_constraints: dict = {}

    def __init__(
        self, base: Distribution, transform: Bijector, context: Tensor | None = None, draw_base: Distribution | None = None
    ) -> None:
        if base.batch_shape:
            raise ValueError(f"a flow's base must have an empty batch shape, not {tuple(base.batch_shape)}")
        self.base, self.transform, self.context = base, transform, context
        self.draw_base = base if draw_base is None else draw_base
        batch_shape = torch.Size()
        if context is not None:
            batch_shape = context.shape[: context.dim() - len(context_shape_of(transform) or ())]
        super().__init__(batch_shape, transform.event_shape, validate_args=False)

    @property
    def support(self) -> constraints.Constraint:
        return constraints.independent(self.transform.domain, len(self.event_shape))

    def log_prob(self, x: Tensor) -> Tensor:
        event = self.event_shape
        if x.shape[x.dim() - len(event) :] != event:
            layout = "flat" if len(event) == 1 else "image"
            same = x.dim() >= 2 and x.shape[1:].numel() == event.numel()
            hint = f"; that is the same {event.numel()} values per example: set the data's `shape: {layout}`" if same else ""
            raise ValueError(f"the flow models values of shape {tuple(event)}, but x has shape {tuple(x.shape)} (batch first){hint}")
        z, ladj = self.transform(broadcast_value(x, self), self.context)
        log_p = self.base.log_prob(z) + ladj
        if self.transform.domain is constraints.real:  # every x is inside: no check on the training path
            return log_p
        unknown = x.isnan().flatten(x.dim() - len(event)).any(-1)  # NaN is no point outside the support: it stays NaN
        return log_p.masked_fill(~self.support.check(x) & ~unknown, -math.inf)

    def rsample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> Tensor:
        if not self.draw_base.has_rsample:
            raise NotImplementedError(
                f"the flow's base ({type(self.draw_base).__name__}) has no reparameterised samples, so neither has the flow; use sample"
            )
        return self._push(self.draw_base.rsample(torch.Size(sample_shape) + self.batch_shape), sample_shape)

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> Tensor:
        """Draws without gradients; unlike :meth:`rsample`, for any base (a mixture of Gaussians too)."""
        with torch.no_grad():
            return self._push(self.draw_base.sample(torch.Size(sample_shape) + self.batch_shape), sample_shape)

    def _push(self, z: Tensor, sample_shape: torch.Size | tuple[int, ...]) -> Tensor:
        """Base draws ``z`` through the inverse of the chain."""
        context = None if self.context is None else self.context.expand(*sample_shape, *self.context.shape)
        return self.transform.inverse(z, context)[0]


class Flow(nn.Module):
    """A normalizing flow component: ``flow(context)`` is a :class:`FlowDistribution`."""

    graph_methods = ("sample", "rsample", "log_prob")

    def __init__(self, base: nn.Module, transform: Bijector) -> None:
        super().__init__()
        self.base, self.transform = base, transform
        self.context_shape = context_shape_of(transform)
        base_shape = base().event_shape
        if base_shape != transform.out_event_shape:
            raise ValueError(
                f"the base has event shape {tuple(base_shape)} but the bijectors output "
                f"{tuple(transform.out_event_shape)}"
            )

    @property
    def event_shape(self) -> torch.Size:
        return self.transform.event_shape

    def forward(self, context: Tensor | None = None, temperature: float = 1.0) -> FlowDistribution:
        if context is not None and self.context_shape is None:
            raise ValueError("this flow takes no context, but one was given")
        if context is not None and (context.dim() < len(self.context_shape) + 1 or context.shape[-len(self.context_shape) :] != self.context_shape):
            hint = " (integer labels? for K classes the condition is one_hot(y, K), with context_features: K)" if context.dim() == 1 else ""
            raise ValueError(
                f"this flow takes one context row of shape {tuple(self.context_shape)} per example, got a context of shape {tuple(context.shape)}{hint}"
            )
        base = self.base()
        return FlowDistribution(base, self.transform, context, base if temperature == 1.0 else self.base(temperature))

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """:math:`\\log p(x \\mid \\text{context})`, one value per example."""
        return self(context).log_prob(x)

    def rsample(self, like: Tensor | int, context: Tensor | None = None, temperature: float = 1.0) -> Tensor:
        """``len(like)`` (or ``like``) reparametrised draws; with a context, one draw per context row."""
        return self._draw("rsample", like, context, temperature)

    def sample(self, like: Tensor | int, context: Tensor | None = None, temperature: float = 1.0) -> Tensor:
        """Like :meth:`rsample`, without gradients, for any base."""
        return self._draw("sample", like, context, temperature)

    def _draw(self, method: str, like: Tensor | int, context: Tensor | None, temperature: float) -> Tensor:
        shape = () if context is not None else (draw_count(like),)
        return getattr(self(context, temperature), method)(shape)


class FlowNLL(Loss):
    r"""Maximum likelihood: ``loss`` is the mean NLL in data space, in nats.

    :math:`-\log p_\text{data}(u) = -\log p(x \mid c) - \log|\det J_\text{pre}|`, where the
    preprocessing's log-determinant is the dataset's constant ``ladj_to_model`` plus,
    when its ``transforms`` have one (a logit step), the per-example batch field
    named by ``ladj``.  Metrics: ``nll`` (the same) and ``bits_per_dim``.
    """

    def __init__(self, flow: Flow, ladj_to_model: float = 0.0) -> None:
        super().__init__()
        self.flow, self.ladj_to_model = flow, ladj_to_model

    def forward(self, inputs: dict[str, Tensor], terms: frozenset[str]) -> dict[str, Tensor]:
        log_p = self.flow.log_prob(inputs["x"], inputs.get("context")) + inputs.get("ladj", 0.0)
        nll = -log_p.mean() - self.ladj_to_model  # in data space: p_data(u) = p_model(x) |det ∂x/∂u|
        return {"loss": nll, "nll": nll.detach(), "bits_per_dim": bits_per_dim(nll.detach(), self.flow.event_shape.numel())}

    likelihood_inputs = ("x", "context")

    #: Noise draws per pass of :meth:`log_likelihood` for a flow that dequantizes: memory grows with it × the batch.
    chunk = 250

    def log_likelihood(self, inputs: Mapping[str, Any], samples: int, ladj: Tensor) -> Tensor:
        r"""log p(x | c) = log p_Z(f(x; c)) + log|det ∂f/∂x| + ladj, exact, so ``samples`` is not used, unless the flow
        draws noise: dequantization's u makes it :math:`\log P(x) = \log \mathbb E_u\, p(f(x, u))`, estimated by importance
        sampling with ``samples`` draws of u, a bound that tightens from the one-draw bound of training and of the test
        NLL as ``samples`` grows (Ho et al. 2019, Flow++, section 3.1)."""
        x, context = inputs["x"], inputs.get("context")
        if not self.flow.transform.draws_noise:
            return self.flow.log_prob(x, context) + ladj

        def log_weights(n: int) -> Tensor:
            repeated_context = None if context is None else repeat_for_draws(context, n)
            return self.flow.log_prob(repeat_for_draws(x, n), repeated_context).unflatten(0, (n, len(x)))

        return importance_sampled_log_likelihood(log_weights, samples, self.chunk) + ladj


class FlowSampler(Sampler):
    """Draws ``n`` examples ``f⁻¹(z; c)`` at temperature ``spec temperature × call temperature``, given a context c or not."""

    def __init__(self, flow: Flow, temperature: float = 1.0, conditions: ClassConditions | None = None) -> None:
        super().__init__()
        self.flow, self.temperature, self.conditions = flow, temperature, conditions
        self.distortion = None if temperature == 1 else f"temperature {temperature:g} (temperature 1 draws from the model)"

    def sample(self, n: int, temperature: float = 1.0, context: Tensor | None = None) -> Tensor:
        return self.flow.sample(n, context, temperature=self.temperature * temperature)


class FlowParams(Params):
    """A flow: a base prior and a bijector chain ``head + bijectors × repeat + tail`` (data → noise)."""

    base: Ref("prior") = Field(..., description="base distribution p_Z of the noise z")  # type: ignore[valid-type]
    bijectors: list[Ref("bijector")] = Field(  # type: ignore[valid-type]
        min_length=1, description="block repeated `repeat` times in the chain f (data → noise)"
    )
    repeat: PositiveInt = Field(
        1,
        le=1000,
        description="copies of the bijectors block (at most 1000), each built afresh: own initial values, and a `seed` made "
        "seed + k·1000003 in copy k",
    )
    head: list[Ref("bijector")] = Field([], description="preprocessing before the block, e.g. logit")  # type: ignore[valid-type]
    tail: list[Ref("bijector")] = Field([], description="bijectors after the block, nearest p_Z")  # type: ignore[valid-type]


class FlowNLLParams(Params):
    """The flow's negative log-likelihood of ``x`` (given ``context``), in data space."""

    flow: Ref("flow") = Field(..., description="the flow whose negative log-likelihood is taken")  # type: ignore[valid-type]
    x: Value = Field("x", description="value holding the data x")
    context: Value | None = Field(None, description="value holding the context c; None: unconditional")
    ladj: Value | None = Field(
        None, description="batch field with the per-example log-det of the dataset's transforms (ladj_x)"
    )


class FlowSamplerParams(ByClassParams):
    """Sample a flow at a temperature (by class, for a class-conditional flow)."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"flow": "flow", "temperature": 0.7}, {"flow": "flow", "classes": 10, "condition": "c"}]}
    )
    flow: Ref("flow") = Field(..., description="the flow to sample")  # type: ignore[valid-type]
    temperature: PositiveFloat = Field(
        1.0, description="temperature T, times the call's: z is drawn from the base at T (its σ, or each mixture component's, times T)"
    )


def chain_of(bijectors: list[Bijector], names: list[str] | None = None) -> Chain:
    """A :class:`Chain` of ``bijectors``, after checking that consecutive event shapes match and that the conditional
    ones read one context shape.

    ``names`` say where each bijector is written (``head[0]``, ``bijectors[1]``), for the error.
    """
    names = names or [f"bijector {i}" for i in range(len(bijectors))]
    for (a, b), (first, second) in zip(pairwise(bijectors), pairwise(names), strict=True):
        if a.out_event_shape != b.event_shape:
            raise ValueError(
                f"{first} ({type(a).__name__}) outputs event shape {tuple(a.out_event_shape)} but "
                f"{second} ({type(b).__name__}) takes {tuple(b.event_shape)}"
            )
    readers: dict[torch.Size, str] = {}  # each context shape, by the first bijector that reads it
    for bijector, name in zip(bijectors, names, strict=True):
        shape = context_shape_of(bijector)
        if shape is not None:
            readers.setdefault(shape, f"{name} ({type(bijector).__name__}) reads a context of shape {tuple(shape)}")
    if len(readers) > 1:
        readers_text = ", ".join(readers.values())
        raise ValueError(f"the bijectors of one flow must read the same context, but {readers_text}: give them the same context_features")
    return Chain(bijectors)


def build_flow(params: FlowParams, ctx: BuildContext) -> Flow:
    """A normalizing flow log p(x) = log p_Z(f(x)) + log|det J_f(x)| (Rezende & Mohamed 2015).

    f = f_L ∘ … ∘ f_1, the chain head, bijectors × repeat, tail (data → noise), so
    log|det J_f(x)| = Σ_l log|det J_{f_l}(h_{l−1})|, h_0 = x, h_l = f_l(h_{l−1});
    draws are x = f⁻¹(z), z ~ p_Z.  With a context c: p(x|c) = p_Z(f(x; c)) |det J_f(x; c)|.

    Rezende & Mohamed 2015, "Variational Inference with Normalizing Flows"; Dinh et al. 2015, "NICE: Non-linear
    Independent Components Estimation"; Papamakarios et al. 2021, "Normalizing Flows for Probabilistic Modeling and Inference".
    """
    rebuild = getattr(ctx, "rebuild", None)  # the compiler's; a context serving ready-made modules gives deep copies
    if rebuild is None:
        block = [ctx.component(ref) for ref in params.bijectors]
        repeated = block + [copy.deepcopy(b) for _ in range(params.repeat - 1) for b in block]
    else:
        repeated = [rebuild(ref, k) for k in range(params.repeat) for ref in params.bijectors]
    head = [ctx.component(ref) for ref in params.head]
    tail = [ctx.component(ref) for ref in params.tail]
    copies = [f" (copy {r + 1} of {params.repeat})" if params.repeat > 1 and r else "" for r in range(params.repeat)]
    names = [
        *(f"head[{i}]" for i in range(len(head))),
        *(f"bijectors[{i}]{copies[r]}" for r in range(params.repeat) for i in range(len(params.bijectors))),
        *(f"tail[{i}]" for i in range(len(tail))),
    ]
    return Flow(ctx.component(params.base), chain_of(head + repeated + tail, names))


def build_flow_nll(params: FlowNLLParams, ctx: BuildContext) -> FlowNLL:
    """Flow negative log-likelihood in nats and bits/dim, in data space.

    −log p(x) = −log p_Z(f(x)) − log|det ∂f/∂x|  (given a context c, f(x; c)).

    loss = nll = the batch mean of −log p_data(u) = −log p(x) − log|det ∂x/∂u|, where x = pre(u) is the dataset's
    preprocessing: its constant log-determinant (e.g. −D ln 256 for values 0..255 scaled to [0, 1)) plus, with
    ``ladj``, the per-example one of its transforms; bits_per_dim = nll / (D ln 2), D the number of values of x.
    A flow that dequantizes draws its noise u per example, so the loss estimates E_u[−log p(x; u)] ≥
    −log E_u p(x; u) = −log P(x), a bound on the discrete data's negative log-likelihood.

    Dinh et al. 2015, "NICE: Non-linear Independent Components Estimation"; Rezende & Mohamed 2015, "Variational
    Inference with Normalizing Flows"; Papamakarios et al. 2021, "Normalizing Flows for Probabilistic Modeling and Inference".
    """
    flow = ctx.component(params.flow)
    if params.context is not None and flow.context_shape is None:
        raise ValueError(
            f"`context: {params.context}` is given, but flow {params.flow!r} takes no context: remove `context:`, "
            "or give the flow's bijectors context_features"
        )
    if ctx.data is None:
        return FlowNLL(flow)
    check_ladj(params.x, params.ladj, ctx.data.train.fields)
    x = ctx.data.train.fields.get(params.x)
    if x is None:  # a graph value: the data's log-determinant does not describe it
        warnings.warn(SpecWarning(not_in_data_space(params.x)), stacklevel=2)
        return FlowNLL(flow)
    outside = ~flow.transform.domain.check(x)
    if bool(outside.any()):  # the dry run's few rows may all lie inside
        example, value = first_flagged(x, outside)
        raise ValueError(
            f"flow {params.flow!r} takes values in {flow.transform.domain} (its first bijector's domain), but the train split's "
            f"{params.x!r} leave it: example {example} holds {value:g}; scale the data into it (a `scale` transform), or, where it "
            "excludes its ends, give a logit an `alpha` above 0 or dequantize the data first"
        )
    caveat = None if flow.transform.draws_noise else continuous_density_caveat(x)
    if caveat:
        advice = "dequantize first, e.g. the flow's `head: [{type: dequantize, shape: [...], levels: L}]`"
        message = f"{caveat}, so the density of flow {params.flow!r} can grow without bound there: the NLL falls forever and bits/dim bound nothing; {advice}"
        warnings.warn(SpecWarning(message), stacklevel=2)
    return FlowNLL(flow, ctx.data.train.ladj_to_model)


def build_flow_sampler(params: FlowSamplerParams, ctx: BuildContext) -> FlowSampler:
    """Sample x = f⁻¹(z), z drawn from the base at temperature T (Kingma & Dhariwal 2018).

    x = f⁻¹(z; c), z ~ p_{Z,T}: the base with its σ (a mixture's σ_k, each about its own mean) times
    T = temperature × the call's; for a Gaussian base p_{Z,T}(z) ∝ p_Z(z)^{1/T²}, and T = 1 draws from p(x) itself.
    With ``classes`` K, example i is drawn given the condition c made from the label i mod K.

    Rezende & Mohamed 2015, "Variational Inference with Normalizing Flows"; temperature: Kingma & Dhariwal 2018,
    "Glow: Generative Flow with Invertible 1x1 Convolutions".
    """
    flow = ctx.component(params.flow)
    conditions = params.conditions()
    if flow.context_shape is None and conditions is not None:
        raise ValueError("the flow takes no context, so it cannot be sampled by class")
    if flow.context_shape is not None and params.condition is None:
        condition = "`condition` to the graph value it was trained on (its loss's `context:`)"
        missing = condition if params.classes is not None else f"`classes` (the number of classes) and {condition}"
        raise ValueError(f"the flow reads a context of shape {tuple(flow.context_shape)}: set {missing}")
    return FlowSampler(flow, params.temperature, conditions)


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    return [
        ComponentType("flow", "flow", FlowParams, build_flow),
        ComponentType("flow_nll", "loss", FlowNLLParams, build_flow_nll),
        ComponentType("flow_sampler", "sampler", FlowSamplerParams, build_flow_sampler),
    ]
