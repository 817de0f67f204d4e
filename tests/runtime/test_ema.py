"""The moving average of weights (``train.ema``): its recurrence, its use for sampling, its errors."""

from __future__ import annotations

import pytest
import torch
from runtime_toys import GAN, spec_dict
from torch import nn

from compose_gen.runtime import Run
from compose_gen.runtime.ema import WeightAverage
from compose_gen.spec import SpecError, load_spec

EMA = {"components": ["generator"], "decay": 0.75}


def test_average_is_the_closed_form_and_applied_restores_the_live_weights():
    torch.manual_seed(0)
    net = nn.Linear(3, 2).double()
    average = WeightAverage({"net": net}, decay=0.6)
    history = [net.weight.detach().clone()]
    for _ in range(4):
        with torch.no_grad():
            net.weight.add_(torch.randn_like(net.weight))
        average.update()
        history.append(net.weight.detach().clone())
    t = len(history) - 1
    closed = 0.6**t * history[0] + 0.4 * sum(0.6 ** (t - k) * history[k] for k in range(1, t + 1))
    torch.testing.assert_close(average.shadows["net"].p0, closed, rtol=0, atol=1e-12)
    with average.applied():
        torch.testing.assert_close(net.weight.detach(), closed, rtol=0, atol=1e-12)
    assert torch.equal(net.weight, history[-1])


def test_trainer_averages_after_each_generator_step_and_samples_with_the_average(tmp_path, toys_catalogue):
    spec = load_spec(spec_dict(GAN, steps=3, ema=EMA), catalogue=toys_catalogue)
    run = Run.create(spec, tmp_path / "run", progress=False)
    generator = run.model.components["generator"]
    history = [[p.detach().clone() for p in generator.parameters()]]
    for step in range(1, 4):  # one round: two critic steps (no update), one generator step (one update)
        run.train(step)
        history.append([p.detach().clone() for p in generator.parameters()])
    shadow = list(run.model.ema.shadows["generator"].buffers())
    for i, avg in enumerate(shadow):
        closed = 0.75**3 * history[0][i] + 0.25 * sum(0.75 ** (3 - k) * history[k][i] for k in (1, 2, 3))
        torch.testing.assert_close(avg, closed)
    torch.manual_seed(5)
    drawn = run.sample(16)
    assert all(torch.equal(p, h) for p, h in zip(generator.parameters(), history[-1], strict=True))  # live weights back
    with torch.no_grad():
        for p, avg in zip(generator.parameters(), shadow, strict=True):
            p.copy_(avg)
    run.model.eval()
    torch.manual_seed(5)
    assert torch.equal(drawn, run.model.sample(16))
    assert "ema.shadows.generator.p0" in run.model.state_dict()  # so checkpoints hold the average


def test_unknown_ema_component_is_a_located_spec_error(toys_catalogue):
    with pytest.raises(SpecError, match=r"train\.ema\.components\[0\]: unknown component 'genrator'; did you mean 'generator'\?"):
        load_spec(spec_dict(GAN, ema={"components": ["genrator"]}), catalogue=toys_catalogue)
