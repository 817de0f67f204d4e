"""A plugin that breaks its kind's contract is named, with its type and plugin, at the part of the spec that uses it."""

from __future__ import annotations

import copy
import functools
import math
import re

import pytest
import torch
from compose_gen_plugins import datasets, distributions, flows, latent, metrics, networks
from torch import nn
from torch.distributions import Independent, Normal

from compose_gen import Bijector, ClassConditions, ComponentType, Loss, Params, Ref, Sampler, Value, make_catalogue
from compose_gen.runtime import build
from compose_gen.spec import SpecError, SpecWarning, load_spec
from compose_gen.testing.plugins import plugin


class Broken(Params):
    shape: list[int] = [2]
    #: Which contract to break; "" keeps every one.
    breaks: str = ""


class Doubling(Bijector):
    """``y = 2x``; ``breaks`` picks a way to get the output wrong."""

    def __init__(self, p: Broken) -> None:
        if p.breaks == "no_base_init":  # nn.Module's __init__ alone sets no event_shape
            nn.Module.__init__(self)
        else:
            super().__init__(tuple(p.shape))
        self.breaks = p.breaks
        self.log_scale = nn.Parameter(torch.tensor(math.log(2.0)))
        if p.breaks == "own_inverse":  # breaks nothing: the instance's own inverse is right, the class's is not
            self.inverse = self.exact_inverse
        if p.breaks == "own_partial_inverse":  # the same, chosen as a partial, which a bound method's rebinding misses
            self.inverse = functools.partial(Doubling.exact_inverse, self)

    def exact_inverse(self, y, context=None):
        return y / self.log_scale.exp(), (-self.log_scale * self.event_shape.numel()).expand(self.batch_shape(y))

    def forward(self, x, context=None):
        y, ladj = x * self.log_scale.exp(), (self.log_scale * self.event_shape.numel()).expand(self.batch_shape(x))
        if self.breaks == "forward_y_only":
            return y
        if self.breaks == "forward_ladj_like_x":
            return y, ladj[..., None].expand(x.shape)
        if self.breaks == "forward_drops_a_feature":  # the base's log_prob would broadcast what is left
            return y[..., :-1], ladj
        if self.breaks == "forward_nan":
            return y * math.nan, ladj
        if self.breaks == "forward_float64":  # the next layer's float32 weights would be blamed
            return y.double(), ladj
        return y, -ladj if self.breaks == "ladj_signs" else ladj

    def inverse(self, y, context=None):
        x, ladj = y / self.log_scale.exp(), (-self.log_scale * self.event_shape.numel()).expand(self.batch_shape(y))
        if self.breaks == "inverse_through_forward":  # breaks nothing: a correct inverse taking its ladj from forward's
            return x, -self.forward(x)[1]
        if self.breaks in ("inverse_multiplies", "own_inverse", "own_partial_inverse"):
            x = y * self.log_scale.exp()
        if self.breaks in ("ladj_signs", "inverse_ladj_sign"):
            ladj = -ladj
        return x if self.breaks == "inverse_x_only" else (x, ladj)


class Prior(nn.Module):
    graph_methods = ("sample",)

    def __init__(self, p: Broken) -> None:
        super().__init__()
        self.breaks = p.breaks
        if p.breaks == "lists_draw":
            self.graph_methods = ("sample", "draw")
        self.register_buffer("loc", torch.zeros(p.shape))

    def forward(self):
        if self.breaks == "unsummed":
            return Normal(self.loc, 1.0)  # no Independent: log_prob per coordinate
        return self.loc if self.breaks == "tensor" else Independent(Normal(self.loc, 1.0), 1)

    def sample(self, like):
        return self().sample((len(like),))


class NLLParams(Broken):
    flow: Ref("flow")  # type: ignore[valid-type]
    x: Value = "x"


class NLL(Loss):
    def __init__(self, flow: nn.Module, breaks: str) -> None:
        super().__init__()
        self.flow, self.breaks = flow, breaks
        if breaks == "terms_str":
            self.terms = "loss"  # type: ignore[misc]

    def forward(self, inputs, terms):
        nll = -self.flow.log_prob(inputs["x"])
        results = {
            "tensor": nll.mean(),
            "none": None,
            "other_term": {"nll": nll.mean()},
            "extra_per_example": {"loss": nll.mean(), "per_example": nll},
            "extra_float": {"loss": nll.mean(), "const": 1.5},
            "nan": {"loss": nll.mean() * math.nan},
            "detached": {"loss": nll.mean().detach()},
        }
        return results.get(self.breaks, {"loss": nll.mean()})


class Drawer(Sampler):
    def __init__(self, breaks: str) -> None:
        super().__init__()
        self.breaks = breaks
        self.conditions = {
            "conditions_tuple": ("y", 2),
            "conditions_zero": ClassConditions("y", 0),
            "conditions_float": ClassConditions("y", 2.0),
        }.get(breaks)

    def sample(self, n, temperature=1.0, context=None):
        if self.breaks == "after_dry_run" and n > 5:
            raise RuntimeError("cannot draw more than 5")
        broken = {"none": None, "list": [torch.zeros(2)] * n, "shape": torch.zeros(n, 3), "nan": torch.full((n, 2), math.nan)}
        return broken.get(self.breaks, torch.zeros(n, 2))


class Decoder(nn.Module):
    """p(x|z) = N(x; z, 1); ``breaks="sample_dims"`` keeps one row of z per example, the first draw's."""

    def __init__(self, breaks: str) -> None:
        super().__init__()
        self.breaks = breaks

    def forward(self, z):
        if self.breaks == "sample_dims":
            z = z.reshape(-1, z.shape[-1])[: z.shape[-2]]
        return Independent(Normal(z, 1.0), 1)


class ContextBlindDrawer(Sampler):
    conditions = ClassConditions("y", 2)

    def sample(self, n, temperature=1.0):
        return torch.zeros(n, 2)


BROKEN = plugin(
    ComponentType("t_scale", "bijector", Broken, lambda p, ctx: Doubling(p), doc="y = 2x."),
    ComponentType("t_prior", "prior", Broken, lambda p, ctx: Prior(p), doc="N(0, 1)."),
    ComponentType("t_nll", "loss", NLLParams, lambda p, ctx: NLL(ctx.component(p.flow), p.breaks), doc="NLL."),
    ComponentType("t_sampler", "sampler", Broken, lambda p, ctx: ContextBlindDrawer() if p.breaks == "no_context" else Drawer(p.breaks), doc="Zeros."),
    ComponentType("t_metric", "metric", Broken, lambda p, ctx: None, doc="Builds nothing."),
    ComponentType("t_decoder", "decoder", Broken, lambda p, ctx: Decoder(p.breaks), doc="N(z, 1)."),
    name="breakage",
)

FLOW = {
    "name": "contracts",
    "data": {"type": "moons", "n": 64},
    "components": {
        "flow": {
            "type": "flow",
            "base": {"type": "t_prior"},
            "bijectors": [{"type": "t_scale"}],
        }
    },
    "losses": {"nll": {"type": "t_nll", "flow": "flow"}},
    "sample": {"type": "flow_sampler", "flow": "flow"},
    "train": {"steps": 2, "batch_size": 16},
}


@pytest.fixture(scope="module")
def catalogue():
    return make_catalogue([BROKEN, datasets, distributions, flows, latent, metrics, networks], entry_points=False)


def spec_with(path: str = "", breaks: str = "") -> dict:
    """``FLOW`` with ``breaks`` set on the part at the dotted ``path``, e.g. ``spec_with("losses.nll", "none")``."""
    spec = copy.deepcopy(FLOW)
    if path:
        part = spec
        for key in path.split("."):
            part = part[int(key)] if key.isdigit() else part[key]
        part["breaks"] = breaks
    return spec


def problem(spec: dict, catalogue) -> str:
    with pytest.raises(SpecError) as info:
        build(load_spec(spec, catalogue=catalogue), "cpu")
    assert len(info.value.problems) == 1
    return str(info.value)


def test_a_plugin_that_keeps_its_contracts_builds_and_trains_unwatched(catalogue) -> None:
    spec = spec_with()
    spec["components"]["flow"]["repeat"] = 3  # copies of the watched bijector, each built (and watched) again
    model, _ = build(load_spec(spec, catalogue=catalogue), "cpu")
    bijectors = [m for m in model.modules() if isinstance(m, Doubling)]
    assert len(bijectors) == 3
    assert not any({"forward", "inverse"} & set(vars(m)) for m in model.modules()), "the checks are gone, copies' too"
    with torch.no_grad():  # each copy runs its own parameters, not the original's
        bijectors[1].log_scale.fill_(0.0)
    x = torch.ones(1, 2)
    assert [b.inverse(x)[0][0, 0].item() for b in bijectors] == [0.5, 1.0, 0.5]


def test_a_bijector_whose_inverse_calls_its_forward_is_checked_once_and_passes(catalogue, monkeypatch) -> None:
    """The dry run checks a perturbed copy; were the copy's forward the checking one, checking it would check a copy of
    the copy, perturbed again, and so on until Python's recursion limit refused a correct bijector."""
    calls = []
    forward = Doubling.forward
    monkeypatch.setattr(Doubling, "forward", lambda self, *args: calls.append(self) or forward(self, *args))
    build(load_spec(spec_with("components.flow.bijectors.0", "inverse_through_forward"), catalogue=catalogue), "cpu")
    assert len({id(layer) for layer in calls}) == 3, "the bijector and the two perturbed copies that check it (training, eval)"


@pytest.mark.parametrize("chosen", ["own_inverse", "own_partial_inverse"])
def test_a_method_an_instance_chose_for_itself_is_the_one_checked_and_it_keeps_it(catalogue, chosen: str) -> None:
    """The checks wrapped the class's method and, when removed, left the instance with it: a bijector or decoder
    choosing its method in __init__ was checked, then trained, as another model; the perturbed copy that checks the
    inverse ran the original's partial, on the unperturbed parameters."""
    spec = spec_with("components.flow.bijectors.0", chosen)
    spec["components"]["flow"]["repeat"] = 2
    model, _ = build(load_spec(spec, catalogue=catalogue), "cpu")
    bijectors = [m for m in model.modules() if isinstance(m, Doubling)]
    for b in bijectors:
        own = vars(b)["inverse"]
        assert (own.func, own.args) == (Doubling.exact_inverse, (b,)) if chosen == "own_partial_inverse" else (own.__func__, own.__self__) == (Doubling.exact_inverse, b)
        assert not any(key.startswith("_contract") for key in vars(b))
    assert bijectors[0].inverse(torch.ones(1, 2))[0].tolist() == [[0.5, 0.5]]


@pytest.mark.parametrize(
    "breaks, expected",
    [
        ("forward_y_only", "forward returned a Tensor of shape (5, 2), not a pair of tensors (y, ladj)"),
        ("no_base_init", "has no event_shape: its __init__ must call super().__init__(shape), Bijector's own, which sets it"),
        ("forward_ladj_like_x", "forward returned ladj of shape (5, 2) for an input of shape (5, 2); ladj is summed over the event dimensions (2,), so its shape is the batch shape (5,)"),
        ("inverse_x_only", "inverse returned a Tensor of shape (5, 2), not a pair of tensors (y, ladj)"),
        (
            "forward_drops_a_feature",
            "forward returned an output of shape (5, 1) for an input of shape (5, 2); expected the batch shape (5,) followed by the event shape (2,)",
        ),
        ("forward_float64", "forward returned an output of torch.float64 on cpu for an input of torch.float32 on cpu; keep the input's dtype and device"),
    ],
)
def test_a_bijector_output_that_breaks_the_contract_names_the_bijector(catalogue, breaks, expected) -> None:
    message = problem(spec_with("components.flow.bijectors.0", breaks), catalogue)
    assert f"components.flow.bijectors[0]: type 't_scale' (plugin 'breakage') broke the bijector contract: {expected}" in message


@pytest.mark.parametrize(
    "breaks, expected",
    [
        ("inverse_multiplies", r"inverse\(forward\(x\)\) == x fails: -?\d.* where -?\d.* is expected"),
        ("inverse_ladj_sign", r"the inverse ladj == minus the forward ladj at y = forward\(x\) fails"),
        ("ladj_signs", r"forward ladj == log\|det J\| of the autograd Jacobian fails: -(\d\.\d+) where \1 is expected"),
    ],
)
def test_a_bijector_that_does_not_invert_or_misreports_its_log_determinant_is_refused_by_the_dry_run(catalogue, breaks, expected) -> None:
    """Shapes right, numbers wrong: such a bijector would train to NLLs below the data's entropy or sample wrongly."""
    message = problem(spec_with("components.flow.bijectors.0", breaks), catalogue)
    assert "components.flow.bijectors[0]: type 't_scale' (plugin 'breakage') broke the bijector contract: " in message
    assert re.search(expected, message), message


def test_a_non_finite_loss_on_the_dry_run_blames_the_component_that_made_the_nans(catalogue) -> None:
    """Not the data, as when no component's output turned finite inputs non-finite (the loss's own arithmetic)."""
    message = problem(spec_with("components.flow.bijectors.0", "forward_nan"), catalogue)
    assert "components.flow.bijectors[0]: type 't_scale' (plugin 'breakage') turned finite inputs into NaN or infinite values" in message
    assert "and then dry run failed computing loss 'nll'" in message, "the base distribution refused the NaNs"
    message = problem(spec_with("losses.nll", "nan"), catalogue)
    assert "losses.nll: type 't_nll' (plugin 'breakage') turned finite inputs into a non-finite loss before any training step (nll=nan)" in message


def test_a_term_that_trains_nothing_under_the_implicit_player_blames_the_loss_not_a_players_section(catalogue) -> None:
    message = problem(spec_with("losses.nll", "detached"), catalogue)
    assert "losses.nll: type 't_nll' (plugin 'breakage') term nll has no gradient path to any parameter" in message
    assert "players" not in message


def test_a_prior_returning_a_tensor_is_blamed_not_the_flow_that_reads_it(catalogue) -> None:
    message = problem(spec_with("components.flow.base", "tensor"), catalogue)
    assert (
        "components.flow.base: type 't_prior' (plugin 'breakage') broke the prior contract: "
        "forward returned a Tensor of shape (2,), not a torch.distributions.Distribution"
    ) in message
    assert "flows" not in message


def test_a_prior_whose_log_prob_does_not_sum_the_event_is_blamed(catalogue) -> None:
    message = problem(spec_with("components.flow.base", "unsummed"), catalogue)
    assert (
        "components.flow.base: type 't_prior' (plugin 'breakage') broke the prior contract: forward returned a Normal of "
        "batch shape (2,) with no input, so its log_prob is per coordinate, not summed over the event"
    ) in message


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_a_decoder_that_drops_the_sample_dimensions_is_blamed(catalogue, objective) -> None:
    """Each importance weight (or the ELBO's one draw, k = 1) would score the first draw of z: wrong bounds, no error."""
    spec = {
        "name": "decoder_contract",
        "data": {"type": "moons", "n": 64},
        "components": {
            "prior": {"type": "standard_normal", "shape": [2]},
            "encoder": {"type": "gaussian_encoder", "latent": 2, "net": {"type": "mlp", "in_features": 2, "out_features": 4}},
            "decoder": {"type": "t_decoder"},
        },
        "losses": {"vae": {"type": objective, "encoder": "encoder", "decoder": "decoder", "prior": "prior", "samples": 3}},
        "train": {"steps": 2, "batch_size": 16},
    }
    build(load_spec(spec, catalogue=catalogue), "cpu")
    spec["components"]["decoder"]["breaks"] = "sample_dims"
    message = problem(spec, catalogue)
    assert "components.decoder: type 't_decoder' (plugin 'breakage') broke the decoder contract: forward returned an Independent" in message
    assert "for an input of shape (3, 5, 2), whose leading dimensions it should be" in message


@pytest.mark.parametrize(
    "breaks, expected",
    [
        ("tensor", "forward returned a Tensor of shape (), not a dict of scalar tensors such as {'loss': ...}"),
        ("none", "forward returned None, not a dict of scalar tensors"),
        ("other_term", "forward returned no term 'loss' (it returned 'nll')"),
        ("extra_per_example", "forward returned 'per_example' as a Tensor of shape (5,), not a scalar tensor"),
        ("extra_float", "forward returned 'const' as a float, not a scalar tensor (wrap it: torch.tensor(value))"),
        ("terms_str", "`terms` must be a non-empty tuple of names such as ('loss',), got 'loss'"),
    ],
)
def test_a_loss_that_breaks_the_contract_is_named(catalogue, breaks, expected) -> None:
    message = problem(spec_with("losses.nll", breaks), catalogue)
    assert f"losses.nll: type 't_nll' (plugin 'breakage') broke the loss contract: {expected}" in message


@pytest.mark.parametrize("breaks, returned", [("none", "None"), ("list", "a list")])
def test_a_sampler_that_returns_no_tensor_is_named(catalogue, breaks, returned) -> None:
    spec = spec_with()
    spec["sample"] = {"type": "t_sampler", "breaks": breaks}
    message = problem(spec, catalogue)
    assert f"sample: type 't_sampler' (plugin 'breakage') broke the sampler contract: sample(5) returned {returned}, not a tensor of 5 examples" in message


def test_a_sampler_drawing_the_wrong_shape_is_named(catalogue) -> None:
    spec = spec_with()
    spec["sample"] = {"type": "t_sampler", "breaks": "shape"}
    assert "sample: type 't_sampler' (plugin 'breakage') drew samples of shape (3,); the data's x have (2,)" in problem(spec, catalogue)


def test_a_sampler_drawing_nan_from_the_untrained_model_is_a_warning_at_it(catalogue) -> None:
    """Not an error (training may mend it), but ``validate --strict`` refuses it."""
    spec = spec_with()
    spec["sample"] = {"type": "t_sampler", "breaks": "nan"}
    with pytest.warns(SpecWarning, match=r"sample: type 't_sampler' \(plugin 'breakage'\) drew 5 of 5 samples with NaN or infinite values"):
        build(load_spec(spec, catalogue=catalogue), "cpu")


@pytest.mark.parametrize(
    "breaks, expected",
    [
        ("conditions_tuple", "conditions is a tuple, not None or a compose_gen.ClassConditions(value, classes)"),
        ("conditions_zero", "conditions is ClassConditions(value='y', classes=0): classes must be at least 1"),
        ("conditions_float", "conditions is ClassConditions(value='y', classes=2.0): value must be a graph value's name and classes a whole number"),
        ("no_context", "it samples by class, so it is called sample(n, temperature, context); its sample takes no context"),
    ],
)
def test_a_sampler_whose_conditions_break_the_contract_is_named(catalogue, breaks, expected) -> None:
    spec = spec_with()
    spec["sample"] = {"type": "t_sampler", "breaks": breaks}
    message = problem(spec, catalogue)
    assert f"sample: type 't_sampler' (plugin 'breakage') broke the sampler contract: {expected}" in message


def test_a_sampler_failing_after_training_is_named_and_the_run_is_still_evaluated(catalogue, tmp_path) -> None:
    from compose_gen.compiler import SamplingFailed
    from compose_gen.runtime import Run

    spec = spec_with()
    spec["sample"] = {"type": "t_sampler", "breaks": "after_dry_run"}  # the dry run's 5 draws pass
    spec["evaluate"] = {"metrics": [{"type": "test_losses"}], "samples": 16}
    run = Run.create(load_spec(spec, catalogue=catalogue), tmp_path, "cpu", progress=False)
    with pytest.raises(SamplingFailed, match=r"sample: type 't_sampler' \(plugin 'breakage'\) raised RuntimeError while sampling: cannot draw more than 5"):
        run.train()
    assert "test/nll" in (tmp_path / "evaluation.json").read_text(), "the metrics that need no samples ran"


def test_a_graph_method_listed_but_missing_blames_the_component_whether_or_not_the_graph_calls_it(catalogue) -> None:
    """Checked only where a graph called it, the missing method surfaced in the first spec of a user who did."""
    spec = spec_with()
    spec["components"]["prior"] = {"type": "t_prior", "breaks": "lists_draw"}
    broken = "components.prior: type 't_prior' (plugin 'breakage') broke the prior contract: it lists 'draw' in graph_methods, but has no such method"
    assert broken in problem(spec, catalogue)
    spec["graph"] = {"z": "prior.draw(x)"}
    spec["losses"]["nll"]["x"] = "z"
    assert broken in problem(spec, catalogue)


def test_a_metric_that_builds_no_callable_is_named(catalogue) -> None:
    spec = spec_with()
    spec["evaluate"] = {"metrics": [{"type": "t_metric"}]}
    message = problem(spec, catalogue)
    assert "evaluate.metrics[0]: type 't_metric' (plugin 'breakage') built None, not a Callable as a metric must be" in message
