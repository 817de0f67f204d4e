"""The dataset kit: every shipped dataset that needs no file passes; a build that draws from global state is caught."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from compose_gen import Splits, TensorData
from compose_gen.core import ContractError
from compose_gen.testing.components import check_dataset


def test_every_shipped_dataset_without_files_passes(catalogue):
    checked = []
    for dataset in catalogue.of_kind("dataset"):
        try:
            params = dataset.params()
        except ValidationError as error:  # reads the user's files (npz, csv, images ...): covered by their own tests
            # only a parameter without a default may send a dataset here, not a default its own validation refuses
            assert {problem["type"] for problem in error.errors()} == {"missing"}, (dataset.name, str(error))
            continue
        splits = check_dataset(functools.partial(dataset.build, params, None), label=dataset.name)
        assert len(splits.train) > 0
        checked.append(dataset.name)
    assert {"digits", "moons", "eight_gaussians"} <= set(checked)


def halves(x: torch.Tensor) -> Splits:
    return Splits(TensorData({"x": x[:8]}), TensorData({"x": x[8:]}))


def test_a_seeded_build_passes_and_is_returned():
    generator = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    splits = check_dataset(lambda: halves(torch.randn(10, 2, generator=generator())))
    torch.testing.assert_close(splits.test.fields["x"], torch.randn(10, 2, generator=generator())[8:])


@pytest.mark.parametrize(
    "draw",
    [lambda: torch.randn(10, 2), lambda: torch.as_tensor(np.random.default_rng().normal(size=(10, 2)), dtype=torch.float32)],
    ids=["torch's global generator", "an unseeded numpy generator"],
)
def test_a_build_that_draws_from_global_state_is_caught(draw):
    before = torch.random.get_rng_state()
    with pytest.raises(ContractError, match=r"^points: two builds from the same parameters gave other train splits: draw randomness"):
        check_dataset(lambda: halves(draw()), label="points")
    assert torch.equal(torch.random.get_rng_state(), before), "the caller's random state is left as it was"


def test_what_breaks_the_splits_contract_is_said():
    with pytest.raises(ContractError, match=r"^points: build\(\) raised KeyError: 'path'"):
        check_dataset(lambda: {}["path"], label="points")
    with pytest.raises(ContractError, match=r"^points: build returned a Tensor, not compose_gen.Splits"):
        check_dataset(lambda: torch.zeros(3), label="points")
    with pytest.raises(ContractError, match=r"^points: field 'x' of the train split .*float64"):
        check_dataset(lambda: halves(torch.zeros(10, 2, dtype=torch.float64)), label="points")
