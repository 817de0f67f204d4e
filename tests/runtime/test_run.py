"""The Run: ``log_prob`` of new examples in data space (counted as the test NLL is), and the plugins it records."""

from __future__ import annotations

import json
import math
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

import compose_gen as cg
from compose_gen.runtime import Run
from compose_gen_plugins.datasets.base import split_fields


def flow_on(data: dict, **loss) -> dict:
    return {
        "name": "flow2d",
        "data": data,
        "components": {
            "flow": {"type": "flow", "base": {"type": "standard_normal", "shape": [2]}, "bijectors": [{"type": "affine_coupling", "shape": [2], "hidden": [8], **loss.pop("bijector", {})}]}
        },
        "losses": {"nll": {"type": "flow_nll", "flow": "flow", **loss}},
        "train": {"steps": 1},
    }


@pytest.fixture
def standardised_points(tmp_path) -> Run:
    """An untrained flow on 2-D points standardised by the spec: its affine coupling starts at the identity."""
    points = np.random.default_rng(0).normal([3.0, -2.0], [2.0, 0.5], size=(400, 2))
    np.savez(tmp_path / "points.npz", x=points)
    data = {"type": "npz", "path": str(tmp_path / "points.npz"), "transforms": [{"type": "standardise"}]}
    return Run.create(cg.load_spec(flow_on(data)), tmp_path / "run", progress=False)


def test_a_flow_gives_the_closed_form_density_of_new_points_in_data_space(standardised_points) -> None:
    """With f the identity, p(x) = N((x − m)/s; 0, I) / ∏ s, for the train split's mean m and std s."""
    run = standardised_points
    train = run.data.train.to_display(run.data.train.fields["x"]).double()  # back in data space
    mean, std = train.mean(0), train.std(0)
    new = torch.tensor([[3.0, -2.0], [5.0, -1.5], [-1.0, 0.0]], dtype=torch.float64)
    expected = torch.distributions.Normal(0.0, 1.0).log_prob((new - mean) / std).sum(-1) - std.log().sum()
    log_p = run.log_prob(new)
    assert log_p.dtype == torch.float32, "the model's precision, as a latent-variable model's estimate is"
    torch.testing.assert_close(log_p, expected.float(), rtol=1e-5, atol=1e-5)


def test_the_test_split_scores_its_test_nll(standardised_points) -> None:
    run = standardised_points
    test = run.data.test
    nll = run.model.evaluate_terms(test.batch(slice(None)))["nll.nll"]
    log_p = run.log_prob(test.to_display(test.fields["x"]))
    assert -log_p.mean().item() == pytest.approx(nll.item(), rel=1e-5)


@pytest.mark.parametrize("settings, ladj", [({}, -64 * math.log(16)), ({"scale": False}, 0.0), ({"binarize": "threshold"}, 0.0)])
def test_raw_digits_are_mapped_as_the_dataset_mapped_its_own(settings: dict, ladj: float) -> None:
    spec = cg.load_spec({"name": "digits", "data": {"type": "digits", "shape": "image", **settings}, "losses": {}}, catalogue=cg.make_catalogue())
    splits = spec.sections.data.type.build(spec.sections.data.params, None)
    images, labels = load_digits(return_X_y=True)
    _, test = split_fields({"x": torch.as_tensor(images), "y": torch.as_tensor(labels)}, spec.sections.data.params)
    x, log_det = splits.test.to_model(test["x"])  # pixels 0..16, 64 per example
    assert torch.equal(x, splits.test.fields["x"]) and x.shape[1:] == (1, 8, 8)
    torch.testing.assert_close(log_det, torch.full((len(x),), ladj, dtype=torch.float64))


@pytest.mark.parametrize("pixel", [17, -1, 3.5, 40])
def test_new_pixels_off_the_files_grid_are_refused_not_scored(pixel: float) -> None:
    """Digits hold whole numbers 0..16: anything else has no probability under a dequantized model, or a NaN past a logit."""
    spec = cg.load_spec({"name": "digits", "data": {"type": "digits"}, "losses": {}}, catalogue=cg.make_catalogue())
    to_model = spec.sections.data.type.build(spec.sections.data.params, None).test.to_model
    x = torch.as_tensor(load_digits().data[:3])
    to_model(x)
    x[1, 5] = pixel
    with pytest.raises(ValueError, match=rf"whole numbers 0..16; example 1 holds {pixel:g}"):
        to_model(x)


def test_a_latent_models_estimate_tightens_with_samples_and_matches_the_importance_sampled_nll(tmp_path, vae_spec) -> None:
    """Binarized digits: a probability mass, so no log-determinant; more draws give a tighter bound on average."""
    vae_spec["evaluate"] = {"metrics": [{"type": "importance_sampled_nll", "model": "vae", "samples": 50}]}
    run = cg.train(cg.load_spec(vae_spec), out=tmp_path / "vae")
    images, labels = load_digits(return_X_y=True)
    _, test = split_fields({"x": torch.as_tensor(images), "y": torch.as_tensor(labels)}, run.spec.sections.data.params)
    elbo, bound = run.log_prob(test["x"], samples=1), run.log_prob(test["x"], samples=50)
    assert elbo.shape == bound.shape == (len(test["x"]),)
    gap = (bound - elbo).double()
    assert gap.mean() > 4 * gap.std() / math.sqrt(len(gap)), "the 50-draw bound is tighter than the ELBO"
    nll = run.evaluate()["test/vae.nll_k50"]
    assert -bound.mean().item() == pytest.approx(nll, abs=0.05), "the metric's number, up to the draws"


def test_a_conditional_flow_needs_the_labels_and_depends_on_them(tmp_path) -> None:
    spec = flow_on({"type": "eight_gaussians", "n": 400}, context="c", bijector={"context_features": 8})
    spec["graph"] = {"c": "one_hot(y, 8)"}
    run = cg.train(cg.load_spec(spec), out=tmp_path / "run")
    points = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    with pytest.raises(ValueError, match=r"loss 'nll' computes log p\(x\) from the fields x, y; give y too"):
        run.log_prob(points)
    assert not torch.allclose(run.log_prob(points, [0, 0]), run.log_prob(points, [2, 2]))
    with pytest.raises(ValueError, match="2 examples but 1 labels"):
        run.log_prob(points, [0])


def test_labels_given_to_a_model_of_p_x_are_refused_not_ignored(standardised_points) -> None:
    with pytest.raises(ValueError, match=r"spec 'flow2d' models p\(x\), not p\(x \| y\): it reads no labels, so drop y"):
        standardised_points.log_prob(torch.zeros(2, 2), y=[0, 1])


def test_a_model_without_a_likelihood_and_points_of_another_shape_are_refused(tmp_path, cgan_spec, standardised_points) -> None:
    gan = cg.train(cg.load_spec(cgan_spec), out=tmp_path / "gan")
    with pytest.raises(ValueError, match="no loss of spec 'cgan' defines a likelihood"):
        gan.log_prob(torch.zeros(3, 2), [0, 1, 2])
    with pytest.raises(ValueError, match=r"new examples must have the shape of the data's, \(N, 2\); got \(3, 3\)"):
        standardised_points.log_prob(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="'adv' defines no likelihood; losses that define one: none"):
        gan.log_prob(torch.zeros(3, 2), [0, 1, 2], loss="adv")


def test_new_examples_and_sample_requests_are_checked_where_the_caller_gives_them(tmp_path) -> None:
    """Not as a NaN log p(x), a label truncated, or a sampler plugin blamed for the caller's count."""
    spec = {**flow_on({"type": "moons", "n": 100}), "sample": {"type": "flow_sampler", "flow": "flow"}}
    run = Run.create(cg.load_spec(spec), tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match=r"x holds values that are NaN, infinite or beyond float32's range, .* \(the first in example 1\)"):
        run.log_prob([[0.0, 1.0], [1e39, 0.0], [float("inf"), 0.0]])
    with pytest.raises(ValueError, match="the labels y must be whole numbers"):
        run.log_prob(torch.zeros(2, 2), y=[1.7, 2.0])
    with pytest.raises(ValueError, match="the labels y must be whole numbers"):
        run.log_prob(torch.zeros(1, 2), y=[float("inf")])
    for batch_size in (0, 2.5):
        with pytest.raises(ValueError, match="batch_size must be a whole number ≥ 1"):
            run.log_prob(torch.zeros(2, 2), batch_size=batch_size)
    with pytest.raises(ValueError, match="log_prob: samples must be a whole number ≥ 1, got 0"):
        run.log_prob(torch.zeros(2, 2), samples=0)
    for empty in (torch.zeros(0, 2), torch.tensor(float("nan"))):
        with pytest.raises(ValueError, match="x holds no examples"):
            run.log_prob(empty)
    for n in (0, -1, 2.5):
        with pytest.raises(ValueError, match="n must be a whole number of samples, at least 1"):
            run.sample(n)
    for temperature in (float("nan"), -1.0):
        with pytest.raises(ValueError, match="temperature must be a finite number ≥ 0"):
            run.sample(2, temperature=temperature)
    assert run.sample(np.int64(2)).shape == run.sample(torch.tensor(2), temperature=torch.tensor(0.5)).shape == (2, 2)


def test_a_run_records_the_plugins_of_its_types_and_names_a_missing_one(tmp_path, vae_spec, install_plugin, capsys) -> None:
    install_plugin(
        "counting_metrics",
        """
        from compose_gen import ComponentType, Params, hookimpl

        @hookimpl
        def compose_gen_types():
            return [ComponentType("one", "metric", Params, lambda params, ctx: lambda ectx: {"one": 1.0})]
        """,
    )
    vae_spec["evaluate"] = {"metrics": [{"type": "one"}, {"type": "test_losses"}]}
    run_dir = tmp_path / "run"
    cg.train(cg.load_spec(vae_spec, catalogue=cg.make_catalogue()), out=run_dir)
    recorded = json.loads((run_dir / "plugins.json").read_text())
    assert recorded["one"] == "plugin 'counting_metrics' from counting_metrics 0.1"
    assert recorded["elbo"].startswith("plugin 'latent' from compose-gen ")
    first_party = cg.make_catalogue(entry_points="first-party")  # as if the plugin were uninstalled
    with pytest.raises(cg.SpecError) as info:
        Run.load(run_dir, catalogue=first_party, trained=True)  # as sample and evaluate load it
    said = f"unknown metric type 'one'; {run_dir} was trained with it from plugin 'counting_metrics' from counting_metrics 0.1: install that package"
    assert said + ", or leave the metric(s) out of one command: --set '" in str(info.value)
    leave_out = shlex.split(str(info.value).split("--set ")[-1])  # pasted into a shell
    assert Run.load(run_dir, overrides=leave_out, catalogue=first_party, trained=True).sample(2).shape == (2, 64), "the advice works"
    with pytest.raises(cg.SpecError) as info:  # another type gone too: leaving the metrics out would not do
        Run.load(run_dir, overrides=["losses.vae.type=gone"], catalogue=first_party, trained=True)
    assert said in str(info.value) and "leave the metric(s) out" not in str(info.value)
    with pytest.raises(cg.SpecError) as info:
        Run.load(run_dir, catalogue=first_party)  # as a resume loads it: a --set there would be recorded for good
    assert str(info.value).endswith(said)
    module = tmp_path / "counting_metrics.py"  # where install_plugin put it
    source = module.read_text()
    module.write_text("import a_dependency_gone_missing\n")  # installed, but it no longer imports
    sys.modules.pop("counting_metrics", None)
    with pytest.raises(cg.SpecError) as info:
        Run.load(run_dir, catalogue=cg.make_catalogue())
    assert "from counting_metrics 0.1: it is installed, with a problem: " in str(info.value)
    assert "No module named 'a_dependency_gone_missing'" in str(info.value) and "install that package" not in str(info.value)
    qualified = {**recorded, "one": "plugin 'counting_metrics (from counting_metrics)' from counting_metrics 0.1"}
    (run_dir / "plugins.json").write_text(json.dumps(qualified))  # recorded while another package shared its name
    with pytest.raises(cg.SpecError) as info:
        Run.load(run_dir, catalogue=cg.make_catalogue())
    assert "it is installed, with a problem: " in str(info.value) and "install that package" not in str(info.value)
    module.write_text(source)
    sys.modules.pop("counting_metrics", None)
    capsys.readouterr()
    Run.load(run_dir, catalogue=cg.make_catalogue())
    assert "was trained with type 'one'" not in capsys.readouterr().err, "the same plugin, its name qualified then, not now"
    sys.modules.pop("counting_metrics", None)
    (run_dir / "plugins.json").write_text(json.dumps({**recorded, "one": "plugin 'counting_metrics' from counting_metrics 0.0"}))
    capsys.readouterr()
    Run.load(run_dir, catalogue=cg.make_catalogue())
    assert f"warning: {run_dir} was trained with type 'one' of plugin 'counting_metrics' from counting_metrics 0.0; it is now of plugin 'counting_metrics' from counting_metrics 0.1" in capsys.readouterr().err


def test_classes_are_chosen_by_the_names_the_data_give_them(tmp_path, monkeypatch) -> None:
    rows = ["u,v,species"] + [f"{i % 7},{i % 5},{['setosa', 'versicolor', 'virginica'][i % 3]}" for i in range(90)]
    (tmp_path / "flowers.csv").write_text("\n".join(rows))
    spec = flow_on({"type": "csv", "path": str(tmp_path / "flowers.csv"), "label": "species"}, context="c", bijector={"context_features": 3})
    spec["graph"] = {"c": "one_hot(y, 3)"}
    spec["sample"] = {"type": "flow_sampler", "flow": "flow", "classes": 3, "condition": "c"}
    run = Run.create(cg.load_spec(spec), tmp_path / "run", progress=False)
    assert run.class_labels(["virginica", "setosa", 1, "2"]) == [2, 0, 1, 2]
    with pytest.raises(ValueError, match="unknown class 'rose': its classes are setosa, versicolor, virginica"):
        run.class_labels(["rose"])
    assert run.class_labels([np.int64(1)]) == [1] == run.class_labels(torch.tensor([1]))  # was "unknown class tensor(1)"
    with pytest.raises(ValueError, match="unknown class True"):
        run.class_labels([True])
    run.save_samples(tmp_path / "s.npz", 4, classes=["virginica"])
    assert np.load(tmp_path / "s.npz")["y"].tolist() == [2, 2, 2, 2]
    points = torch.tensor([[1.0, 2.0], [3.0, 0.0]])
    torch.testing.assert_close(run.log_prob(points, y=["virginica", "setosa"]), run.log_prob(points, y=[2, 0]))
    with pytest.raises(ValueError, match="unknown class 'rose'"):
        run.log_prob(points, y=["rose", "setosa"])

    # labels renumbered as names (-1, 2, 5 -> 0, 1, 2): a number in a list means what sample takes it for, the file's class
    rows = ["u,v,label"] + [f"{i % 7},{i % 5},{[-1, 2, 5][i % 3]}" for i in range(90)]
    (tmp_path / "numbered.csv").write_text("\n".join(rows))
    spec["data"] = {"type": "csv", "path": str(tmp_path / "numbered.csv"), "label": "label"}
    numbered = Run.create(cg.load_spec(spec), tmp_path / "numbered", progress=False)
    assert numbered.class_labels([2]) == [1]
    torch.testing.assert_close(numbered.log_prob(points, y=[2, 5]), numbered.log_prob(points, y=["2", "5"]))
    torch.testing.assert_close(numbered.log_prob(points, y=[2, 5]), numbered.log_prob(points, y=torch.tensor([1, 2])))  # a tensor: labels
    drawn = {}
    monkeypatch.setattr("compose_gen.runtime.export.save_scatter", lambda *args, **kwargs: drawn.update(kwargs))
    run.save_samples(tmp_path / "s.png", 6)
    assert drawn["labels"].tolist() == [0, 1, 2, 0, 1, 2] and drawn["class_names"] == ["setosa", "versicolor", "virginica"]


def test_a_loss_that_raises_under_a_metric_is_named_as_the_culprit(tmp_path, toys_catalogue, monkeypatch) -> None:
    """test_losses runs the loss: its KeyError is blamed on losses.rec, located at the metric that was running."""
    from runtime_toys import AUTOENCODER, ToyMSE, spec_dict

    from compose_gen.runtime import EvaluationFailed

    spec = spec_dict(AUTOENCODER, steps=2)
    spec["evaluate"] = {"metrics": [{"type": "test_losses"}]}
    run = Run.create(cg.load_spec(spec, catalogue=toys_catalogue), tmp_path / "run", progress=False)
    run.train()

    def broken(self, inputs, terms):
        raise KeyError("rec blew up")

    monkeypatch.setattr(ToyMSE, "forward", broken)
    with pytest.raises(EvaluationFailed) as failure:
        run.evaluate()
    said = failure.value.results["failed"]["evaluate.metrics[0]"]
    assert said.startswith("type 'test_losses' (plugin 'metrics') failed in another part of the spec: ") and "losses.rec: type 'toy_mse' (plugin 'runtime_toys') raised KeyError" in said


def test_a_resume_that_changes_the_split_or_the_model_says_so(tmp_path, toys_catalogue, capsys) -> None:
    from runtime_toys import AUTOENCODER, spec_dict

    from compose_gen.runtime import CheckpointError

    Run.create(cg.load_spec(spec_dict(AUTOENCODER, steps=2), catalogue=toys_catalogue), tmp_path / "run", progress=False).train()
    capsys.readouterr()
    Run.load(tmp_path / "run", overrides=["data.test_fraction=0.5"], catalogue=toys_catalogue, progress=False)
    assert "warning: --set data.test_fraction may change the data's split" in capsys.readouterr().err
    Run.load(tmp_path / "run", overrides=["train.steps=4"], catalogue=toys_catalogue, progress=False)
    assert "may change the data's split" not in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="no checkpoint could be loaded; the --set overrides may have changed the model"):
        Run.load(tmp_path / "run", overrides=["components.net.hidden=[8]"], catalogue=toys_catalogue, progress=False)
    spec_file = tmp_path / "run" / "spec.yaml"
    spec_file.write_text(spec_file.read_text().replace("- 16", "- 8"))  # the folder's spec edited, and only --steps given
    with pytest.raises(CheckpointError) as info:
        Run.load(tmp_path / "run", overrides=["train.steps=4"], catalogue=toys_catalogue, progress=False)
    assert f"no checkpoint could be loaded; an edit of {spec_file} may have changed the model" in str(info.value)
    assert "components.net.net.0.weight (16, 2) in the checkpoint, (8, 2) in the model" in str(info.value)


def test_a_cpu_run_never_starts_cuda(tmp_path, toys_catalogue, monkeypatch) -> None:
    """A forked child (a DataLoader worker, a gloo rank) cannot start CUDA once its parent has, so a CPU run must not.

    As in a fresh process on a machine with one GPU, whether or not an earlier test in this one started CUDA: every
    call that would start it is refused."""
    from runtime_toys import VAE, spec_dict

    def refuse() -> None:
        raise AssertionError("a CPU run started CUDA")

    for module in torch.cuda, torch.cuda.random:
        monkeypatch.setattr(module, "device_count", lambda: 1)
        monkeypatch.setattr(module, "_lazy_init", refuse)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "_initialized", False)
    run = Run.create(cg.load_spec(spec_dict(VAE, steps=2), catalogue=toys_catalogue), tmp_path / "run", progress=False)
    run.train()
    assert run.evaluate() and not torch.cuda.is_initialized()


def test_a_run_another_handle_has_moved_on_refuses_to_rewind_the_folder(tmp_path, toys_catalogue, capsys) -> None:
    """Two handles on one folder: the one left behind neither trains over the newer records nor records its evaluation."""
    from runtime_toys import VAE, spec_dict

    from compose_gen.runtime.checkpoint import CheckpointError

    folder = tmp_path / "run"
    Run.create(cg.load_spec(spec_dict(VAE, steps=8, log_every=1), catalogue=toys_catalogue), folder, progress=False).train(3)
    behind, ahead = (Run.load(folder, catalogue=toys_catalogue, progress=False) for _ in range(2))
    ahead.train(6)
    ahead.evaluate()
    records, evaluation = (folder / "metrics.jsonl").read_text(), (folder / "evaluation.json").read_text()
    with pytest.raises(CheckpointError, match="holds step-00000006, written by another Run or process since this one was loaded"):
        behind.train(5)
    assert behind.evaluate()["step"] == 3 and "not recorded" in capsys.readouterr().err
    assert (folder / "metrics.jsonl").read_text() == records and (folder / "evaluation.json").read_text() == evaluation
    ahead.train(8)  # the handle that wrote the newest checkpoint goes on
    ahead.evaluate()
    assert json.loads((folder / "evaluation.json").read_text())["step"] == 8


def test_a_run_that_fell_back_past_a_damaged_checkpoint_trains_on_as_often_as_it_likes(tmp_path, toys_catalogue) -> None:
    """Only checkpoints another writer added since loading count against a Run, not the damaged one it skipped."""
    from runtime_toys import VAE, spec_dict

    folder = tmp_path / "run"
    spec = cg.load_spec(spec_dict(VAE, steps=8, checkpoint_every=2), catalogue=toys_catalogue)
    Run.create(spec, folder, progress=False).train(6)
    (folder / "checkpoints" / "step-00000006" / "model.safetensors").write_bytes(b"damaged")
    run = Run.load(folder, catalogue=toys_catalogue, progress=False)
    assert run.trainer.step == 4 and run.behind
    run.train(5)
    run.train(8)
    assert run.trainer.step == 8



def test_a_run_whose_folder_was_moved_away_does_not_start_another_at_its_old_path(tmp_path, toys_catalogue) -> None:
    """Its evaluate made the folder again and its train wrote a lone checkpoint there: one run split over two folders."""
    from runtime_toys import VAE, spec_dict

    folder = tmp_path / "run"
    Run.create(cg.load_spec(spec_dict(VAE, steps=4), catalogue=toys_catalogue), folder, progress=False).train(2)
    run = Run.load(folder, catalogue=toys_catalogue, progress=False)
    folder.rename(tmp_path / "renamed")
    for write in (run.evaluate, lambda: run.train(4)):
        with pytest.raises(FileNotFoundError, match=rf"{folder}: the run folder is gone \(moved or deleted since this Run was made or loaded\)"):
            write()
    assert not folder.exists()
    assert run.evaluate(tmp_path / "elsewhere", record=False)["step"] == 2, "evaluating into another folder needs none of it"
    assert Run.load(tmp_path / "renamed", catalogue=toys_catalogue, progress=False).trainer.step == 2


def test_a_run_whose_checkpoints_cannot_be_written_is_refused_before_it_trains(tmp_path, toys_catalogue, monkeypatch) -> None:
    """A read-only checkpoints/ was found at the first save, every round since the last checkpoint trained for nothing."""
    import tempfile

    from runtime_toys import VAE, spec_dict

    folder = tmp_path / "run"
    Run.create(cg.load_spec(spec_dict(VAE, steps=4), catalogue=toys_catalogue), folder, progress=False).train(2)
    run = Run.load(folder, catalogue=toys_catalogue, progress=False)
    probe = tempfile.TemporaryFile

    def read_only(*args, dir=None, **kwargs):  # chmod is no test as root, who writes anyway
        if dir is not None and Path(dir) == folder / "checkpoints":
            raise PermissionError(13, "Permission denied")
        return probe(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    with pytest.raises(OSError, match=r"checkpoints cannot be written \(Permission denied\), so no checkpoint of this training could be saved"):
        run.train(4)
    assert run.trainer.step == 2


def test_a_new_run_keeps_out_of_a_folder_holding_another_spec_or_links(tmp_path, toys_catalogue, monkeypatch) -> None:
    """A user's own spec.yaml kept in --out, and one another run recorded there while this one built, were replaced by
    this run's; a samples/ link made a new run write into the folder it points to; another run's pictures were
    overwritten and its set-aside records added to."""
    from runtime_toys import VAE, spec_dict

    import compose_gen.runtime.run as run_module

    spec = cg.load_spec(spec_dict(VAE, steps=2), catalogue=toys_catalogue)
    mine = tmp_path / "exp"
    mine.mkdir()
    (mine / "spec.yaml").write_text("# my experiment\n")
    with pytest.raises(FileExistsError, match="exp/spec.yaml exists and is not the spec this run records there"):
        Run.create(spec, mine, progress=False)
    assert (mine / "spec.yaml").read_text() == "# my experiment\n"
    Run.create(spec, tmp_path / "again", progress=False)
    Run.create(spec, tmp_path / "again", progress=False)  # the same spec, started again before any training: allowed

    raced, build = tmp_path / "raced", run_module.build

    def another_run_records_its_spec_meanwhile(*args, **kwargs):
        built = build(*args, **kwargs)
        raced.mkdir()
        (raced / "spec.yaml").write_text("name: other\n")
        return built

    monkeypatch.setattr(run_module, "build", another_run_records_its_spec_meanwhile)
    with pytest.raises(FileExistsError, match="raced/spec.yaml exists"):
        Run.create(spec, raced, progress=False)
    assert (raced / "spec.yaml").read_text() == "name: other\n"
    monkeypatch.setattr(run_module, "build", build)

    linked = tmp_path / "linked"
    linked.mkdir()
    (tmp_path / "other_samples").mkdir()
    (linked / "samples").symlink_to(tmp_path / "other_samples")
    with pytest.raises(cg.runtime.CheckpointError, match="linked/samples is a symbolic link"):
        Run.create(spec, linked, progress=False)

    left = tmp_path / "left"  # another run's pictures and set-aside records, with no spec.yaml or log: overwritten and added to
    (left / "samples").mkdir(parents=True)
    (left / "samples" / "step-00000002.png").write_bytes(b"another run's")
    (left / "metrics.dropped.jsonl").write_text('{"step": 3}\n')
    with pytest.raises(FileExistsError, match=r"left holds samples/, metrics.dropped.jsonl of another run, which this one would overwrite"):
        Run.create(spec, left, progress=False)
    assert (left / "samples" / "step-00000002.png").read_bytes() == b"another run's"


def test_a_process_other_than_the_first_does_not_check_the_folder_the_first_has_claimed(tmp_path, toys_catalogue, monkeypatch) -> None:
    """Under torchrun, process 0 claims the new folder after the build; another process checking it then saw that
    claim (a live writer that is not itself) and stopped the job, in 2 of 6 of a reviewer's runs."""
    from runtime_toys import VAE, spec_dict

    import compose_gen.runtime.folder as folder_module
    import compose_gen.runtime.run as run_module
    from compose_gen.runtime.claim import FolderBusy
    from compose_gen.runtime.distributed import Distributed

    build, claimed = run_module.build, []

    def built_then_claimed_by_process_0(*args, **kwargs):
        built = build(*args, **kwargs)
        claimed.append(True)
        return built

    def refuse_if_claimed(run_dir):
        if claimed:
            raise FolderBusy(f"{run_dir} is being written by process 0")

    monkeypatch.setattr(run_module, "build", built_then_claimed_by_process_0)
    monkeypatch.setattr(folder_module, "refuse_if_busy", refuse_if_claimed)
    monkeypatch.setattr(run_module, "setup", lambda device: (Distributed(rank=1, device=device), device))
    spec = cg.load_spec(spec_dict(VAE, steps=2), catalogue=toys_catalogue)
    run = Run.create(spec, tmp_path / "run", progress=False)
    assert not run.trainer.dist.is_main and not (tmp_path / "run" / "spec.yaml").exists(), "process 0 records the spec"


def test_runs_of_one_spec_started_in_the_same_second_get_folders_of_their_own(tmp_path, toys_catalogue, monkeypatch) -> None:
    from runtime_toys import VAE, spec_dict

    import compose_gen.runtime.run as run_module

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(run_module.time, "strftime", lambda form: "20261201-000000")
    spec = cg.load_spec(spec_dict(VAE, steps=2), catalogue=toys_catalogue)
    folders = [Run.create(spec, progress=False).dir for _ in range(2)]
    assert [f.relative_to(tmp_path).as_posix() for f in folders] == ["runs/vae_tiny-20261201-000000", "runs/vae_tiny-20261201-000000-2"]
    broken = cg.load_spec(spec_dict(VAE, steps=2), ["data.binarize=none"], catalogue=toys_catalogue)
    monkeypatch.setattr(run_module, "build", lambda *args: (_ for _ in ()).throw(RuntimeError("no build")))
    with pytest.raises(RuntimeError, match="no build"):
        Run.create(broken, progress=False)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["vae_tiny-20261201-000000", "vae_tiny-20261201-000000-2"]


def test_metrics_run_without_gradients(vae_spec, tmp_path) -> None:
    run = Run.create(cg.load_spec(vae_spec), tmp_path / "run", progress=False)
    run.model.metrics[0] = lambda ectx: {"grad_enabled": float(torch.is_grad_enabled())}
    assert run.evaluate()["grad_enabled"] == 0.0


def test_samples_that_are_nan_are_written_with_a_warning(tmp_path, capsys) -> None:
    """A sigmoid nearest the base: its inverse, a logit, is NaN for most standard-normal draws; sample used to write them silently."""
    spec = flow_on({"type": "moons", "n": 100})
    spec["components"]["flow"]["tail"] = [{"type": "sigmoid", "shape": [2]}]
    spec["sample"] = {"type": "flow_sampler", "flow": "flow"}
    run = Run.create(cg.load_spec(spec), tmp_path / "run", progress=False)
    path = run.save_samples(tmp_path / "x.npy", 16)
    broken = int(np.isnan(np.load(path)).any(1).sum())
    assert broken > 0
    assert f"warning: {broken} of the 16 samples hold NaN or infinite values (written as they are)" in capsys.readouterr().err
    del spec["components"]["flow"]["tail"]  # without the sigmoid: finite samples, nothing said
    Run.create(cg.load_spec(spec), tmp_path / "finite", progress=False).save_samples(tmp_path / "y.npy", 16)
    assert "samples hold NaN" not in capsys.readouterr().err


def _toy_vae_run(folder, catalogue, **train):
    from runtime_toys import VAE, spec_dict

    return Run.create(cg.load_spec(spec_dict(VAE, **train), catalogue=catalogue), folder, progress=False)


def test_a_run_keeps_its_own_random_stream_and_leaves_the_caller_s_alone(tmp_path, toys_catalogue) -> None:
    """A sweep's own torch.rand drew the same value each trial (the build reseeded it), and what the caller drew between
    two train() calls changed the noise training drew: no longer exact like a run never paused."""
    from runtime_toys import same_state

    torch.manual_seed(123)
    caller = torch.get_rng_state()
    straight = _toy_vae_run(tmp_path / "straight", toys_catalogue, steps=4)
    straight.train()
    assert torch.equal(torch.get_rng_state(), caller)
    paused = _toy_vae_run(tmp_path / "paused", toys_catalogue, steps=4)
    paused.train(2)
    torch.randn(100)  # the caller's own draws, a sample, and another run loaded, between the two halves
    paused.sample(4)
    cg.load_run(tmp_path / "straight", progress=False, catalogue=toys_catalogue)
    paused.train(4)
    assert same_state(straight.model, paused.model)


def test_what_a_caller_has_switched_on_does_not_reach_into_a_run(tmp_path, toys_catalogue) -> None:
    """A caller's autocast made an fp32 run train and evaluate in bf16; its no_grad made training fail, blaming the loss;
    its float64 default built float64 layers that refused the data, blaming the plugin."""
    from runtime_toys import same_state

    plain = _toy_vae_run(tmp_path / "plain", toys_catalogue, steps=3)
    plain.train()
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
            wrapped = _toy_vae_run(tmp_path / "wrapped", toys_catalogue, steps=3)
            wrapped.train()
            assert wrapped.evaluate(record=False) == plain.evaluate(record=False)
    finally:
        torch.set_default_dtype(default)
    assert same_state(plain.model, wrapped.model)
    with torch.inference_mode(), pytest.raises(RuntimeError, match=r"inside torch.inference_mode\(\), where nothing can learn"):
        _toy_vae_run(tmp_path / "inference", toys_catalogue, steps=3)
    fresh = _toy_vae_run(tmp_path / "inference", toys_catalogue, steps=3)
    with torch.inference_mode(), pytest.raises(RuntimeError, match=r"inside torch.inference_mode\(\), where nothing can learn"):
        fresh.train()



def test_training_past_where_a_schedule_ends_is_refused_and_a_load_with_more_steps_stretches_it(tmp_path, toys_catalogue) -> None:
    """run.train(N) past train.steps trained a linear schedule's extra rounds at learning rate 0, without a word."""
    from runtime_toys import VAE, spec_dict

    folder = tmp_path / "run"
    run = Run.create(cg.load_spec(spec_dict(VAE, steps=2), catalogue=toys_catalogue), folder, progress=False)
    run.train()
    with pytest.raises(ValueError, match=r"rounds past train.steps \(2\) would train at learning rate 0, where the model's cosine schedule ends"):
        run.train(4)
    assert run.trainer.step == 2
    with pytest.raises(TypeError, match=r"overrides must be a list of 'key=value' strings, got the string 'train.steps=4'"):
        cg.load_run(folder, overrides="train.steps=4", catalogue=toys_catalogue)
    stretched = cg.load_run(folder, overrides=["train.steps=4"], catalogue=toys_catalogue, progress=False)
    stretched.train(4)
    assert stretched.trainer.step == 4 and stretched.spec.model.train.steps == 4
    for name, schedule in (("constant", {}), ("floor", {"schedule": {"type": "cosine", "min_factor": 0.1}})):
        kept = Run.create(cg.load_spec({**spec_dict(VAE, steps=2), "players": {"model": schedule}}, catalogue=toys_catalogue), tmp_path / name, progress=False)
        kept.train()
        kept.train(4)  # a rate that does not end at 0 trains on at it
        assert kept.trainer.step == 4
    fresh = cg.train(cg.load_spec(spec_dict(VAE, steps=2), catalogue=toys_catalogue), tmp_path / "fresh", steps=4, progress=False)
    assert fresh.trainer.step == 4 and fresh.spec.model.train.steps == 4, "train(steps=) stretches the schedule, as --steps does"


def test_a_run_says_it_does_not_pickle_and_what_to_do_instead(tmp_path, toys_catalogue) -> None:
    """pickle failed on a local function deep in the data, saying nothing of runs or folders."""
    import pickle

    from runtime_toys import VAE, spec_dict

    run = Run.create(cg.load_spec(spec_dict(VAE, steps=2), catalogue=toys_catalogue), tmp_path / "run", progress=False)
    with pytest.raises(TypeError, match="a Run does not pickle .* return its folder, and compose_gen.load_run it"):
        pickle.dumps(run)
