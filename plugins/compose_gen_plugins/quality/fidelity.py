"""``frechet_distance`` (FID analogue), ``inception_score`` (IS analogue), ``precision_recall`` and ``class_accuracy``."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from compose_gen import EvalContext, Params, TensorData
from compose_gen_plugins.quality.classifier import ClassifierParams, load_classifier
from compose_gen_plugins.quality.shared import FeatureSpace, Space, draw_samples, drawn_classes, metric_type, random_rows
from compose_gen_plugins.quality.statistics import (
    frechet_distance,
    gaussian_moments,
    inception_score,
    knn_precision_recall,
)

__all__ = [
    "ClassAccuracyParams",
    "FrechetParams",
    "InceptionParams",
    "PrecisionRecallParams",
    "TYPES",
    "measure_class_accuracy",
    "measure_frechet_distance",
    "measure_inception_score",
    "measure_precision_recall",
]


class FrechetParams(Params):
    """Settings of ``frechet_distance``."""

    n: int = Field(2000, ge=2, description="model samples; real examples are the whole reference split")
    reference: Literal["train", "test"] = Field(
        "test", description="split of the real examples; the other gives frechet_distance_data"
    )
    space: Space = Field("auto", description="features: raw, classifier, or auto (classifier for labelled images)")
    classifier: ClassifierParams = Field(
        default_factory=ClassifierParams, description="feature classifier settings (when features come from it)"
    )


class InceptionParams(Params):
    """Settings of ``inception_score``."""

    n: int = Field(2000, ge=1, description="model samples")
    splits: int = Field(10, ge=1, description="chunks of the samples the score is averaged over")
    classifier: ClassifierParams = Field(
        default_factory=ClassifierParams, description="settings of the classifier giving p(y|x)"
    )


class PrecisionRecallParams(Params):
    """Settings of ``precision_recall``."""

    n: int = Field(1000, ge=2, description="model samples, and at most as many real examples")
    k: int = Field(3, ge=1, description="the k of the k-nearest-neighbour radii (3 in the paper)")
    reference: Literal["train", "test"] = Field("test", description="split the real examples are drawn from")
    space: Space = Field("auto", description="features: raw, classifier, or auto (classifier for labelled images)")
    classifier: ClassifierParams = Field(
        default_factory=ClassifierParams, description="feature classifier settings (when features come from it)"
    )


class ClassAccuracyParams(Params):
    """Settings of ``class_accuracy``."""

    n: int = Field(1000, ge=1, description="model samples, drawn class by class")
    classifier: ClassifierParams = Field(
        default_factory=ClassifierParams, description="settings of the classifier that judges the samples' classes"
    )


def measure_class_accuracy(params: ClassAccuracyParams, ectx: EvalContext) -> dict[str, float]:
    """How often a class-conditional model's samples show their class: GAN-test accuracy (Shmelkov et al. 2018).

    The fraction of ``n`` samples, drawn by class (the sampler's ``classes``), that
    the classifier trained on the dataset assigns to the class they were drawn for;
    ``classifier_accuracy``, its accuracy on the real test split, is the ceiling,
    and ``1 / classes`` the floor of a model that ignores its condition.
    """
    conditions = getattr(ectx.model, "conditions", None)
    if conditions is None:
        raise ValueError("class_accuracy needs a sampler that samples by class: set `classes` in the spec's `sample:`")
    net, accuracy = load_classifier(ectx.data, params.classifier, ectx.device)
    if conditions.classes > net.head.out_features:
        raise ValueError(f"the sampler draws {conditions.classes} classes, the data has {net.head.out_features}")
    samples = draw_samples(ectx, params.n, "class_accuracy").to(ectx.device)
    with torch.no_grad():
        predicted = torch.cat([net(part).argmax(-1) for part in samples.split(1024)])
    drawn_for = drawn_classes(ectx, params.n, conditions.classes).to(predicted.device)
    result = {"class_accuracy": float((predicted == drawn_for).double().mean())}
    return result if accuracy is None else {**result, "classifier_accuracy": accuracy}


def measure_frechet_distance(params: FrechetParams, ectx: EvalContext) -> dict[str, float]:
    """Fréchet distance between Gaussians fitted to real and model features (Heusel et al. 2017).

    ``FD = |μ_r − μ_g|² + tr(Σ_r + Σ_g − 2(Σ_r Σ_g)^{1/2})`` on the dataset
    classifier's penultimate features (images) or on raw examples.  Also reports
    ``frechet_distance_data``: the same distance for held-out real data (the other
    split, as many examples as samples, at most its size), the floor a perfect
    model reaches at this sample size.
    """
    space = FeatureSpace(params.space, ectx, params.classifier)
    reference, other = _reference_and_other(ectx, params.reference)
    real = gaussian_moments(space(reference.fields["x"]))
    fake = gaussian_moments(space(draw_samples(ectx, params.n, "frechet_distance")))
    held_out = random_rows(other.fields["x"], params.n, torch.Generator().manual_seed(ectx.seed))
    return {
        "frechet_distance": frechet_distance(*fake, *real),
        "frechet_distance_data": frechet_distance(*gaussian_moments(space(held_out)), *real),
        **space.report(),
    }


def measure_inception_score(params: InceptionParams, ectx: EvalContext) -> dict[str, float]:
    """Inception-score analogue ``exp(E_x KL(p(y|x) ‖ p(y)))`` (Salimans et al. 2016).

    ``p(y|x)`` is the softmax of the classifier trained on the dataset; the score
    is averaged over ``splits`` chunks of the ``n`` samples (mean and std reported),
    next to ``inception_score_data``, the score of the test split itself.
    """
    net, accuracy = load_classifier(ectx.data, params.classifier, ectx.device)
    samples = draw_samples(ectx, params.n, "inception_score").to(ectx.device)
    with torch.no_grad():
        probs = torch.cat([net.probabilities(part) for part in samples.split(1024)])
        real = ectx.data.test.fields["x"].to(ectx.device)
        real_probs = torch.cat([net.probabilities(part) for part in real.split(1024)])
    mean, std = inception_score(probs, params.splits)
    result = {
        "inception_score": mean,
        "inception_score_std": std,
        "inception_score_data": inception_score(real_probs, min(params.splits, len(real_probs)))[0],
    }
    return result if accuracy is None else {**result, "classifier_accuracy": accuracy}


def measure_precision_recall(params: PrecisionRecallParams, ectx: EvalContext) -> dict[str, float]:
    """Improved precision and recall by k-NN manifolds (Kynkäänniemi et al. 2019).

    Precision: the fraction of samples within the k-NN radius of some real
    example; recall: the fraction of real examples within the k-NN radius of
    some sample; on classifier features (images) or raw examples.
    """
    space = FeatureSpace(params.space, ectx, params.classifier)
    reference, _ = _reference_and_other(ectx, params.reference)
    real = random_rows(reference.fields["x"], params.n, torch.Generator().manual_seed(ectx.seed))
    fake = draw_samples(ectx, params.n, "precision_recall")
    precision, recall = knn_precision_recall(space(real), space(fake), params.k)
    return {"precision": precision, "recall": recall, **space.report()}


def _reference_and_other(ectx: EvalContext, reference: str) -> tuple[TensorData, TensorData]:
    splits = (ectx.data.test, ectx.data.train)
    return splits if reference == "test" else splits[::-1]


TYPES = [
    metric_type("frechet_distance", FrechetParams, measure_frechet_distance),
    metric_type("inception_score", InceptionParams, measure_inception_score),
    metric_type("precision_recall", PrecisionRecallParams, measure_precision_recall),
    metric_type("class_accuracy", ClassAccuracyParams, measure_class_accuracy, by_class=True),
]
