"""The quality plugin registers its metric types and they build from spec parameters."""

from __future__ import annotations

import pydantic
import pytest

import compose_gen_plugins.quality as quality
from compose_gen import make_catalogue

METRICS = {"mode_coverage", "frechet_distance", "inception_score", "precision_recall", "class_accuracy", "birthday_paradox"}


def test_every_metric_type_is_registered_with_a_doc():
    catalogue = make_catalogue([quality], entry_points=False)
    assert set(catalogue.types) == METRICS
    assert all(t.kind == "metric" and t.doc for t in catalogue.types.values())


def test_a_metric_builds_from_spec_parameters_and_runs(mixture_splits, mixture_sampler, modes, context):
    kind = make_catalogue([quality], entry_points=False).get("mode_coverage")
    metric = kind.build(kind.params.model_validate({"n": 800, "k": 3, "plot": False}), None)
    assert metric(context(mixture_sampler(modes), mixture_splits))["modes_covered"] == 8


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
