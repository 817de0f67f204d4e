"""Optimizers and learning-rate schedules: the closed forms against torch's own schedulers, warm-up, and the trainer applying them."""

from __future__ import annotations

import math
from typing import get_args

import pytest
import torch
from pydantic import TypeAdapter
from runtime_toys import VAE, spec_dict

from compose_gen.runtime import Run
from compose_gen.runtime.optim import make_optimizer
from compose_gen.spec import load_spec
from compose_gen.spec.model import SGD, Adam, OptimizerSpec, ScheduleSpec

SCHEDULE = TypeAdapter(ScheduleSpec)
TOTAL = 40
#: Parameters each schedule type needs besides ``type``.
REQUIRED = {"constant": {}, "cosine": {}, "linear": {}, "step": {"every": 5}, "exponential": {"gamma": 0.9}}


def torch_factors(make_scheduler) -> list[float]:
    """The factors torch's scheduler gives at steps 0..TOTAL (base lr 1)."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = make_scheduler(optimizer)
    factors = []
    for _ in range(TOTAL + 1):
        factors.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return factors


@pytest.mark.parametrize(
    ("schedule", "reference"),
    [
        ({"type": "constant"}, lambda o: torch.optim.lr_scheduler.ConstantLR(o, factor=1.0)),
        ({"type": "cosine", "min_factor": 0.1}, lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=TOTAL, eta_min=0.1)),
        ({"type": "linear", "min_factor": 0.2}, lambda o: torch.optim.lr_scheduler.LinearLR(o, 1.0, 0.2, total_iters=TOTAL)),
        ({"type": "step", "every": 7, "gamma": 0.5}, lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.5)),
        ({"type": "exponential", "gamma": 0.9}, lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.9)),
    ],
    ids=lambda v: v["type"] if isinstance(v, dict) else "",
)
def test_schedules_match_torch_schedulers(schedule, reference) -> None:
    spec = SCHEDULE.validate_python(schedule)
    ours = [spec.factor(step, TOTAL) for step in range(TOTAL + 1)]
    torch.testing.assert_close(torch.tensor(ours), torch.tensor(torch_factors(reference)), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("kind", ["constant", "cosine", "linear", "step", "exponential"])
def test_warmup_ramps_linearly_then_runs_the_schedule_over_the_remaining_steps(kind: str) -> None:
    extra = {"step": {"every": 5}, "exponential": {"gamma": 0.9}}.get(kind, {})
    warm = SCHEDULE.validate_python({"type": kind, "warmup": 8, **extra})
    cold = SCHEDULE.validate_python({"type": kind, **extra})
    assert [warm.factor(step, TOTAL) for step in range(8)] == [(step + 1) / 8 for step in range(8)]
    for step in range(8, TOTAL + 1):
        assert math.isclose(warm.factor(step, TOTAL), cold.factor(step - 8, TOTAL - 8), rel_tol=1e-12)


def test_the_trainer_sets_each_steps_rate_from_the_schedule(tmp_path, toys_catalogue) -> None:
    raw = spec_dict(VAE, steps=5)
    raw["players"]["model"]["schedule"] = {"type": "step", "every": 2, "gamma": 0.5}
    run = Run.create(load_spec(raw, catalogue=toys_catalogue), tmp_path, progress=False)
    optimizer = run.trainer.optimizers["model"]
    seen = []
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: seen.append(opt.param_groups[0]["lr"]))
    run.train()
    base = raw["train"]["optimizer"]["lr"]
    assert seen == pytest.approx([base * 0.5 ** (step // 2) for step in range(5)])


def test_adam_runs_the_fused_kernel_and_sgd_the_plain_loop() -> None:
    params = [torch.nn.Parameter(torch.zeros(3))]
    assert make_optimizer(Adam(lr=1e-3), params).defaults["fused"] is True
    assert not make_optimizer(SGD(type="sgd", lr=1e-2), params).defaults.get("fused")


def test_every_schedule_type_ramps_up_from_one_over_warmup() -> None:
    classes = {get_args(cls.model_fields["type"].annotation)[0]: cls for cls, _ in map(get_args, get_args(get_args(ScheduleSpec)[0]))}
    assert set(classes) == set(REQUIRED)  # a new schedule type: say here what it needs
    for kind, cls in classes.items():
        for warmup in (1, 4, 10):
            schedule = cls(type=kind, warmup=warmup, **REQUIRED[kind])
            assert schedule.factor(0, TOTAL) == 1 / warmup
            assert schedule.factor(warmup - 1, TOTAL) == 1.0


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [  # docs/runtime.md: rounds counted from the warm-up's end (4 rounds here), over the 20 left to TOTAL = 24
        ({"type": "constant"}, {4: 1.0, 14: 1.0, 24: 1.0, 30: 1.0}),
        ({"type": "cosine", "min_factor": 0.2}, {4: 1.0, 9: 0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi / 4)), 14: 0.6, 24: 0.2, 30: 0.2}),
        ({"type": "linear", "min_factor": 0.2}, {4: 1.0, 9: 0.8, 14: 0.6, 24: 0.2, 30: 0.2}),
        ({"type": "step", "every": 3, "gamma": 0.5}, {4: 1.0, 6: 1.0, 7: 0.5, 10: 0.25, 24: 0.5**6}),
        ({"type": "step", "every": 3}, {4: 1.0, 7: 0.1}),
        ({"type": "exponential", "gamma": 0.9}, {4: 1.0, 5: 0.9, 14: 0.9**10, 30: 0.9**26}),
    ],
    ids=lambda v: v["type"] if isinstance(v, dict) and "type" in v else "",
)
def test_schedules_give_the_documented_factors(schedule: dict, expected: dict[int, float]) -> None:
    spec = SCHEDULE.validate_python({**schedule, "warmup": 4})
    assert [spec.factor(step, 24) for step in range(4)] == [0.25, 0.5, 0.75, 1.0]
    for step, factor in expected.items():
        assert spec.factor(step, 24) == pytest.approx(factor, rel=1e-12), step


def test_optimizers_name_their_torch_class_and_kernel() -> None:
    params = [torch.nn.Parameter(torch.zeros(3))]
    for raw, cls, fused in [
        ({"type": "adam"}, torch.optim.Adam, True),
        ({"type": "adamw"}, torch.optim.AdamW, True),
        ({"type": "rmsprop", "momentum": 0.5}, torch.optim.RMSprop, False),
        ({"type": "sgd", "momentum": 0.9, "dampening": 0.1}, torch.optim.SGD, False),
    ]:
        spec = TypeAdapter(OptimizerSpec).validate_python(raw)
        optimizer = make_optimizer(spec, params)
        assert type(optimizer) is cls and bool(optimizer.defaults.get("fused")) is fused
        assert all(optimizer.defaults[k] == v for k, v in spec.model_dump(exclude={"type"}).items())


def test_optimizers_take_every_hyper_parameter_of_torch_but_its_documented_switches() -> None:
    """docs/runtime.md: torch's hyper-parameters under torch's names; SGD's dampening was missing."""
    import inspect

    from compose_gen.spec.model import AdamW, RMSprop

    switches = {"params", "foreach", "fused", "capturable", "differentiable", "maximize", "decoupled_weight_decay"}
    for model in (Adam, AdamW, RMSprop, SGD):
        assert set(model.model_fields) - {"type"} == set(inspect.signature(model.torch_class).parameters) - switches, model.__name__
