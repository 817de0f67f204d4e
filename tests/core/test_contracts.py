"""The contract checks a plugin author can call in their own tests."""

from __future__ import annotations

import pytest
import torch

from compose_gen.core import Bijector, ContractError
from compose_gen.core.contracts import check_loss_result, check_metric_result


def test_a_bijector_output_of_the_contract_passes_and_a_bad_one_says_why() -> None:
    bijector = Bijector((3,))
    x = torch.zeros(4, 2, 3)
    bijector.check_output("forward", x, (x, torch.zeros(4, 2)))
    with pytest.raises(ContractError, match=r"inverse returned ladj of shape \(\) for an input of shape \(4, 2, 3\)"):
        bijector.check_output("inverse", x, (x, torch.zeros(())))


def test_loss_results_need_every_term_and_scalar_extras() -> None:
    check_loss_result({"critic": torch.tensor(1.0), "accuracy": torch.tensor(0.5)}, {"critic"})
    with pytest.raises(ContractError, match=r"returned no term 'generator' \(it returned 'critic'\)"):
        check_loss_result({"critic": torch.tensor(1.0)}, {"critic", "generator"})


def test_metric_results_come_back_as_floats() -> None:
    assert check_metric_result({"modes": 3, "rate": 0.5}) == {"modes": 3.0, "rate": 0.5}
    with pytest.raises(ContractError, match=r"returned 'm' \(a Tensor of shape \(\)\), not floats"):
        check_metric_result({"m": torch.tensor(1.0)})
