"""Real datasets that ship with scikit-learn (no download): digits, breast cancer, wine.

scikit-learn is imported when a dataset is built, not when the plugin loads.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from compose_gen import BuildContext, ComponentType, Splits, hookimpl
from compose_gen_plugins.datasets.base import DatasetParams, DataSpace, ImageParams, make_splits, split_fields
from compose_gen_plugins.datasets.transforms import BinarizeStep, StandardiseStep, TransformSpec

__all__ = ["compose_gen_types"]

DIGIT_LEVELS = 16  # digits pixels are integers 0..16


class DigitsParams(ImageParams):
    scale: bool = Field(True, description="divide pixels by 16 into [0, 1] (log-determinant -64·log 16)")
    binarize: Literal["none", "threshold"] = Field(
        "none", description="threshold: pixel ≥ 8 becomes 1, else 0 (for Bernoulli decoders; overrides scale)"
    )


def build_digits(p: DigitsParams, ctx: BuildContext | None = None) -> Splits:
    """8×8 handwritten digits, pixels 0..16, labels 0..9 (scikit-learn's load_digits).

    Alpaydin & Kaynak, 1998, UCI "Optical recognition of handwritten digits".
    """
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    x = torch.as_tensor(images, dtype=torch.float64)
    if p.binarize == "threshold":  # the binarize transform on pixels scaled to [0, 1]: 1[k/16 ≥ 1/2]
        p = p.model_copy(update={"scale": True, "transforms": [BinarizeStep(type="binarize"), *p.transforms]})
    pixel_max, ladj = (1.0, -x.shape[1] * math.log(DIGIT_LEVELS)) if p.scale else (float(DIGIT_LEVELS), 0.0)

    def from_raw(raw: Tensor) -> Tensor:
        """Pixels 0..16, 64 per example, as the spec asks for them."""
        raw = raw / DIGIT_LEVELS if p.scale else raw
        return raw.reshape(-1, 1, 8, 8) if p.shape == "image" and raw.dim() == 2 else raw

    train, test = split_fields({"x": from_raw(x), "y": torch.as_tensor(labels, dtype=torch.long)}, p)
    space = DataSpace(
        image_shape=(1, 8, 8), pixel_max=pixel_max, ladj_to_model=ladj, num_classes=10, from_raw=from_raw, raw_levels=DIGIT_LEVELS + 1
    )
    return make_splits(p, train, test, space)


class TabularParams(DatasetParams):
    transforms: list[TransformSpec] = Field(
        [StandardiseStep(type="standardise")],
        description="preprocessing steps, in order; default: standardise with train statistics",
    )


@functools.cache  # the same type at each call of compose_gen_types, so one reached twice is kept once
def _tabular(name: str, loader: str, doc: str) -> ComponentType:
    def build(p: TabularParams, ctx: BuildContext | None = None) -> Splits:
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, loader)()
        fields = {
            "x": torch.as_tensor(bunch.data, dtype=torch.float64),
            "y": torch.as_tensor(bunch.target, dtype=torch.long),
        }
        train, test = split_fields(fields, p)
        meta = {"feature_names": list(bunch.feature_names), "classes": list(bunch.target_names)}
        return make_splits(p, train, test, DataSpace(num_classes=len(bunch.target_names), meta=meta))

    return ComponentType(name, "dataset", TabularParams, build, doc=doc)


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    return [
        ComponentType("digits", "dataset", DigitsParams, build_digits),
        _tabular(
            "breast_cancer",
            "load_breast_cancer",
            "569 tumours × 30 features, benign or malignant (Wolberg et al., 1995, UCI; load_breast_cancer).",
        ),
        _tabular(
            "wine",
            "load_wine",
            "178 wines × 13 chemical features, 3 cultivars (Forina et al., UCI; scikit-learn's load_wine).",
        ),
    ]
