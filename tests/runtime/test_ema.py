"""The moving average of weights (``train.ema``): its recurrence, its use for sampling, its errors."""

from __future__ import annotations

import pytest
import torch
from runtime_toys import GAN, spec_dict
from torch import nn

from compose_gen.runtime import CheckpointError, Run, build
from compose_gen.runtime.checkpoint import checkpoint_step, list_checkpoints, load_checkpoint
from compose_gen.runtime.ema import WeightAverage
from compose_gen.spec import SpecError, load_spec

EMA = {"components": ["generator"], "decay": 0.75}


def test_average_is_the_closed_form_and_applied_restores_the_live_weights():
    torch.manual_seed(0)
    net = nn.Linear(3, 2).double()
    average = WeightAverage({"net": net}, decay=0.6, warmup=False)
    history = [net.weight.detach().clone()]
    for step in range(4):
        with torch.no_grad():
            net.weight.add_(torch.randn_like(net.weight))
        average.update(step)
        history.append(net.weight.detach().clone())
    t = len(history) - 1
    closed = 0.6**t * history[0] + 0.4 * sum(0.6 ** (t - k) * history[k] for k in range(1, t + 1))
    torch.testing.assert_close(average.shadows["net"].p0, closed, rtol=0, atol=1e-12)
    with average.applied():
        torch.testing.assert_close(net.weight.detach(), closed, rtol=0, atol=1e-12)
    assert torch.equal(net.weight, history[-1])


def test_warmup_ramps_the_decay_so_a_short_run_averages_trained_weights():
    """d_t = min(decay, (1 + t)/(10 + t)): after 200 steps at decay 0.999 the average has left θ_0, not so at a constant rate."""
    net = nn.Linear(1, 1, bias=False).double()
    averages = {warmup: WeightAverage({"net": net}, decay=0.999, warmup=warmup) for warmup in (True, False)}
    assert [averages[True].rate(t) for t in (0, 1, 10, 10_000)] == [0.1, 2 / 11, 11 / 20, 0.999]
    with torch.no_grad():
        net.weight.fill_(0.0)
        for average in averages.values():
            average.shadows["net"].p0.fill_(0.0)  # θ_0 = 0, then θ_t = 1: the average is the share of trained weights
        net.weight.fill_(1.0)
    for step in range(200):
        for average in averages.values():
            average.update(step)
    weight_of_theta0 = torch.tensor([(1 + t) / (10 + t) for t in range(200)], dtype=torch.float64).prod()
    torch.testing.assert_close(averages[True].shadows["net"].p0, (1 - weight_of_theta0).reshape(1, 1))
    torch.testing.assert_close(averages[False].shadows["net"].p0, torch.full((1, 1), 1 - 0.999**200, dtype=torch.float64))
    assert averages[True].shadows["net"].p0.item() > 0.99 and averages[False].shadows["net"].p0.item() < 0.19


def test_trainer_averages_after_each_generator_step_and_samples_with_the_average(tmp_path, toys_catalogue):
    spec = load_spec(spec_dict(GAN, steps=3, ema={**EMA, "warmup": False}), catalogue=toys_catalogue)
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


def test_an_average_of_two_players_components_moves_each_part_with_its_own_player(tmp_path, toys_catalogue):
    """A critic step changes the critic, not the generator: the generator's average moves once a round, not
    steps + 1 times (which made its decay 0.75^3 a round where 0.75 was asked)."""
    ema = {"components": ["generator", "critic"], "decay": 0.75, "warmup": False}
    run = Run.create(load_spec(spec_dict(GAN, steps=1, ema=ema), catalogue=toys_catalogue), tmp_path / "run", progress=False)
    parts = {name: run.model.components[name] for name in ema["components"]}
    before = {name: [p.detach().clone() for p in module.parameters()] for name, module in parts.items()}
    critic, critic_steps = run.model.components["critic"], []
    run.trainer.optimizers["critic"].register_step_post_hook(lambda *_: critic_steps.append([p.detach().clone() for p in critic.parameters()]))
    run.train()
    generator_now = list(parts["generator"].parameters())
    for i, average in enumerate(run.model.ema.shadows["generator"].buffers()):  # one generator step: one move
        torch.testing.assert_close(average, 0.75 * before["generator"][i] + 0.25 * generator_now[i].detach())
    assert len(critic_steps) == 2  # the toy GAN's critic player takes steps: 2
    for i, average in enumerate(run.model.ema.shadows["critic"].buffers()):
        once = 0.75 * before["critic"][i] + 0.25 * critic_steps[0][i]
        torch.testing.assert_close(average, 0.75 * once + 0.25 * critic_steps[1][i])


def test_unknown_ema_component_is_a_located_spec_error(toys_catalogue):
    with pytest.raises(SpecError, match=r"train\.ema\.components\[0\]: unknown component 'genrator'; did you mean 'generator'\?"):
        load_spec(spec_dict(GAN, ema={"components": ["genrator"]}), catalogue=toys_catalogue)


def test_the_trainer_ramps_the_decay_by_round(tmp_path, toys_catalogue):
    """Round 0's update uses d_0 = min(decay, 1/10) = 0.1."""
    run = Run.create(load_spec(spec_dict(GAN, steps=1, ema=EMA), catalogue=toys_catalogue), tmp_path / "run", progress=False)
    generator = run.model.components["generator"]
    before = [p.detach().clone() for p in generator.parameters()]
    run.trainer.fit(1)
    for avg, start, now in zip(run.model.ema.shadows["generator"].buffers(), before, generator.parameters(), strict=True):
        torch.testing.assert_close(avg, 0.1 * start + 0.9 * now.detach())


def test_a_run_trained_with_averages_loads_without_them_on_its_live_weights(tmp_path, toys_catalogue, capsys):
    """``--set train.ema=null``: every tensor but the averages loads, and the user is told the averages go unused."""
    trained = Run.create(load_spec(spec_dict(GAN, steps=3, ema=EMA), catalogue=toys_catalogue), tmp_path / "run", progress=False)
    trained.train()
    plain = Run.load(tmp_path / "run", overrides=["train.ema=null"], catalogue=toys_catalogue, progress=False)
    assert plain.trainer.ema is None and plain.trainer.step == 3
    assert plain.behind is None, "the newest checkpoint is the one loaded: evaluate records its results"
    weights = trained.model.state_dict()
    assert all(torch.equal(v, weights[k]) for k, v in plain.model.state_dict().items())
    unused = "its moving averages of weights are not used, as the spec has no train.ema: the run samples, evaluates and trains on the live weights"
    assert unused in capsys.readouterr().err
    assert unused in load_checkpoint(list_checkpoints(tmp_path / "run")[-1], build(plain.spec, "cpu")[0]).notes[0]


def test_averages_added_to_a_run_trained_without_start_from_its_loaded_weights(tmp_path, toys_catalogue, capsys):
    trained = Run.create(load_spec(spec_dict(GAN, steps=4), catalogue=toys_catalogue), tmp_path / "run", progress=False)
    trained.train(3)
    averaged = Run.load(tmp_path / "run", overrides=["train.ema={components: [generator], decay: 0.75}"], catalogue=toys_catalogue, progress=False)
    assert "holds no moving averages of weights (trained without train.ema): averaging starts at step 3, from its weights" in capsys.readouterr().err
    generator = averaged.model.components["generator"]
    loaded = [p.detach().clone() for p in trained.model.components["generator"].parameters()]
    assert all(torch.equal(p, t) for p, t in zip(generator.parameters(), loaded, strict=True))
    assert all(torch.equal(avg, t) for avg, t in zip(averaged.model.ema.shadows["generator"].buffers(), loaded, strict=True))
    averaged.train(4)  # one round: one update from the loaded weights, at round 3's rate
    rate = averaged.trainer.ema.rate(3)
    for avg, start, now in zip(averaged.model.ema.shadows["generator"].buffers(), loaded, generator.parameters(), strict=True):
        torch.testing.assert_close(avg, rate * start + (1 - rate) * now.detach())
    assert load_checkpoint(list_checkpoints(tmp_path / "run")[-1], averaged.model).notes == []  # it holds the averages now


def test_averages_of_other_components_still_do_not_fit(tmp_path, toys_catalogue):
    Run.create(load_spec(spec_dict(GAN, steps=3, ema=EMA), catalogue=toys_catalogue), tmp_path / "run", progress=False).train()
    other = Run.create(
        load_spec(spec_dict(GAN, steps=3, ema={"components": ["critic"]}), catalogue=toys_catalogue), tmp_path / "other", progress=False
    )
    with pytest.raises(CheckpointError, match=r"does not fit this model \(missing \['ema.shadows.critic.p0'.*unexpected \['ema.shadows.generator.p0'"):
        load_checkpoint(list_checkpoints(tmp_path / "run")[-1], other.model)


def test_a_resume_averaging_other_components_is_refused_not_rolled_back_to_a_checkpoint_from_before_the_averages(tmp_path, toys_catalogue):
    """Step 4 averaged the generator; listing the critic instead, step 4 did not fit, and the resume went on silently
    from step 2, trained without averages (which fit, their averages starting afresh): steps 3 and 4 thrown away."""
    Run.create(load_spec(spec_dict(GAN, steps=4, checkpoint_every=2), catalogue=toys_catalogue), tmp_path / "run", progress=False).train(2)
    Run.load(tmp_path / "run", overrides=["train.ema={components: [generator]}"], catalogue=toys_catalogue, progress=False).train(4)
    with pytest.raises(CheckpointError, match=r"the --set overrides may have changed the model.*step-00000004: does not fit this model .*ema.shadows.critic.p0"):
        Run.load(tmp_path / "run", overrides=["train.ema={components: [critic]}", "train.steps=6"], catalogue=toys_catalogue, progress=False)
    assert [checkpoint_step(path) for path in list_checkpoints(tmp_path / "run")] == [2, 4]
