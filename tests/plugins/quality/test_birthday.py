"""birthday_paradox flags a collapsed generator, passes good ones, and estimates a known support."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from compose_gen import Splits, TensorData
from compose_gen_plugins.quality.birthday import BirthdayParams, birthday_paradox
from compose_gen_plugins.quality.classifier import ClassifierParams
from compose_gen.testing.doubles import DistributionSampler, FixedSampler

PARAMS = BirthdayParams()  # s = 100, 50 batches


def collapsed_generator(splits, support: int) -> FixedSampler:
    """A generator whose samples are ``support`` training points plus noise far below their spacing."""
    return FixedSampler(splits.train.fields["x"][:support], noise=1e-4, seed=1)


def test_a_collapsed_generator_is_flagged_and_its_support_estimated(mixture_splits, context):
    result = birthday_paradox(PARAMS, context(collapsed_generator(mixture_splits, 40), mixture_splits))
    assert result["birthday_pass"] == 0.0 and result["birthday_p_value"] == 1e-4  # the smallest possible
    assert result["collision_rate"] == 1.0 > result["data_collision_rate"]
    # 100 draws from 40 points collide in C(100, 2) / 40 pairs on average, so N = C(100, 2) / pairs = 40
    assert result["estimated_support"] == pytest.approx(40, rel=0.1)
    assert result["data_estimated_support"] > 100 * result["estimated_support"]


def test_the_threshold_is_the_quantile_of_nearest_neighbour_distances_and_ties_at_it_do_not_count(context):
    """Eight pairs of points on a line, 100 apart, pair k with gap k + 1: with batches of the whole set every point's
    nearest neighbour is its partner, so the calibrating distances are 1, 1, 2, 2, ..., 8, 8 and their 0.3-quantile
    is 3.  A batch then holds two pairs closer than τ = 3 (gaps 1 and 2); the pair at exactly τ is no near-duplicate."""
    x = torch.tensor([[100.0 * k + offset] for k in range(8) for offset in (0, k + 1)])
    splits = Splits(TensorData({"x": x}), TensorData({"x": x.clone()}))
    params = BirthdayParams(s=16, batches=10, quantile=0.3)
    ectx = context(FixedSampler(x, replace=False), splits, batch_size=16)  # every batch: the 16 points in some order
    result = birthday_paradox(params, ectx)
    assert result["birthday_threshold"] == 3.0
    assert result["collision_rate"] == result["data_collision_rate"] == 1.0
    assert result["estimated_support"] == result["data_estimated_support"] == 16 * 15 / (2 * 2)  # two pairs per batch


def test_samples_of_the_data_distribution_pass(mixture_splits, mixture_sampler, modes, context):
    result = birthday_paradox(PARAMS, context(mixture_sampler(modes), mixture_splits))
    assert result["birthday_pass"] == 1.0
    assert 0 < result["data_collision_rate"] < 1  # the threshold is calibrated: the data collides sometimes
    assert result["collision_rate"] == pytest.approx(result["data_collision_rate"], abs=0.35)


def test_a_gaussian_fit_to_the_data_passes(mixture_splits, context):
    x = mixture_splits.train.fields["x"]
    fit = torch.distributions.MultivariateNormal(x.mean(0), torch.cov(x.T))
    result = birthday_paradox(PARAMS, context(DistributionSampler(fit), mixture_splits))
    assert result["birthday_pass"] == 1.0
    assert result["collision_rate"] <= result["data_collision_rate"]


def test_image_data_gets_a_png_of_the_closest_pairs_and_classifier_space_works(image_splits, context):
    params = BirthdayParams(
        s=50, batches=10, pairs_shown=4, space="classifier",
        classifier=ClassifierParams(width=4, feature_dim=8, epochs=8, batch_size=64, lr=3e-3),
    )  # fmt: skip
    ectx = context(collapsed_generator(image_splits, 25), image_splits)
    result = birthday_paradox(params, ectx)
    assert result["birthday_pass"] == 0.0 and result["classifier_accuracy"] > 0.95
    for name in ("birthday_pairs.png", "birthday_pairs_data.png"):
        with Image.open(ectx.out_dir / name) as image:
            # 4 pairs as columns, 2 rows of 6-pixel images with 1-pixel gaps, enlarged 4x by save_grid
            assert (image.mode, image.size) == ("L", (4 * (4 * 7 + 1), 4 * (2 * 7 + 1)))


def test_s_larger_than_the_data_is_a_clear_error(image_splits, context):
    with pytest.raises(ValueError, match="s=1000 exceeds the 600 examples"):
        birthday_paradox(BirthdayParams(s=1000), context(FixedSampler(torch.zeros(3, 36)), image_splits))


def test_more_samples_than_a_metric_may_draw_are_refused_with_the_settings(context):
    """s × batches samples are drawn: a million at most, as every metric (compose_gen.core.MAX_DRAWS)."""
    assert BirthdayParams(s=20, batches=50_000).batches == 50_000
    with pytest.raises(ValueError, match="s × batches = 1,000,020 samples, more than the 1,000,000 a metric may draw: lower `s` or `batches`"):
        BirthdayParams(s=20, batches=50_001)


def test_too_few_batches_for_the_test_to_fail_are_refused(mixture_splits, context):
    """The permutation test's p-value is never below 1/C(2b, b): 0.0143 at b = 4, so at alpha 0.01 even a generator
    of one image passed."""
    with pytest.raises(ValueError, match=r"batches: 4 makes a test whose p-value is never below 1/C\(8, 4\) = 0.0143, not below alpha 0.01, so every model would pass: give batches >= 5"):
        BirthdayParams(batches=4)
    assert BirthdayParams(batches=4, alpha=0.05).batches == 4  # 0.0143 < 0.05: a test that can fail
    with pytest.raises(ValueError, match="give batches >= 7"):  # 1/C(2b, b) < 1e-3 from b = 7 on
        BirthdayParams(batches=1, alpha=1e-3)
    with pytest.raises(ValueError, match="alpha 1e-05 is at or below 1/10000, the smallest p-value 9999 relabelings give"):
        BirthdayParams(alpha=1e-5)
    one_image = birthday_paradox(BirthdayParams(batches=5), context(collapsed_generator(mixture_splits, 1), mixture_splits))
    assert one_image["birthday_pass"] == 0.0


def test_on_data_full_of_exact_duplicates_only_exact_duplicates_collide(context):
    """Real batches of 100 from 60 values are mostly exact duplicates: the threshold is 0, and d == 0 still counts."""
    values = torch.arange(60.0)[:, None] * torch.tensor([[1.0, 2.0]])
    data = TensorData({"x": FixedSampler(values, seed=5).sample(3000)})
    splits = Splits(data, data)
    same = birthday_paradox(PARAMS, context(FixedSampler(values, seed=6), splits))
    assert same["birthday_threshold"] == 0.0 and same["birthday_pass"] == 1.0
    assert same["estimated_support"] == pytest.approx(60, rel=0.15)
    fewer = birthday_paradox(PARAMS, context(FixedSampler(values[:6], seed=6), splits))
    assert fewer["birthday_pass"] == 0.0 and fewer["estimated_support"] == pytest.approx(6, rel=0.15)


def test_a_model_collapsed_within_each_class_is_flagged_when_a_batch_holds_as_many_samples_as_classes(context):
    """Drawn by class, sample i is of class i mod K, so a batch of s = K samples held one of every class and never two
    of one: a model of 2 points per class (a support of 40) collided in no batch and passed.  Mixed before they are
    batched, its samples collide as an unconditional model's on those 40 points do."""
    generator = torch.Generator().manual_seed(0)
    classes = 20
    centres = 5 * torch.randn(classes, 8, generator=generator)
    y = torch.randint(classes, (3000,), generator=generator)
    x = centres[y] + torch.randn(3000, 8, generator=generator)
    train, test = ({"x": x[part], "y": y[part]} for part in (slice(0, 2500), slice(2500, None)))
    splits = Splits(TensorData(train, num_classes=classes), TensorData(test, num_classes=classes))
    labels = torch.arange(classes).repeat(2)
    points = centres[labels] + torch.randn(2 * classes, 8, generator=generator)
    params = BirthdayParams(s=classes, batches=100)
    by_class = birthday_paradox(params, context(FixedSampler(points, labels=labels), splits))
    unconditional = birthday_paradox(params, context(FixedSampler(points), splits))
    assert by_class["birthday_pass"] == unconditional["birthday_pass"] == 0.0
    assert by_class["collision_rate"] > 0.9 and unconditional["collision_rate"] > 0.9  # 1 − ∏(1 − i/40), i < 20: 0.997
    assert by_class["estimated_support"] == pytest.approx(40, rel=0.25)
