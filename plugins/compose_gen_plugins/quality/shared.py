"""What every quality metric shares: drawing model samples, real subsets, and the space they are compared in."""

from __future__ import annotations

import inspect
import math
import warnings
from functools import cache, partial
from typing import Any, Callable, Literal

import torch
from torch import Tensor

from compose_gen import BuildContext, ComponentType, EvalContext, Params, SpecWarning, Splits
from compose_gen_plugins.quality.classifier import ClassifierParams, FeatureClassifier, has_labels, load_classifier
from compose_gen_plugins.sampling import require_sampler

__all__ = [
    "FeatureSpace",
    "Space",
    "check_classifier_used",
    "check_space",
    "draw_samples",
    "drawn_classes",
    "metric_type",
    "mixed_classes",
    "random_rows",
    "require_labels",
]

#: ``raw``: flattened model-space examples; ``classifier``: the penultimate features of
#: the classifier trained on the dataset; ``auto``: the classifier for labelled images, raw otherwise.
Space = Literal["auto", "raw", "classifier"]


#: Results that describe the classifier these metrics share, not a metric's settings: given once, however many report them.
SHARED_RESULTS = frozenset({"classifier_accuracy"})


@cache  # the same type at each call of compose_gen_types, so one reached twice is kept once
def metric_type(
    name: str,
    params: type[Params],
    measure: Callable[[Any, EvalContext], dict[str, float]],
    by_class: bool = False,
    check: Callable[[Any, Splits], None] | None = None,
) -> ComponentType:
    """A metric type whose ``build(params, ctx)`` returns ``measure`` bound to its parameters.

    Each of these metrics draws samples: its build checks that the spec says how
    (by class too, for ``by_class``), so ``validate`` finds a missing ``sample:``.
    ``check(params, data)`` refuses what else the metric would fail on with these
    parameters and this data: run by the build (when ``ctx.data`` is there), so
    ``validate`` finds it rather than the evaluation after training, and by
    ``measure`` itself, which may be called without a build.
    """

    def build(parsed: Params, ctx: BuildContext) -> Callable[[EvalContext], dict[str, float]]:
        sampler = require_sampler(ctx, name, by_class)
        if sampler.distortion is not None:
            message = (
                f"scores the spec's samples, drawn with `sample:` {sampler.distortion} rather than from the model's "
                "distribution, so its value describes that setting, not the model"
            )
            warnings.warn(SpecWarning(message), stacklevel=2)
        data = getattr(ctx, "data", None)
        if check is not None and data is not None:
            check(parsed, data)
        measured = partial(measure, parsed)
        measured.shared_results = SHARED_RESULTS  # type: ignore[attr-defined]
        return measured

    return ComponentType(name, "metric", params, build, help=(inspect.getdoc(measure) or "").strip())


def draw_samples(ectx: EvalContext, n: int, metric: str) -> Tensor:
    """``n`` samples as the spec's ``sample:`` draws them, in batches of ``ectx.batch_size``, without autograd.

    That is the model's distribution unless the sampler changes it (its ``distortion``: a
    temperature, a truncation, of which the build warns), or returns decoder means.

    Seeded by ``ectx.seed`` inside a forked RNG, so a metric is reproducible and
    leaves the caller's random state alone.  Samples holding NaN or inf are refused:
    every comparison with NaN is false, so they would count as distinct, novel and far
    from every mode, and a broken generator would score as a varied one.
    """
    devices = []
    if ectx.device.type == "cuda":
        devices = [ectx.device.index if ectx.device.index is not None else torch.cuda.current_device()]
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        torch.manual_seed(ectx.seed)
        parts = [ectx.model.sample(size, temperature=1.0) for size in _batch_sizes(ectx, n)]
    samples = torch.cat(parts)
    expected = ectx.data.train.event_shape("x")
    if len(samples) != n or math.prod(samples.shape[1:]) != math.prod(expected):
        raise ValueError(
            f"metric {metric!r}: the model's sample({n}) returned shape {tuple(samples.shape)}, "
            f"but the data's examples have shape {tuple(expected)}"
        )
    broken = ~torch.isfinite(samples.flatten(1)).all(1)
    if bool(broken.any()):
        raise ValueError(
            f"metric {metric!r}: {int(broken.sum())} of the model's {n} samples hold NaN or inf (the first is sample "
            f"{int(broken.nonzero()[0])}), which no distance or classifier scores: the model diverged, or its sampler is broken"
        )
    return samples


def drawn_classes(n: int, classes: int) -> Tensor:
    """The class each of :func:`draw_samples`'s ``n`` samples was drawn for: sample ``i`` for class ``i mod classes``."""
    return torch.arange(n) % classes


def mixed_classes(samples: Tensor, ectx: EvalContext, generator: torch.Generator) -> Tensor:
    """:func:`draw_samples`'s ``samples`` in a random order (``generator``, a CPU generator) when the model samples by
    class, else as they are.

    Drawn by class, sample ``i`` is of class ``i mod K``, so each run of K samples holds one of every class: a metric
    that scores runs of samples (the birthday test's batches, the Inception score's splits) would score stratified
    draws, unlike the data's random rows: no batch of K samples could hold two of one class (a model collapsed to two
    points per class passed the birthday test at s = K), and a split's mean prediction would be as even as the classes
    (a model drawing the test data by class scored 44 against the data's 27 on 50 classes).  Mixed, each run's classes
    fall as a random draw's do."""
    if getattr(ectx.model, "conditions", None) is None:
        return samples
    return samples[torch.randperm(len(samples), generator=generator).to(samples.device)]


def _batch_sizes(ectx: EvalContext, n: int) -> list[int]:
    """The sizes of the batches ``n`` samples are drawn in.  A model that samples by class starts each batch at class 0, so
    its batches hold whole rounds of its K classes (K where the batch size is smaller): sample ``i`` is then of class
    ``i mod K`` overall, and every class gets its share whatever ``evaluate.batch_size`` is."""
    conditions = getattr(ectx.model, "conditions", None)
    step = ectx.batch_size if conditions is None else conditions.classes * max(1, ectx.batch_size // conditions.classes)
    return [min(step, n - start) for start in range(0, n, step)]


def random_rows(x: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """``min(n, len(x))`` distinct rows of ``x``, chosen with ``generator`` (a CPU generator)."""
    return x[torch.randperm(len(x), generator=generator)[:n].to(x.device)]


def resolved_space(space: Space, data: Splits) -> Space:
    """``auto`` as it resolves: the classifier's features for labelled images, else the raw examples."""
    if space != "auto":
        return space
    return "classifier" if data.train.image_shape is not None and has_labels(data.train) else "raw"


def feature_count(space: Space, data: Splits, classifier: ClassifierParams) -> int:
    """How many numbers describe an example in ``space``."""
    return classifier.feature_dim if resolved_space(space, data) == "classifier" else data.train.dims


class FeatureSpace:
    """Embeds examples for comparison: raw (flattened) or the dataset classifier's features."""

    def __init__(self, space: Space, ectx: EvalContext, classifier: ClassifierParams) -> None:
        space = self.space = resolved_space(space, ectx.data)
        self.device = ectx.device
        self.net: FeatureClassifier | None = None
        self.accuracy: float | None = None
        if space == "classifier":
            self.net, self.accuracy = load_classifier(ectx.data, classifier, ectx.device)

    @torch.no_grad()
    def __call__(self, x: Tensor) -> Tensor:
        """``[n, d]`` float32 embeddings of model-space examples ``x``, on ``self.device``."""
        x = x.to(self.device, torch.float32)
        if self.net is None:
            return x.flatten(1)
        return torch.cat([self.net.features(part) for part in x.split(1024)])

    def report(self) -> dict[str, float]:
        """The classifier's test accuracy, when a classifier is used and the test split has labels."""
        return {} if self.accuracy is None else {"classifier_accuracy": self.accuracy}


def require_labels(data: Splits, metric: str, need: str, remedy: str) -> None:
    """Refuse data without integer class labels ``y`` in the train split, which the feature classifier is trained on.

    The message reads ``"{metric}: {need}, but ... has none; {remedy}"``: why the
    metric needs them, and what to do instead.
    """
    if not has_labels(data.train):
        raise ValueError(f"{metric}: {need}, but the train split has no integer class labels in the field 'y'; {remedy}")


def check_space(space: Space, data: Splits, metric: str, remedy: str) -> None:
    """Refuse ``space: classifier`` on data without the labels its classifier is trained on (``auto`` picks raw then)."""
    if space == "classifier":
        require_labels(data, metric, "`space: classifier` compares the features of a classifier trained on the data's labels", remedy)


def check_classifier_used(space: Space, classifier: ClassifierParams, data: Splits) -> None:
    """Warn of ``classifier:`` settings other than the defaults where ``space`` compares raw examples, which no classifier
    reads (``space: raw``, or ``auto`` on data that are not labelled images): they would change nothing, unseen."""
    if resolved_space(space, data) != "raw" or classifier == ClassifierParams():
        return
    why = "`space: raw`" if space == "raw" else "`space: auto`, which compares raw examples on data that are not labelled images"
    message = (
        f"its `classifier:` settings are unused: with {why}, no classifier's features are compared; "
        "set `space: classifier` to compare them, or drop `classifier:`"
    )
    warnings.warn(SpecWarning(message), stacklevel=3)
