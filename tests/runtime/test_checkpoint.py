"""Checkpoints: SIGKILL at random moments, corrupt and truncated files, fallback, shared tensors."""

from __future__ import annotations

import hashlib

import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from runtime_toys import AUTOENCODER, ROOT, VAE, forked, same_state, spec_dict, subprocess_env

from compose_gen.runtime import CheckpointError, Run, Trainer, build
from compose_gen.core.files import json_text
from compose_gen.runtime.checkpoint import list_checkpoints, load_checkpoint, load_latest, parameter_names
from compose_gen.runtime.trainer import SAME_KEYPRESS_S
from compose_gen.compiler.build import build_data
from compose_gen.spec import SpecError, load_spec

def train_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "compose_gen", "train", "--no-progress", *args]


def write_spec(path: Path, **train) -> Path:
    path.write_text(yaml.safe_dump(spec_dict(VAE, **train)))
    return path


def wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the training process did not get going")
        time.sleep(0.02)


def logged_a_step(run_dir: Path) -> bool:
    """The first record is in: the training loop, and its signal handlers, are running (the file opens before)."""
    metrics = run_dir / "metrics.jsonl"
    return metrics.exists() and metrics.stat().st_size > 0


def _train(argv: list[str]) -> int:
    from compose_gen.cli import main

    return main(["train", "--no-progress", *argv])


def test_sigkill_at_random_moments_always_leaves_a_loadable_latest_checkpoint(tmp_path):
    spec = write_spec(tmp_path / "spec.yaml", steps=1_000_000, checkpoint_every=1, keep_checkpoints=2, log_every=1)
    run_dir = tmp_path / "run"
    model = build(load_spec(spec), "cpu")[0]
    chance = random.Random(0)
    steps_seen = [0]
    for attempt in range(5):
        argv = ["--resume", str(run_dir)] if attempt else [str(spec), "--out", str(run_dir)]
        child = forked(_train, argv, output=str(tmp_path / f"log{attempt}.txt"))
        try:
            wait_for(lambda child=child: any(int(p.name[5:]) > steps_seen[-1] for p in list_checkpoints(run_dir)) or not child.is_alive())
            assert child.is_alive(), (tmp_path / f"log{attempt}.txt").read_text()
            time.sleep(chance.uniform(0.0, 0.5))
        finally:
            os.kill(child.pid, signal.SIGKILL)  # no handler runs: whatever was being written stays half-written
            child.join()
        checkpoint, warnings = load_latest(run_dir, model)
        assert warnings == [] and checkpoint is not None
        assert checkpoint.path == list_checkpoints(run_dir)[-1]
        steps_seen.append(checkpoint.step)
    assert steps_seen == sorted(steps_seen)
    # each resumed process removed what the killed one before it left half-written
    assert len([p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".tmp")]) <= 1


def test_sigterm_saves_and_exits_cleanly(tmp_path):
    """A real ``compose-gen train`` process, stopped like a job scheduler stops it."""
    spec = write_spec(tmp_path / "spec.yaml", steps=1_000_000, log_every=1)
    run_dir = tmp_path / "run"
    process = subprocess.Popen(train_command(str(spec), "--out", str(run_dir)), cwd=ROOT, env=subprocess_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(lambda: logged_a_step(run_dir) or process.poll() is not None)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM.value, err.decode()
    assert "stopped by SIGTERM" in err.decode() and "Traceback" not in err.decode()
    step = json.loads(out.decode().strip().splitlines()[-1])["step"]
    assert [p.name for p in list_checkpoints(run_dir)] == [f"step-{step:08d}"]
    assert load_checkpoint(list_checkpoints(run_dir)[-1], build(load_spec(spec), "cpu")[0]).step == step


def test_sigint_saves_and_resume_continues(tmp_path):
    spec = write_spec(tmp_path / "spec.yaml", steps=1_000_000, log_every=1)
    run_dir, log = tmp_path / "run", tmp_path / "log.txt"
    child = forked(_train, [str(spec), "--out", str(run_dir)], output=str(log))
    wait_for(lambda: logged_a_step(run_dir) or not child.is_alive())
    os.kill(child.pid, signal.SIGINT)
    child.join(60)
    assert child.exitcode == 128 + signal.SIGINT.value, log.read_text()
    assert "stopped by SIGINT" in log.read_text() and "Traceback" not in log.read_text()
    step = load_latest(run_dir, build(load_spec(spec), "cpu")[0])[0].step
    child = forked(_train, ["--resume", str(run_dir), "--steps", str(step + 2)], output=str(log))
    child.join(60)
    assert child.exitcode == 0, log.read_text()
    assert list_checkpoints(run_dir)[-1].name == f"step-{step + 2:08d}"


class _CtrlCTwice:
    """A batch stream that, handing out batch ``at``, makes this process receive SIGINT twice, ``gap`` seconds apart (an
    impatient user; or, a few milliseconds apart, one Ctrl-C that a terminal and torchrun both deliver)."""

    def __init__(self, stream, at: int, gap: float) -> None:
        self.stream, self.at, self.gap, self.count = stream, at, gap, 0

    def __next__(self):
        self.count += 1
        if self.count == self.at:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(self.gap)  # the Python-level handler runs here
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
        return next(self.stream)

    def state_dict(self) -> dict[str, int]:  # what a checkpoint records of the stream
        return self.stream.state_dict()


def test_a_second_ctrl_c_aborts_at_once_without_saving(tmp_path, toys_catalogue):
    spec = load_spec(spec_dict(AUTOENCODER, steps=50), catalogue=toys_catalogue)
    run = Run.create(spec, tmp_path / "run", progress=False)
    run.trainer.stream = _CtrlCTwice(run.trainer.stream, at=3, gap=SAME_KEYPRESS_S + 0.1)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        run.trainer.fit(50)
    assert run.trainer.step == 2 and list_checkpoints(tmp_path / "run") == []
    assert signal.getsignal(signal.SIGINT) is before, "the trainer's handler is removed again"


def test_one_ctrl_c_delivered_twice_at_once_stops_and_saves(tmp_path, toys_catalogue):
    """A terminal's Ctrl-C and torchrun's forwarded copy, milliseconds apart, counted as a second Ctrl-C: the run
    aborted without saving."""
    spec = load_spec(spec_dict(AUTOENCODER, steps=50), catalogue=toys_catalogue)
    run = Run.create(spec, tmp_path / "run", progress=False)
    run.trainer.stream = _CtrlCTwice(run.trainer.stream, at=3, gap=0.02)
    run.trainer.fit(50)
    assert run.trainer.interrupted == "SIGINT" and [p.name for p in list_checkpoints(tmp_path / "run")] == ["step-00000003"]


def test_a_sigterm_during_the_last_save_neither_aborts_it_nor_lets_sampling_start(tmp_path, toys_catalogue, monkeypatch):
    """The handlers were gone by the final save, so a second SIGTERM (a scheduler's, torchrun's) aborted it and the
    half-written checkpoint was deleted: a run stopped by SIGTERM kept no checkpoint."""
    spec = load_spec(spec_dict(AUTOENCODER, steps=4, checkpoint_every=10), catalogue=toys_catalogue)
    run = Run.create(spec, tmp_path / "run", progress=False)
    save = Trainer.save

    def terminated_while_saving(self, last=None):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # the handler runs here: with none of the trainer's, the process would die
        return save(self, last)

    monkeypatch.setattr(Trainer, "save", terminated_while_saving)
    run.train()
    assert run.trainer.interrupted == "SIGTERM" and [p.name for p in list_checkpoints(tmp_path / "run")] == ["step-00000004"]
    assert not (tmp_path / "run" / "evaluation.json").exists(), "stopped: neither sampled nor evaluated"


def _three_checkpoints(tmp_path, catalogue):
    spec = load_spec(spec_dict(AUTOENCODER, steps=6, checkpoint_every=2), catalogue=catalogue)
    Run.create(spec, tmp_path / "run", progress=False).train()
    return spec, list_checkpoints(tmp_path / "run")


def test_truncated_checkpoint_gets_a_clear_error_and_resume_falls_back(tmp_path, toys_catalogue, capsys):
    spec, (_, second, third) = _three_checkpoints(tmp_path, toys_catalogue)
    data = (third / "model.safetensors").read_bytes()
    (third / "model.safetensors").write_bytes(data[: len(data) // 2])
    model = build(spec, "cpu")[0]
    with pytest.raises(CheckpointError, match=r"model.safetensors: contents do not match .*\(corrupt or truncated\)"):
        load_checkpoint(third, model)
    (tmp_path / "run" / "evaluation.json").write_text(json.dumps({"step": 6, "test/rec": 1.0}))  # of the lost step-6 weights
    resumed = Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False)
    assert resumed.trainer.step == 4 and resumed.behind == "step 4 is loaded, but a newer checkpoint could not be"
    assert "warning: skipped" in capsys.readouterr().err
    resumed.train(6)  # continues from step 4 exactly: same parameters as the uninterrupted run
    assert json.loads((tmp_path / "run" / "evaluation.dropped-step-00000006.json").read_text()) == {"step": 6, "test/rec": 1.0}
    assert "moved to" in capsys.readouterr().err, "the old weights' step-6 evaluation is set aside, not shown as the new one's"
    assert resumed.behind is None, "the step-6 checkpoint it wrote is the folder's newest again"
    resumed.evaluate()
    assert json.loads((tmp_path / "run" / "evaluation.json").read_text())["step"] == 6, "so its evaluation is the record"
    data = (third / "model.safetensors").read_bytes()
    (third / "model.safetensors").write_bytes(data[: len(data) // 2])  # the new step 6 damaged too: its evaluation goes aside
    Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False).train(6)
    assert json.loads((tmp_path / "run" / "evaluation.dropped-step-00000006.json").read_text()) == {"step": 6, "test/rec": 1.0}, "kept"
    assert json.loads((tmp_path / "run" / "evaluation.dropped-step-00000006-2.json").read_text())["step"] == 6
    straight = Run.create(spec, tmp_path / "straight", progress=False)
    straight.train(6)
    assert same_state(resumed.model, straight.model)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda c: (c / "state.json").write_text("{not json"), "unreadable checkpoint"),
        (lambda c: (c / "optim.safetensors").write_bytes(b"\0" * 10), "corrupt or truncated"),
        (lambda c: (c / "model.safetensors").unlink(), "unreadable checkpoint"),
        (lambda c: _edit_state(c, optimizers="oops"), r"state.json: optimizers is 'oops': input should be a valid dictionary; the file was edited"),
        (lambda c: _edit_state(c, data={"epoch": "x", "position": 0}), r"data.epoch is 'x': input should be a valid integer"),
        (lambda c: _edit_state(c, elapsed_s="soon"), r"elapsed_s is 'soon': input should be a valid number"),
        (lambda c: (c / "state.json").write_text("[]"), r"checkpoint format 'list', this version reads 2"),
        (lambda c: _edit_state(c, running=[1]), r"running.0 is 1: input should be a valid dictionary"),
        (lambda c: _edit_state(c, running=[{"a": "b"}]), r"running.0.names is missing: field required"),
        (lambda c: _edit_state(c, running=[{"names": ["rec", "x"], "count": 5, "sums": [1.0]}]), r"running.0 is .*: value error, it holds 1 sums for 2 names"),
        (lambda c: _edit_state(c, running=[{"names": ["rec"], "count": 0, "sums": [1.0]}]), r"running.0.count is 0: input should be greater than 0"),
        (lambda c: _edit_state(c, trained_on=[{"a": 1}]), r"trained_on.0 is \{'a': 1\}: input should be a valid string"),
        (lambda c: _edit_state(c, best={"metric": "loss", "mode": "min", "value": 1.0, "step": "x"}), r"best.step is 'x'"),
        (lambda c: _edit_state(c, nan_skips=True), r"nan_skips is True: input should be a valid integer"),
        (lambda c: shutil.rmtree(c) or c.write_text(""), r"step-00000006: no checkpoint folder but a file"),
        (lambda c: _edit_state(c, data={"position": 0}), r"data.epoch is missing: field required"),
        (lambda c: _edit_state(c, optimizers={"model": {"state": "x", "param_groups": []}}), r"optimizers.model.state is 'x': input should be a valid dictionary"),
        (lambda c: _edit_state(c, sha256={"optim.safetensors": "0" * 64}), r"sha256 is .*: value error, it holds no hash of model.safetensors"),
    ],
    ids=["state.json", "optimizer file", "missing model file", "optimizers edited", "data edited", "elapsed edited", "not a mapping",
         "log window not a mapping", "log window without names", "a sum short", "a window of no steps", "trained_on not strings", "best step a string", "a bool for a count",
         "a file in its place", "data without its epoch", "optimizer state not a mapping", "a file's hash gone"],
)
def test_corrupt_checkpoints_get_clear_errors(damage, message, tmp_path, toys_catalogue):
    spec, checkpoints = _three_checkpoints(tmp_path, toys_catalogue)
    damage(checkpoints[-1])
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(checkpoints[-1], build(spec, "cpu")[0])
    checkpoint, warnings = load_latest(tmp_path / "run", build(spec, "cpu")[0])
    assert checkpoint.step == 4 and len(warnings) == 1


def test_sampling_and_evaluating_read_the_weights_alone_so_a_damaged_optimizer_file_costs_no_steps(tmp_path, toys_catalogue):
    spec, checkpoints = _three_checkpoints(tmp_path, toys_catalogue)
    (checkpoints[-1] / "optim.safetensors").write_bytes(b"\0" * 10)
    with pytest.raises(CheckpointError, match="optim.safetensors: contents do not match"):
        load_checkpoint(checkpoints[-1], build(spec, "cpu")[0])
    weights = load_checkpoint(checkpoints[-1], build(spec, "cpu")[0], optimizer=False)
    assert weights.step == 6 and weights.tensors is None
    run = Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False, weights_only=True)
    assert run.trainer.step == 6 and run.behind is None
    straight = Run.create(spec, tmp_path / "straight", progress=False)
    straight.train(6)
    assert same_state(run.model, straight.model), "the newest weights, not step 4's"
    with pytest.raises(RuntimeError, match="loaded without its optimizer state"):
        run.train(8)
    assert list_checkpoints(tmp_path / "run") == checkpoints, "nothing was written"
    resumed = Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False)  # training needs the optimizer: step 4
    assert resumed.trainer.step == 4 and resumed.behind is not None


def test_a_copy_of_a_checkpoint_under_another_name_is_no_checkpoint(tmp_path, toys_catalogue):
    """A backup named step-backup sorted after step-00000006 as text: a resume went back to it and overwrote the newer ones."""
    spec, checkpoints = _three_checkpoints(tmp_path, toys_catalogue)
    shutil.copytree(checkpoints[0], checkpoints[0].parent / "step-backup")
    shutil.copytree(checkpoints[0], checkpoints[0].parent / "step-00000002.bak")
    assert list_checkpoints(tmp_path / "run") == checkpoints
    resumed = Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False)
    assert resumed.trainer.step == 6 and resumed.behind is None


def test_a_resume_behind_an_unreadable_checkpoint_rotates_its_own_not_the_one_it_just_wrote(tmp_path, toys_catalogue):
    """Rotation by step number alone kept the newest, unreadable step-6 and deleted the step-5 checkpoint just written and
    step-4 it came from: the folder no longer loaded."""
    _, (_, _, third) = _three_checkpoints(tmp_path, toys_catalogue)
    (third / "model.safetensors").write_bytes(b"damaged")
    resumed = Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False, overrides=["train.keep_checkpoints=1"])
    assert resumed.trainer.step == 4
    resumed.train(5)
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step-00000005", "step-00000006"]
    assert Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False).trainer.step == 5


def test_a_checkpoint_linked_in_from_elsewhere_rotates_away_as_a_link_leaving_what_it_points_to(tmp_path, toys_catalogue):
    """Rotation renamed the link to ``.tmp-old-*`` and left it there for good: ``rmtree`` refuses a link, silently."""
    _, (first, _, _) = _three_checkpoints(tmp_path, toys_catalogue)
    elsewhere = tmp_path / "elsewhere" / first.name
    elsewhere.parent.mkdir()
    shutil.move(first, elsewhere)
    first.symlink_to(elsewhere, target_is_directory=True)
    resumed = Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False, overrides=["train.steps=8"])
    resumed.train()
    assert sorted(p.name for p in first.parent.iterdir()) == ["step-00000004", "step-00000006", "step-00000008"]
    assert sorted(p.name for p in elsewhere.iterdir()) == ["model.safetensors", "optim.safetensors", "state.json"]


def test_a_file_named_as_the_newest_checkpoint_is_one_that_cannot_be_read_and_is_replaced_when_its_step_is_saved(tmp_path, toys_catalogue):
    """Left out of the listing, the checkpoint before it was taken for the newest: evaluate wrote over the newer
    evaluation.json, and saving its step again left the file behind as ``.tmp-old-*``."""
    _, (_, _, third) = _three_checkpoints(tmp_path, toys_catalogue)
    shutil.rmtree(third)
    third.write_text("")
    resumed = Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False)
    assert resumed.trainer.step == 4 and resumed.behind == "step 4 is loaded, but a newer checkpoint could not be"
    resumed.train(6)
    assert sorted(p.name for p in third.parent.iterdir()) == ["step-00000002", "step-00000004", "step-00000006"] and third.is_dir()


def test_the_unreadable_checkpoint_a_resume_fell_back_behind_stays_until_one_of_its_step_replaces_it(tmp_path, toys_catalogue):
    """Once the run passed its step, it counted among the newest, so the healthy checkpoint the run resumed from went
    first; then it went too, though no checkpoint of its step was written again (its weights were intact: only its
    optimizer file was damaged, so sample and evaluate could still read it)."""
    _, (_, _, third) = _three_checkpoints(tmp_path, toys_catalogue)
    (third / "optim.safetensors").write_bytes(b"damaged")
    resumed = Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False, overrides=["train.keep_checkpoints=2", "train.checkpoint_every=5"])
    assert resumed.trainer.step == 4
    resumed.train(10)
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step-00000005", "step-00000006", "step-00000010"]
    weights = Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False, checkpoint="step-00000006", weights_only=True)
    assert weights.trainer.step == 6


def test_a_run_loaded_from_a_checkpoint_chosen_before_the_newest_does_not_train_over_the_newer_ones(tmp_path, toys_catalogue):
    _, checkpoints = _three_checkpoints(tmp_path, toys_catalogue)
    newest = (checkpoints[-1] / "model.safetensors").read_bytes()
    run = Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False, checkpoint="step-00000002")
    with pytest.raises(CheckpointError, match=r"step 2 is loaded, not the newest checkpoint \(step-00000006\); training on from it would overwrite"):
        run.train(6)
    assert list_checkpoints(tmp_path / "run") == checkpoints and (checkpoints[-1] / "model.safetensors").read_bytes() == newest
    run.evaluate(record=False)  # evaluating (and sampling) it stays possible
    chosen_newest = Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False, checkpoint="step-00000006")
    chosen_newest.train(7)
    assert list_checkpoints(tmp_path / "run")[-1].name == "step-00000007"


def test_reading_a_run_leaves_the_checkpoint_a_training_is_writing_and_training_clears_what_a_killed_one_left(tmp_path, toys_catalogue):
    """Loading a run to sample it deleted every .tmp-* folder, among them the one a live training was writing into."""
    _three_checkpoints(tmp_path, toys_catalogue)
    writing = tmp_path / "run" / "checkpoints" / ".tmp-step-00000008-12345"
    writing.mkdir()
    (writing / "model.safetensors").write_bytes(b"half")
    Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False, weights_only=True).evaluate(record=False)
    run = Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False)
    assert writing.exists()
    run.train(7)  # the folder is this process's now: what another left half-written is a killed process's
    assert not writing.exists()


def _edit_spec(run_dir: Path, edit) -> None:
    spec_file = run_dir / "spec.yaml"
    resolved = yaml.safe_load(spec_file.read_text())
    edit(resolved)
    spec_file.write_text(yaml.safe_dump(resolved))


@pytest.mark.parametrize(
    "edit, changed, said",
    [
        (
            lambda spec: spec["data"].update(seed=spec["data"]["seed"] + 1),
            "the run was trained on another train split than this one",
            "the test split may hold examples it trained on",
        ),
        (
            lambda spec: spec["components"]["net"].update(activation="leaky_relu"),
            "its components, graph or losses are not those step 6 was trained with",
            "an edit of the file",
        ),
    ],
    ids=["split", "model"],
)
def test_an_edit_of_the_data_or_the_model_is_said_and_its_metrics_not_recorded(tmp_path, toys_catalogue, capsys, edit, changed, said):
    """An edit of the folder's spec.yaml that moves the split (unlike --set, it got no word), or that makes another model of
    the same shapes (weights trained under relu evaluated under another activation), was evaluated and recorded as the run's."""
    _three_checkpoints(tmp_path, toys_catalogue)
    same = Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False)
    assert same.changed is None
    _edit_spec(tmp_path / "run", edit)
    capsys.readouterr()
    edited = Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False)
    assert edited.changed == changed and said in capsys.readouterr().err
    edited.evaluate()
    assert not (tmp_path / "run" / "evaluation.json").exists(), "no record of metrics of another split or model"
    same.evaluate()
    assert (tmp_path / "run" / "evaluation.json").exists()


def test_a_run_resumed_on_another_split_never_again_counts_a_split_as_held_out(tmp_path, toys_catalogue):
    """The checkpoint after such a resume recorded only the new split, so a later evaluate recorded metrics of a
    test split that held examples of the first train split."""
    _three_checkpoints(tmp_path, toys_catalogue)
    _edit_spec(tmp_path / "run", lambda spec: spec["data"].update(seed=spec["data"]["seed"] + 1))
    moved = Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False)
    moved.train(8)  # a checkpoint trained on both splits
    later = Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False)
    assert later.trainer.step == 8 and later.changed == "the run was trained on another train split than this one"
    assert len(json.loads((list_checkpoints(tmp_path / "run")[-1] / "state.json").read_text())["trained_on"]) == 2
    later.evaluate()
    assert not (tmp_path / "run" / "evaluation.json").exists(), "no record of metrics on a split it may have trained on"


def test_only_an_override_of_the_model_explains_a_changed_model(tmp_path, toys_catalogue):
    _three_checkpoints(tmp_path, toys_catalogue)
    _edit_spec(tmp_path / "run", lambda spec: spec["evaluate"].update(batch_size=7))  # no model edit: nothing to say
    assert Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False).changed is None
    _edit_spec(tmp_path / "run", lambda spec: spec["components"]["net"].update(activation="leaky_relu"))
    told = Run.load(tmp_path / "run", overrides=["components.net.activation=leaky_relu"], catalogue=toys_catalogue, progress=False)
    assert told.changed is None, "an override is asked for, and said by the command that takes it"
    steps = Run.load(tmp_path / "run", overrides=["train.steps=8"], catalogue=toys_catalogue, progress=False)  # what --steps adds
    assert steps.changed is not None, "an override of the training settings does not explain an edit of the model"


def test_a_parameter_a_newer_compose_gen_adds_is_no_edit_of_the_model(tmp_path, toys_catalogue):
    """A run written before a type gained a parameter lacks it in spec.yaml and in its hash; its default is no edit."""
    _, checkpoints = _three_checkpoints(tmp_path, toys_catalogue)
    _edit_spec(tmp_path / "run", lambda spec: spec["components"]["net"].pop("activation"))  # as the older version wrote it
    written = yaml.safe_load((tmp_path / "run" / "spec.yaml").read_text())
    sections = {key: written.get(key) for key in ("components", "graph", "losses")}
    _edit_state(checkpoints[-1], trained_with=[hashlib.sha256(json.dumps(sections, sort_keys=True, default=str).encode()).hexdigest()])
    assert Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False).changed is None


def test_a_checkpoint_records_its_test_split_too_and_older_records_count_as_unrecorded(tmp_path, toys_catalogue):
    """A test split pointed at other examples (an mnist_idx's test_images at training images) was evaluated and recorded."""
    _, checkpoints = _three_checkpoints(tmp_path, toys_catalogue)
    state = json.loads((checkpoints[-1] / "state.json").read_text())
    assert len(state["test_sha256"]) == 64
    _edit_state(checkpoints[-1], test_sha256="0" * 64)
    moved = Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False)
    assert moved.changed == "the test split is not the one this run was tested on while it trained"
    older = {k: v for k, v in state.items() if k not in ("trained_on", "test_sha256", "trained_with")}
    (checkpoints[-1] / "state.json").write_text(json.dumps({**older, "train_sha256": None}))  # as older code could write it
    assert Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False).changed is None


def test_a_data_file_rescaled_under_a_fitted_transform_is_a_changed_split(tmp_path, toys_catalogue):
    """standardise maps x and 4x to the same fields, so the run sampled and evaluated the new file as its own (samples four
    times too large); the data as read counts too.  Checkpoints written before it counted (their fingerprints of the
    fields alone) still match the data they were trained on."""
    points = np.random.default_rng(0).normal(size=(200, 2)).astype(np.float32)
    np.save(tmp_path / "x.npy", points)
    raw = spec_dict(AUTOENCODER, steps=2)
    raw["data"] = {"type": "npy", "path": str(tmp_path / "x.npy"), "transforms": ["standardise"]}
    Run.create(load_spec(raw, catalogue=toys_catalogue), tmp_path / "run", progress=False).train()
    checkpoint = list_checkpoints(tmp_path / "run")[-1]
    state = json.loads((checkpoint / "state.json").read_text())
    assert state["sources_counted"] is True
    assert Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False).changed is None
    older = Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False).data
    legacy = {"trained_on": [older.train.fingerprint(with_source=False)], "test_sha256": older.test.fingerprint(with_source=False)}
    (checkpoint / "state.json").write_text(json.dumps({**{k: v for k, v in state.items() if k != "sources_counted"}, **legacy}))
    assert Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False).changed is None
    np.save(tmp_path / "x.npy", 4 * points)
    rescaled = Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False)
    assert rescaled.data.train.fields["x"].allclose(older.train.fields["x"], atol=1e-5)  # the same fields...
    (checkpoint / "state.json").write_text(json.dumps(state))
    assert Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False).changed == (
        "the run was trained on another train split than this one"  # ... of another file
    )


def test_a_data_file_of_another_width_than_trained_on_is_named_as_the_likely_cause(tmp_path, toys_catalogue):
    """The model of a run whose data file changed shape no longer builds; the error says that the data changed, not only
    the shape mismatch the dry run finds.  Where the data are those the run trained on, the error is the dry run's alone."""
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(200, 2)).astype(np.float32))
    raw = spec_dict(AUTOENCODER, steps=2)
    raw["data"] = {"type": "npy", "path": str(tmp_path / "x.npy")}
    Run.create(load_spec(raw, catalogue=toys_catalogue), tmp_path / "run", progress=False).train()
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(200, 3)).astype(np.float32))
    with pytest.raises(SpecError) as caught:
        Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False)
    changed, *rest = caught.value.problems
    assert changed.path == ("data",) and rest, "the data first, then the build's own problem"
    assert changed.message == (
        "the data built now (examples of shape x (3,)) are not those step-00000002 trained on, which likely explains the "
        "problem below: has a data file changed since training?"
    )
    np.save(tmp_path / "wide.npy", np.load(tmp_path / "x.npy"))
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(200, 2)).astype(np.float32))
    with pytest.raises(SpecError) as caught:  # the file is back; the user's own --set points to another
        Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False, overrides=[f"data.path={tmp_path / 'wide.npy'}"])
    assert caught.value.problems[0].message.endswith("which likely explains the problem below: --set data.path changed them")
    np.save(tmp_path / "x.npy", np.load(tmp_path / "wide.npy"))
    now = build_data(load_spec(tmp_path / "run" / "spec.yaml", catalogue=toys_catalogue)).train.fingerprint()
    _edit_state(list_checkpoints(tmp_path / "run")[-1], trained_on=[now])
    with pytest.raises(SpecError) as caught:
        Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False)
    assert caught.value.problems == rest


def _edit_state(checkpoint: Path, **entries: object) -> None:
    state = json.loads((checkpoint / "state.json").read_text())
    (checkpoint / "state.json").write_text(json.dumps({**state, **entries}))


def test_a_checkpoint_that_cannot_be_written_is_an_error_that_leaves_no_half_folder(tmp_path, toys_catalogue, monkeypatch):
    """A full disk fails safetensors' writer: the error says so, no .tmp folder stays, the earlier checkpoints do."""
    from safetensors import SafetensorError

    spec, checkpoints = _three_checkpoints(tmp_path, toys_catalogue)
    run = Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False)

    def full_disk(*args: object, **kwargs: object) -> None:
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr("compose_gen.runtime.checkpoint.save_file", full_disk)
    with pytest.raises(CheckpointError, match=r"step-00000008: could not write the checkpoint of step 8 \(SafetensorError: .*No space left.*the earlier checkpoints stay"):
        run.train(8)
    assert list_checkpoints(tmp_path / "run") == checkpoints and not list((tmp_path / "run" / "checkpoints").glob(".tmp-*"))


def test_a_second_ctrl_c_while_a_checkpoint_is_written_leaves_no_half_folder(tmp_path, toys_catalogue, monkeypatch):
    """The message then sends the user to a new folder, so nothing would ever remove a .tmp folder left here."""
    _, checkpoints = _three_checkpoints(tmp_path, toys_catalogue)
    run = Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False)

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("compose_gen.runtime.checkpoint.save_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run.train(8)
    assert list_checkpoints(tmp_path / "run") == checkpoints and not list((tmp_path / "run" / "checkpoints").glob(".tmp-*"))


def test_a_state_json_whose_step_is_not_its_folders_is_refused_and_resume_falls_back(tmp_path, toys_catalogue):
    """state.json is not hashed: step-6 weights that say "step 5" would resume at 5 and later overwrite step-00000006."""
    spec, (_, _, third) = _three_checkpoints(tmp_path, toys_catalogue)
    renamed = tmp_path / "kept"  # a checkpoint folder given by another name is loaded by what it records
    shutil.copytree(third, renamed)
    assert load_checkpoint(renamed, build(spec, "cpu")[0]).step == 6
    state = json.loads((third / "state.json").read_text())
    (third / "state.json").write_text(json.dumps({**state, "step": 5}))
    message = rf"{third / 'state.json'}: records step 5, but its folder is named for step 6"
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(third, build(spec, "cpu")[0])
    checkpoint, warnings = load_latest(tmp_path / "run", build(spec, "cpu")[0])
    assert checkpoint.step == 4 and len(warnings) == 1 and re.search(message, warnings[0])


def test_no_loadable_checkpoint_is_an_error(tmp_path, toys_catalogue):
    _, checkpoints = _three_checkpoints(tmp_path, toys_catalogue)
    for c in checkpoints:
        (c / "state.json").write_text("")
    with pytest.raises(CheckpointError, match="no checkpoint could be loaded: skipped .*unreadable checkpoint"):
        Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False)


def test_checkpoint_of_another_model_does_not_fit_and_leaves_the_model_untouched(tmp_path, toys_catalogue):
    _, checkpoints = _three_checkpoints(tmp_path, toys_catalogue)
    raw = spec_dict(AUTOENCODER)
    raw["components"]["net"]["hidden"] = [8]
    other = build(load_spec(raw, catalogue=toys_catalogue), "cpu")[0]
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"does not fit this model \(shapes differ: \['components.net.net.0.weight"):
        load_checkpoint(checkpoints[-1], other)
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())


def _moments(run: Run) -> dict[str, torch.Tensor]:
    """Each parameter's first Adam moment, by the parameter's name."""
    names = parameter_names(run.model)
    (optimizer,) = run.trainer.optimizers.values()
    return {names[id(p)]: state["exp_avg"] for p, state in optimizer.state.items()}


def _vae_trained_by_one_player(tmp_path, catalogue, params: list[str]) -> dict[str, torch.Tensor]:
    raw = spec_dict(VAE, steps=3)
    raw["players"] = {"model": {"params": params}}
    run = Run.create(load_spec(raw, catalogue=catalogue), tmp_path / "run", progress=False)
    run.train()
    return _moments(run)


def test_a_resume_that_lists_a_player_s_params_in_another_order_keeps_each_parameter_s_moments(tmp_path, toys_catalogue, capsys):
    # by position, the encoder's moments went to the decoder's tensors (and a fused Adam read past smaller ones)
    saved = _vae_trained_by_one_player(tmp_path, toys_catalogue, ["encoder", "decoder"])
    resumed = Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False, overrides=["players.model.params=[decoder, encoder]"])
    restored = _moments(resumed)
    assert restored.keys() == saved.keys() and all(torch.equal(restored[name], saved[name]) for name in saved)
    assert "optimizer" not in capsys.readouterr().err
    resumed.train(5)  # and trains on from them


def test_a_resume_whose_player_gains_or_loses_a_component_says_so_and_keeps_the_rest(tmp_path, toys_catalogue, capsys):
    saved = _vae_trained_by_one_player(tmp_path, toys_catalogue, ["encoder"])
    resumed = Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False, overrides=["players.model.params=[decoder, encoder]"])
    restored = _moments(resumed)
    assert restored.keys() == saved.keys() and all(torch.equal(restored[name], saved[name]) for name in saved)
    assert "player 'model' now trains 4 parameter(s) (components.decoder.net.net.0.weight" in capsys.readouterr().err
    resumed.train(5)
    dropped = Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False, overrides=["players.model.params=[decoder]"])
    assert _moments(dropped).keys() == {name for name in _moments(resumed) if "decoder" in name}
    assert "player 'model' no longer trains 4 parameter(s) (components.encoder.net.net.0.weight" in capsys.readouterr().err


def test_an_older_checkpoint_s_optimizer_state_is_read_by_position_and_refused_where_shapes_differ(tmp_path, toys_catalogue):
    saved = _vae_trained_by_one_player(tmp_path, toys_catalogue, ["encoder", "decoder"])
    newest = list_checkpoints(tmp_path / "run")[-1]
    state = json.loads((newest / "state.json").read_text())
    del state["optimizers"]["model"]["params"]  # as checkpoints were written before the names
    _edit_state(newest, optimizers=state["optimizers"])
    same = Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False)
    assert all(torch.equal(moment, saved[name]) for name, moment in _moments(same).items())
    with pytest.raises(CheckpointError, match=r"optimizer state does not fit \(ValueError: its exp_avg for components.decoder.net.net.0.weight has shape \(16, 64\), the parameter \(16, 4\)"):
        Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False, checkpoint=newest, overrides=["players.model.params=[decoder, encoder]"])


def test_shared_tensors_are_stored_once(tmp_path, toys_catalogue):
    # the ELBO holds the encoder and decoder that the model holds too
    spec = load_spec(spec_dict(VAE, steps=1), catalogue=toys_catalogue)
    run = Run.create(spec, tmp_path / "run", progress=False)
    run.train()
    state = json.loads((list_checkpoints(tmp_path / "run")[-1] / "state.json").read_text())
    assert state["aliases"]["losses.vae.encoder.net.net.0.weight"] == "components.encoder.net.net.0.weight"
    fresh = build(spec, "cpu")[0]
    load_checkpoint(list_checkpoints(tmp_path / "run")[-1], fresh)
    assert same_state(fresh, run.model)


def test_a_sampler_of_another_type_loads_the_trained_run(tmp_path, toys_catalogue):
    # the checkpoint holds the ancestral sampler's view of the decoder as aliases under sampler.*;
    # latent_model holds it under other names, all shared with parts the checkpoint stores
    spec = load_spec(spec_dict(VAE, steps=2), catalogue=toys_catalogue)
    run = Run.create(spec, tmp_path / "run", progress=False)
    run.train()
    raw = spec_dict(VAE, steps=2)
    raw["sample"] = {"type": "latent_model", "model": "vae"}
    other = build(load_spec(raw, catalogue=toys_catalogue), "cpu")[0]
    load_checkpoint(list_checkpoints(tmp_path / "run")[-1], other)
    trained = run.model.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in other.state_dict().items() if not k.startswith("sampler."))
    decoder = other.sampler.model.decoder.net.net[0].weight
    assert torch.equal(decoder, run.model.components["decoder"].net.net[0].weight)


def test_a_samplers_own_tensors_are_left_behind_and_untrained_ones_refused(tmp_path, toys_catalogue):
    """Tensors only a sampler holds are never trained: another sampler drops them; one with parameters of its own is refused."""
    raw = spec_dict(VAE, steps=2)
    raw["sample"]["prior"] = {"type": "diagonal_normal", "shape": [4]}  # inline: the sampler's own parameters
    run = Run.create(load_spec(raw, catalogue=toys_catalogue), tmp_path / "run", progress=False)
    run.train()
    checkpoint = list_checkpoints(tmp_path / "run")[-1]
    others = [
        {"type": "ancestral", "prior": "prior", "decoder": "decoder"},
        {"type": "ancestral", "prior": {"type": "standard_normal", "shape": [4]}, "decoder": "decoder"},  # buffers only
        {"type": "latent_model", "model": "vae"},
    ]
    for sampler in others:
        other = build(load_spec({**raw, "sample": sampler}, catalogue=toys_catalogue), "cpu")[0]
        load_checkpoint(checkpoint, other)
        assert torch.equal(other.components["decoder"].net.net[0].weight, run.model.components["decoder"].net.net[0].weight)
    plain = Run.create(load_spec(spec_dict(VAE, steps=1), catalogue=toys_catalogue), tmp_path / "plain", progress=False)
    plain.train()
    with pytest.raises(CheckpointError, match=r"the sampler has parameters of its own \(sampler.prior.loc, sampler.prior.log_scale\) that no checkpoint trained"):
        load_checkpoint(list_checkpoints(tmp_path / "plain")[-1], run.model)


def test_json_records_are_standard_json_with_undefined_values_as_null() -> None:
    """A metric undefined on degenerate samples is NaN; bare NaN, which json.dumps writes, is not JSON."""
    text = json_text({"fd": float("nan"), "nested": {"is": [1.5, float("inf")]}, "step": 3})
    assert json.loads(text) == {"fd": None, "nested": {"is": [1.5, None]}, "step": 3}
    assert "NaN" not in text and "Infinity" not in text


def test_checkpoint_files_share_the_mode_of_the_rest_of_the_folder(tmp_path, toys_catalogue):
    """safetensors writes its files 0600; a run folder shared with a group should not have unreadable checkpoints."""
    _, checkpoints = _three_checkpoints(tmp_path, toys_catalogue)
    modes = {file.name: file.stat().st_mode & 0o777 for file in checkpoints[-1].iterdir()}
    assert len(set(modes.values())) == 1, modes
    assert modes["model.safetensors"] == (tmp_path / "run" / "spec.yaml").stat().st_mode & 0o777


def test_without_hashes_a_truncated_file_is_found_from_its_header_and_a_flipped_byte_is_not(tmp_path, toys_catalogue):
    """What `compose-gen runs` checks on every run: cheap, so it reads headers, not whole files."""
    from compose_gen.runtime.checkpoint import verify_checkpoint

    _, checkpoints = _three_checkpoints(tmp_path, toys_catalogue)
    whole, cut = checkpoints[-1] / "model.safetensors", checkpoints[-2] / "model.safetensors"
    verify_checkpoint(checkpoints[-1], hashes=False)
    data = bytearray(whole.read_bytes())
    data[-1] ^= 0xFF
    whole.write_bytes(bytes(data))
    verify_checkpoint(checkpoints[-1], hashes=False)  # the same length: only the hash can tell
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        verify_checkpoint(checkpoints[-1])
    cut.write_bytes(cut.read_bytes()[:-4])
    with pytest.raises(CheckpointError, match="not as long as its header says"):
        verify_checkpoint(checkpoints[-2], hashes=False)


@pytest.mark.parametrize(
    "damaged",
    [
        b"",
        (2**62).to_bytes(8, "little") + b"{}",  # a header length beyond the file (and beyond memory)
        (2**64 - 1).to_bytes(8, "little"),
        (2).to_bytes(8, "little") + b"[]",
        (28).to_bytes(8, "little") + b'{"w": {"data_offsets": [0]}}',
        (32).to_bytes(8, "little") + b'{"w": {"data_offsets": "xyz"}} ',
        (400).to_bytes(8, "little") + b"[" * 400,  # nested deeper than the JSON parser recurses
    ],
    ids=["empty", "huge length", "largest length", "not a mapping", "short offsets", "offsets a string", "deep"],
)
def test_a_damaged_header_is_a_damaged_checkpoint_not_a_crash(damaged, tmp_path, toys_catalogue):
    from compose_gen.runtime.checkpoint import verify_checkpoint

    _, checkpoints = _three_checkpoints(tmp_path, toys_catalogue)
    (checkpoints[-1] / "model.safetensors").write_bytes(damaged)
    with pytest.raises(CheckpointError, match="model.safetensors: not as long as its header says"):
        verify_checkpoint(checkpoints[-1], hashes=False)


@pytest.mark.parametrize("name", ["checkpoints", "samples", "tensorboard"])
def test_a_run_folder_whose_subfolder_links_elsewhere_is_refused_before_anything_is_written(tmp_path, toys_catalogue, name):
    """A received folder with ``checkpoints -> ../mine/checkpoints`` resumed into that other run and rotated its checkpoints away."""
    mine = Run.create(load_spec(spec_dict(AUTOENCODER, steps=2), catalogue=toys_catalogue), tmp_path / "mine", progress=False)
    mine.train()
    before = sorted(p.name for p in list_checkpoints(tmp_path / "mine"))
    received = tmp_path / "received"
    received.mkdir()
    shutil.copy(tmp_path / "mine" / "spec.yaml", received / "spec.yaml")
    (tmp_path / "mine" / name).mkdir(exist_ok=True)
    (received / name).symlink_to(Path("..") / "mine" / name)
    with pytest.raises(CheckpointError, match=rf"^{received / name} is a symbolic link \(to ../mine/{name}\), which compose_gen never makes"):
        Run.load(received, catalogue=toys_catalogue, progress=False)
    assert sorted(p.name for p in list_checkpoints(tmp_path / "mine")) == before


def test_records_nested_too_deep_to_parse_are_damaged_files_not_a_crash(tmp_path, toys_catalogue):
    """Python's JSON parser raises RecursionError on them, which stopped every command, naming no file; now the checkpoint
    is skipped like any damaged one, and a damaged plugins.json (a record for messages) is as if absent."""
    spec, (_, second, third) = _three_checkpoints(tmp_path, toys_catalogue)
    deep = "[" * 100_000 + "]" * 100_000
    (third / "state.json").write_text(deep)
    (tmp_path / "run" / "plugins.json").write_text(deep)
    checkpoint, said = load_latest(tmp_path / "run", build(spec, "cpu")[0])
    assert checkpoint.path == second
    assert said == [f"skipped {third}: unreadable checkpoint (ValueError: JSON nested too deeply)"]
    assert Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False, weights_only=True).trainer.step == 4


def test_a_log_window_with_a_non_finite_sum_resumes_with_it_undefined(tmp_path, toys_catalogue):
    """json_text writes a non-finite sum as null; reading it back failed on float(None)."""
    _, checkpoints = _three_checkpoints(tmp_path, toys_catalogue)
    _edit_state(checkpoints[-1], running=[{"names": ["loss"], "count": 1, "sums": [None]}])
    run = Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False)
    assert run.trainer.step == 6
    assert math.isnan(run.trainer._running.sums[("loss",)][0])


def test_checkpoint_tensors_of_another_dtype_or_missing_under_an_alias_are_refused_by_name(tmp_path, toys_catalogue):
    """load_state_dict casts dtypes without a word (int64 weights evaluated to garbage; bf16 ones resumed rounded), and an
    alias naming a tensor the file lacks was a bare KeyError."""
    from safetensors.torch import load_file, save_file

    spec, checkpoints = _three_checkpoints(tmp_path, toys_catalogue)
    model_file = checkpoints[-1] / "model.safetensors"
    tensors = load_file(str(model_file))
    name = next(iter(tensors))
    save_file({**tensors, name: tensors[name].to(torch.bfloat16)}, str(model_file))
    _edit_state(checkpoints[-1], sha256={**json.loads((checkpoints[-1] / "state.json").read_text())["sha256"],
                                         "model.safetensors": hashlib.sha256(model_file.read_bytes()).hexdigest()})
    with pytest.raises(CheckpointError, match=rf"does not fit this model \(dtypes differ: \['{re.escape(name)} torch.bfloat16 in the checkpoint, torch.float32 in the model'\]\)"):
        load_checkpoint(checkpoints[-1], build(spec, "cpu")[0])
    _edit_state(checkpoints[-2], aliases={"elsewhere.weight": "gone.weight"})
    with pytest.raises(CheckpointError, match=r"state.json names tensors as aliases that model.safetensors lacks \(\['gone.weight'\]\)"):
        load_checkpoint(checkpoints[-2], build(spec, "cpu")[0])
    checkpoint, said = load_latest(tmp_path / "run", build(spec, "cpu")[0])
    assert checkpoint.step == 2 and len(said) == 2


def test_a_run_folder_whose_spec_is_a_fifo_is_refused_rather_than_waited_on(tmp_path, toys_catalogue):
    Run.create(load_spec(spec_dict(AUTOENCODER, steps=2), catalogue=toys_catalogue), tmp_path / "run", progress=False).train()
    (tmp_path / "run" / "spec.yaml").unlink()
    os.mkfifo(tmp_path / "run" / "spec.yaml")
    with pytest.raises(CheckpointError, match=r"spec.yaml is not a regular file, which the run folder's spec always is"):
        Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False)


def test_weights_trained_on_after_an_edit_of_the_model_are_never_again_evaluated_as_the_edited_model(tmp_path, toys_catalogue, capsys):
    """The resume warned, but its checkpoints recorded the edited model alone, so a later evaluate of those weights,
    trained under two activations, recorded its metrics as the edited model's."""
    _three_checkpoints(tmp_path, toys_catalogue)
    _edit_spec(tmp_path / "run", lambda spec: spec["components"]["net"].update(activation="leaky_relu"))
    Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False).train(8)  # warned: trained under both models
    state = json.loads((list_checkpoints(tmp_path / "run")[-1] / "state.json").read_text())
    assert len(state["trained_with"]) == 2
    capsys.readouterr()
    later = Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False)
    assert later.changed == "step 8 was trained in part with other components, graph or losses, before a resume on an edited spec"
    assert "its metrics are not recorded" in capsys.readouterr().err
    later.evaluate()
    assert not (tmp_path / "run" / "evaluation.json").exists(), "no record of metrics of a model its weights were not trained as"
    told = Run.load(tmp_path / "run", overrides=["components.net.activation=leaky_relu"], catalogue=toys_catalogue, progress=False)
    assert told.changed == later.changed, "an override explains the model of this command, not the mix before it"


def test_a_checkpoint_of_older_code_records_its_model_by_one_fingerprint(tmp_path, toys_catalogue):
    _, checkpoints = _three_checkpoints(tmp_path, toys_catalogue)
    state = json.loads((checkpoints[-1] / "state.json").read_text())
    (checkpoints[-1] / "state.json").write_text(json.dumps({**state, "model_sha256": state.pop("trained_with")[0]}))
    assert Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False).changed is None
    _edit_spec(tmp_path / "run", lambda spec: spec["components"]["net"].update(activation="leaky_relu"))
    assert Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False).changed == (
        "its components, graph or losses are not those step 6 was trained with"
    )
