"""The quality plugin registers its metric types and they build from spec parameters."""

from __future__ import annotations

from types import SimpleNamespace

import pydantic
import pytest
import torch

import compose_gen_plugins.quality as quality
from compose_gen import Splits, TensorData, make_catalogue
from compose_gen.testing.doubles import FixedSampler

METRICS = {"mode_coverage", "frechet_distance", "inception_score", "precision_recall", "class_accuracy", "birthday_paradox"}


def test_every_metric_type_is_registered_with_a_doc():
    catalogue = make_catalogue([quality], entry_points=False)
    assert set(catalogue.types) == METRICS
    assert all(t.kind == "metric" and t.doc for t in catalogue.types.values())


def test_a_metric_builds_from_spec_parameters_and_runs(mixture_splits, mixture_sampler, modes, context):
    kind = make_catalogue([quality], entry_points=False).get("mode_coverage")
    sampler = mixture_sampler(modes)
    metric = kind.build(kind.params.model_validate({"n": 800, "k": 3, "plot": False}), SimpleNamespace(sampler=sampler))
    assert metric(context(sampler, mixture_splits))["modes_covered"] == 8


@pytest.mark.parametrize(
    ("name", "sampler", "message"),
    [
        ("frechet_distance", None, "frechet_distance draws samples, but the spec has no `sample:` section"),
        ("class_accuracy", None, "class_accuracy draws samples, but the spec has no `sample:` section"),
        ("class_accuracy", FixedSampler(torch.zeros(3, 2)), "class_accuracy needs a sampler that samples by class"),
    ],
)
def test_a_metric_that_draws_samples_needs_a_sampler_that_can(name, sampler, message):
    kind = make_catalogue([quality], entry_points=False).get(name)
    with pytest.raises(ValueError, match=message):
        kind.build(kind.params.model_validate({}), SimpleNamespace(sampler=sampler))
    labelled = FixedSampler(torch.zeros(3, 2), labels=torch.tensor([0, 1, 1]))
    assert callable(kind.build(kind.params.model_validate({}), SimpleNamespace(sampler=labelled)))


def test_mode_coverage_refuses_data_without_modes_when_it_is_built(mixture_splits, mixture_sampler, modes):
    """So validate finds it, not the evaluation after training."""
    kind = make_catalogue([quality], entry_points=False).get("mode_coverage")
    sampler = mixture_sampler(modes)
    assert callable(kind.build(kind.params.model_validate({}), SimpleNamespace(sampler=sampler, data=mixture_splits)))
    for split in (mixture_splits.train, mixture_splits.test):
        split.meta.clear()
    with pytest.raises(ValueError, match=r"mode_coverage: the dataset stores no meta\['modes'\]"):
        kind.build(kind.params.model_validate({}), SimpleNamespace(sampler=sampler, data=mixture_splits))
    explicit = {"modes": modes.tolist(), "mode_std": 0.05}
    assert callable(kind.build(kind.params.model_validate(explicit), SimpleNamespace(sampler=sampler, data=mixture_splits)))


@pytest.mark.parametrize(
    ("name", "spec"),
    [
        ("birthday_paradox", {"s": 100, "batchez": 3}),
        ("frechet_distance", {"classifier": {"epochs": 0}}),
        ("precision_recall", {"space": "pixels"}),
    ],
)
def test_bad_parameters_are_rejected(name, spec):
    kind = make_catalogue([quality], entry_points=False).get(name)
    with pytest.raises(pydantic.ValidationError):
        kind.params.model_validate(spec)


def unlabelled(splits: Splits, test_size: int | None = None) -> Splits:
    """``splits`` without labels or meta (as an npz file of points gives them), the test split cut to ``test_size``."""
    return Splits(TensorData({"x": splits.train.fields["x"]}), TensorData({"x": splits.test.fields["x"][:test_size]}))


def small_test(splits: Splits, test_size: int) -> Splits:
    test = splits.test
    cut = {name: field[:test_size] for name, field in test.fields.items()}
    return Splits(splits.train, TensorData(cut, num_classes=test.num_classes, meta=test.meta))


@pytest.mark.parametrize(
    ("name", "spec", "data", "message"),
    [
        ("inception_score", {}, unlabelled, r"inception_score: p\(y\|x\) comes from a classifier trained on the data's labels"),
        ("inception_score", {}, lambda s: small_test(s, 150), r"n/splits = 200 examples.*at least 14 or lower `n` to at most 1500"),
        ("frechet_distance", {"space": "classifier"}, unlabelled, r"frechet_distance: `space: classifier`.*set `space: raw`"),
        ("frechet_distance", {}, lambda s: small_test(s, 1), r"the test split \(`reference`\) has 1 example"),
        ("precision_recall", {"space": "classifier"}, unlabelled, r"precision_recall: `space: classifier`.*set `space: raw`"),
        ("precision_recall", {"k": 5}, lambda s: small_test(s, 5), r"more than k=5 real examples.*or use `reference: train`"),
        ("birthday_paradox", {"s": 4001}, unlabelled, r"s=4001 exceeds the 4000 examples of the train split"),
        ("birthday_paradox", {"space": "classifier"}, unlabelled, r"birthday_paradox: `space: classifier`.*`space: raw` \(the default\)"),
        ("class_accuracy", {}, unlabelled, r"class_accuracy: the classifier that tells each sample's class"),
        ("mode_coverage", {}, unlabelled, r"mode_coverage: the dataset stores no meta\['modes'\]"),
        ("mode_coverage", {"modes": [[0, 0, 0]], "mode_std": 1}, unlabelled, r"not a list of points in the data's 2 dimensions"),
        ("mode_coverage", {"radii": [], "mode_std": 1}, unlabelled, r"no ring radii"),
    ],
)
def test_a_setting_the_data_refuse_fails_the_build_and_the_metric_alike(name, spec, data, message, mixture_splits, context):
    """One check, run by the build (so validate finds it) and by the metric itself when called without a build."""
    kind = make_catalogue([quality], entry_points=False).get(name)
    params, splits = kind.params.model_validate(spec), data(mixture_splits)
    x, y = mixture_splits.train.fields["x"], mixture_splits.train.fields["y"]
    sampler = FixedSampler(x, labels=y)  # samples by class, for class_accuracy
    with pytest.raises(ValueError, match=message) as at_build:
        kind.build(params, SimpleNamespace(sampler=sampler, data=splits))
    metric = kind.build(params, SimpleNamespace(sampler=sampler))  # no data at the build: nothing to check
    with pytest.raises(ValueError, match=message) as at_evaluation:
        metric(context(sampler, splits))
    assert str(at_build.value) == str(at_evaluation.value)


@pytest.mark.parametrize("name", ["birthday_paradox", "frechet_distance", "precision_recall", "mode_coverage", "inception_score"])
def test_samples_holding_nan_are_refused_not_scored(name, mixture_splits, context):
    """Comparisons with NaN are false: a generator drawing NaN passed the birthday test with a support of 82 500."""
    points = mixture_splits.train.fields["x"][:200].clone()
    points[::2] = float("nan")
    sampler = FixedSampler(points, seed=1)
    kind = make_catalogue([quality], entry_points=False).get(name)
    metric = kind.build(kind.params.model_validate({"plot": False} if name == "mode_coverage" else {}), SimpleNamespace(sampler=sampler))
    with pytest.raises(ValueError, match=rf"metric '{name}': \d+ of the model's \d+ samples hold NaN or inf \(the first is sample \d+\)"):
        metric(context(sampler, mixture_splits))
