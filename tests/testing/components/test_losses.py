"""The kit passes the shipped losses, and catches broken losses."""

from __future__ import annotations

import math

import pytest
import torch
from component_kit_helpers import PRIORS, X, decoders, encoders
from torch import nn

from compose_gen import Loss
from compose_gen.core import ContractError
from compose_gen.testing.components import check_loss

# --------------------------------------------------------------------------- the shipped components


@pytest.mark.parametrize("name", ["minimax", "non_saturating", "wasserstein", "hinge", "least_squares"])
def test_shipped_adversarial_losses_pass(build, name):
    generator = nn.Linear(2, 2)
    critic = {"type": "mlp_critic", "in_shape": [2], "hidden": [8]}
    check_loss(build({"type": name, "critic": critic, "fake": "fake"}), {"real": torch.randn(6, 2), "fake": generator(torch.randn(6, 2))})


@pytest.mark.parametrize("name", ["elbo", "iwae"])
def test_shipped_latent_losses_pass(build, inputs, name):
    loss = build({"type": name, "encoder": encoders(0)["gaussian"], "decoder": decoders(0)["bernoulli"], "prior": PRIORS["standard_normal"]})
    check_loss(loss, {"x": inputs["x"].round()})



# --------------------------------------------------------------------------- broken losses


class Squares(Loss):
    """A correct loss: the mean square of a linear map of x, with its mean as an extra metric."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(2, 2)

    def forward(self, inputs, terms):
        y = self.net(inputs["x"])
        return {"loss": y.square().mean(), "mean": y.mean().detach()}


class PythonFloat(Squares):
    def forward(self, inputs, terms):
        return {"loss": super().forward(inputs, terms)["loss"].item()}


class Detached(Squares):
    def forward(self, inputs, terms):
        return {"loss": torch.tensor(super().forward(inputs, terms)["loss"].item())}


class PerExample(Squares):
    def forward(self, inputs, terms):
        return {"loss": self.net(inputs["x"]).square().mean(-1)}


class NaNTerm(Squares):
    def forward(self, inputs, terms):
        return {"loss": super().forward(inputs, terms)["loss"] * math.nan}


class TermsAsString(Squares):
    terms = "loss"


class TwoSided(Loss):
    """A critic term on real and fake, a generator term said to need only fake."""

    terms = ("critic", "generator")
    term_inputs = {"generator": ("fake",)}

    def __init__(self) -> None:
        super().__init__()
        self.critic = nn.Linear(2, 1)

    def forward(self, inputs, terms):
        result = {}
        if "critic" in terms:
            result["critic"] = self.critic(inputs["fake"]).mean() - self.critic(inputs["real"]).mean()
        if "generator" in terms:
            result["generator"] = -self.critic(inputs["fake"]).mean()
        return result


class DetachesFakeForTheGenerator(TwoSided):
    """The generator term still reaches the critic's weights, so only grad_to shows that the generator gets nothing."""

    def forward(self, inputs, terms):
        result = super().forward(inputs, terms - {"generator"})
        if "generator" in terms:
            result["generator"] = -self.critic(inputs["fake"].detach()).mean()
        return result


class ReadsRealWhenThere(TwoSided):
    """Its generator term changes with an input term_inputs leaves out, without failing when it is absent."""

    def forward(self, inputs, terms):
        result = super().forward(inputs, terms)
        if "generator" in terms and "real" in inputs:
            result["generator"] = result["generator"] + self.critic(inputs["real"]).mean()
        return result


class LyingTermInputs(TwoSided):
    def forward(self, inputs, terms):
        result = super().forward(inputs, terms)
        if "generator" in terms:
            result["generator"] = result["generator"] + 0 * inputs["real"].sum()
        return result


def test_correct_losses_pass():
    assert set(check_loss(Squares(), {"x": X})) == {"loss", "mean"}
    check_loss(TwoSided(), {"real": X, "fake": X.roll(1, 0)})
    check_loss(TwoSided(), {"real": X, "fake": X}, terms=["generator"])


@pytest.mark.parametrize(
    ("loss", "message"),
    [
        (PythonFloat(), r"PythonFloat: forward returned 'loss' as a float, not a scalar tensor \(return the tensor itself, without \.item\(\) or float\(\)\)"),
        (Detached(), r"Detached: term 'loss' carries no gradient although parameter 'net.weight' requires grad"),
        (PerExample(), r"PerExample: forward returned 'loss' as a Tensor of shape \(6,\), not a scalar tensor"),
        (NaNTerm(), r"NaNTerm: forward returned 'loss' = nan; expected a finite value"),
        (TermsAsString(), r"TermsAsString: `terms` must be a non-empty tuple of names such as \('loss',\), got 'loss'"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else None,
)
def test_a_broken_loss_is_told_what_is_wrong(loss, message):
    with pytest.raises(ContractError, match=message):
        check_loss(loss, {"x": X})


def test_a_term_is_computed_from_just_its_term_inputs():
    with pytest.raises(ContractError, match=r"LyingTermInputs \(term 'generator' given only its term_inputs \['fake'\]\): .* raised KeyError: 'real'"):
        check_loss(LyingTermInputs(), {"real": X, "fake": X})


class Fixed(Loss):
    def forward(self, inputs, terms):
        return {"loss": inputs["x"].square().mean()}


class DetachesItsInput(Fixed):
    def forward(self, inputs, terms):
        return {"loss": inputs["x"].detach().square().mean()}


def test_grad_to_finds_a_generator_term_cut_off_from_the_generator():
    fake = X.roll(1, 0).clone().requires_grad_()
    check_loss(TwoSided(), {"real": X, "fake": fake}, grad_to={"generator": ["fake"], "critic": ["fake"]})
    check_loss(DetachesFakeForTheGenerator(), {"real": X, "fake": fake})  # every term has a gradient somewhere
    with pytest.raises(ContractError, match=r"DetachesFakeForTheGenerator: term 'generator' gets no gradient to input 'fake' \(detached\?\)"):
        check_loss(DetachesFakeForTheGenerator(), {"real": X, "fake": fake}, grad_to={"generator": ["fake"]})
    with pytest.raises(ValueError, match=r"grad_to names input 'real' for term 'generator', but it does not require grad"):
        check_loss(TwoSided(), {"real": X, "fake": fake}, grad_to={"generator": ["real"]})


def test_a_term_has_the_same_value_from_just_its_term_inputs():
    with pytest.raises(ContractError, match=r"ReadsRealWhenThere: term 'generator' given only its term_inputs \['fake'\] differs from its value given every input"):
        check_loss(ReadsRealWhenThere(), {"real": X, "fake": X.roll(1, 0)})


def test_a_loss_is_checked_on_inputs_that_carry_gradients():
    with pytest.raises(ValueError, match=r"Fixed: no parameter of the loss and no input requires grad, so no gradient can be checked"):
        check_loss(Fixed(), {"x": X})  # a green test that checked no gradient at all would mislead
    check_loss(Fixed(), {"x": X.clone().requires_grad_()})
    with pytest.raises(ContractError, match=r"DetachesItsInput: term 'loss' carries no gradient although input 'x' requires grad"):
        check_loss(DetachesItsInput(), {"x": X.clone().requires_grad_()})


class HoldsAPlainTensor(Fixed):
    """Its learnable scale is no nn.Parameter, so no optimizer sees it; and it cuts its input off."""

    def __init__(self) -> None:
        super().__init__()
        self.log_scale = torch.zeros(X.shape[1], requires_grad=True)

    def forward(self, inputs, terms):
        return {"loss": (inputs["x"].detach() * self.log_scale.exp()).square().mean()}


def test_a_term_whose_gradient_reaches_neither_a_parameter_nor_an_input_is_caught():
    """Any autograd leaf passed: a learnable tensor that is no nn.Parameter, which no player trains."""
    with pytest.raises(ContractError, match=r"HoldsAPlainTensor: term 'loss' has a gradient, but to no parameter and to no input"):
        check_loss(HoldsAPlainTensor(), {"x": X.clone().requires_grad_()})


def test_unknown_terms_and_inputs_are_a_usage_error():
    with pytest.raises(ValueError, match=r"Squares has no term 'critic'; its terms are \('loss',\)"):
        check_loss(Squares(), {"x": X}, terms=["critic"])
    with pytest.raises(ValueError, match=r"TwoSided has no term 'generatr'; its terms are \('critic', 'generator'\)"):
        check_loss(TwoSided(), {"real": X, "fake": X}, grad_to={"generatr": ["fake"]})
    with pytest.raises(ValueError, match=r"grad_to names input 'fakes', which inputs lack; they are \['fake', 'real'\]"):
        check_loss(TwoSided(), {"real": X, "fake": X}, grad_to={"generator": ["fakes"]})

