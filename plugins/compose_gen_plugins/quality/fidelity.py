"""``frechet_distance`` (FID analogue), ``inception_score`` (IS analogue), ``precision_recall`` and ``class_accuracy``."""

from __future__ import annotations

import math
import warnings
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from compose_gen import ComponentType, EvalContext, Params, SpecWarning, Splits, TensorData, hookimpl
from compose_gen.core import MAX_DRAWS
from compose_gen_plugins.quality.classifier import ClassifierParams, load_classifier
from compose_gen_plugins.quality.shared import (
    FeatureSpace,
    Space,
    check_classifier_used,
    check_space,
    draw_samples,
    drawn_classes,
    feature_count,
    metric_type,
    mixed_classes,
    random_rows,
    require_labels,
)
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
    "compose_gen_types",
    "measure_class_accuracy",
    "measure_frechet_distance",
    "measure_inception_score",
    "measure_precision_recall",
]


class FrechetParams(Params):
    """Settings of ``frechet_distance``."""

    n: int = Field(2000, ge=2, le=MAX_DRAWS, description="model samples; real examples are the whole reference split")
    reference: Literal["train", "test"] = Field(
        "test", description="split of the real examples; the other gives frechet_distance_data"
    )
    space: Space = Field(
        "auto", description="features: raw (model space, after the spec's transforms), classifier, or auto (classifier for labelled images)"
    )
    classifier: ClassifierParams = Field(
        default_factory=ClassifierParams, description="feature classifier settings (when features come from it)"
    )


class InceptionParams(Params):
    """Settings of ``inception_score``."""

    n: int = Field(2000, ge=1, le=MAX_DRAWS, description="model samples")
    splits: int = Field(10, ge=1, description="chunks of the samples the score is averaged over")
    classifier: ClassifierParams = Field(
        default_factory=ClassifierParams, description="settings of the classifier giving p(y|x)"
    )

    @model_validator(mode="after")
    def _a_sample_per_split(self) -> "InceptionParams":
        if self.n < self.splits:
            raise ValueError(f"n={self.n} samples cannot fill splits={self.splits} chunks: give n >= splits")
        return self


class PrecisionRecallParams(Params):
    """Settings of ``precision_recall``."""

    n: int = Field(1000, ge=2, le=MAX_DRAWS, description="model samples and real examples, as many of each: at most the reference split's size")
    k: int = Field(3, ge=1, description="the k of the k-nearest-neighbour radii (3 in the paper)")
    reference: Literal["train", "test"] = Field("test", description="split the real examples are drawn from")
    space: Space = Field(
        "auto", description="features: raw (model space, after the spec's transforms), classifier, or auto (classifier for labelled images)"
    )
    classifier: ClassifierParams = Field(
        default_factory=ClassifierParams, description="feature classifier settings (when features come from it)"
    )

    @model_validator(mode="after")
    def _more_samples_than_k(self) -> "PrecisionRecallParams":
        if self.n <= self.k:
            raise ValueError(
                f"the k-nearest-neighbour radii need more than k={self.k} samples, got n={self.n}: raise `n` or lower `k`"
            )
        return self


class ClassAccuracyParams(Params):
    """Settings of ``class_accuracy``."""

    n: int = Field(1000, ge=1, le=MAX_DRAWS, description="model samples, drawn class by class")
    classifier: ClassifierParams = Field(
        default_factory=ClassifierParams, description="settings of the classifier that judges the samples' classes"
    )


def measure_class_accuracy(params: ClassAccuracyParams, ectx: EvalContext) -> dict[str, float]:
    """How often a class-conditional model's samples show their class: GAN-test accuracy (Shmelkov et al. 2018).

    accuracy = (1/n) Σ_i 1[argmax_k C(x_i)_k = i mod K], x_i the sample drawn for class i mod K (K the sampler's
    ``classes``) and C the classifier trained on the dataset: the fraction of samples it assigns to their class;
    ``classifier_accuracy``, its accuracy on the real test split, is what faithful
    samples score, and ``1 / classes`` chance level, what a model that ignores its
    condition scores (one that draws the wrong class for each condition scores near 0).

    Shmelkov et al. 2018, "How good is my GAN?".
    """
    _check_class_accuracy(params, ectx.data)
    conditions = getattr(ectx.model, "conditions", None)
    if conditions is None:
        raise ValueError("class_accuracy needs a sampler that samples by class: set `classes` in the spec's `sample:`")
    net, accuracy = load_classifier(ectx.data, params.classifier, ectx.device)
    if conditions.classes > net.head.out_features:
        raise ValueError(f"the sampler draws {conditions.classes} classes, the data has {net.head.out_features}")
    samples = draw_samples(ectx, params.n, "class_accuracy").to(ectx.device)
    with torch.no_grad():
        predicted = torch.cat([net(part).argmax(-1) for part in samples.split(1024)])
    drawn_for = drawn_classes(params.n, conditions.classes).to(predicted.device)
    result = {"class_accuracy": float((predicted == drawn_for).double().mean())}
    return result if accuracy is None else {**result, "classifier_accuracy": accuracy}


def _check_class_accuracy(params: ClassAccuracyParams, data: Splits) -> None:
    require_labels(
        data,
        "class_accuracy",
        "the classifier that tells each sample's class is trained on the data's labels",
        "give the dataset integer class labels 0..K-1 in `y` (sampling by class needs them too)",
    )


def measure_frechet_distance(params: FrechetParams, ectx: EvalContext) -> dict[str, float]:
    """Fréchet distance between Gaussians fitted to real and model features (Heusel et al. 2017).

    ``FD = |μ_r − μ_g|² + tr(Σ_r + Σ_g − 2(Σ_r Σ_g)^{1/2})`` on the dataset
    classifier's penultimate features (images) or on raw examples, against the
    whole ``reference`` split.  Also reports ``frechet_distance_data``: the same
    distance for ``n`` real examples of the other split, what a model that samples
    the data distribution scores with ``n`` samples (the estimate falls as the
    sample grows, so this floor holds at this ``n`` only).  When the other split
    holds fewer than ``n`` examples, all of them are used and the floor is
    overstated: on the digits (test reference) the train split's 1438 examples
    give 14.7 where 700 of them give 19.3, so 2000 samples of the data
    distribution would score below 14.7.
    """
    _check_frechet(params, ectx.data)
    space = FeatureSpace(params.space, ectx, params.classifier)
    reference, other = _reference_and_other(ectx.data, params.reference)
    real = gaussian_moments(space(reference.fields["x"]))
    fake = gaussian_moments(space(draw_samples(ectx, params.n, "frechet_distance")))
    held_out = random_rows(other.fields["x"], params.n, torch.Generator().manual_seed(ectx.seed))
    return {
        "frechet_distance": frechet_distance(*fake, *real),
        "frechet_distance_data": frechet_distance(*gaussian_moments(space(held_out)), *real),
        **space.report(),
    }


#: What ``frechet_distance`` and ``precision_recall`` advise on ``space: classifier`` without labels.
_RAW_INSTEAD = "set `space: raw`, or `space: auto`, which compares raw examples when the data have no labels"


def _check_frechet(params: FrechetParams, data: Splits) -> None:
    check_space(params.space, data, "frechet_distance", _RAW_INSTEAD)
    check_classifier_used(params.space, params.classifier, data)
    reference, other = _reference_and_other(data, params.reference)
    for split, name, role in ((reference, params.reference, "`reference`"), (other, _other(params.reference), "held-out data")):
        if len(split) < 2:
            raise ValueError(
                f"frechet_distance: the {name} split ({role}) has {len(split)} example(s), and a covariance "
                "needs at least 2; give the dataset more examples"
            )
    features = feature_count(params.space, data, params.classifier)
    if params.n <= features:
        warnings.warn(
            SpecWarning(
                f"n: {params.n} samples for {features} features make the samples' covariance singular, so the distance is "
                "mostly estimation noise (it can fall below the data's own); raise `n`"
            ),
            stacklevel=2,
        )
    if len(reference) <= features:
        warnings.warn(
            SpecWarning(
                f"the {params.reference} split holds {len(reference)} examples for {features} features, so their covariance is "
                "singular and the distance is mostly estimation noise; give the dataset more examples"
            ),
            stacklevel=2,
        )


def measure_inception_score(params: InceptionParams, ectx: EvalContext) -> dict[str, float]:
    """Inception-score analogue ``exp(E_x KL(p(y|x) ‖ p(y)))`` (Salimans et al. 2016).

    ``p(y|x)`` is the softmax of the classifier trained on the dataset; the score
    is averaged over ``splits`` chunks of the ``n`` samples (mean and std reported).
    ``inception_score_data`` is the test split's score, drawn and chunked like the
    samples: ``n`` test examples in ``splits`` chunks of the same sizes, each chunk
    distinct examples (all ``n`` distinct when the split holds that many, else the
    split is reshuffled whenever a chunk no longer fits in what is left).  The
    score falls with the chunk size (``p(y)`` estimated from fewer examples), so
    only chunks of ``n / splits`` examples give what a model that samples the data
    distribution scores; the test split must hold one chunk.  A model that samples
    by class has its samples mixed before they are chunked, so that a chunk's
    classes fall at random, as the test rows' do.  A model that
    reproduces its training images scores higher still: the classifier, trained
    on them, is surer of them than of held-out data.
    """
    _check_inception(params, ectx.data)
    net, accuracy = load_classifier(ectx.data, params.classifier, ectx.device)
    generator = torch.Generator().manual_seed(ectx.seed)
    rows = _chunked_rows(len(ectx.data.test), params.n, params.splits, generator)
    samples = mixed_classes(draw_samples(ectx, params.n, "inception_score"), ectx, generator).to(ectx.device)
    with torch.no_grad():
        probs = torch.cat([net.probabilities(part) for part in samples.split(1024)])
        real = ectx.data.test.fields["x"][rows].to(ectx.device)  # the n rows scored, not the whole split
        real_probs = torch.cat([net.probabilities(part) for part in real.split(1024)])
    mean, std = inception_score(probs, params.splits)
    result = {
        "inception_score": mean,
        "inception_score_std": std,
        "inception_score_data": inception_score(real_probs, params.splits)[0],
    }
    return result if accuracy is None else {**result, "classifier_accuracy": accuracy}


def _check_inception(params: InceptionParams, data: Splits) -> None:
    require_labels(
        data,
        "inception_score",
        "p(y|x) comes from a classifier trained on the data's labels",
        "the score needs labelled data; on unlabelled data frechet_distance and precision_recall compare raw examples",
    )
    chunk, available = math.ceil(params.n / params.splits), len(data.test)
    if chunk > available:
        raise ValueError(
            f"inception_score: inception_score_data scores the test split in chunks as large as the samples' "
            f"(n/splits = {chunk} examples, as the score falls with the chunk size), but the test split has "
            f"{available}; raise `splits` to at least {math.ceil(params.n / max(available, 1))} "
            f"or lower `n` to at most {params.splits * available}"
        )


def _chunked_rows(total: int, n: int, splits: int, generator: torch.Generator) -> Tensor:
    """``n`` row indices into ``total`` rows whose ``splits`` chunks (as ``tensor_split`` makes them) hold distinct rows.

    Rows are taken in the order of a random permutation, a new one whenever the
    next chunk does not fit in what is left of the current one: all ``n`` rows
    are distinct when ``n <= total``.
    """
    rows, left = [], torch.empty(0, dtype=torch.long)
    for chunk in torch.arange(n).tensor_split(splits):
        if len(left) < len(chunk):
            left = torch.randperm(total, generator=generator)
        rows.append(left[: len(chunk)])
        left = left[len(chunk) :]
    return torch.cat(rows)


def measure_precision_recall(params: PrecisionRecallParams, ectx: EvalContext) -> dict[str, float]:
    """Improved precision and recall by k-NN manifolds (Kynkäänniemi et al. 2019).

    precision = (1/n) Σ_j 1[∃i: ‖g_j − r_i‖ ≤ ρ_k(r_i)],  recall = (1/n) Σ_i 1[∃j: ‖r_i − g_j‖ ≤ ρ_k(g_j)],
    ρ_k(u) the distance from u to its k-th nearest neighbour in its own set: the fraction of samples g within the
    k-NN radius of some real example r, and of real examples within that of some sample; on classifier features
    (images) or raw examples.  As many samples
    as real examples, ``min(n, len(reference))``: the radii of the larger set would
    be the smaller, biasing both (recall of the data itself fell from 0.95 to 0.89
    with 4000 samples against 1200 real examples).

    Kynkäänniemi et al. 2019, "Improved Precision and Recall Metric for Assessing Generative Models".
    """
    _check_precision_recall(params, ectx.data)
    space = FeatureSpace(params.space, ectx, params.classifier)
    reference, _ = _reference_and_other(ectx.data, params.reference)
    n = min(params.n, len(reference))
    real = random_rows(reference.fields["x"], n, torch.Generator().manual_seed(ectx.seed))
    fake = draw_samples(ectx, n, "precision_recall")
    precision, recall = knn_precision_recall(space(real), space(fake), params.k)
    return {"precision": precision, "recall": recall, **space.report()}


def _check_precision_recall(params: PrecisionRecallParams, data: Splits) -> None:
    check_space(params.space, data, "precision_recall", _RAW_INSTEAD)
    check_classifier_used(params.space, params.classifier, data)
    reference, other = _reference_and_other(data, params.reference)
    if len(reference) <= params.k:
        other_name = _other(params.reference)
        instead = f", or use `reference: {other_name}`" if len(other) > params.k else ""
        raise ValueError(
            f"precision_recall: the k-nearest-neighbour radii need more than k={params.k} real examples, "
            f"but the {params.reference} split has {len(reference)}; lower `k`{instead}"
        )


def _reference_and_other(data: Splits, reference: str) -> tuple[TensorData, TensorData]:
    splits = (data.test, data.train)
    return splits if reference == "test" else splits[::-1]


def _other(reference: str) -> str:
    return "train" if reference == "test" else "test"


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    return [
        metric_type("frechet_distance", FrechetParams, measure_frechet_distance, check=_check_frechet),
        metric_type("inception_score", InceptionParams, measure_inception_score, check=_check_inception),
        metric_type("precision_recall", PrecisionRecallParams, measure_precision_recall, check=_check_precision_recall),
        metric_type("class_accuracy", ClassAccuracyParams, measure_class_accuracy, by_class=True, check=_check_class_accuracy),
    ]
