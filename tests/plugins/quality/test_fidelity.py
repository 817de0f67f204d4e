"""frechet_distance, inception_score, precision_recall and class_accuracy as metrics, on fake models."""

from __future__ import annotations

import pytest
import torch

from compose_gen import Splits, TensorData
from compose_gen_plugins.quality.classifier import ClassifierParams
from compose_gen_plugins.quality.fidelity import (
    ClassAccuracyParams,
    FrechetParams,
    InceptionParams,
    PrecisionRecallParams,
    measure_class_accuracy,
    measure_frechet_distance,
    measure_inception_score,
    measure_precision_recall,
)
from compose_gen_plugins.quality.fidelity import _chunked_rows
from compose_gen_plugins.quality.shared import draw_samples, drawn_classes
from compose_gen.testing.doubles import DistributionSampler, FixedSampler

TINY = ClassifierParams(width=4, feature_dim=8, epochs=8, batch_size=64, lr=3e-3)


def test_raw_frechet_distance_is_near_zero_for_the_data_and_grows_as_the_squared_shift(
    mixture_splits, mixture_sampler, modes, context
):
    big_test = TensorData({"x": mixture_sampler(modes, seed=100).sample(20_000)})
    splits = Splits(mixture_splits.train, big_test)
    params = FrechetParams(n=20_000)
    exact = measure_frechet_distance(params, context(mixture_sampler(modes), splits))
    assert set(exact) == {"frechet_distance", "frechet_distance_data"}  # 2D data without images: raw space
    assert exact["frechet_distance"] < 0.01 and exact["frechet_distance_data"] < 0.01
    distances = []
    for shift in (0.5, 1.0, 2.0):
        moved = mixture_sampler(modes + torch.tensor([shift, 0.0]))
        distances.append(measure_frechet_distance(params, context(moved, splits))["frechet_distance"])
        # a mean shift moves the Gaussian fit by the shift and keeps its covariance: FD = |shift|^2
        assert distances[-1] == pytest.approx(shift**2, abs=0.06)
    assert distances == sorted(distances)


def test_classifier_frechet_distance_separates_real_data_from_collapsed_and_noisy_models(image_splits, context):
    params = FrechetParams(n=300, classifier=TINY)
    test_x = image_splits.test.fields["x"]
    real = measure_frechet_distance(params, context(FixedSampler(test_x, replace=False), image_splits))
    collapsed = measure_frechet_distance(params, context(FixedSampler(test_x[:3], noise=0.01), image_splits))
    noisy = measure_frechet_distance(params, context(FixedSampler(test_x, noise=0.5), image_splits))
    assert real["classifier_accuracy"] > 0.95
    floor = max(real["frechet_distance"], real["frechet_distance_data"])  # sampling noise of the moments
    assert 50 * floor < min(collapsed["frechet_distance"], noisy["frechet_distance"])


def test_inception_score_reaches_the_class_count_for_real_data_and_one_for_a_single_class(image_splits, context):
    params = InceptionParams(n=300, splits=3, classifier=TINY)
    x, y = image_splits.test.fields["x"], image_splits.test.fields["y"]
    real = measure_inception_score(params, context(FixedSampler(x, replace=False), image_splits))
    assert real["inception_score"] == pytest.approx(real["inception_score_data"], rel=0.05)
    assert 2.5 < real["inception_score"] <= 3.0 + 1e-9
    one_class = measure_inception_score(params, context(FixedSampler(x[y == 1]), image_splits))
    assert one_class["inception_score"] < 1.2
    assert set(one_class) == {"inception_score", "inception_score_std", "inception_score_data", "classifier_accuracy"}


def test_the_data_s_inception_score_is_what_a_model_sampling_the_data_scores(mixture_splits, mixture_sampler, modes, context):
    """The score falls with the chunk size: the data's must be scored in chunks as large as the samples'.

    200 test examples against n = 2000 samples in 10 chunks of 200: scoring the
    test split in 10 chunks of 20 gave ~6.6 against the model's ~7.75 (8 modes).
    """
    test = {name: field[:200] for name, field in mixture_splits.test.fields.items()}
    splits = Splits(mixture_splits.train, TensorData(test, num_classes=8))
    params = InceptionParams(n=2000, splits=10, classifier=TINY)
    for seed in range(3):
        result = measure_inception_score(params, context(mixture_sampler(modes, seed=seed), splits, seed=seed))
        assert result["classifier_accuracy"] == 1.0
        assert result["inception_score_data"] == pytest.approx(result["inception_score"], rel=0.04)


def test_the_data_s_chunks_have_the_samples_sizes_and_distinct_examples():
    generator = torch.Generator().manual_seed(0)
    fits = _chunked_rows(100, 95, 10, generator)
    assert len(fits) == 95 and len(fits.unique()) == 95  # all distinct when the split holds n examples
    reused = _chunked_rows(30, 95, 4, generator)
    chunks = reused.tensor_split(4)
    assert [len(chunk) for chunk in chunks] == [24, 24, 24, 23] == [len(c) for c in torch.arange(95).tensor_split(4)]
    assert all(len(chunk.unique()) == len(chunk) for chunk in chunks) and 0 <= reused.min() and reused.max() < 30


def test_precision_recall_tells_a_collapsed_model_from_a_spread_one(mixture_splits, mixture_sampler, modes, context):
    params = PrecisionRecallParams(n=800)
    exact = measure_precision_recall(params, context(mixture_sampler(modes), mixture_splits))
    two_modes = measure_precision_recall(params, context(mixture_sampler(modes[:2]), mixture_splits))
    wide = DistributionSampler(torch.distributions.Normal(torch.zeros(2), 2.0 * torch.ones(2)))
    blurry = measure_precision_recall(params, context(wide, mixture_splits))
    assert exact["precision"] > 0.9 and exact["recall"] > 0.9
    assert two_modes["precision"] > 0.9 and two_modes["recall"] == pytest.approx(2 / 8, abs=0.06)
    assert blurry["precision"] < 0.2 and blurry["recall"] > 0.9


def test_precision_recall_compares_as_many_samples_as_real_examples(mixture_splits, mixture_sampler, modes, context):
    """n larger than the test split drew n samples against fewer real examples, and the data's own recall fell."""
    drawn = []
    model = mixture_sampler(modes)
    original = model.sample
    model.sample = lambda n, *args, **kwargs: drawn.append(n) or original(n, *args, **kwargs)
    result = measure_precision_recall(PrecisionRecallParams(n=4000), context(model, mixture_splits))
    assert sum(drawn) == len(mixture_splits.test) and result["recall"] > 0.9


def test_a_float64_model_is_compared_with_float32_data(mixture_splits, modes, context):
    model = FixedSampler(mixture_splits.test.fields["x"].double(), replace=False)
    result = measure_precision_recall(PrecisionRecallParams(n=500), context(model, mixture_splits))
    assert result["precision"] > 0.9 and result["recall"] > 0.9


def test_metrics_are_reproducible_for_a_seed(mixture_splits, mixture_sampler, modes, context):
    params = PrecisionRecallParams(n=300)
    first = measure_precision_recall(params, context(mixture_sampler(modes), mixture_splits, seed=3))
    second = measure_precision_recall(params, context(mixture_sampler(modes), mixture_splits, seed=3))
    assert first == second


def test_class_accuracy_is_high_for_samples_of_their_class_and_chance_for_a_model_ignoring_it(image_splits, context):
    """A perfect class-conditional model scores near the classifier's accuracy; one that ignores the class scores ~1/3."""
    params = ClassAccuracyParams(n=300, classifier=TINY)
    x, y = image_splits.test.fields["x"], image_splits.test.fields["y"]
    faithful = measure_class_accuracy(params, context(FixedSampler(x, labels=y), image_splits, batch_size=64))
    assert faithful["class_accuracy"] > 0.95 and faithful["classifier_accuracy"] > 0.95
    shuffled = FixedSampler(x, labels=y[torch.randperm(len(y), generator=torch.Generator().manual_seed(0))])
    ignoring = measure_class_accuracy(params, context(shuffled, image_splits, batch_size=64))
    assert abs(ignoring["class_accuracy"] - 1 / 3) < 0.1


def test_class_accuracy_needs_a_sampler_that_samples_by_class(image_splits, context):
    with pytest.raises(ValueError, match="samples by class"):
        measure_class_accuracy(ClassAccuracyParams(n=10, classifier=TINY), context(FixedSampler(image_splits.test.fields["x"]), image_splits))


@pytest.mark.parametrize("batch_size", [2, 3, 64, 1000])
def test_samples_drawn_by_class_give_every_class_its_share_whatever_the_batch_size(image_splits, context, batch_size):
    """A model that samples by class starts each batch at class 0: batches of 2 never drew the third class, so
    class_accuracy (and every sample metric's mix of classes) depended on evaluate.batch_size."""
    x, y = image_splits.test.fields["x"], image_splits.test.fields["y"]
    ectx = context(FixedSampler(x, labels=y), image_splits, batch_size=batch_size)
    samples = draw_samples(ectx, 300, "test")
    of_class = y[(samples.flatten(1)[:, None] == x.flatten(1)[None]).all(-1).float().argmax(1)]  # each sample is a pool row
    assert torch.equal(of_class, drawn_classes(300, 3))
    assert torch.bincount(of_class).tolist() == [100, 100, 100]


def test_a_model_sampling_the_data_by_class_scores_the_data_s_inception_score(mixture_splits, context):
    """Drawn by class, sample i is of class i mod K, so a chunk of K samples held one of each class: its mean prediction
    was as even as the classes, and a model that draws the test examples by class scored 7.9 against the data's 4.7 in
    chunks of 8 (and 44 against 27 on 50 classes in chunks of 50).  Mixed before they are chunked, its samples
    score as the data do."""
    test = mixture_splits.test.fields
    params = InceptionParams(n=800, splits=100, classifier=TINY)
    by_class = measure_inception_score(params, context(FixedSampler(test["x"], labels=test["y"]), mixture_splits))
    assert by_class["classifier_accuracy"] == 1.0
    assert by_class["inception_score"] == pytest.approx(by_class["inception_score_data"], rel=0.1)
    assert by_class["inception_score_std"] > 0.3
