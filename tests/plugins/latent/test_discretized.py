"""Quantised likelihoods: the discretized logistic mixture (PixelCNN++), its RGB coupling, the categorical."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from compose_gen_plugins.latent.conditionals import CoupledDiscretizedLogisticMixtureDecoder
from compose_gen_plugins.latent.discretized import (
    CoupledDiscretizedLogisticMixture,
    DiscretizedLogisticMixture,
    Grid,
    QuantizedCategorical,
)

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


@pytest.mark.parametrize("bins", [2, 17, 256])
def test_discretized_logistic_mean_is_the_levels_weighted_by_their_probabilities(bins: int) -> None:
    """The mean was the mixture of the clipped component locations: on sparse images (a wide component centred below
    black) 32 times too dark, as the mass the lowest level takes from below was counted at the location, not at 0."""
    dist = mixture(bins, (4, 3), 5, seed=bins, low=0.0, high=255.0)
    values = Grid(bins, 0.0, 255.0).values(torch.zeros((), dtype=DTYPE)).reshape(-1, 1, 1)
    exact = (dist.log_prob(values).exp() * values).sum(0)
    torch.testing.assert_close(dist.mean, exact, atol=1e-9, rtol=1e-9)
    wide_below = DiscretizedLogisticMixture(torch.zeros(1, dtype=DTYPE), torch.tensor([-1.5], dtype=DTYPE), torch.zeros(1, dtype=DTYPE), Grid(17))
    assert wide_below.mean.item() > 0.05 and wide_below.loc.clamp(-1, 1).item() == -1  # the clipped location: 0, black


def test_coupled_mean_is_exact_for_red_and_without_coupling() -> None:
    grid = Grid(5)
    x = rgb_levels(grid)  # every colour, (125, 3)
    params = coupled_parameters((), 3, seed=3)

    def enumerated(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return (CoupledDiscretizedLogisticMixture(**p, grid=grid).log_prob(x).exp().unsqueeze(-1) * x).sum(0)

    coupled = CoupledDiscretizedLogisticMixture(**params, grid=grid).mean
    torch.testing.assert_close(coupled[0], enumerated(params)[0])  # red comes first: its mean is exact
    assert (coupled - enumerated(params)).abs().max() < 0.05  # green and blue: up to the curvature of the shift
    uncoupled = {**params, "coefficients": torch.zeros_like(params["coefficients"])}
    torch.testing.assert_close(CoupledDiscretizedLogisticMixture(**uncoupled, grid=grid).mean, enumerated(uncoupled))


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


# -- PixelCNN++'s coupled RGB sub-pixels -----------------------------------------------------------


def coupled_parameters(batch: tuple[int, ...], components: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "logits": torch.randn(*batch, components, generator=g, dtype=DTYPE),
        "loc": 0.8 * torch.randn(*batch, 3, components, generator=g, dtype=DTYPE),
        "log_scale": torch.empty(*batch, 3, components, dtype=DTYPE).uniform_(-2.0, 0.0, generator=g),
        "coefficients": torch.empty(*batch, 3, components, dtype=DTYPE).uniform_(-0.95, 0.95, generator=g),
    }


def rgb_levels(grid: Grid) -> torch.Tensor:
    """All ``bins³`` pixels (R, G, B) of the grid, shape ``(bins³, 3)``."""
    levels = grid.values(torch.zeros((), dtype=DTYPE)).tolist()
    return torch.tensor(list(itertools.product(levels, repeat=3)), dtype=DTYPE)


@pytest.mark.parametrize("bins, low, high", [(4, 0.0, 1.0), (2, 0.0, 1.0), (5, -1.0, 1.0), (4, 0.0, 255.0)])
def test_coupled_pixel_probabilities_sum_to_one_over_all_colours(bins: int, low: float, high: float) -> None:
    grid = Grid(bins, low, high)
    dist = CoupledDiscretizedLogisticMixture(**coupled_parameters((2, 3), 4, seed=bins), grid=grid)
    assert dist.batch_shape == (2, 3) and dist.event_shape == (3,)
    log_p = dist.log_prob(rgb_levels(grid).reshape(-1, 1, 1, 3))  # (bins³, 2, 3)
    torch.testing.assert_close(torch.logsumexp(log_p, 0), torch.zeros(2, 3, dtype=DTYPE), atol=1e-12, rtol=0)


def test_coupled_pixel_log_prob_is_the_explicit_formula() -> None:
    """x = (1/3, 0, 1) on 4 levels of [0, 1]: R in a middle bin, G in the lowest, B in the highest."""
    params = coupled_parameters((), 3, seed=7)
    dist = CoupledDiscretizedLogisticMixture(**params, grid=Grid(4))
    h = 1 / 3  # half a bin in [-1, 1] units
    red, green, blue = -1 / 3, -1.0, 1.0  # the pixel in [-1, 1] units
    log_pi = params["logits"].log_softmax(-1)
    terms = []
    for k in range(3):
        (mu_r, mu_g, mu_b), (s_r, s_g, s_b) = params["loc"][:, k], params["log_scale"][:, k].exp()
        alpha, beta, gamma = params["coefficients"][:, k]
        mu_g, mu_b = mu_g + alpha * red, mu_b + beta * red + gamma * green
        p_red = torch.sigmoid((red + h - mu_r) / s_r) - torch.sigmoid((red - h - mu_r) / s_r)
        p_green = torch.sigmoid((green + h - mu_g) / s_g)
        p_blue = 1 - torch.sigmoid((blue - h - mu_b) / s_b)
        terms.append(log_pi[k] + torch.log(p_red * p_green * p_blue))
    expected = torch.logsumexp(torch.stack(terms), 0)
    torch.testing.assert_close(dist.log_prob(torch.tensor([1 / 3, 0.0, 1.0], dtype=DTYPE)), expected)


def test_coupled_mixture_factorises_without_coupling_and_red_is_always_the_plain_mixture() -> None:
    grid = Grid(4)
    x = rgb_levels(grid)  # (64, 3)
    params = coupled_parameters((), 3, seed=11)
    channel = lambda p, c: DiscretizedLogisticMixture(p["logits"], p["loc"][c], p["log_scale"][c], grid)  # noqa: E731
    log_p = CoupledDiscretizedLogisticMixture(**params, grid=grid).log_prob(x).reshape(4, 4, 4)
    # R comes first, so its marginal is the plain mixture whatever the coupling.
    torch.testing.assert_close(log_p.logsumexp((1, 2)), channel(params, 0).log_prob(grid.values(x)))

    uncoupled = {**params, "coefficients": torch.zeros_like(params["coefficients"])}
    log_p = CoupledDiscretizedLogisticMixture(**uncoupled, grid=grid).log_prob(x).reshape(4, 4, 4)
    # α = β = γ = 0: every channel's marginal is the independent mixture with the shared logits ...
    for c in range(3):
        others = tuple(d for d in range(3) if d != c)
        torch.testing.assert_close(log_p.logsumexp(others), channel(uncoupled, c).log_prob(grid.values(x)))
    # ... and given the component the channels are independent: with K = 1 the pixel is their product.
    single = {name: t[..., :1] for name, t in uncoupled.items()}
    product = sum(channel(single, c).log_prob(x[:, c]) for c in range(3))
    torch.testing.assert_close(CoupledDiscretizedLogisticMixture(**single, grid=grid).log_prob(x), product)


def test_coupled_image_log_prob_sums_its_pixels_in_channel_first_layout() -> None:
    grid = Grid(17)
    params = coupled_parameters((2, 4, 5), 3, seed=5)  # batch 2, a 4x5 image
    image = CoupledDiscretizedLogisticMixture(**params, grid=grid, spatial_dims=2)
    assert image.batch_shape == (2,) and image.event_shape == (3, 4, 5)
    x = image.sample((6,))
    assert x.shape == (6, 2, 3, 4, 5)
    pixels = CoupledDiscretizedLogisticMixture(**params, grid=grid)  # batch (2, 4, 5), event (3,)
    torch.testing.assert_close(image.log_prob(x), pixels.log_prob(x.movedim(-3, -1)).sum((-2, -1)))
    assert image.mean.shape == (2, 3, 4, 5) and ((image.mean >= 0) & (image.mean <= 1)).all()


def test_coupled_samples_draw_red_then_green_then_blue_with_the_model_frequencies() -> None:
    torch.manual_seed(0)
    grid, n = Grid(4), 40000
    params = coupled_parameters((2,), 2, seed=3)
    dist = CoupledDiscretizedLogisticMixture(**params, grid=grid)
    draws = dist.sample((n,))  # (n, 2, 3)
    torch.testing.assert_close(grid.value(grid.index(draws), draws), draws, rtol=0, atol=0)
    colour = (grid.index(draws) * torch.tensor([16, 4, 1])).sum(-1)  # the pixel's index among the 64 colours
    frequencies = torch.stack([torch.bincount(colour[:, b], minlength=64) for b in range(2)], -1).double() / n
    probabilities = dist.log_prob(rgb_levels(grid).unsqueeze(1)).exp()  # (64, 2), the same colour order
    # TV(empirical, p) ≤ E[TV] + t with probability ≥ 1 − exp(−2nt²) (McDiarmid: one draw moves TV by ≤ 1/n), and
    # E[TV] ≤ ½ Σ sqrt(p(1 − p)/n).  t for a failure probability of 1e-9 per pixel.
    tolerance = 0.5 * (probabilities * (1 - probabilities) / n).sqrt().sum(0) + math.sqrt(math.log(1e9) / (2 * n))
    tv = 0.5 * (frequencies - probabilities).abs().sum(0)
    assert (tv <= tolerance).all(), (tv, tolerance)
    # The bound is tight enough to notice channels drawn without the coupling.
    uncoupled = {**params, "coefficients": torch.zeros_like(params["coefficients"])}
    wrong = CoupledDiscretizedLogisticMixture(**uncoupled, grid=grid).log_prob(rgb_levels(grid).unsqueeze(1)).exp()
    assert (0.5 * (wrong - probabilities).abs().sum(0) > 3 * tolerance).all()


def test_coupled_log_prob_has_gradients_for_every_parameter() -> None:
    params = {name: t.requires_grad_() for name, t in coupled_parameters((5,), 3, seed=2).items()}
    dist = CoupledDiscretizedLogisticMixture(**params, grid=Grid(4))
    x = torch.tensor([[1, 0, 2], [3, 3, 0], [1, 2, 1], [0, 1, 3], [2, 2, 2]], dtype=DTYPE) / 3
    dist.log_prob(x).sum().backward()
    for name, t in params.items():
        assert t.grad is not None and torch.isfinite(t.grad).all() and (t.grad != 0).all(), name


def test_coupled_decoder_broadcasts_over_sample_dimensions_and_needs_three_channels() -> None:
    torch.manual_seed(0)
    latent, components, shape = 4, 2, (3, 2, 2)
    net = nn.Sequential(nn.Linear(latent, 16), nn.Tanh(), nn.Linear(16, 10 * components * 4))  # 10·K per pixel
    decoder = CoupledDiscretizedLogisticMixtureDecoder(net, shape, 1, Grid(17), components)
    z = torch.randn(3, 2, latent)  # IWAE's k = 3 draws for 2 examples
    px = decoder(z)
    x = torch.randint(0, 17, (2, *shape)).float() / 16
    assert px.batch_shape == (3, 2) and px.event_shape == shape
    assert px.log_prob(x).shape == (3, 2) and px.sample().shape == (3, 2, *shape) and px.mean.shape == (3, 2, *shape)
    torch.testing.assert_close(px.log_prob(x)[1], decoder(z[1]).log_prob(x))
    px.log_prob(x).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    with pytest.raises(ValueError, match=r"channel_coupling .* needs an event shape \(3, H, W\), got \(1, 8, 8\)"):
        CoupledDiscretizedLogisticMixtureDecoder(net, (1, 8, 8), 1, Grid(17), components)
