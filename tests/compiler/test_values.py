"""Graph builtins: what a call may compute besides components and values."""

from __future__ import annotations

import re

import pytest
import torch

from compose_gen.compiler.expressions import parse_call
from compose_gen.compiler.values import make_evaluator
from compose_gen.runtime import build
from compose_gen.spec import SpecError, load_spec


def test_one_hot_labels_condition_a_flow_on_the_class() -> None:
    """A class-conditional MAF on digits: p(x | y) with the context one_hot(y, 10)."""
    spec = {
        "name": "conditional_maf",
        "data": {"type": "digits", "shape": "flat"},
        "components": {
            "flow": {
                "type": "flow",
                "base": {"type": "standard_normal", "shape": [64]},
                "bijectors": [{"type": "maf", "shape": [64], "hidden": [16], "context_features": 10}],
            }
        },
        "graph": {"c": "one_hot(y, 10)"},
        "losses": {"nll": {"type": "flow_nll", "flow": "flow", "context": "c"}},
    }
    model, data = build(load_spec(spec), "cpu")
    batch = data.train.batch(slice(0, 4))
    context = model.values(batch, ["c"])["c"]
    assert context.shape == (4, 10) and torch.equal(context.argmax(-1), batch["y"]) and torch.equal(context.sum(-1), torch.ones(4))
    flow = model.component("flow")
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))  # the made layers start at the identity: perturb so the context matters
        other = torch.nn.functional.one_hot((batch["y"] + 1) % 10, 10).float()
        assert not torch.allclose(flow.log_prob(batch["x"], context), flow.log_prob(batch["x"], other))


@pytest.mark.parametrize(
    "call",
    ["one_hot(y)", "one_hot(y, 0)", "one_hot(y, -1)", "one_hot(y, 2.5)", "one_hot(y, 1e9)", "one_hot(3, 10)", "cat()", "cat(x, 2)", "detach(x, y)"],
)
def test_a_builtin_called_with_arguments_it_does_not_take_is_refused_at_its_value(call: str) -> None:
    spec = {"name": "builtins", "data": {"type": "digits", "shape": "flat"}, "graph": {"c": call}}
    with pytest.raises(SpecError, match=rf"graph\.c: {re.escape(call.replace('1e9', '1000000000.0'))} does not fit") as error:
        build(load_spec(spec), "cpu")
    assert len(error.value.problems) == 1


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (torch.tensor([0, 3, 9]), r"one_hot\(…, 8\) takes labels 0..7, got 0..9"),
        (torch.tensor([0.0, 1.0]), "one_hot takes integer class labels, got a torch.float32 tensor"),
    ],
)
def test_one_hot_says_which_labels_it_cannot_encode(labels: torch.Tensor, message: str) -> None:
    one_hot = make_evaluator(parse_call("one_hot(y, 8)"), {})
    with pytest.raises((ValueError, TypeError), match=message):
        one_hot({"y": labels})


def test_cat_puts_a_value_of_one_number_per_example_in_one_column_and_refuses_class_labels() -> None:
    cat = make_evaluator(parse_call("cat(x, w)"), {})
    x, w = torch.randn(5, 2, 3), torch.randn(5)
    assert torch.equal(cat({"x": x, "w": w}), torch.cat([x.reshape(5, 6), w[:, None]], dim=-1))
    with pytest.raises(TypeError, match=r"cat takes values of real numbers, got torch.int64 of shape \(5,\): for class labels, cat one_hot\(y, K\)"):
        cat({"x": x, "w": torch.arange(5)})


def test_detach_of_a_distribution_says_to_detach_a_draw() -> None:
    """torch's own message named TensorBase's descriptor and an Independent object, not the fix."""
    from torch.distributions import Independent, Normal

    detach = make_evaluator(parse_call("detach(q)"), {})
    q = Independent(Normal(torch.zeros(3, 2), torch.ones(3, 2)), 1)
    with pytest.raises(TypeError, match=r"detach takes a tensor, not a distribution \(Independent\): detach a draw of it"):
        detach({"q": q})
    z = torch.ones(2, requires_grad=True) * 2
    assert not detach({"q": z}).requires_grad


def test_arguments_to_a_distributions_property_are_refused_not_dropped() -> None:
    """q.mean(x, 7) gave q.mean, its arguments dropped without a word."""
    from torch.distributions import Independent, Normal

    q = Independent(Normal(torch.zeros(3, 2), torch.ones(3, 2)), 1)
    assert torch.equal(make_evaluator(parse_call("q.mean()"), {})({"q": q}), q.mean)
    with pytest.raises(TypeError, match=r"q\.mean\(\) takes no arguments \(the distribution's mean\), got 2"):
        make_evaluator(parse_call("q.mean(x, 7)"), {})({"q": q, "x": torch.zeros(3, 2)})
