"""The kit catches broken metrics."""

from __future__ import annotations

import math

import pytest
import torch
from component_kit_helpers import X
from torch import nn

from compose_gen import EvalContext, Splits, TensorData
from compose_gen.core import ContractError
from compose_gen.testing.components import check_metric

# --------------------------------------------------------------------------- broken metrics


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(2))


@pytest.fixture
def ectx(tmp_path):
    data = TensorData({"x": X})
    return EvalContext(Tiny().eval(), Splits(data, data), torch.device("cpu"), tmp_path)


def test_a_metric_must_return_finite_floats(ectx):
    assert check_metric(lambda ctx: {"count": 3, "mean": 0.5}, ectx) == {"count": 3.0, "mean": 0.5}
    with pytest.raises(ContractError, match=r"<lambda>: returned 'm' \(a Tensor of shape \(\)\), not floats \(a tensor's value is tensor.item\(\)"):
        check_metric(lambda ctx: {"m": torch.tensor(1.0)}, ectx)
    with pytest.raises(ContractError, match=r"returned 'ok' \(.*\), not floats \(.* a flag's float\(flag\)\)"):
        check_metric(lambda ctx: {"ok": True}, ectx)
    with pytest.raises(ContractError, match=r"returned keys 3, not names \(strings\) such as 'fid'"):
        check_metric(lambda ctx: {3: 1.0}, ectx)
    with pytest.raises(ContractError, match=r"returned a Tensor of shape \(2,\), not a dict of named floats"):
        check_metric(lambda ctx: torch.zeros(2), ectx)
    with pytest.raises(ContractError, match=r"returned non-finite ratio=nan; expected finite values \(or list the key in allow_nonfinite\)"):
        check_metric(lambda ctx: {"ratio": math.nan}, ectx)
    assert math.isnan(check_metric(lambda ctx: {"ratio": math.nan}, ectx, allow_nonfinite={"ratio"})["ratio"])


def test_a_metric_must_leave_the_model_as_it_was(ectx):
    def trains(ctx):
        with torch.no_grad():
            ctx.model.weight.add_(1)
        return {}

    def switches_to_training(ctx):
        ctx.model.train()
        return {}

    with pytest.raises(ContractError, match=r"trains: changed the model's 'weight'; expected a metric to leave the model as it was"):
        check_metric(trains, ectx)
    with pytest.raises(ContractError, match=r"switches_to_training: changed the model's training mode"):
        check_metric(switches_to_training, ectx)

    def fills_gradients(ctx):
        with torch.enable_grad():
            ctx.model.weight.sum().backward()
        return {}

    with pytest.raises(ContractError, match=r"fills_gradients: changed the gradients of the model's parameters"):
        check_metric(fills_gradients, ectx)

    def freezes(ctx):
        ctx.model.requires_grad_(False)
        return {}

    def adds_a_buffer(ctx):
        ctx.model.register_buffer("seen", torch.zeros(()))
        return {}

    with pytest.raises(ContractError, match=r"freezes: changed which of the model's parameters require grad"):
        check_metric(freezes, ectx)
    with pytest.raises(ContractError, match=r"adds_a_buffer: changed the model's 'seen'"):
        check_metric(adds_a_buffer, ectx)


def test_a_metric_is_called_as_an_evaluation_calls_it_without_autograd_in_eval_mode(ectx):
    """Called with autograd on, a metric differentiating without torch.enable_grad() passed the kit and then raised in
    every evaluation, which runs under torch.no_grad()."""

    def differentiates(ctx):
        x = ctx.test.fields["x"].clone().requires_grad_()
        (gradient,) = torch.autograd.grad((x * ctx.model.weight.sum()).sum(), x)
        return {"norm": gradient.norm().item()}

    with pytest.raises(ContractError, match=r"differentiates: the metric raised RuntimeError: element 0 of tensors does not require grad"):
        check_metric(differentiates, ectx)
    seen = []
    ectx.model.train()
    assert check_metric(lambda ctx: seen.append(ctx.model.training) or {}, ectx) == {} and seen == [False]
    assert ectx.model.training, "the caller's mode is left as it was"


def test_a_metric_must_leave_the_data_as_it_was(tmp_path):
    ectx = EvalContext(Tiny().eval(), Splits(TensorData({"x": X.clone()}), TensorData({"x": X.clone()})), torch.device("cpu"), tmp_path)

    def normalises_in_place(ctx):
        ctx.test.fields["x"].sub_(ctx.test.fields["x"].mean(0))
        return {}

    with pytest.raises(ContractError, match=r"normalises_in_place: changed the test split's 'x' in place; expected a metric to leave the data"):
        check_metric(normalises_in_place, ectx)


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (lambda data: data.test.meta.setdefault("classes", []).append("extra"), "changed the test split's meta"),
        (lambda data: setattr(data.test, "ladj_to_model", -100.0), "changed the test split's ladj_to_model"),
        (lambda data: data.train.fields.update(extra=torch.ones(1)), "added the train split's 'extra'"),
        (lambda data: data.test.fields["x"].data.mul_(2), "changed the test split's 'x' in place"),  # moves no version counter
    ],
)
def test_a_metric_must_leave_the_data_s_settings_and_fields_as_they_were(tmp_path, change, said):
    """The kit compared the field tensors alone and passed a metric that changed meta or ladj_to_model, which the
    evaluation loop refuses."""
    ectx = EvalContext(Tiny().eval(), Splits(TensorData({"x": X.clone()}, meta={"classes": ["a"]}), TensorData({"x": X.clone()})), torch.device("cpu"), tmp_path)

    def meddles(ctx):
        change(ctx.data)
        return {}

    with pytest.raises(ContractError, match=rf"meddles: {said}; expected a metric to leave the data as it was"):
        check_metric(meddles, ectx)


def test_a_metric_that_raises_is_reported_with_its_cause(ectx):
    def broken(ctx):
        return {"x": 1 / 0}

    with pytest.raises(ContractError, match=r"broken: the metric raised ZeroDivisionError: division by zero") as failure:
        check_metric(broken, ectx)
    assert isinstance(failure.value.__cause__, ZeroDivisionError)

