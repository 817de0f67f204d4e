"""The Python API: load, build, train, load back, sample and score."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import yaml

import compose_gen as cg
from compose_gen.runtime.checkpoint import CheckpointError


def test_train_then_load_back(tmp_path, vae_spec, capsys) -> None:
    spec = cg.load_spec(vae_spec, ["train.checkpoint_every=10"])
    run = cg.train(spec, out=tmp_path / "run", progress=False)
    assert run.trainer.step == vae_spec["train"]["steps"]
    results = run.evaluate()
    again = cg.load_run(tmp_path / "run", progress=False)
    assert again.trainer.step == run.trainer.step
    capsys.readouterr()
    cg.load_run(tmp_path / "run", progress=False).train(run.trainer.step + 2)
    assert "step" not in capsys.readouterr().err  # no progress lines
    for key, value in run.model.state_dict().items():
        assert torch.equal(value, again.model.state_dict()[key]), key
    assert again.evaluate()["test/vae.elbo"] == results["test/vae.elbo"]
    x = again.sample(5)
    assert x.shape == (5, 64) and ((x >= 0) & (x <= 1)).all()
    chosen = tmp_path / "run" / "checkpoints" / f"step-{run.trainer.step:08d}"
    assert cg.load_run(tmp_path / "run", checkpoint=chosen).trainer.step == run.trainer.step
    with pytest.raises(CheckpointError, match="no best checkpoint recorded"):
        cg.load_run(tmp_path / "run", checkpoint="best")
    older = cg.load_run(tmp_path / "run", checkpoint="checkpoints/step-00000010")  # relative: in the run folder
    assert cg.load_run(tmp_path / "run", checkpoint="step-00000010").trainer.step == 10, "or in its checkpoints folder"
    recorded = (tmp_path / "run" / "evaluation.json").read_text()
    assert older.trainer.step == 10 and older.evaluate()["step"] == 10
    assert (tmp_path / "run" / "evaluation.json").read_text() == recorded, "the folder's record is the newest checkpoint's"
    cg.train(spec, out=tmp_path / "other", progress=False)
    with pytest.raises(CheckpointError, match=r"is not a checkpoint of .*run: give one of its own, one of step-00000010, step-000000"):
        cg.load_run(tmp_path / "run", checkpoint=tmp_path / "other" / "checkpoints" / "step-00000010")
    shutil.copytree(chosen, tmp_path / "run" / "checkpoints" / "step-backup")  # a copy in the folder is no checkpoint either
    with pytest.raises(CheckpointError, match=r"step-backup is not a checkpoint of .*run"):
        cg.load_run(tmp_path / "run", checkpoint="step-backup")
    (tmp_path / "run" / "checkpoints" / "best.json").write_text('{"step": 4, "metric": "vae", "mode": "min", "value": 1.0}')
    with pytest.raises(CheckpointError, match=r"best.json names step-00000004, which is gone; give another checkpoint, one of step-"):
        cg.load_run(tmp_path / "run", checkpoint="best")


def test_training_improves_the_elbo(vae_spec) -> None:
    spec = cg.load_spec(vae_spec, ["train.steps=150"])
    model, data = cg.build(spec, "cpu")
    batch = data.test.batch(slice(0, 256))
    torch.manual_seed(0)
    before = model.evaluate_terms(batch)["vae.elbo"]
    run = cg.runtime.Run(spec, model, data, None, cg.runtime.Trainer(model, cg.runtime.data.BatchStream(data.train, 32, 0, model.device), progress=False))
    run.trainer.fit(150)
    torch.manual_seed(0)
    after = model.evaluate_terms(batch)["vae.elbo"]
    assert after > before + 5.0, (before, after)


def test_a_run_on_a_relative_data_path_resumes_and_evaluates_from_another_directory(tmp_path, monkeypatch) -> None:
    """File paths are read from the working directory at load time; the run folder records them absolute."""
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    (project / "data").mkdir(parents=True)
    elsewhere.mkdir()
    np.savez(project / "data" / "points.npz", x=np.random.default_rng(0).normal(size=(200, 2)).astype(np.float32))
    spec = {
        "name": "relative_npz",
        "data": {"type": "npz", "path": "data/points.npz", "transforms": ["standardise"]},
        "components": {"flow": {"type": "flow", "base": {"type": "standard_normal", "shape": [2]},
                                "bijectors": [{"type": "affine_coupling", "shape": [2], "hidden": [8]}]}},
        "losses": {"nll": {"type": "flow_nll", "flow": "flow"}},
        "train": {"steps": 4, "batch_size": 32, "log_every": 2},
        "evaluate": {"metrics": [{"type": "test_losses"}]},
    }
    monkeypatch.chdir(project)
    run = cg.train(spec, out="runs/a", progress=False)
    recorded = yaml.safe_load((project / "runs" / "a" / "spec.yaml").read_text())["data"]["path"]
    assert recorded == str(project / "data" / "points.npz")
    monkeypatch.chdir(elsewhere)
    again = cg.load_run(project / "runs" / "a")
    assert again.evaluate()["test/nll"] == run.evaluate()["test/nll"]
    again.train(6)
    assert again.trainer.step == 6


def test_calls_given_what_they_cannot_use_say_so_rather_than_ignore_it(tmp_path, vae_spec) -> None:
    """Found by a tester of the API: each of these trained the wrong length, did nothing, or failed inside Python or torch."""
    spec = cg.load_spec(vae_spec)
    with pytest.raises(ValueError, match="overrides apply when a spec is loaded: give them to load_spec"):
        cg.train(spec, out=tmp_path / "ignored", overrides=["train.steps=2"], progress=False)
    with pytest.raises(TypeError, match=r"overrides must be a list of 'key=value' strings, got the string 'train.steps=2'"):
        cg.load_spec(vae_spec, "train.steps=2")
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(vae_spec))
    model, _ = cg.build(path)  # a file, as train takes one
    with pytest.raises(KeyError, match="has no player 'critic'; its players: model"):
        model.player_loss("critic", {})
    run = cg.train(spec, out=tmp_path / "run", progress=False)
    step = run.trainer.step
    for steps in (-5, step, step - 1, 2.5, True):
        with pytest.raises(ValueError, match=f"a whole number after the run's step {step}; got {steps!r}"):
            run.train(steps)
    assert run.trainer.step == step
    with pytest.raises(ValueError, match="n must be a whole number of samples, at least 1; got 0"):
        run.save_samples(tmp_path / "x.npy", 0)


def test_train_refuses_steps_it_cannot_train_to_before_making_the_run_folder(tmp_path, vae_spec) -> None:
    """Found by a tester of the docs: ``cg.train(spec, out, steps=0)`` made the folder, then refused the steps, and the
    retry into the same folder with a corrected spec was refused for the half-made folder's ``spec.yaml``."""
    for steps in (0, -5, 2.5, True):
        with pytest.raises(ValueError, match=f"train: steps must be a whole number ≥ 1, got {steps!r}"):
            cg.train(vae_spec, out=tmp_path / "run", steps=steps, progress=False)
        assert not (tmp_path / "run").exists()
    run = cg.train(vae_spec, out=tmp_path / "run", overrides=["train.steps=3"], progress=False)
    assert run.trainer.step == 3


def test_build_puts_the_caller_s_random_stream_back(vae_spec) -> None:
    """It seeded torch's generator from the spec, so a sweep's own draws repeated after every build, unlike a Run's."""
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first, _ = cg.build(vae_spec, "cpu")
    assert torch.equal(torch.rand(3), expected)
    again, _ = cg.build(vae_spec, "cpu")
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), again.parameters(), strict=True)), "built from the spec's seed"
