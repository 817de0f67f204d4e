"""The trainer: exact resume, the NaN guard, best checkpoints, samples during training."""

from __future__ import annotations

import json
import math
import shutil
import signal
import time
import warnings

import pytest
import torch
from runtime_toys import AUTOENCODER, GAN, ROOT, VAE, same_state, spec_dict
from safetensors.torch import load_file

from compose_gen import SpecWarning
from compose_gen.compiler import compile_spec
from compose_gen.compiler.build import build_data
from compose_gen.core import ContractError
from compose_gen.runtime import CheckpointError, NonFiniteLoss, Run, Trainer
from compose_gen.runtime.checkpoint import list_checkpoints, read_best, save_checkpoint
from compose_gen.runtime.data import BatchStream
from compose_gen.runtime.logging import read_metrics
from compose_gen.runtime.trainer import _clip_to_norm, _read_step
from compose_gen.spec import SpecError, load_spec


def _records(run_dir):
    return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in read_metrics(run_dir / "metrics.jsonl")]


@pytest.mark.parametrize("base, ema", [(VAE, None), (GAN, None), (GAN, {"components": ["generator"], "decay": 0.9})], ids=["vae", "two-player-gan", "gan-with-ema"])
def test_n_steps_straight_equal_half_resume_half(base, ema, tmp_path, toys_catalogue):
    # sample_every also shows that sample grids (drawn with swapped-in averaged weights) do not disturb training
    spec = load_spec(spec_dict(base, steps=8, sample_every=3, ema=ema), catalogue=toys_catalogue)
    straight = Run.create(spec, tmp_path / "straight", progress=False)
    straight.train()
    Run.create(spec, tmp_path / "split", progress=False).train(4)
    resumed = Run.load(tmp_path / "split", catalogue=toys_catalogue, progress=False)
    assert resumed.trainer.step == 4
    resumed.train()
    assert same_state(straight.model, resumed.model)  # bitwise
    for name, optimizer in straight.trainer.optimizers.items():
        a, b = optimizer.state_dict()["state"], resumed.trainer.optimizers[name].state_dict()["state"]
        assert all(torch.equal(a[i][k], b[i][k]) for i in a for k in a[i])
    assert _records(tmp_path / "straight") == _records(tmp_path / "split")
    assert sorted(p.name for p in (tmp_path / "split" / "samples").iterdir()) == [
        "step-00000003.png", "step-00000004.png", "step-00000006.png", "step-00000008.png"
    ]


def _stop_during(trainer, step):
    """Ask ``trainer`` to stop during round ``step`` (1-based), as SIGINT's handler does."""
    player_step = trainer._player_step

    def stepping(name, plan):
        if trainer.step + 1 == step:
            trainer._stop = "SIGINT"
        return player_step(name, plan)

    trainer._player_step = stepping


@pytest.mark.parametrize("base", [GAN, AUTOENCODER], ids=["two players", "one player"])
def test_a_layer_a_component_froze_stays_frozen_and_untrained(base, tmp_path, toys_catalogue):
    """With two players, whose turns switch requires_grad, a frozen layer was trained and left unfrozen after."""
    raw = spec_dict(base, steps=3)
    raw["components"]["generator" if base is GAN else "net"] = {"type": "toy_frozen_first"}
    run = Run.create(load_spec(raw, catalogue=toys_catalogue), tmp_path / "run", progress=False)
    network = run.model.component("generator" if base is GAN else "net")
    fixed, head = network.fixed.weight.detach().clone(), network.head[1].weight.detach().clone()
    run.train()
    assert not torch.equal(network.head[1].weight, head)
    assert torch.equal(network.fixed.weight, fixed) and not network.fixed.weight.requires_grad
    assert all(p.requires_grad for name, p in run.model.named_parameters() if "fixed" not in name)


def test_a_player_naming_a_component_its_type_froze_whole_is_warned_of(toys_catalogue):
    raw = spec_dict(GAN, steps=1)
    raw["components"]["proj"] = {"type": "toy_frozen_first", "frozen": "all"}
    raw["components"]["generator"] = {"type": "toy_frozen_first"}
    raw["graph"].update(projected="proj(z)", fake="generator(projected)")
    raw["players"]["generator"]["params"] = ["generator", "proj"]
    spec = load_spec(raw, catalogue=toys_catalogue)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compile_spec(spec, build_data(spec))
    said = [str(w.message) for w in caught if issubclass(w.category, SpecWarning)]
    assert not any("players.generator.params[0]" in m for m in said), "the generator trains its head"
    assert any("players.generator.params[1]: 'proj' has only parameters its type froze (requires_grad=False), so no player trains it" in m for m in said), said


def test_a_signal_the_process_was_started_ignoring_stays_ignored_while_it_trains(tmp_path, toys_catalogue):
    """A shell starts a background job (``cmd &`` in a script) with SIGINT ignored; the trainer installed its own handler
    over that, so a Ctrl-C meant for the foreground stopped the job.  SIGTERM, not ignored, still asks it to stop."""
    run = Run.create(load_spec(spec_dict(VAE, steps=2), catalogue=toys_catalogue), tmp_path / "run", progress=False)
    seen = []
    player_step = run.trainer._player_step

    def stepping(name, plan):
        seen.append((signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)))
        return player_step(name, plan)

    run.trainer._player_step = stepping
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        run.train()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
    assert seen[0][0] is signal.SIG_IGN and callable(seen[0][1])


@pytest.mark.parametrize("base", [VAE, GAN], ids=["vae", "two-player-gan"])
def test_a_log_window_cut_by_a_stop_is_continued_after_the_resume(base, tmp_path, toys_catalogue):
    """Stopped at round 3 of a 4-round window, the resumed run's line at 4 still averages rounds 1 to 4."""
    spec = load_spec(spec_dict(base, steps=8, log_every=4), catalogue=toys_catalogue)
    Run.create(spec, tmp_path / "straight", progress=False).train()
    split = Run.create(spec, tmp_path / "split", progress=False)
    _stop_during(split.trainer, 3)
    split.train()
    assert split.trainer.interrupted == "SIGINT" and split.trainer.step == 3 and not _records(tmp_path / "split")
    Run.load(tmp_path / "split", catalogue=toys_catalogue, progress=False).train()
    assert _records(tmp_path / "straight") == _records(tmp_path / "split")


def test_training_to_an_earlier_round_then_on_logs_as_if_it_had_never_stopped(tmp_path, toys_catalogue):
    """`--until 3` of a run logging every 4 rounds writes no line at 3: its window goes on in the checkpoint.  What it
    returns is that window so far, the rounds since the last line (none yet: rounds 1 to 3)."""
    spec = load_spec(spec_dict(AUTOENCODER, steps=8, log_every=4), catalogue=toys_catalogue)
    Run.create(spec, tmp_path / "straight", progress=False).train()
    split = Run.create(spec, tmp_path / "split", progress=False)
    every = Run.create(load_spec(spec_dict(AUTOENCODER, steps=8, log_every=1), catalogue=toys_catalogue), tmp_path / "every", progress=False)
    window = split.train(3)
    every.train()
    assert not _records(tmp_path / "split")
    first_three = [r["rec"] for r in _records(tmp_path / "every")[:3]]  # the same rounds (same seed, same batches), one per line
    assert window["rec"] == pytest.approx(sum(first_three) / 3, rel=1e-6)
    Run.load(tmp_path / "split", catalogue=toys_catalogue, progress=False).train()
    assert _records(tmp_path / "straight") == _records(tmp_path / "split")


def test_the_best_checkpoint_is_judged_only_on_a_line_of_its_own_round(tmp_path, toys_catalogue):
    """A checkpoint at round 6, between lines at 4 and 8, is not the best by round 4's averages (a different model).  The
    highest loss is "best" here so that the older, worse line would win."""
    raw = spec_dict(AUTOENCODER, steps=8, log_every=4, checkpoint_every=3, best_metric="rec", best_mode="max")
    spec = load_spec(raw, catalogue=toys_catalogue)
    Run.create(spec, tmp_path / "run", progress=False).train()
    best = read_best(tmp_path / "run")
    lines = {r["step"]: r["rec"] for r in _records(tmp_path / "run")}
    saved = {int(folder.name.split("-")[-1]) for folder in list_checkpoints(tmp_path / "run")}
    assert sorted(lines) == [4, 8] and sorted(saved) == [3, 6, 8]
    assert lines[4] > lines[8], "round 4's line must be the one that would win for the test to mean anything"
    assert best["step"] == 8 and best["value"] == lines[8]  # the one checkpoint written at a round with a line


def test_a_resume_from_a_checkpoint_inside_a_log_window_writes_the_same_lines_again(tmp_path, toys_catalogue):
    spec = load_spec(spec_dict(GAN, steps=8, log_every=4, checkpoint_every=3), catalogue=toys_catalogue)
    Run.create(spec, tmp_path / "run", progress=False).train()
    before = _records(tmp_path / "run")
    for late in list_checkpoints(tmp_path / "run")[1:]:  # as if killed after the checkpoint at step 3
        shutil.rmtree(late)
    Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False).train()
    assert [r["step"] for r in before] == [4, 8] and _records(tmp_path / "run") == before


def test_a_checkpoint_without_the_saved_log_window_or_time_still_resumes(tmp_path, toys_catalogue):
    spec = load_spec(spec_dict(AUTOENCODER, steps=4, log_every=4, checkpoint_every=2), catalogue=toys_catalogue)
    Run.create(spec, tmp_path / "run", progress=False).train()
    shutil.rmtree(list_checkpoints(tmp_path / "run")[1])
    path = list_checkpoints(tmp_path / "run")[0] / "state.json"
    state = json.loads(path.read_text())
    del state["running"], state["elapsed_s"]  # as written before checkpoints held them
    path.write_text(json.dumps(state))
    resumed = Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False)
    resumed.train()
    assert resumed.trainer.step == 4 and [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")] == [4]


def test_elapsed_time_adds_up_over_resumes(tmp_path, toys_catalogue):
    spec = load_spec(spec_dict(AUTOENCODER, steps=8, log_every=1), catalogue=toys_catalogue)
    first = Run.create(spec, tmp_path / "run", progress=False)
    player_step = first.trainer._player_step

    def slow(name, plan):
        time.sleep(0.05)
        return player_step(name, plan)

    first.trainer._player_step = slow
    first.train(4)  # at least 0.2 s of training before the resume, which then takes much less per round
    Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False).train()
    elapsed = [r["elapsed_s"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")]
    assert len(elapsed) == 8 and elapsed == sorted(elapsed) and elapsed[4] >= 0.2, elapsed
    state = json.loads((list_checkpoints(tmp_path / "run")[0] / "state.json").read_text())
    assert elapsed[3] <= round(state["elapsed_s"], 3) <= elapsed[4]  # lines round to milliseconds


def test_each_line_logs_each_player_s_learning_rate_of_its_last_round(tmp_path, toys_catalogue):
    run = Run.create(load_spec(spec_dict(GAN, steps=8, log_every=2), catalogue=toys_catalogue), tmp_path / "run", progress=False)
    run.train()
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    for record in records:
        for player, plan in run.model.plans.items():
            expected = 1e-2 * plan.spec.schedule.factor(record["step"] - 1, 8)
            assert record[f"{player}.lr"] == pytest.approx(expected, rel=1e-12), (player, record["step"])
    assert records[-1]["generator.lr"] < records[0]["generator.lr"] < 1e-2  # the cosine schedule moves it
    assert {r["critic.lr"] for r in records} == {1e-2}


def test_a_checkpoint_at_the_last_step_is_written_once(tmp_path, toys_catalogue, monkeypatch):
    written = []

    def counting(run_dir, step, *args):
        written.append(step)
        return save_checkpoint(run_dir, step, *args)

    monkeypatch.setattr("compose_gen.runtime.trainer.save_checkpoint", counting)
    spec = load_spec(spec_dict(AUTOENCODER, steps=8, checkpoint_every=4), catalogue=toys_catalogue)
    Run.create(spec, tmp_path / "run", progress=False).train()
    assert written == [4, 8]
    written.clear()
    stopped = Run.create(spec, tmp_path / "stopped", progress=False)
    _stop_during(stopped.trainer, 4)  # the loop checkpoints step 4, then stops there
    stopped.train()
    assert stopped.trainer.interrupted and written == [4]


def test_cli_resume_continues_exactly(tmp_path):
    from compose_gen.cli import main

    tiny = ["--set", "components.encoder.net.hidden=[16]", "--set", "components.decoder.net.hidden=[16]",
            "--set", "train.batch_size=32", "--set", "train.evaluate_at_end=false", "--no-progress"]
    spec = str(ROOT / "specs" / "vae_digits.yaml")
    assert main(["train", spec, "--steps", "6", "--out", str(tmp_path / "a"), *tiny]) == 0
    assert main(["train", spec, "--steps", "6", "--out", str(tmp_path / "b"), *tiny,
                 "--set", "train.checkpoint_every=3"]) == 0
    # lose the end of run b, then continue it from step 3
    for late in list_checkpoints(tmp_path / "b")[1:]:
        shutil.rmtree(late)
    assert main(["train", "--resume", str(tmp_path / "b"), "--no-progress"]) == 0
    a = load_file(tmp_path / "a" / "checkpoints" / "step-00000006" / "model.safetensors")
    b = load_file(tmp_path / "b" / "checkpoints" / "step-00000006" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_new_run_refuses_a_folder_with_checkpoints(tmp_path, toys_catalogue):
    spec = load_spec(spec_dict(AUTOENCODER, steps=2), catalogue=toys_catalogue)
    Run.create(spec, tmp_path / "run", progress=False).train()
    with pytest.raises(FileExistsError, match="resume it"):
        Run.create(spec, tmp_path / "run", progress=False)


def _nan_run(tmp_path, catalogue, nan_at, kind="loss", **train):
    raw = spec_dict(AUTOENCODER, steps=8, checkpoint_every=2, **train)
    raw["losses"]["rec"].update(nan_at=nan_at, nan_kind=kind)
    run = Run.create(load_spec(raw, catalogue=catalogue), tmp_path / "run", progress=False)
    run.model.losses["rec"].calls = 0  # forget the dry run's call
    return run


def test_a_weighted_sum_that_overflows_is_blamed_on_the_weights_and_no_checkpoint_is_promised(tmp_path, toys_catalogue):
    raw = spec_dict(AUTOENCODER, steps=2)
    raw["players"] = {"model": {"params": ["net"], "terms": {"rec": 1e39}}}  # finite as a number, inf once it weights a float32 term
    run = Run.create(load_spec(raw, catalogue=toys_catalogue), tmp_path / "run", progress=False)
    message = r"non-finite weighted sum of finite terms \(check the weights of players.model.terms\): training stopped, no checkpoint was written yet"
    with pytest.raises(NonFiniteLoss, match=message):
        run.train()


def test_nan_loss_names_player_term_and_step_and_keeps_last_good_checkpoint(tmp_path, toys_catalogue):
    run = _nan_run(tmp_path, toys_catalogue, [5])
    message = (
        r"player 'model', step 5: non-finite loss \(rec=nan, rec.mse=nan\); no component made NaN or inf when the step was "
        r"recomputed, so it comes from losses.rec \(<dict>:1\), type 'toy_mse' \(plugin '\w+'\): training stopped"
    )
    with pytest.raises(NonFiniteLoss, match=message):
        run.train()
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step-00000002", "step-00000004"]
    back = Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False)
    assert back.trainer.step == 4
    assert same_state(back.model, run.model)  # the failed step changed nothing
    assert all(p.isfinite().all() for p in back.model.parameters())


def test_nan_gradient_names_the_term_and_the_component(tmp_path, toys_catalogue):
    run = _nan_run(tmp_path, toys_catalogue, [3, 4], kind="grad")  # call 4 is the diagnosis' recomputation
    with pytest.raises(NonFiniteLoss, match=r"step 3: non-finite gradient from term\(s\) rec in component\(s\) net"):
        run.train()


def test_an_infinite_gradient_is_caught_though_clip_grad_value_would_clamp_it(tmp_path, toys_catalogue):
    """Clamped to [−v, v], an infinite entry would be finite; the guard reads the gradients before any clipping."""
    raw = spec_dict(AUTOENCODER, steps=2)
    raw["players"] = {"model": {"clip_grad_value": 0.5}}
    run = Run.create(load_spec(raw, catalogue=toys_catalogue), tmp_path / "run", progress=False)
    run.model.component("net").net[0].bias.register_hook(lambda grad: torch.full_like(grad, math.inf))
    with pytest.raises(NonFiniteLoss, match=r"step 1: non-finite gradient from term\(s\) rec in component\(s\) net"):
        run.train()


def test_a_nan_loss_names_the_component_that_made_the_first_nan(tmp_path, toys_catalogue):
    """A weight gone infinite: the network's output is NaN for finite inputs, which the loss only passes on."""
    spec = load_spec(spec_dict(AUTOENCODER, steps=4), catalogue=toys_catalogue)
    run = Run.create(spec, tmp_path / "run", progress=False)
    run.train(2)
    with torch.no_grad():
        run.model.component("net").net[0].weight[0, 0] = math.inf
    message = (
        r"step 3: non-finite loss \(rec=inf, rec.mse=inf\); the first NaN or inf comes from "
        r"components.net \(<dict>:1\), type 'mlp' \(plugin 'networks'\), given finite inputs: training stopped"
    )
    with pytest.raises(NonFiniteLoss, match=message):
        run.train()


def test_on_nan_skip_skips_batches_up_to_the_limit(tmp_path, toys_catalogue, capsys):
    run = _nan_run(tmp_path, toys_catalogue, [3, 6], on_nan="skip", max_nan_skips=2)
    run.train()
    assert run.trainer.step == 8 and run.trainer.nan_skips == 2
    assert "step 3: non-finite loss" in capsys.readouterr().err
    adam = run.trainer.optimizers["model"].state_dict()["state"]
    assert {float(s["step"]) for s in adam.values()} == {6.0}  # 8 rounds, 2 skipped updates
    assert all(p.isfinite().all() for p in run.model.parameters())
    assert read_metrics(tmp_path / "run" / "metrics.jsonl")[-1]["nan_skips"] == 2


def test_on_nan_skip_stops_after_max_nan_skips(tmp_path, toys_catalogue):
    run = _nan_run(tmp_path, toys_catalogue, [2, 3, 4], on_nan="skip", max_nan_skips=2)
    with pytest.raises(NonFiniteLoss, match=r"step 4: .*more than train.max_nan_skips=2"):
        run.train()


def test_non_finite_parameters_are_never_checkpointed(tmp_path, toys_catalogue):
    run = Run.create(load_spec(spec_dict(AUTOENCODER, steps=2), catalogue=toys_catalogue), tmp_path / "run", progress=False)
    run.train()
    with torch.no_grad():
        next(run.model.parameters())[0] = float("inf")
    run.trainer.step = 3
    with pytest.raises(NonFiniteLoss, match="non-finite parameters in net"):
        run.trainer.save()
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step-00000002"]


def test_keep_last_n_and_the_best(tmp_path, toys_catalogue):
    # the loss falls, so with best_mode max the best is the first checkpoint, kept besides the newest one
    spec = load_spec(
        spec_dict(AUTOENCODER, steps=8, checkpoint_every=2, keep_checkpoints=1, best_metric="rec", best_mode="max"),
        catalogue=toys_catalogue,
    )
    Run.create(spec, tmp_path / "run", progress=False).train()
    losses = {r["step"]: r["rec"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")}
    best_step = max(losses, key=losses.get)
    best = read_best(tmp_path / "run")
    assert best["step"] == best_step and math.isclose(best["value"], losses[best_step])
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == [f"step-{best_step:08d}", "step-00000008"]
    assert Run.load(tmp_path / "run", catalogue=toys_catalogue, checkpoint="best", progress=False).trainer.step == best_step
    for damaged in ("garbage", "[]", '{"step": "two"}', '{"step": 8}'):  # the last edited: any checkpoint would pass for the best
        (tmp_path / "run" / "checkpoints" / "best.json").write_text(damaged)  # the newest checkpoint's record stands in
        assert Run.load(tmp_path / "run", catalogue=toys_catalogue, checkpoint="best", progress=False).trainer.step == best_step
    for checkpoint in list_checkpoints(tmp_path / "run"):
        (checkpoint / "state.json").write_text("{")
    with pytest.raises(CheckpointError, match=r"best.json: unreadable \(damaged or edited\), and no checkpoint records the best either"):
        Run.load(tmp_path / "run", catalogue=toys_catalogue, checkpoint="best", progress=False)


def test_a_resume_told_to_judge_the_best_otherwise_judges_it_afresh_and_keeps_the_old_best(tmp_path, toys_catalogue, capsys):
    """The old best, a value of another metric or mode, was compared with the new one's values and kept for ever; then,
    judged afresh, its checkpoint went at the next rotation, without a word."""
    spec = load_spec(spec_dict(AUTOENCODER, steps=8, checkpoint_every=2, best_metric="rec", best_mode="max"), catalogue=toys_catalogue)
    Run.create(spec, tmp_path / "run", progress=False).train()
    assert read_best(tmp_path / "run")["step"] == 2, "the loss falls: by max, the first line is the best"
    resumed = Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False, overrides=["train.best_mode=min"])
    resumed.train(12)
    err = capsys.readouterr().err
    assert "the best checkpoint so far, step 2, was judged by 'rec' (max), not by train.best_metric 'rec' (min)" in err
    best = read_best(tmp_path / "run")
    assert best["mode"] == "min" and best["step"] > 8, best
    # the old best, the only copy of the weights that were best by the criterion the run trained with, is kept
    assert "step 2 is kept beside it, whatever keep_checkpoints says" in err
    kept = [c.name for c in list_checkpoints(tmp_path / "run")]
    assert "step-00000002" in kept and f"step-{best['step']:08d}" in kept, kept
    again = Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False, overrides=["train.best_mode=min"])
    again.train(20)  # through more rotations, across a resume
    assert "step-00000002" in [c.name for c in list_checkpoints(tmp_path / "run")]
    back = Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False, overrides=["train.best_mode=max"])  # as at first
    back.train(22)
    assert read_best(tmp_path / "run")["step"] == 2, "the best by max so far is step 2's, kept from before"


def test_an_unknown_best_metric_is_found_by_the_dry_run_before_any_step(tmp_path, toys_catalogue):
    spec = load_spec(spec_dict(AUTOENCODER, steps=2, best_metric="recc"), catalogue=toys_catalogue)
    with pytest.raises(SpecError, match=r"train.best_metric: 'recc' is not a logged metric; did you mean 'rec'\?; logged: .*model.grad_norm"):
        Run.create(spec, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_a_model_built_without_the_dry_run_still_saves_with_an_unknown_best_metric(tmp_path, toys_catalogue, capsys):
    """The trainer's own check only warns: a typo must never cost the run its checkpoint."""
    spec = load_spec(spec_dict(AUTOENCODER, steps=2, best_metric="recc"), catalogue=toys_catalogue)
    data = build_data(spec)
    model = compile_spec(spec, data, torch.device("cpu"), check=False)
    trainer = Trainer(model, BatchStream(data.train, 8, 0, model.device), tmp_path, progress=False)
    trainer.fit(2)
    assert trainer.save({"rec": 1.0}) is not None and [p.name for p in list_checkpoints(tmp_path)] == ["step-00000002"]
    assert "warning: train.best_metric 'recc' is not a logged metric (logged: rec); no best checkpoint" in capsys.readouterr().err


def test_resuming_a_run_whose_checkpoints_are_gone_refuses_to_overwrite_its_records(tmp_path, toys_catalogue):
    spec = load_spec(spec_dict(AUTOENCODER, steps=3, log_every=1, checkpoint_every=1), catalogue=toys_catalogue)
    Run.create(spec, tmp_path / "run", progress=False).train()
    shutil.rmtree(tmp_path / "run" / "checkpoints")
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    with pytest.raises(CheckpointError, match=r"holds no checkpoint, but metrics.jsonl \(up to step 3\): starting over"):
        Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False)
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before
    with pytest.raises(CheckpointError) as info:  # as sample and evaluate load it: no advice to train it first
        Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False, trained=True)
    assert "holds no checkpoint, but metrics.jsonl (up to step 3): none was written before the training stopped, or they were removed, so there is no trained model" in str(info.value)
    assert "train into a new folder instead: compose-gen train" in str(info.value)


def test_a_resume_names_the_lines_of_the_log_it_drops_as_unreadable(tmp_path, toys_catalogue, capsys):
    spec = load_spec(spec_dict(AUTOENCODER, steps=3, log_every=1, checkpoint_every=1), catalogue=toys_catalogue)
    Run.create(spec, tmp_path / "run", progress=False).train()
    log = tmp_path / "run" / "metrics.jsonl"
    lines = log.read_text().splitlines()
    log.write_text("\n".join([lines[0], '{"step": 2, "rec": oops}', *lines[2:]]) + "\n")  # an edit in the middle
    capsys.readouterr()
    Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False).train(4)
    assert f"warning: {log}: dropped line(s) 2, which hold no JSON record" in capsys.readouterr().err
    assert [r["step"] for r in read_metrics(log)] == [1, 3, 4]


def test_metrics_after_the_resumed_checkpoint_are_dropped(tmp_path, toys_catalogue):
    spec = load_spec(spec_dict(AUTOENCODER, steps=4, log_every=1, checkpoint_every=2), catalogue=toys_catalogue)
    Run.create(spec, tmp_path / "run", progress=False).train()
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "step-00000004")  # as if killed after logging step 4
    Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False).train()
    assert [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")] == [1, 2, 3, 4]
    state = json.loads((tmp_path / "run" / "checkpoints" / "step-00000004" / "state.json").read_text())
    assert state["step"] == 4 and state["data"]["position"] > 0


@pytest.mark.parametrize("dtypes", [(torch.float32,) * 3, (torch.float32, torch.float64, torch.float32)])
def test_one_read_gives_the_loss_the_norm_of_all_gradients_as_one_vector_and_the_logs(dtypes):
    grads = [torch.randn(shape, dtype=dtype) for shape, dtype in zip([(3, 4), (5,), (2, 2, 2)], dtypes, strict=True)]
    flat = torch.cat([g.double().reshape(-1) for g in grads])
    loss = torch.tensor(2.5, requires_grad=True) * 1
    logs = {"vae": loss, "vae.kl": torch.tensor(0.25, dtype=torch.bfloat16), "vae.used": torch.tensor(3)}
    value, norm, numbers = _read_step(loss, list(torch._foreach_norm(grads)), logs)
    assert value == 2.5 and numbers == {"vae": 2.5, "vae.kl": 0.25, "vae.used": 3.0}
    assert norm == pytest.approx(flat.norm().item(), rel=1e-6)
    assert norm == pytest.approx(torch.nn.utils.get_total_norm(grads).item(), rel=1e-6)
    assert _read_step(loss, [torch.nn.utils.get_total_norm(grads)], {})[1] == pytest.approx(flat.norm().item(), rel=1e-6)
    assert _read_step(loss, [], {})[1] == 0.0  # no gradients yet
    grads[1][0] = float("nan")
    assert not math.isfinite(_read_step(loss, list(torch._foreach_norm(grads)), {})[1])
    grads[1][0] = float("inf")
    assert not math.isfinite(_read_step(loss, list(torch._foreach_norm(grads)), {})[1])


def test_gradients_finite_in_float32_have_a_finite_norm_however_large_and_clip_to_the_bound():
    grads = [torch.full((3,), 1e19), torch.full((2, 2), 5e18)]  # each norm is finite in float32, their total's square is not
    expected = math.sqrt(3 * 1e38 + 4 * 25e36)
    assert _read_step(torch.tensor(0.0), list(torch._foreach_norm(grads)), {})[1] == pytest.approx(expected, rel=1e-6)
    assert not math.isfinite(torch.nn.utils.get_total_norm(grads).item())  # torch's own total overflows
    params = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()
    _clip_to_norm(params, list(torch._foreach_norm([p.grad for p in params])), 2.0)
    clipped = [p.grad.double() for p in params]
    assert torch.cat([g.flatten() for g in clipped]).norm().item() == pytest.approx(2.0, rel=1e-5)
    assert torch.allclose(clipped[0] / clipped[1].flatten()[0], torch.full((3,), 2.0, dtype=torch.float64))  # the direction kept


@pytest.mark.parametrize("clip", [{"clip_grad_value": 0.05}, {"clip_grad_value": 0.05, "clip_grad_norm": 0.1}], ids=["value", "value-then-norm"])
def test_a_step_clamps_each_gradient_entry_then_clips_the_norm(clip, tmp_path, toys_catalogue):
    """With SGD at lr 1 a step moves θ by minus the gradient the player clipped: each entry clamped to [−v, v]
    (``clip_grad_value``), then the whole scaled to at most ``clip_grad_norm``; the logged norm is the unclipped one."""
    raw = spec_dict(AUTOENCODER, steps=1, log_every=1, optimizer={"type": "sgd", "lr": 1.0})
    raw["players"] = {"model": clip}
    run = Run.create(load_spec(raw, catalogue=toys_catalogue), tmp_path / "run", progress=False)
    params = run.trainer.model.plans["model"].params
    before = [p.detach().clone() for p in params]
    batch = next(BatchStream(run.data.train, 32, run.spec.model.seed, run.model.device))  # the batch of the first step
    loss, _ = run.model.player_loss("model", batch)
    grads = torch.autograd.grad(loss, params)
    clipped = [g.clamp(-0.05, 0.05) for g in grads]
    assert any((g.abs() > 0.05).any() for g in grads), "some entry must be clamped for the test to see it"
    if "clip_grad_norm" in clip:
        total = torch.cat([g.flatten() for g in clipped]).norm()
        assert total > 0.1, "the norm must be clipped for the test to see it"
        clipped = [g * 0.1 / total for g in clipped]
    logs = run.train()
    for p, start, step in zip(params, before, clipped, strict=True):
        torch.testing.assert_close(start - p.detach(), step, rtol=1e-4, atol=1e-6)
    assert logs["model.grad_norm"] == pytest.approx(torch.cat([g.flatten() for g in grads]).norm().item(), rel=1e-5)


@pytest.mark.parametrize(
    "logged, described",
    [(torch.ones(2), r"a Tensor of shape \(2,\), not a scalar tensor"), (torch.tensor(1 + 2j), "a complex torch.complex64 scalar"), (1.5, "a float, not a scalar tensor")],
)
def test_a_log_that_is_no_real_scalar_tensor_is_named(logged, described):
    logs = {"vae": torch.tensor(1.0), "vae.odd": logged}
    with pytest.raises(ContractError, match=rf"'vae.odd' as {described}"):
        _read_step(torch.tensor(1.0), [torch.tensor(2.0)], logs)


def test_a_resume_takes_the_spec_s_optimizer_settings_and_a_new_optimizer_type_starts_afresh(tmp_path, toys_catalogue, capsys):
    spec = load_spec(spec_dict(AUTOENCODER, steps=2, checkpoint_every=1), catalogue=toys_catalogue)
    Run.create(spec, tmp_path / "run", progress=False).train()
    tuned = Run.load(tmp_path / "run", overrides=["train.optimizer.betas=[0.5, 0.9]"], catalogue=toys_catalogue, progress=False)
    adam = tuned.trainer.optimizers["model"]
    assert tuple(adam.param_groups[0]["betas"]) == (0.5, 0.9) and adam.state, "the moments come back, the settings are the spec's"
    switched = Run.load(tmp_path / "run", overrides=["train.optimizer.type=sgd"], catalogue=toys_catalogue, progress=False)
    assert "warning: player 'model': the optimizer changed from Adam to SGD; it starts afresh" in capsys.readouterr().err
    switched.train(4)
    assert switched.trainer.step == 4 and isinstance(switched.trainer.optimizers["model"], torch.optim.SGD)


def test_a_resume_whose_override_diverges_at_once_leaves_the_recorded_spec_as_it_was(tmp_path, toys_catalogue):
    """An override that fails before any checkpoint of its own is not recorded: a plain resume would diverge again."""
    raw = spec_dict(AUTOENCODER, steps=2, checkpoint_every=2)
    raw["players"] = {"model": {"params": ["net"], "terms": {"rec": 1.0}}}
    Run.create(load_spec(raw, catalogue=toys_catalogue), tmp_path / "run", progress=False).train()
    recorded = (tmp_path / "run" / "spec.yaml").read_text()
    diverging = Run.load(tmp_path / "run", overrides=['players.model.terms={"rec": 1e39}'], catalogue=toys_catalogue, progress=False)
    with pytest.raises(NonFiniteLoss):
        diverging.train(4)
    assert (tmp_path / "run" / "spec.yaml").read_text() == recorded
    resumed = Run.load(tmp_path / "run", overrides=["train.steps=4"], catalogue=toys_catalogue, progress=False)
    resumed.train(4)  # a resume that trains records what it was told
    assert "steps: 4" in (tmp_path / "run" / "spec.yaml").read_text()


def test_a_resume_killed_before_its_first_checkpoint_leaves_the_spec_its_checkpoints_were_trained_with(tmp_path, toys_catalogue, monkeypatch):
    """spec.yaml took a resume's --set before training, and was put back only if training raised: after a SIGKILL a
    plain resume trained on, silently, with settings no checkpoint had been trained with."""
    raw = spec_dict(AUTOENCODER, steps=2, checkpoint_every=2)
    Run.create(load_spec(raw, catalogue=toys_catalogue), tmp_path / "run", progress=False).train()
    recorded = (tmp_path / "run" / "spec.yaml").read_text()
    resumed = Run.load(tmp_path / "run", overrides=["train.steps=4", "train.optimizer.lr=0.5"], catalogue=toys_catalogue, progress=False)
    fit, seen = resumed.trainer.fit, []

    def watched(steps):  # what a kill in mid-training would leave, before a checkpoint and after one
        seen.append((tmp_path / "run" / "spec.yaml").read_text())
        save = resumed.trainer.save
        resumed.trainer.save = lambda *args: (save(*args), seen.append((tmp_path / "run" / "spec.yaml").read_text()))[0]
        return fit(steps)

    monkeypatch.setattr(resumed.trainer, "fit", watched)
    resumed.train(4)
    assert seen[0] == recorded
    assert "lr: 0.5" in seen[1] and "steps: 4" in seen[1], "recorded with the first checkpoint it was trained with"


@pytest.mark.parametrize("clamp", [{}, {"clip_grad_value": 1e25}], ids=["norm", "value-then-norm"])
def test_a_gradient_whose_float32_norm_overflows_though_every_entry_is_finite_is_stepped_on_and_clipped(clamp, tmp_path, toys_catalogue):
    """A weight of 1e20 makes entries near 1e19, finite in float32, whose squares' sum is not: the float32 norm of one
    tensor is inf. The guard stopped training there; the norm is now counted again in double, and clipping bounds the step.
    After clamping each entry (to a bound above them all), the clamped gradients' norm was counted in float32: inf, so
    every step was scaled to nothing, silently."""
    raw = spec_dict(AUTOENCODER, steps=1, log_every=1, optimizer={"type": "sgd", "lr": 1.0})
    raw["players"] = {"model": {"terms": {"rec": 1e20}, "clip_grad_norm": 0.5, **clamp}}
    run = Run.create(load_spec(raw, catalogue=toys_catalogue), tmp_path / "run", progress=False)
    params = run.trainer.model.plans["model"].params
    before = [p.detach().clone() for p in params]
    batch = next(BatchStream(run.data.train, 32, run.spec.model.seed, run.model.device))
    grads = torch.autograd.grad(run.model.player_loss("model", batch)[0], params)
    assert all(g.isfinite().all() for g in grads) and not all(n.isfinite() for n in torch._foreach_norm(list(grads)))
    logged = run.train()
    assert 1.8e19 < logged["model.grad_norm"] < math.inf
    moved = torch.cat([(p.detach() - b).flatten().double() for p, b in zip(params, before, strict=True)]).norm()
    assert moved.item() == pytest.approx(0.5, rel=1e-3)


def test_a_round_an_error_ended_half_way_is_not_trained_again_on_top(tmp_path, toys_catalogue, monkeypatch) -> None:
    """The critic had stepped when the generator's step raised: training on in the same Run stepped the critic twice in
    that round, and never matched the run that was not stopped. Loading the folder again goes on exactly."""
    from compose_gen.runtime import Run
    from compose_gen.runtime.trainer import StepFailed
    from compose_gen.spec import load_spec

    run = Run.create(load_spec(spec_dict(GAN, steps=4, checkpoint_every=1), catalogue=toys_catalogue), tmp_path / "run", progress=False)
    run.train(2)
    real = type(run.trainer)._player_step

    def failing(trainer, name, plan):
        if name == "generator":
            raise ValueError("a plugin's bug")
        return real(trainer, name, plan)

    monkeypatch.setattr(type(run.trainer), "_player_step", failing)
    with pytest.raises(StepFailed, match="player 'generator', step 3"):
        run.train()
    monkeypatch.undo()
    with pytest.raises(RuntimeError, match="round 3 stopped after critic had stepped in it, so the model is part-way through"):
        run.train()
    assert Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False).train()  # from step 2's checkpoint



def test_a_term_a_player_only_logs_with_weight_0_is_not_stepped_after(tmp_path, toys_catalogue, monkeypatch):
    """``after_step`` counts a loss's training steps (a KL warm-up, weight clipping): a player that logs the loss
    with weight 0 does not train it, so it must not advance that count (a tester's warm-up ran 4x too fast)."""
    base = spec_dict(GAN, steps=3)
    base["players"]["generator"]["terms"] = {"adv.generator": 1.0, "adv.critic": 0.0}
    run = Run.create(load_spec(base, catalogue=toys_catalogue), tmp_path / "run", progress=False)
    told = []
    monkeypatch.setattr(run.model.losses["adv"], "after_step", lambda terms: told.append(set(terms)))
    run.train()
    assert told == [{"critic"}, {"critic"}, {"generator"}] * 3


def test_a_term_logged_with_weight_0_stays_out_of_the_loss_even_when_not_finite(toys_catalogue):
    """0 · NaN is NaN: a weight-0 term added to the total made the player's loss NaN for a value it only logs."""
    spec = spec_dict(AUTOENCODER, steps=1)
    spec["losses"]["watched"] = {"type": "toy_mse", "a": "r", "b": "x", "nan_at": [2]}  # call 1: the dry run's
    spec["players"] = {"model": {"terms": {"rec": 1.0, "watched": 0.0}}}
    model = compile_spec(load_spec(spec, catalogue=toys_catalogue), build_data(load_spec(spec, catalogue=toys_catalogue)))
    batch = {"x": torch.randn(8, 2)}
    loss, logs = model.player_loss("model", batch)
    assert math.isnan(float(logs["watched"].detach())) and torch.equal(loss, logs["rec"])
