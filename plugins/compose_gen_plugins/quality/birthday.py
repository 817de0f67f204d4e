"""``birthday_paradox``: near-duplicates among s samples, the support size they imply, and a pass/fail."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import torch
from pydantic import Field, model_validator
from torch import Tensor

from compose_gen import ComponentType, EvalContext, Params, Splits, TensorData, hookimpl
from compose_gen.core import MAX_DRAWS, save_grid
from compose_gen_plugins.quality.classifier import ClassifierParams
from compose_gen_plugins.quality.shared import (
    FeatureSpace,
    check_classifier_used,
    check_space,
    draw_samples,
    metric_type,
    mixed_classes,
    random_rows,
)
from compose_gen_plugins.quality.statistics import (
    closest_pairs,
    nearest_neighbour_distances,
    pair_distances,
    permutation_p_value,
    support_estimate,
)

__all__ = ["BirthdayParams", "birthday_paradox", "compose_gen_types"]


#: Relabelings of the permutation test behind the pass flag: its p-value is never below 1/(1 + PERMUTATIONS).
PERMUTATIONS = 9999


class BirthdayParams(Params):
    """Settings of ``birthday_paradox``."""

    s: int = Field(100, ge=2, description="batch size; duplicates with probability ~1/2 imply a support of ~s²")
    batches: int = Field(50, ge=1, description="batches drawn from the model, and from the data for the baseline")
    quantile: float = Field(
        0.01, gt=0, lt=1, description="threshold = this quantile of nearest-neighbour distances in real batches"
    )
    alpha: float = Field(0.01, gt=0, lt=1, description="level of the one-sided test behind the pass flag")
    space: Literal["raw", "classifier"] = Field(
        "raw", description="distances between examples in model space (after the spec's transforms) or classifier features"
    )
    pairs_shown: int = Field(16, ge=0, description="closest pairs drawn to birthday_pairs*.png (image data only)")
    classifier: ClassifierParams = Field(
        default_factory=ClassifierParams, description="feature classifier settings (space: classifier)"
    )

    @model_validator(mode="after")
    def _draws_within_bounds(self) -> "BirthdayParams":
        if self.s * self.batches > MAX_DRAWS:
            raise ValueError(
                f"s × batches = {self.s * self.batches:,} samples, more than the {MAX_DRAWS:,} a metric may draw: lower `s` or `batches`"
            )
        return self

    @model_validator(mode="after")
    def _a_test_that_can_fail(self) -> "BirthdayParams":
        """The permutation test of ``batches`` counts against as many splits them C(2b, b) ways, so its p-value is never
        below 1/C(2b, b), nor below 1/(1 + its relabelings): at or above ``alpha`` every model would pass."""
        if self.alpha <= 1 / (1 + PERMUTATIONS):
            raise ValueError(f"alpha {self.alpha:g} is at or below 1/{1 + PERMUTATIONS}, the smallest p-value {PERMUTATIONS} relabelings give, so every model would pass")
        floor = 1 / math.comb(2 * self.batches, self.batches)
        if floor >= self.alpha:
            enough = next(b for b in itertools.count(self.batches) if 1 / math.comb(2 * b, b) < self.alpha)
            raise ValueError(
                f"batches: {self.batches} makes a test whose p-value is never below 1/C({2 * self.batches}, {self.batches}) = {floor:.3g}, "
                f"not below alpha {self.alpha:g}, so every model would pass: give batches >= {enough}"
            )
        return self


@dataclass
class _Collisions:
    pairs: Tensor  # near-duplicate pairs in each batch
    closest: list[tuple[float, Tensor, Tensor]]

    def rate(self) -> float:
        return float((self.pairs > 0).double().mean())


def birthday_paradox(params: BirthdayParams, ectx: EvalContext) -> dict[str, float]:
    """Birthday-paradox support test (Arora, Risteski & Zhang 2018, "Do GANs learn the distribution?").

    Draw ``batches`` batches of ``s`` samples; a pair closer than the threshold
    ``τ`` (Euclidean, raw or classifier features), or identical, is a near-duplicate,
    ``τ`` being the ``quantile`` of nearest-neighbour distances within real batches
    of the same size (strictly closer, so that on discrete data, where many
    distances tie at ``τ``, only pairs closer than typical count).
    ``collision_rate`` is the fraction of batches holding a near-duplicate,
    and ``estimated_support = s(s−1) / (2 λ̂)`` with ``λ̂`` the mean number of
    near-duplicate pairs per batch (the uniform-support birthday estimate; 0.72 s²
    at a collision rate of 1/2, see :func:`support_estimate`).  Real batches give
    the same quantities for the data, but ``τ`` is set from real batches, so about
    ``quantile·s`` of their examples fall within ``τ`` of another by construction:
    ``data_estimated_support`` ≈ (s − 1)/``quantile`` whatever the data, a baseline
    for ``estimated_support`` rather than a measurement of the data's support, and
    ``estimated_support`` means something only beside it.  ``birthday_pass`` is 0 when a one-sided
    permutation test (``birthday_p_value``) finds the model's near-duplicate pairs per
    batch above the data's at level ``alpha``: pair counts, unlike 0/1 collision
    indicators, still tell a support of 6 from one of 60 when the data itself
    collides in every batch.  A model that samples by class has its samples mixed
    before they are batched, so that a batch's classes fall at random, as a real
    batch's do, rather than one of each.  With image data the closest pairs are written to
    ``birthday_pairs.png`` (model) and ``birthday_pairs_data.png`` (columns are pairs).
    """
    _check_birthday(params, ectx.data)
    train = ectx.data.train
    space = FeatureSpace(params.space, ectx, params.classifier)
    generator = torch.Generator().manual_seed(ectx.seed)
    x = train.fields["x"]
    calibration = torch.cat(
        [nearest_neighbour_distances(space(random_rows(x, params.s, generator))) for _ in range(params.batches)]
    )
    threshold = float(torch.quantile(calibration.double().cpu(), params.quantile))
    real = [random_rows(x, params.s, generator) for _ in range(params.batches)]
    fake = mixed_classes(draw_samples(ectx, params.s * params.batches, "birthday_paradox"), ectx, generator).split(params.s)
    model, data = (_collisions(batches, space, threshold, params.pairs_shown) for batches in (fake, real))
    p_value = permutation_p_value(model.pairs, data.pairs, generator, permutations=PERMUTATIONS)
    if params.pairs_shown and train.image_shape is not None:
        _draw_pairs(model.closest, train, Path(ectx.out_dir) / "birthday_pairs.png")
        _draw_pairs(data.closest, train, Path(ectx.out_dir) / "birthday_pairs_data.png")
    return {
        "collision_rate": model.rate(),
        "data_collision_rate": data.rate(),
        "estimated_support": support_estimate(params.s, float(model.pairs.double().mean()), params.batches),
        "data_estimated_support": support_estimate(params.s, float(data.pairs.double().mean()), params.batches),
        "birthday_threshold": threshold,
        "birthday_p_value": p_value,
        "birthday_pass": float(p_value >= params.alpha),
        **space.report(),
    }


def _check_birthday(params: BirthdayParams, data: Splits) -> None:
    check_space(params.space, data, "birthday_paradox", "set `space: raw` (the default), distances between raw examples")
    check_classifier_used(params.space, params.classifier, data)
    if len(data.train) < params.s:
        raise ValueError(
            f"birthday_paradox: s={params.s} exceeds the {len(data.train)} examples of the train split, "
            f"from which the real batches of s examples are drawn; lower `s` to at most {len(data.train)}"
        )


def _collisions(batches: Sequence[Tensor], space: FeatureSpace, threshold: float, shown: int) -> _Collisions:
    pairs, closest = [], []
    for batch in batches:
        distances = pair_distances(space(batch))
        pairs.append(int(((distances < threshold) | (distances == 0)).sum()))
        index, distance = closest_pairs(distances, shown)
        closest += [(float(d), batch[i], batch[j]) for (i, j), d in zip(index.tolist(), distance, strict=True)]
    closest.sort(key=lambda pair: pair[0])
    return _Collisions(torch.tensor(pairs), closest[:shown])


def _draw_pairs(closest: list[tuple[float, Tensor, Tensor]], data: TensorData, path: Path) -> None:

    examples = torch.stack([first for _, first, _ in closest] + [second for _, _, second in closest])
    pixels = data.to_display(examples).reshape(len(examples), *data.image_shape).clamp(0, 1)
    save_grid(pixels, path, nrow=len(closest))


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    return [metric_type("birthday_paradox", BirthdayParams, birthday_paradox, check=_check_birthday)]
