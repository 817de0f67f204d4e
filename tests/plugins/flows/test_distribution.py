"""The flow as a distribution: closed forms, temperature, bits/dim in data space, context, sampling by class, wiring errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal

from compose_gen import Chain, ClassConditions, Splits, SpecWarning, TensorData
from compose_gen.compiler.build import SEED_STRIDE
from compose_gen.runtime import build
from compose_gen.spec import SpecError, load_spec
from compose_gen_plugins.distributions import StandardNormal
from compose_gen_plugins.flows.coupling import AffineCoupling
from compose_gen_plugins.flows.distribution import (
    Flow,
    FlowNLLParams,
    FlowParams,
    FlowSamplerParams,
    build_flow,
    build_flow_nll,
    build_flow_sampler,
)
from compose_gen_plugins.flows.dequantize import UniformDequantization
from compose_gen_plugins.flows.elementwise import ElementwiseAffine, Logit
from compose_gen_plugins.flows.glow import GlowParams, Squeeze, build_glow
from compose_gen_plugins.latent.priors import GaussianMixturePrior


class Context:
    """A build context serving components by name, and optionally data."""

    def __init__(self, data: Splits | None = None, **components) -> None:
        self.data, self.components = data, components

    def component(self, ref):
        return self.components[ref]


def affine(shape, log_scale: float, shift: float) -> ElementwiseAffine:
    bijector = ElementwiseAffine(shape)
    with torch.no_grad():
        bijector.log_scale.fill_(log_scale)
        bijector.shift.fill_(shift)
    return bijector


def affine_flow(repeat: int = 1, log_scale: float = 0.3, shift: float = -0.5, dims: int = 3):
    context = Context(base=StandardNormal((dims,)), f=affine((dims,), log_scale, shift))
    return build_flow(FlowParams(base="base", bijectors=["f"], repeat=repeat), context)


def test_log_prob_of_a_repeated_affine_flow_is_the_gaussian_closed_form():
    s, b = 0.3, -0.5
    flow = affine_flow(repeat=2, log_scale=s, shift=b)
    # f(f(x)) = e^{2s} x + b (e^s + 1) = z ~ N(0, I)  =>  x ~ N(-b (e^s + 1) e^{-2s}, e^{-2s})
    exact = Normal(-b * (math.exp(s) + 1) * math.exp(-2 * s), math.exp(-2 * s))
    x = torch.randn(10, 3)
    torch.testing.assert_close(flow.log_prob(x), exact.log_prob(x).sum(-1))
    first, second = flow.transform.bijectors
    assert first is not second and first.log_scale is not second.log_scale


def test_chain_order_is_head_then_repeated_block_then_tail():
    parts = {name: affine((2,), 0.0, 0.0) for name in ("h", "a", "b", "t")}
    flow = build_flow(
        FlowParams(base="base", head=["h"], bijectors=["a", "b"], repeat=3, tail=["t"]),
        Context(base=StandardNormal((2,)), **parts),
    )
    chain = list(flow.transform.bijectors)
    assert len(chain) == 8 and chain[0] is parts["h"] and chain[-1] is parts["t"]
    assert chain[1] is parts["a"] and chain[2] is parts["b"]
    assert all(chain[i] is not chain[j] for i in range(8) for j in range(i))


def test_samples_follow_the_flow_and_temperature_scales_the_variance():
    torch.manual_seed(0)
    s, b = 0.3, -0.5
    flow = affine_flow(log_scale=s, shift=b)
    for temperature in (1.0, 0.5):
        x = flow.sample(20000, temperature=temperature)
        torch.testing.assert_close(x.mean(0), torch.full((3,), -b * math.exp(-s)), atol=0.02, rtol=0)
        torch.testing.assert_close(x.var(0), torch.full((3,), (temperature * math.exp(-s)) ** 2), rtol=0.05, atol=0)
    sampler = build_flow_sampler(FlowSamplerParams(flow="flow", temperature=0.5), Context(flow=flow))
    assert sampler.sample(20000, temperature=2.0).var(0).sub(math.exp(-2 * s)).abs().max() < 0.05


def test_a_flow_on_a_mixture_base_samples_through_the_flow_but_has_no_rsample():
    """A mixture's component choice is discrete: draws need ``sample``, which a flow must not route through rsample."""
    torch.manual_seed(0)
    base = GaussianMixturePrior(latent=2, components=3)
    with torch.no_grad():
        base.loc.copy_(torch.tensor([[-4.0, 0.0], [0.0, 0.0], [4.0, 0.0]]))
        base.log_scale.fill_(math.log(0.1))
    flow = build_flow(FlowParams(base="base", bijectors=["f"]), Context(base=base, f=affine((2,), 0.0, -1.0)))  # x = z + 1
    x = flow.sample(3000)
    assert x.shape == (3000, 2)
    torch.testing.assert_close(x[:, 0].sort().values[[0, -1]].round(), torch.tensor([-3.0, 5.0]), atol=1.0, rtol=0)
    assert flow.log_prob(x).isfinite().all()
    with pytest.raises(NotImplementedError, match=r"the flow's base \(MixtureSameFamily\) has no reparameterised samples"):
        flow.rsample(4)


def test_temperature_draws_a_mixture_base_about_each_components_mean_and_keeps_log_prob():
    """At T → 0 a 2-mode mixture base gives its modes (through the flow), not the point between them."""
    torch.manual_seed(0)
    base = GaussianMixturePrior(latent=2, components=2)
    with torch.no_grad():
        base.loc.copy_(torch.tensor([[-5.0, -5.0], [5.0, 5.0]]))
        base.log_scale.fill_(math.log(0.5))
    flow = build_flow(FlowParams(base="base", bijectors=["f"]), Context(base=base, f=affine((2,), 0.0, -1.0)))  # x = z + 1
    for temperature in (0.0, 1e-3):
        x = flow.sample(400, temperature=temperature)
        nearest = torch.stack([(x - (m + 1)).norm(dim=-1) for m in (-5.0, 5.0)]).min(0).values
        assert nearest.max() < 0.01, f"T={temperature}: a draw {nearest.max():.3g} away from both modes"
        assert (x[:, 0] < 0).any() and (x[:, 0] > 0).any(), "both modes are drawn"
    half = flow.sample(4000, temperature=0.5)
    assert (half - half.round()).abs().max() > 0.01 and half.sub(torch.where(half < 1, -4.0, 6.0)).std(0).sub(0.25).abs().max() < 0.02
    x = torch.randn(7, 2)
    torch.testing.assert_close(flow(None, temperature=0.3).log_prob(x), flow.log_prob(x))


def test_temperature_scales_a_standard_normal_base_as_before():
    torch.manual_seed(1)
    flow = affine_flow(log_scale=0.3, shift=-0.5)
    torch.manual_seed(2)
    x = flow.sample(50, temperature=0.4)
    torch.manual_seed(2)
    z = 0.4 * torch.randn(50, 3)  # the draw the old z = μ + T(z₀ − μ) made
    torch.testing.assert_close(x, flow.transform.inverse(z)[0])
    torch.testing.assert_close(flow.sample(5, temperature=0.0), flow.transform.inverse(torch.zeros(5, 3))[0])


def repeated_flow(repeat: int, block: list[dict]):
    """The ``flow`` component of a spec on 2-D moons whose chain is ``block`` × ``repeat``."""
    spec = {
        "name": "repeated",
        "data": {"type": "moons", "n": 100},
        "components": {"flow": {"type": "flow", "base": {"type": "standard_normal", "shape": [2]}, "bijectors": block, "repeat": repeat}},
        "losses": {"nll": {"type": "flow_nll", "flow": "flow"}},
    }
    model, _ = build(load_spec(spec), "cpu")
    return model.component("flow")


def test_each_copy_of_a_repeated_block_is_an_independent_draw_with_its_own_initialisation():
    """As in nflows and zuko: a new permutation and MADE order per copy, fresh weights, each still starting as designed."""
    torch.manual_seed(0)
    block = [
        {"type": "maf", "shape": [2], "hidden": [8], "order": "random", "seed": 0},
        {"type": "random_permutation", "shape": [2]},
        {"type": "affine_coupling", "shape": [2], "hidden": [8]},
    ]
    chain = list(repeated_flow(4, block).transform.bijectors)
    mafs, perms, couplings = chain[0::3], chain[1::3], chain[2::3]
    assert [p.permutation.tolist() for p in perms] == [[1, 0]] * 4, "in 2-D every non-identity draw is the swap"
    for k, maf in enumerate(mafs):  # copy k draws its order from seed + k·SEED_STRIDE; copy 0 keeps the spec's seed
        order = torch.arange(1, 3)[torch.randperm(2, generator=torch.Generator().manual_seed(k * SEED_STRIDE))]
        assert torch.equal(maf.made.ordering, order), f"copy {k}"
    for layers in (mafs, couplings):
        weights = [dict(layer.named_parameters()) for layer in layers]
        first = [k for k, w in weights[0].items() if w.abs().sum() > 0]
        assert first and all(not torch.equal(w[k], weights[0][k]) for w in weights[1:] for k in first), "fresh initial weights"
        x = torch.randn(5, 2)
        for layer in layers:  # each bijector's own scheme: these start as the identity
            torch.testing.assert_close(layer(x)[0], x)


def test_rsample_carries_gradients_to_the_bijectors():
    """x = (z - b)·e^{-s} for base draws z: d Σx/d b = -n·e^{-s}, d Σx/d s = -Σx, per dimension (the pathwise gradient)."""
    s, b = 0.3, -0.5
    flow = affine_flow(log_scale=s, shift=b)
    x = flow.rsample(torch.zeros(4, 3))
    x.sum().backward()
    bijector = flow.transform.bijectors[0]
    torch.testing.assert_close(bijector.shift.grad, torch.full((3,), -4 * math.exp(-s)))
    torch.testing.assert_close(bijector.log_scale.grad, -x.detach().sum(0))
    assert bijector.log_scale.grad.abs().min() > 0, "the draws must move the scale's gradient for the test to see it"


def test_flow_nll_in_data_space_is_the_nll_of_the_raw_data():
    # raw data u ~ N(0, 16² I), preprocessed x = u / 16, modelled exactly by a standard normal
    torch.manual_seed(0)
    u = 16 * torch.randn(100, 2, dtype=torch.float64)
    ladj_to_model = -2 * math.log(16)
    data = TensorData({"x": u / 16}, ladj_to_model=ladj_to_model)
    flow = affine_flow(log_scale=0.0, shift=0.0, dims=2).double()
    loss = build_flow_nll(FlowNLLParams(flow="flow"), Context(Splits(data, data), flow=flow))
    out = loss({"x": u / 16}, frozenset({"loss"}))
    exact = -Normal(0.0, 16.0).log_prob(u).sum(-1).mean()
    torch.testing.assert_close(out["loss"], exact)
    torch.testing.assert_close(out["nll"], exact)
    torch.testing.assert_close(out["bits_per_dim"], exact / (2 * math.log(2)))
    assert out["loss"].requires_grad and not out["nll"].requires_grad
    ladj = torch.full((100,), ladj_to_model, dtype=torch.float64)  # what importance_sampled_nll hands over per example
    log_p = loss.log_likelihood({"x": u / 16}, samples=1, ladj=ladj)
    torch.testing.assert_close(log_p, Normal(0.0, 16.0).log_prob(u).sum(-1))


def test_flow_nll_of_a_graph_value_counts_no_log_determinant_of_the_data_and_says_so():
    """A flow on a value the graph computes: the data's scaling (here 1/16, ladj −2 ln 16) does not produce it."""
    torch.manual_seed(0)
    z = torch.randn(100, 2, dtype=torch.float64)
    data = TensorData({"x": torch.rand(100, 2, dtype=torch.float64)}, ladj_to_model=-2 * math.log(16))
    flow = affine_flow(log_scale=0.0, shift=0.0, dims=2).double()
    with pytest.warns(SpecWarning, match="models the graph value 'z', not a field of the data"):
        loss = build_flow_nll(FlowNLLParams(flow="flow", x="z"), Context(Splits(data, data), flow=flow))
    out = loss({"x": z}, frozenset({"loss"}))
    exact = -Normal(0.0, 1.0).log_prob(z).sum(-1).mean()
    torch.testing.assert_close(out["nll"], exact)
    torch.testing.assert_close(out["bits_per_dim"], exact / (2 * math.log(2)))


def test_flow_nll_counts_a_per_example_logit_preprocessing():
    # raw u in (0, 1), model space x = logit(u) ~ N(0, I): u is logit-normal, p(u) = N(logit u) / (u (1 - u))
    torch.manual_seed(0)
    u = torch.rand(50, 2, dtype=torch.float64)
    x, ladj_x = u.logit(), -(u * (1 - u)).log().sum(-1)
    data = TensorData({"x": x, "ladj_x": ladj_x})
    flow = affine_flow(log_scale=0.0, shift=0.0, dims=2).double()
    loss = build_flow_nll(FlowNLLParams(flow="flow", ladj="ladj_x"), Context(Splits(data, data), flow=flow))
    out = loss({"x": x, "ladj": ladj_x}, frozenset({"loss"}))
    exact = -(Normal(0.0, 1.0).log_prob(x) - u.log() - (1 - u).log()).sum(-1).mean()
    torch.testing.assert_close(out["nll"], exact)
    with pytest.raises(ValueError, match="set `ladj: ladj_x`"):
        build_flow_nll(FlowNLLParams(flow="flow"), Context(Splits(data, data), flow=flow))


def test_data_outside_the_flows_domain_are_refused_at_build_not_at_a_later_step():
    """A logit head on data in [0, 2]: the dry run's few rows may all lie in [0, 1], so every row is checked."""
    x = torch.rand(400, 2, generator=torch.Generator().manual_seed(0))
    x[300, 1] = 1.5
    data = TensorData({"x": x})
    context = Context(base=StandardNormal((2,)), logit=Logit((2,)), f=affine((2,), 0.0, 0.0))
    flow = build_flow(FlowParams(base="base", head=["logit"], bijectors=["f"]), context)
    with pytest.raises(ValueError, match=r"flow 'flow' takes values in .*, but the train split's 'x' leave it: example 300 holds 1.5"):
        build_flow_nll(FlowNLLParams(flow="flow"), Context(Splits(data, data), flow=flow))
    x[300, 1] = 1.0
    build_flow_nll(FlowNLLParams(flow="flow"), Context(Splits(data, data), flow=flow))
    without_margin = Context(base=StandardNormal((2,)), logit=Logit((2,), alpha=0.0), f=affine((2,), 0.0, 0.0))
    plain = build_flow(FlowParams(base="base", head=["logit"], bijectors=["f"]), without_margin)
    with pytest.raises(ValueError, match=r"takes values in OpenInterval.*example 300 holds 1; .* give a logit an `alpha` above 0"):
        build_flow_nll(FlowNLLParams(flow="flow"), Context(Splits(data, data), flow=plain))  # logit(1) is infinite


def test_conditional_flow_samples_and_scores_given_the_context():
    torch.manual_seed(0)
    coupling = AffineCoupling((4,), hidden=[8], context_features=2)
    with torch.no_grad():
        coupling.conditioner.net[-1].weight.normal_()
    flow = build_flow(FlowParams(base="base", bijectors=["c"]), Context(base=StandardNormal((4,)), c=coupling))
    context = torch.randn(5, 2)
    distribution = flow(context)
    assert distribution.batch_shape == (5,) and distribution.event_shape == (4,)
    x = flow.sample(5, context)
    assert x.shape == (5, 4) and distribution.sample((3,)).shape == (3, 5, 4)
    assert not torch.allclose(flow.log_prob(x, context), flow.log_prob(x, torch.randn(5, 2)))
    loss = build_flow_nll(FlowNLLParams(flow="flow", context="y"), Context(flow=flow))
    out = loss({"x": x, "context": context}, frozenset({"loss"}))
    torch.testing.assert_close(out["loss"], -flow.log_prob(x, context).mean())
    with pytest.raises(ValueError, match="takes no context"):
        affine_flow()(torch.randn(5, 2))
    with pytest.raises(ValueError, match=r"one context row of shape \(2,\) per example, got a context of shape \(5,\) \(integer labels\? .*one_hot\(y, K\)"):
        flow(torch.arange(5) % 2)
    one = build_flow(
        FlowParams(base="base", bijectors=["c"]), Context(base=StandardNormal((4,)), c=AffineCoupling((4,), hidden=[8], context_features=1))
    )
    with pytest.raises(ValueError, match=r"for K classes the condition is one_hot\(y, K\), with context_features: K\)$") as error:
        one(torch.arange(5) % 3)  # 3 classes, one context feature: one_hot(y, 1) cannot be the fix
    assert "one_hot(y, 1)" not in str(error.value)
    with pytest.raises(ValueError, match=r"`context: c` is given, but flow 'flow' takes no context: remove `context:`, or give the flow's bijectors context_features"):
        build_flow_nll(FlowNLLParams(flow="flow", context="c"), Context(flow=affine_flow()))
    with pytest.raises(ValueError, match=r"one context row of shape \(2,\) per example, got a context of shape \(5, 3\)$"):
        flow(torch.randn(5, 3))


def test_glow_flow_samples_images_and_scores_them():
    """Draws are images whose log-density is the change of variables: log N(glow(x); 0, I) + log|det J_glow(x)|."""
    torch.manual_seed(0)
    glow = build_glow(GlowParams(shape=[1, 4, 4], levels=2, steps=1, hidden=[8]), None)
    flow = build_flow(FlowParams(base="base", bijectors=["glow"]), Context(base=StandardNormal((16,)), glow=glow))
    with torch.no_grad():  # a glow starts near the identity: perturb it so the log-determinant counts
        for parameter in glow.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    glow.eval()
    torch.manual_seed(1)
    x = flow.sample(6)
    torch.manual_seed(1)
    drawn = StandardNormal((16,))().sample((6,))  # the base draws the sample pushed through glow's inverse
    assert x.shape == (6, 1, 4, 4)
    with torch.no_grad():
        z, ladj = glow(x)
    torch.testing.assert_close(z, drawn, atol=1e-4, rtol=1e-4)
    assert ladj.abs().min() > 1e-3, "a log-determinant the score must count"
    expected = Normal(0.0, 1.0).log_prob(z).sum(-1) + ladj
    torch.testing.assert_close(flow.log_prob(x), expected)


def test_wiring_errors_name_the_mismatch():
    base = StandardNormal((3,))
    context = Context(b=base, f=affine((3,), 0, 0), g=affine((4,), 0, 0))
    with pytest.raises(ValueError, match=r"bijectors\[0\] \(ElementwiseAffine\) outputs event shape \(3,\) but bijectors\[1\] \(ElementwiseAffine\) takes \(4,\)"):
        build_flow(FlowParams(base="b", bijectors=["f", "g"]), context)
    with pytest.raises(ValueError, match=r"head\[0\] \(ElementwiseAffine\) outputs event shape \(4,\) but bijectors\[0\]"):
        build_flow(FlowParams(base="b", head=["g"], bijectors=["f"]), context)
    squeeze = Context(b=base, f=affine((1, 2, 2), 0, 0), s=Squeeze((1, 2, 2)))  # a block whose output is not its input
    with pytest.raises(ValueError, match=r"bijectors\[1\] \(Squeeze\) outputs event shape \(4, 1, 1\) but bijectors\[0\] \(copy 2 of 2\)"):
        build_flow(FlowParams(base="b", bijectors=["f", "s"], repeat=2), squeeze)
    with pytest.raises(ValueError, match=r"base has event shape \(3,\) but the bijectors output \(4,\)"):
        build_flow(FlowParams(base="b", bijectors=["g"]), Context(b=base, g=affine((4,), 0, 0)))


def test_bijectors_reading_different_contexts_are_named():
    conditional = Context(b=StandardNormal((4,)), two=AffineCoupling((4,), context_features=2), three=AffineCoupling((4,), context_features=3))
    match = (
        r"bijectors\[0\] \(AffineCoupling\) reads a context of shape \(2,\), "
        r"tail\[0\] \(AffineCoupling\) reads a context of shape \(3,\): give them the same context_features"
    )
    with pytest.raises(ValueError, match=match):
        build_flow(FlowParams(base="b", bijectors=["two"], repeat=2, tail=["three"]), conditional)



def test_data_of_another_shape_than_the_flows_is_refused_with_the_layout_that_fits():
    flow = affine_flow(dims=16)
    with pytest.raises(ValueError, match=r"models values of shape \(16,\), but x has shape \(2, 1, 4, 4\) .*set the data's `shape: flat`"):
        flow.log_prob(torch.randn(2, 1, 4, 4))
    with pytest.raises(ValueError, match=r"models values of shape \(16,\), but x has shape \(2, 15\) \(batch first\)$"):
        flow.log_prob(torch.randn(2, 15))
    glow = build_glow(GlowParams(shape=[1, 4, 4], levels=2, steps=1, hidden=[8]), None)
    images = build_flow(FlowParams(base="base", bijectors=["glow"]), Context(base=StandardNormal((16,)), glow=glow))
    with pytest.raises(ValueError, match=r"models values of shape \(1, 4, 4\), but x has shape \(2, 16\) .*`shape: image`"):
        images.log_prob(torch.randn(2, 16))
    with pytest.raises(SpecError, match=r"losses\.nll: .*the flow models values of shape \(64,\), but x has shape \(5, 1, 8, 8\)"):
        build(load_spec(dict(digits_flow(0, {}), data={"type": "digits", "shape": "image"})), "cpu")

def digits_flow(context_features: int, sample: dict) -> dict:
    """A one-MAF flow on flat digits, conditioned on ``c = one_hot(y, 10)`` when it has context features."""
    maf = {"type": "maf", "shape": [64], "hidden": [16], "context_features": context_features}
    return {
        "name": "conditional_flow",
        "data": {"type": "digits", "shape": "flat"},
        "graph": {"c": "one_hot(y, 10)"},
        "components": {"flow": {"type": "flow", "base": {"type": "standard_normal", "shape": [64]}, "bijectors": [maf]}},
        "losses": {"nll": {"type": "flow_nll", "flow": "flow", **({"context": "c"} if context_features else {})}},
        "sample": {"type": "flow_sampler", "flow": "flow", **sample},
    }


@torch.no_grad()
def test_a_conditional_flow_is_sampled_by_class_through_the_graph():
    """Example i is drawn from p(x | c = one_hot(i mod 10)) at temperature spec T × call T."""
    model, _ = build(load_spec(digits_flow(10, {"classes": 10, "condition": "c", "temperature": 0.5})), "cpu")
    assert model.conditions == ClassConditions("c", 10)
    flow = model.component("flow")
    flow.transform.bijectors[0].made.net[-1].weight.normal_(0, 0.3)  # the MAF starts as the identity, blind to c
    labels = torch.arange(12) % 10
    one_hot = torch.nn.functional.one_hot(labels, 10).float()
    torch.manual_seed(0)
    x = model.sample(12, temperature=0.8)
    torch.manual_seed(0)
    expected = flow.sample(12, one_hot, temperature=0.4)
    assert x.shape == (12, 64)
    torch.testing.assert_close(x, expected)
    torch.manual_seed(0)
    assert not torch.allclose(x, flow.sample(12, one_hot.roll(1, 0), temperature=0.4)), "the class changes the sample"
    # At call temperature 0 every draw is the base mean pushed through f⁻¹(·; c): one image per class.
    modes = model.sample(12, temperature=0.0)
    torch.testing.assert_close(modes, flow.transform.inverse(torch.zeros(12, 64), one_hot)[0])
    torch.testing.assert_close(modes[10:], modes[:2])
    assert not torch.allclose(modes[0], modes[1])


@pytest.mark.parametrize(
    ("context_features", "sample", "message"),
    [
        (10, {}, r"the flow reads a context of shape \(10,\): set `classes` \(the number of classes\) and `condition` to the graph value it was trained on \(its loss's `context:`\)$"),
        (10, {"classes": 10}, r"the flow reads a context of shape \(10,\): set `condition` to the graph value it was trained on \(its loss's `context:`\)$"),
        (0, {"classes": 10}, "the flow takes no context, so it cannot be sampled by class"),
    ],
)
def test_flow_sampler_classes_must_match_the_flow(context_features: int, sample: dict, message: str):
    with pytest.raises(SpecError, match=message) as error:
        build(load_spec(digits_flow(context_features, sample)), "cpu")
    assert error.value.problems[0].path[0] == "sample"


def test_a_context_given_to_an_unconditional_flow_is_refused_at_the_loss():
    spec = digits_flow(0, {})
    spec["losses"]["nll"]["context"] = "c"
    with pytest.raises(SpecError, match=r"losses\.nll: .*`context: c` is given, but flow 'flow' takes no context: remove `context:`") as error:
        build(load_spec(spec), "cpu")
    assert error.value.problems[0].path[:2] == ("losses", "nll")


@torch.no_grad()
def test_a_dequantized_flows_likelihood_is_importance_sampled_over_the_noise():
    """log P(k) = log E_u p((k + u)/L) ≥ E_u log p(...): the estimate over ``samples`` draws of u, one pass per chunk."""
    levels, dims = 4, 3
    context = Context(base=StandardNormal((dims,)), q=UniformDequantization((dims,), levels), f=affine((dims,), 2.0, -4.0))
    flow = build_flow(FlowParams(base="base", head=["q"], bijectors=["f"]), context)
    nll = build_flow_nll(FlowNLLParams(flow="flow"), Context(flow=flow))
    nll.chunk = 2
    x = torch.randint(0, levels, (5, dims)) / levels
    torch.manual_seed(0)
    estimate = nll.log_likelihood({"x": x}, samples=5, ladj=torch.zeros(5))
    torch.manual_seed(0)
    noise = torch.cat([torch.rand(n, *x.shape) for n in (2, 2, 1)])  # the draws of the three chunks, in order
    z, ladj = context.components["f"]((x * levels + noise) / levels)  # the density after the head, at each draw's y
    exact = StandardNormal((dims,))().log_prob(z) + ladj
    torch.testing.assert_close(estimate, exact.logsumexp(0) - math.log(5))
    one_draw = torch.stack([nll.log_likelihood({"x": x}, samples=1, ladj=torch.zeros(5)) for _ in range(200)])
    many = torch.stack([nll.log_likelihood({"x": x}, samples=50, ladj=torch.zeros(5)) for _ in range(20)])
    assert (many.mean(0) > one_draw.mean(0)).all(), "Jensen's gap shrinks with more draws of u"
    assert nll.log_likelihood({"x": x}, samples=1, ladj=torch.zeros(5)).shape == (5,)


def test_a_bounded_flow_has_zero_density_outside_its_domain_and_a_grid_mass_of_one():
    """A logit head's flow gave NaN outside (0, 1): run.log_prob was NaN there, and density_plot's padded box a NaN mass."""
    from compose_gen_plugins.flows.density import grid_density

    flow = Flow(StandardNormal((2,)), Chain([Logit((2,)), ElementwiseAffine((2,))]))
    inside, outside = torch.tensor([[0.3, 0.6], [0.0, 1.0]]), torch.tensor([[1.2, 0.5], [0.5, -0.1], [-0.5, 2.0]])
    assert torch.isfinite(flow.log_prob(inside)).all()
    assert torch.equal(flow.log_prob(outside), torch.full((3,), -math.inf))
    assert flow.log_prob(torch.tensor([[math.nan, 0.5]])).isnan().all(), "NaN is no point outside: it stays NaN, as on a real domain"
    density, area = grid_density(flow, torch.tensor([[-0.1, 1.1], [-0.1, 1.1]]), 400)
    assert float(density.sum() * area) == pytest.approx(1.0, abs=0.01)


def test_a_dequantized_logit_flow_samples_on_the_data_grid_and_scores_off_it_as_impossible():
    """A logit's inverse reaches past [0, 1), to (-α/(1-2α), (1-α)/(1-2α)): RealNVP on digits drew levels -1 and 17 of
    0..16, and log_prob of such points (its own samples) was NaN, not -inf; 24% of them after 20 training steps."""
    levels, dims = 17, 4
    spread = ElementwiseAffine((dims,))
    with torch.no_grad():
        spread.log_scale.fill_(-1.5)  # samples spread well past the logit's reach: many land outside [0, 1)
    flow = Flow(StandardNormal((dims,)), Chain([UniformDequantization((dims,), levels), Logit((dims,)), spread]))
    torch.manual_seed(0)
    samples = flow.sample(2000)
    beyond = Logit((dims,)).inverse(spread.inverse(flow.base.sample(2000))[0])[0]
    assert ((beyond < 0) | (beyond > 1)).any(), "the logit's inverse leaves [0, 1) for these draws"
    levels_drawn = samples * levels
    torch.testing.assert_close(levels_drawn, levels_drawn.round())
    assert levels_drawn.min() == 0 and levels_drawn.max() == levels - 1, "the nearest level of the data's 0..16"
    assert torch.isfinite(flow.log_prob(samples)).all()
    off_grid = torch.tensor([[17 / 17, 0.5, 0.5, 0.5], [-1 / 17, 0.5, 0.5, 0.5], [0.5, 0.5, 0.5, 0.5]])
    scores = flow.log_prob(off_grid)
    assert torch.equal(scores[:2], torch.full((2,), -math.inf)) and torch.isfinite(scores[2])
