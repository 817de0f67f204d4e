"""The contract checks a plugin author can call in their own tests."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Independent, Normal

from compose_gen.core import Bijector, ContractError, Loss, Splits, TensorData
from compose_gen.core.contracts import check_distribution, check_loss_result, check_loss_terms, check_metric_result, check_splits


def test_a_bijector_output_of_the_contract_passes_and_a_bad_one_says_why() -> None:
    bijector = Bijector((3,))
    x = torch.zeros(4, 2, 3)
    bijector.check_output("forward", x, (x, torch.zeros(4, 2)))
    with pytest.raises(ContractError, match=r"inverse returned ladj of shape \(\) for an input of shape \(4, 2, 3\)"):
        bijector.check_output("inverse", x, (x, torch.zeros(())))
    with pytest.raises(ContractError, match=r"forward returned ladj of torch.float64 on cpu for an input of torch.float32 on cpu"):
        bijector.check_output("forward", x, (x, torch.zeros(4, 2, dtype=torch.float64)))


def test_loss_results_need_every_term_and_scalar_extras() -> None:
    check_loss_result({"critic": torch.tensor(1.0), "accuracy": torch.tensor(0.5)}, {"critic"})
    with pytest.raises(ContractError, match=r"returned no term 'generator' \(it returned 'critic'\)"):
        check_loss_result({"critic": torch.tensor(1.0)}, {"critic", "generator"})
    with pytest.raises(ContractError, match=r"returned 'phase' as a complex torch.complex64 scalar: terms and logs are real"):
        check_loss_result({"critic": torch.tensor(1.0), "phase": torch.tensor(1 + 2j)}, {"critic"})
    with pytest.raises(ContractError, match=r"returned 'scores' as a Tensor of shape \(2,\), not a scalar tensor"):
        check_loss_result({"critic": torch.tensor(1.0), "scores": torch.ones(2)}, {"critic"})


def test_metric_results_come_back_as_floats() -> None:
    assert check_metric_result({"modes": 3, "rate": 0.5}) == {"modes": 3.0, "rate": 0.5}
    with pytest.raises(ContractError, match=r"returned 'm' \(a Tensor of shape \(\)\), not floats"):
        check_metric_result({"m": torch.tensor(1.0)})


def test_a_distribution_must_sum_its_event_for_each_example_of_its_input() -> None:
    """Without Independent, an encoder's log_prob is per coordinate and broadcasts silently in every bound."""
    x = torch.zeros(5, 3)
    check_distribution(Independent(Normal(torch.zeros(5, 4), 1.0), 1), x)
    with pytest.raises(ContractError, match=r"a Normal of batch shape \(5, 4\) for an input of shape \(5, 3\), so its log_prob is per"):
        check_distribution(Normal(torch.zeros(5, 4), 1.0), x)
    check_distribution(Independent(Normal(torch.zeros(4), 1.0), 1))  # a prior: no input, empty batch shape


def test_a_distribution_keeps_the_sample_dimensions_before_the_examples() -> None:
    """A decoder given IWAE's k draws of z for each example that scores only the first: every weight would be draw 0's."""
    z = torch.zeros(3, 5, 2)
    check_distribution(Independent(Normal(torch.zeros(3, 5, 4), 1.0), 1), z)
    with pytest.raises(ContractError, match=r"of batch shape \(5,\) for an input of shape \(3, 5, 2\), whose leading dimensions it should be"):
        check_distribution(Independent(Normal(torch.zeros(5, 4), 1.0), 1), z)


def halves(train: dict, test: dict | None = None) -> Splits:
    return Splits(TensorData(train), TensorData(test if test is not None else train))


X, Y = torch.zeros(4, 2), torch.tensor([0, 1, 1, 0])


@pytest.mark.parametrize(
    ("splits", "message"),
    [
        (halves({"x": X}, {"x": X[:0]}), "its test split has no examples"),
        (halves({"x": X, "y": Y}, {"x": X}), r"its splits have different fields: train \['x', 'y'\], test \['x'\]"),
        (halves({"x": X}, {"x": torch.zeros(4, 3)}), r"field 'x' has examples of shape \(2,\) in train, \(3,\) in test"),
        (halves({"x": X.double()}), r"field 'x' of the train split is torch.float64; compose_gen computes in float32"),
        (halves({"x": X.index_put((torch.tensor(2), torch.tensor(1)), torch.tensor(float("nan")))}), r"holds nan at \[2, 1\]: data must be finite"),
        (halves({"x": X, "y": Y - 1}), r"field 'y' of the train split holds the label -1: class labels are 0..K-1"),
        (halves({"x": X, "y": Y + 9_999}), r"field 'y' of the train split holds the label 10000: class labels are 0..K-1 with K at most 10000"),
        (halves({"x": X}, {"x": X * torch.ones((), requires_grad=True)}), r"field 'x' of the test split carries an autograd graph .*: give tensor.detach\(\)"),
        (halves({"x": X, "y": Y.numpy()}), r"field 'y' of the train split is a numpy.ndarray, not a torch.Tensor: give torch.as_tensor"),
        (halves({"x": X > 0, "y": Y}), r"field 'x' of the train split is torch.bool: give tensor.float\(\) for values 0 and 1"),
        (halves({"x": X, "y": Y, "mask": Y > 0}), r"field 'mask' of the train split is torch.bool"),
        (halves({"x": X.long()}), r"field 'x' of the train split is torch.int64; models compute with x in float32: give tensor.float\(\)"),
        (halves({"x": X[:, 0]}), r"field 'x' of the train split has shape \(4,\): each example needs an event dimension, even of one value: give x.unsqueeze\(1\)"),
        (halves({"x": X, "y": Y[:, None]}), r"field 'y' of the train split has shape \(4, 1\); class labels are one per example"),
    ],
)
def test_a_datasets_splits_are_checked_as_the_built_in_datasets_check_theirs(splits: Splits, message: str) -> None:
    check_splits(halves({"x": X, "y": Y}))
    with pytest.raises(ContractError, match=message):
        check_splits(splits)


class _Game(Loss):
    terms = ("critic", "generator")


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        ({"opposed": ("critic", "gen")}, r"`opposed` must be a pair of two of its terms \('critic', 'generator'\), the two sides of its game; got \('critic', 'gen'\)"),
        ({"opposed": "critic"}, r"`opposed` must be a pair of two of its terms"),
        ({"opposed": ("critic", "critic")}, r"`opposed` must be a pair of two of its terms"),
        ({"generator_term": "gen"}, r"`generator_term` names 'gen', which is not among its terms"),
        ({"likelihood_inputs": "real"}, r"`likelihood_inputs` must be a tuple of its input fields, such as \('real',\)"),
    ],
)
def test_a_loss_naming_terms_it_has_not_is_refused(declared: dict, message: str) -> None:
    """A misspelt `opposed` or `generator_term` was accepted, so the checks that read them checked nothing; a string
    `likelihood_inputs` worked only while its letters happened to match."""
    check_loss_terms(_Game())
    check_loss_terms(type("Right", (_Game,), {"opposed": ("critic", "generator"), "generator_term": "generator"})())
    check_loss_terms(type("Listed", (_Game,), {"opposed": ["critic", "generator"]})())
    with pytest.raises(ContractError, match=message):
        check_loss_terms(type("Wrong", (_Game,), declared)())
