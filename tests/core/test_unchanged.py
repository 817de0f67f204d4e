"""Whether a metric left the data as it found it: identity and version counters for tensors, values for settings."""

from __future__ import annotations

import pytest
import torch

from compose_gen.core import Splits, TensorData
from compose_gen.core.unchanged import data_change, snapshot


def splits() -> Splits:
    return Splits(TensorData({"x": torch.zeros(4, 2)}, meta={"modes": torch.ones(2, 2), "radii": [1.0]}), TensorData({"x": torch.ones(2, 2)}))


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (lambda d: d.test.fields["x"].add_(1), "changed the test split's 'x' in place"),
        (lambda d: d.train.fields.update(x=torch.zeros(4, 2)), "replaced the train split's 'x'"),
        (lambda d: d.train.fields.update(y=torch.zeros(4)), "added the train split's 'y'"),
        (lambda d: d.test.fields.pop("x"), "removed the test split's 'x'"),
        (lambda d: d.train.meta["modes"].mul_(2), "changed the train split's meta"),
        (lambda d: d.train.meta["radii"].append(2.0), "changed the train split's meta"),
        (lambda d: setattr(d.test, "ladj_to_model", -1.0), "changed the test split's ladj_to_model"),
        (lambda d: setattr(d, "test", TensorData({"x": torch.ones(2, 2)})), "replaced the test split"),
    ],
)
def test_each_kind_of_change_is_named(change, said: str) -> None:
    data = splits()
    before = snapshot(data)
    change(data)
    assert data_change(data, before) == said


def test_reading_the_data_is_no_change_and_views_of_one_tensor_are_named_together() -> None:
    data = splits()
    before = snapshot(data)
    assert float(data.train.fields["x"].sum()) == 0.0 and data.test.meta.get("classes") is None  # reads
    assert data_change(data, before) is None
    whole = torch.zeros(6, 2)
    data.train.fields["x"], data.test.fields["x"] = whole[:4], whole[4:]
    before = snapshot(data)
    whole[0, 0] = 1.0
    assert data_change(data, before) == "changed the train split's 'x' or test split's 'x' (which share memory) in place"
