"""Optimizers and learning-rate schedules: the closed forms against torch's own schedulers, warm-up, and the trainer applying them."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import TypeAdapter
from runtime_toys import VAE, spec_dict

from compose_gen.runtime import Run
from compose_gen.runtime.optim import lr_factor, make_optimizer
from compose_gen.spec import load_spec
from compose_gen.spec.model import SGD, Adam, ScheduleSpec

SCHEDULE = TypeAdapter(ScheduleSpec)
TOTAL = 40


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
    ours = [lr_factor(spec, step, TOTAL) for step in range(TOTAL + 1)]
    torch.testing.assert_close(torch.tensor(ours), torch.tensor(torch_factors(reference)), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("kind", ["constant", "cosine", "linear", "step", "exponential"])
def test_warmup_ramps_linearly_then_runs_the_schedule_over_the_remaining_steps(kind: str) -> None:
    extra = {"step": {"every": 5}, "exponential": {"gamma": 0.9}}.get(kind, {})
    warm = SCHEDULE.validate_python({"type": kind, "warmup": 8, **extra})
    cold = SCHEDULE.validate_python({"type": kind, **extra})
    assert [lr_factor(warm, step, TOTAL) for step in range(8)] == [(step + 1) / 8 for step in range(8)]
    for step in range(8, TOTAL + 1):
        assert math.isclose(lr_factor(warm, step, TOTAL), lr_factor(cold, step - 8, TOTAL - 8), rel_tol=1e-12)


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
