"""scikit-learn's digits, breast cancer and wine: shapes, splits, scaling and its log-determinant."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.datasets import load_digits, load_wine

DIGITS = torch.as_tensor(load_digits().data, dtype=torch.float32)


def test_digits_image_and_flat_shapes_labels_and_ladj(build) -> None:
    image, flat = build("digits"), build("digits", shape="flat")
    assert image.train.fields["x"].shape[1:] == (1, 8, 8) and flat.train.fields["x"].shape[1:] == (64,)
    assert len(image.train) + len(image.test) == 1797 and len(image.test) == round(1797 * 0.2)
    torch.testing.assert_close(image.train.fields["x"].flatten(1), flat.train.fields["x"])
    for half in (image.train, image.test):
        assert half.image_shape == (1, 8, 8) and half.num_classes == 10
        assert half.ladj_to_model == pytest.approx(-64 * math.log(16))
        assert 0 <= half.fields["x"].min() and half.fields["x"].max() <= 1
        assert set(half.fields["y"].unique().tolist()) == set(range(10))


def test_digits_split_is_a_seeded_partition_of_the_data(build) -> None:
    splits = build("digits", shape="flat", scale=False, seed=5)
    everything = torch.cat([splits.train.fields["x"], splits.test.fields["x"]])
    assert torch.equal(everything.unique(dim=0), DIGITS.unique(dim=0))
    again = build("digits", shape="flat", scale=False, seed=5)
    other = build("digits", shape="flat", scale=False, seed=6)
    assert torch.equal(again.test.fields["x"], splits.test.fields["x"])
    assert not torch.equal(other.test.fields["x"], splits.test.fields["x"])


def test_digits_display_undoes_scaling_and_pipeline(build) -> None:
    raw = build("digits", scale=False, shape="flat")
    assert raw.train.ladj_to_model == 0.0
    shown = raw.test.to_display(raw.test.fields["x"])
    assert shown.shape == (len(raw.test), 1, 8, 8)
    torch.testing.assert_close(shown.flatten(1) * 16, raw.test.fields["x"])
    flow = build("digits", scale=False, transforms=[{"type": "dequantize", "levels": 17}, "logit", "flatten"])
    assert flow.train.fields["x"].shape[1:] == (64,) and "ladj_x" in flow.train.fields
    assert flow.train.ladj_to_model == pytest.approx(-64 * math.log(17))
    shown = flow.test.to_display(flow.test.fields["x"]).flatten(1) * 16
    assert (shown.round() == raw.test.fields["x"]).float().mean() > 0.999


def test_digits_binarized(build) -> None:
    splits = build("digits", binarize="threshold", shape="flat", seed=0)
    raw = build("digits", scale=False, shape="flat", seed=0)
    assert torch.equal(splits.train.fields["x"], (raw.train.fields["x"] >= 8).float())
    assert splits.train.ladj_to_model == 0.0


def test_binarize_transform_is_the_digits_threshold_with_likelihoods_of_the_bits(build) -> None:
    """``transforms: [binarize]`` on pixels scaled to [0, 1] is ``binarize: threshold``; neither adds -64·log 16."""
    ours = build("digits", shape="flat", transforms=["binarize"])
    theirs = build("digits", shape="flat", binarize="threshold")
    assert torch.equal(ours.test.fields["x"], theirs.test.fields["x"])
    assert ours.test.ladj_to_model == theirs.test.ladj_to_model == 0.0
    x, ladj = ours.test.to_model(DIGITS[:5])
    torch.testing.assert_close(x, (DIGITS[:5] >= 8).float())
    assert torch.equal(ladj, torch.zeros(5, dtype=torch.float64))
    dequantized = build("digits", shape="flat", transforms=["binarize", {"type": "dequantize", "levels": 2}])
    assert dequantized.test.ladj_to_model == pytest.approx(-64 * math.log(2))


@pytest.mark.parametrize(("name", "features", "classes"), [("breast_cancer", 30, 2), ("wine", 13, 3)])
def test_tabular_standardised_with_train_statistics(build, name: str, features: int, classes: int) -> None:
    splits = build(name)
    x = splits.train.fields["x"].double()
    assert x.shape[1:] == (features,) and splits.train.num_classes == classes
    torch.testing.assert_close(x.mean(0), torch.zeros(features, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.std(0), torch.ones(features, dtype=torch.float64), atol=1e-5, rtol=0)
    assert splits.test.fields["x"].double().mean(0).abs().max() > 1e-3, "test uses the train statistics"
    assert splits.train.fields["y"].max() == classes - 1 and len(splits.train.meta["feature_names"]) == features


def test_wine_ladj_is_minus_log_train_std(build) -> None:
    standardised, raw = build("wine", seed=2), build("wine", seed=2, transforms=[])
    std = raw.train.fields["x"].double().std(0)
    assert standardised.train.ladj_to_model == pytest.approx(-torch.log(std).sum().item(), rel=1e-6)
    assert raw.train.ladj_to_model == 0.0
    everything = torch.cat([raw.train.fields["x"], raw.test.fields["x"]]).double()
    assert everything.sum().item() == pytest.approx(float(load_wine().data.sum()), rel=1e-6)
