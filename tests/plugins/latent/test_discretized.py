"""Quantised likelihoods: the discretized logistic mixture (PixelCNN++) and the categorical over levels."""

from __future__ import annotations

import pytest
import torch

from compose_gen_plugins.latent.discretized import DiscretizedLogisticMixture, Grid, QuantizedCategorical

DTYPE = torch.float64


def mixture(bins: int, batch: tuple[int, ...], components: int, seed: int, low: float = 0.0, high: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    shape = (*batch, components)
    logits = 2 * torch.randn(shape, generator=g, dtype=DTYPE)
    loc = 1.5 * torch.randn(shape, generator=g, dtype=DTYPE)  # some centres outside [-1, 1]
    log_scale = torch.empty(shape, dtype=DTYPE).uniform_(-9.0, 3.0, generator=g)  # below the clamp, up to very wide
    return DiscretizedLogisticMixture(logits, loc, log_scale, Grid(bins, low, high))


@pytest.mark.parametrize("bins", [2, 17, 256])
@pytest.mark.parametrize("low, high", [(0.0, 1.0), (-1.0, 1.0), (0.0, 255.0)])
def test_discretized_logistic_probabilities_sum_to_one_over_the_bins(bins: int, low: float, high: float) -> None:
    dist = mixture(bins, (4, 3), 5, seed=bins, low=low, high=high)
    values = Grid(bins, low, high).values(torch.zeros((), dtype=DTYPE)).reshape(-1, 1, 1)
    log_p = dist.log_prob(values)  # (bins, 4, 3)
    torch.testing.assert_close(torch.logsumexp(log_p, 0), torch.zeros(4, 3, dtype=DTYPE), atol=1e-10, rtol=0)
    assert (log_p <= 0).all()


def test_discretized_logistic_matches_the_cdf_difference_of_one_logistic() -> None:
    grid = Grid(9)
    loc, log_scale = torch.tensor([[0.1]], dtype=DTYPE), torch.tensor([[-1.0]], dtype=DTYPE)
    dist = DiscretizedLogisticMixture(torch.zeros(1, 1, dtype=DTYPE), loc, log_scale, grid)
    def cdf(y: float) -> torch.Tensor:
        return torch.sigmoid((torch.tensor([y], dtype=DTYPE) - 0.1) / torch.exp(torch.tensor(-1.0, dtype=DTYPE)))

    h = 1 / 8  # half a bin in [-1, 1] units; value v ∈ [0, 1] sits at y = 2v - 1
    value = lambda v: torch.tensor([v], dtype=DTYPE)  # noqa: E731
    torch.testing.assert_close(dist.log_prob(value(0.5)), torch.log(cdf(h) - cdf(-h)))
    torch.testing.assert_close(dist.log_prob(value(0.0)), torch.log(cdf(-1 + h)))  # the lowest bin takes the left tail
    torch.testing.assert_close(dist.log_prob(value(1.0)), torch.log(1 - cdf(1 - h)))  # the highest the right tail


def test_discretized_logistic_samples_lie_on_the_grid_with_the_model_frequencies() -> None:
    torch.manual_seed(0)
    dist = mixture(5, (), 3, seed=3)
    draws = dist.sample((40000,))
    grid = Grid(5)
    torch.testing.assert_close(grid.value(grid.index(draws), draws), draws)
    values = grid.values(draws)
    probabilities = dist.log_prob(values.reshape(-1)).exp()
    frequencies = (draws.unsqueeze(-1) == values).double().mean(0)
    error = (probabilities * (1 - probabilities) / len(draws)).sqrt()
    assert ((frequencies - probabilities).abs() <= 5 * error + 1e-4).all()


def test_quantized_categorical_normalises_rounds_and_has_the_grid_mean() -> None:
    grid = Grid(17)
    logits = torch.randn(2, 3, 17, dtype=DTYPE, generator=torch.Generator().manual_seed(0))
    dist = QuantizedCategorical(logits, grid)
    values = grid.values(logits).reshape(-1, 1, 1)
    torch.testing.assert_close(dist.log_prob(values).logsumexp(0), torch.zeros(2, 3, dtype=DTYPE))
    torch.testing.assert_close(dist.log_prob(torch.tensor(3 / 16 + 0.01, dtype=DTYPE)), logits.log_softmax(-1)[..., 3])
    torch.testing.assert_close(dist.mean, (logits.softmax(-1) * torch.arange(17, dtype=DTYPE) / 16).sum(-1))
    draws = dist.sample((50,))
    torch.testing.assert_close(grid.value(grid.index(draws), draws), draws)


def test_grid_rejects_degenerate_ranges() -> None:
    with pytest.raises(ValueError, match="bins ≥ 2"):
        Grid(1)
    with pytest.raises(ValueError, match="high > low"):
        Grid(4, 1.0, 1.0)
