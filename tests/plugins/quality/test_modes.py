"""mode_coverage on exact mixture samples, on a generator that lost modes, and on bad input."""

from __future__ import annotations

import math

import pydantic
import pytest
import torch

from compose_gen import Splits, TensorData
from compose_gen_plugins.quality.modes import ModeCoverageParams, mode_coverage
from compose_gen.testing.doubles import FixedSampler

RADII = [0.75, 1.5, 2.25, 3.0]
RING_STD = 0.08


def ring_points(n: int, radii: list[float], seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    ring = torch.tensor(radii)[torch.randint(len(radii), (n,), generator=generator)]
    angle = 2 * math.pi * torch.rand(n, generator=generator)
    radius = ring + RING_STD * torch.randn(n, generator=generator)
    return radius[:, None] * torch.stack([angle.cos(), angle.sin()], 1)


def test_samples_of_the_mixture_cover_every_mode_with_99_percent_high_quality(
    mixture_splits, mixture_sampler, modes, context
):
    ectx = context(mixture_sampler(modes), mixture_splits)
    result = mode_coverage(ModeCoverageParams(), ectx)
    assert result["modes_covered"] == 8 and result["modes_total"] == 8
    # a 2D isotropic Gaussian puts 1 - exp(-3^2 / 2) = 98.9% of its mass within 3 std
    assert result["high_quality_fraction"] == pytest.approx(1 - math.exp(-4.5), abs=0.006)
    assert (ectx.out_dir / "mode_coverage.png").stat().st_size > 0


def test_a_generator_on_two_modes_covers_two_of_eight(mixture_splits, mixture_sampler, modes, context):
    result = mode_coverage(ModeCoverageParams(plot=False), context(mixture_sampler(modes[[0, 3]]), mixture_splits))
    assert (result["modes_covered"], result["modes_total"]) == (2, 8)
    assert result["high_quality_fraction"] > 0.97


def test_a_few_stray_samples_do_not_cover_a_mode(mixture_splits, modes, context):
    points = torch.cat([modes[0].expand(990, 2), modes[1].expand(10, 2)])
    result = mode_coverage(ModeCoverageParams(n=1000, plot=False), context(FixedSampler(points), mixture_splits))
    assert result["modes_covered"] == 1  # 10 samples < 10% of the fair share 1000 / 8
    veegan_rule = ModeCoverageParams(n=1000, min_fraction=0, plot=False)
    loose = mode_coverage(veegan_rule, context(FixedSampler(points), mixture_splits))
    assert loose["modes_covered"] == 2  # VEEGAN's rule: one high-quality sample suffices


@pytest.mark.parametrize("min_fraction, needed", [(0.1, 13), (0.16, 20)], ids=["12.5-rounds-up", "20-exactly"])
def test_a_mode_is_covered_from_its_fair_share_rounded_up(min_fraction, needed, mixture_splits, modes, context):
    """Covered with at least ceil(min_fraction · n / modes) samples: exactly that many counts, one fewer does not."""
    points = torch.cat([modes[0].expand(needed, 2), modes[1].expand(needed - 1, 2), modes[2].expand(1000 - 2 * needed + 1, 2)])
    params = ModeCoverageParams(n=1000, min_fraction=min_fraction, plot=False)
    result = mode_coverage(params, context(FixedSampler(points, replace=False), mixture_splits, batch_size=1000))  # each point once
    assert result["modes_covered"] == 2  # modes 0 and 2, not mode 1


def test_samples_far_from_every_mode_are_not_high_quality(mixture_splits, mixture_sampler, modes, context):
    result = mode_coverage(ModeCoverageParams(plot=False), context(mixture_sampler(modes * 1.5), mixture_splits))
    assert result == {"modes_covered": 0.0, "modes_total": 8.0, "high_quality_fraction": 0.0}


def test_modes_can_be_given_explicitly_and_missing_modes_are_a_clear_error(mixture_splits, modes, context):
    for split in (mixture_splits.train, mixture_splits.test):
        split.meta.clear()
    model = FixedSampler(modes)
    with pytest.raises(ValueError, match=r"mode_coverage: .*meta\['modes'\].*give `modes` or `radii`, and `mode_std`"):
        mode_coverage(ModeCoverageParams(plot=False), context(model, mixture_splits))
    params = ModeCoverageParams(modes=modes.tolist(), mode_std=0.05, plot=False)
    assert mode_coverage(params, context(model, mixture_splits))["modes_covered"] == 8
    with pytest.raises(pydantic.ValidationError, match="either `modes`"):
        ModeCoverageParams(modes=modes.tolist(), radii=[1.0])


def test_modes_of_no_spread_are_refused_since_no_sample_could_hit_one(mixture_splits, modes, context):
    """eight_gaussians with noise: 0 stores mode_std 0: every model covered 0 modes, the data too."""
    for split in (mixture_splits.train, mixture_splits.test):
        split.meta["mode_std"] = 0.0
    with pytest.raises(ValueError, match=r"the modes' std is 0 .*give `mode_std` > 0"):
        mode_coverage(ModeCoverageParams(plot=False), context(FixedSampler(modes), mixture_splits))
    assert mode_coverage(ModeCoverageParams(mode_std=0.05, plot=False), context(FixedSampler(modes), mixture_splits))["modes_covered"] == 8


def test_a_mixture_on_a_line_is_covered_and_plotted_as_a_histogram(context):
    """1-D data, the mode-dropping toy of one dimension: its picture raised IndexError after training."""
    generator = torch.Generator().manual_seed(0)
    points = torch.tensor([-2.0, 2.0])[torch.randint(2, (4000,), generator=generator)] + 0.3 * torch.randn(4000, generator=generator)
    data = TensorData({"x": points[:, None]}, meta={"modes": [[-2.0], [2.0]], "mode_std": 0.3})
    ectx = context(FixedSampler(points[:, None].flip(0), replace=False), Splits(data, data))
    result = mode_coverage(ModeCoverageParams(n=2000), ectx)
    assert (result["modes_covered"], result["modes_total"]) == (2, 2)
    assert result["high_quality_fraction"] == pytest.approx(0.9973, abs=0.004)  # within 3 std on a line
    assert (ectx.out_dir / "mode_coverage.png").stat().st_size > 0
    halved = TensorData({"x": points[:, None] / 2}, to_display=lambda x: x * 2, meta=data.meta)  # model space: x / 2
    diverged = torch.cat([points[:100, None] / 2, torch.tensor([[3e38]])])  # finite, but beyond float32 in data space
    far = mode_coverage(ModeCoverageParams(n=101), context(FixedSampler(diverged, replace=False), Splits(halved, halved)))
    assert far["modes_total"] == 2, "the numbers survive a picture of samples the axes cannot hold"


def test_rings_are_modes_at_a_radial_distance(context):
    data = TensorData({"x": ring_points(2000, RADII, 0)}, meta={"radii": RADII, "mode_std": RING_STD})
    splits = Splits(data, data)
    on_rings = FixedSampler(ring_points(5000, RADII, 1), replace=False)
    exact = mode_coverage(ModeCoverageParams(plot=False), context(on_rings, splits))
    assert (exact["modes_covered"], exact["modes_total"]) == (4, 4)
    # radial noise is 1D: 99.73% of it lies within 3 std
    assert exact["high_quality_fraction"] == pytest.approx(0.9973, abs=0.004)
    one_ring = context(FixedSampler(ring_points(5000, RADII[2:3], 1), replace=False), splits)
    assert mode_coverage(ModeCoverageParams(plot=False), one_ring)["modes_covered"] == 1


def test_samples_are_compared_with_the_modes_in_data_space(mixture_splits, mixture_sampler, modes, context):
    """Model space is standardised data here: samples must be mapped back before meeting the modes."""
    to_model, to_data = (lambda x: (x - 5) / 0.5), (lambda x: x * 0.5 + 5)
    meta = {"modes": modes + 5, "mode_std": 0.05}
    split = lambda part: TensorData({"x": to_model(part.fields["x"] + 5)}, to_display=to_data, meta=meta)  # noqa: E731
    splits = Splits(split(mixture_splits.train), split(mixture_splits.test))
    model_space_sampler = mixture_sampler(to_model(modes + 5))  # std 0.05 in model space is 0.025 in data space
    result = mode_coverage(ModeCoverageParams(plot=False), context(model_space_sampler, splits))
    assert result["modes_covered"] == 8 and result["high_quality_fraction"] == 1.0


def test_samples_of_the_wrong_shape_are_a_clear_error(mixture_splits, context):
    with pytest.raises(ValueError, match=r"'mode_coverage'.*shape \(10, 3\)"):
        mode_coverage(ModeCoverageParams(n=10), context(FixedSampler(torch.zeros(5, 3)), mixture_splits))
