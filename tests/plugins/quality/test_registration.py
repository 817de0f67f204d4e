"""The quality plugin registers its metric types and they build from spec parameters."""

from __future__ import annotations

from types import SimpleNamespace

import pydantic
import pytest
import torch

import compose_gen_plugins.quality as quality
from compose_gen import make_catalogue
from compose_gen_plugins.quality.testing import FixedSampler

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
