"""Training settings that run, but not as meant, are warned about at the setting when the model is built."""

from __future__ import annotations

import importlib.util
import warnings

import pytest
import yaml

import compose_gen as cg


def said(spec: dict, catalogue) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cg.build(cg.load_spec(spec, catalogue=catalogue))
    return [str(w.message) for w in caught if issubclass(w.category, cg.SpecWarning)]


def test_a_spec_as_meant_builds_without_warnings(cgan_spec, catalogue) -> None:
    cgan_spec["players"]["critic"]["schedule"] = {"type": "step", "every": 1}  # decays in round 2 of 2
    cgan_spec["players"]["generator"]["schedule"] = {"type": "cosine", "warmup": 2}  # full lr in round 2 of 2
    assert said(cgan_spec, catalogue) == []


@pytest.mark.parametrize(
    "schedule, message",
    [
        ({"type": "cosine", "warmup": 3}, "players.critic.schedule.warmup: the warm-up of 3 rounds outlasts the run (2 rounds), so lr never reaches its set value"),
        ({"type": "step", "warmup": 1, "every": 1000}, "players.critic.schedule.every: lr would first decay in round 1002, but the run has 2 rounds"),
    ],
)
def test_a_schedule_the_run_never_gets_through_is_warned_about(cgan_spec, catalogue, schedule, message) -> None:
    cgan_spec["players"]["critic"]["schedule"] = schedule
    assert said(cgan_spec, catalogue) == [f"<dict>:1: {message}"]


def test_an_average_without_warm_up_that_stays_mostly_initial_weights_is_warned_about(cgan_spec, catalogue) -> None:
    """decay 0.9999 over 300 rounds: 97% of the average was θ₀, and the evaluation scored an untrained model."""
    cgan_spec["train"]["ema"] = {"components": ["generator"], "decay": 0.9, "warmup": False}
    warning = ("<dict>:1: train.ema.warmup: false, with decay 0.9: the initial weights of generator still make 81% of its average "
               "after the run's 2 updates of it (decay^updates), so sampling and evaluation use mostly untrained weights; keep "
               "warmup: true, or lower the decay")
    assert said(cgan_spec, catalogue) == [warning]
    cgan_spec["players"]["critic"]["steps"] = 5  # the critic's steps are no updates of the generator's average
    assert said(cgan_spec, catalogue) == [warning]
    cgan_spec["train"]["ema"]["components"] = ["critic"]  # 10 updates of the critic's: 0.9^10 = 35%
    assert said(cgan_spec, catalogue) == []
    cgan_spec["train"]["ema"] = {"components": ["generator"], "decay": 0.5, "warmup": False}  # 25% left
    assert said(cgan_spec, catalogue) == []
    cgan_spec["train"]["ema"] = {"components": ["generator"], "decay": 0.9}  # with the warm-up, d_0 = 0.1, d_1 = 0.18
    assert said(cgan_spec, catalogue) == []


def test_a_default_optimizer_that_every_player_overrides_is_warned_about(cgan_spec, catalogue) -> None:
    cgan_spec["train"]["optimizer"] = {"type": "adam", "lr": 5e-4}
    assert said(cgan_spec, catalogue) == [], "used by a player without its own"
    for player in cgan_spec["players"].values():
        player["optimizer"] = {"type": "adam", "lr": 2e-4, "betas": [0.5, 0.999]}
    assert said(cgan_spec, catalogue) == ["<dict>:1: train.optimizer: every player sets its own optimizer, so this default is used by none; remove it"]
    cgan_spec["train"]["optimizer"] = {"type": "adam"}  # the default, as `validate --resolved` writes it
    assert said(cgan_spec, catalogue) == [], "the resolved spec validates as the spec it was resolved from"


def test_a_run_folder_is_loaded_without_repeating_the_warnings_of_its_spec(cgan_spec, catalogue, tmp_path) -> None:
    """A run's resolved spec sets every default, train.optimizer too; what its author was told is not said again."""
    for player in cgan_spec["players"].values():
        player["optimizer"] = {"type": "adam", "lr": 2e-4}
    with pytest.warns(cg.SpecWarning):
        cg.train(cg.load_spec(cgan_spec, ["train.optimizer.lr=0.002"], catalogue), out=tmp_path / "run")
    from compose_gen.runtime import Run

    with warnings.catch_warnings():
        warnings.simplefilter("error", cg.SpecWarning)
        cg.load_run(tmp_path / "run")
        Run.load(tmp_path / "run", overrides=["train.steps=500"], catalogue=catalogue)  # train --resume --steps: the same spec

    with pytest.warns(cg.SpecWarning, match="train.batch_size: 500, but the train split holds"):  # a --set makes another spec
        Run.load(tmp_path / "run", overrides=["train.batch_size=500"], catalogue=catalogue)


def test_a_batch_larger_than_the_train_split_is_warned_about(cgan_spec, catalogue) -> None:
    cgan_spec["train"]["batch_size"] = 500
    assert said(cgan_spec, catalogue) == [
        "<dict>:1: train.batch_size: 500, but the train split holds 160 examples, so every batch is that whole split "
        "(under torchrun, its largest part that the processes share evenly)"
    ]


def test_a_learning_rate_far_beyond_any_that_trains_is_warned_about(cgan_spec, catalogue) -> None:
    """Adam's lr is its step size: 1e30 gives NaN at the first steps, an error that names no setting."""
    cgan_spec["players"]["critic"]["optimizer"] = {"type": "adam", "lr": 1e30}
    cgan_spec["players"]["generator"]["optimizer"] = {"type": "sgd", "lr": 5.0}  # large, but SGD's lr scales the gradient
    assert said(cgan_spec, catalogue) == [
        "<dict>:1: players.critic.optimizer.lr: 1e+30 is far above any learning rate that trains with adam (at most 1); "
        "the first steps will likely diverge to NaN"
    ]


def test_tensorboard_without_tensorboard_installed_is_said_by_validate(cgan_spec, catalogue, monkeypatch) -> None:
    """Only `train` found it, after the data were built and the model compiled."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name == "tensorboard" else real(name, *args))
    cgan_spec["train"]["tensorboard"] = True
    assert said(cgan_spec, catalogue) == [
        "<dict>:1: train.tensorboard: true, but TensorBoard is not installed here, so training refuses to start: "
        "pip install 'compose-gen[tensorboard]'"
    ]


def test_training_through_the_debugging_backend_is_warned_about(cgan_spec, catalogue) -> None:
    """aot_eager merged vaegan_digits' two instance-noise draws into one: both adversarial losses saw the same noise."""
    cgan_spec["train"].update(compile=True, compile_backend="aot_eager")
    assert said(cgan_spec, catalogue) == [
        "<dict>:1: train.compile_backend: aot_eager is torch's backend for debugging torch.compile: its graphs may merge identical "
        "random draws (two randn_like(x) in one loss then add the same noise), so it can train another model than eager or "
        "inductor do; train with inductor"
    ]
    cgan_spec["train"]["compile"] = False
    assert said(cgan_spec, catalogue) == []


def test_channels_last_without_convolutions_is_said_by_validate(cgan_spec, catalogue) -> None:
    """Only `train` said it, after the data were built and the model compiled; an MLP model has no 4D weights."""
    cgan_spec["train"]["channels_last"] = True
    assert said(cgan_spec, catalogue) == [
        "<dict>:1: train.channels_last: true, but the model has no 4D (convolution) weights, so it has no effect"
    ]


def test_a_negative_term_weight_is_warned_about(cgan_spec, catalogue) -> None:
    """−1 on the generator's side trains it to help the critic."""
    cgan_spec["players"]["generator"]["terms"] = {"adv.generator": -1}
    cgan_spec["players"]["critic"]["terms"] = {"adv.critic": 0.5}
    assert said(cgan_spec, catalogue) == [
        """<dict>:1: players.generator.terms."adv.generator": -1: a negative weight makes player 'generator' maximise """
        "adv.generator, which its loss defines to be minimised (a GAN's side then helps the other side)"
    ]


def test_a_relative_path_found_only_beside_the_spec_is_warned_about_where_it_is_written(tmp_path, monkeypatch) -> None:
    """Relative paths are read from the working directory; a spec run from elsewhere is told where its file is."""
    import numpy as np

    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    (project / "data").mkdir(parents=True)
    elsewhere.mkdir()
    np.savez(project / "data" / "x.npz", x=np.random.default_rng(0).normal(size=(40, 2)))
    source = {"type": "npz", "path": "data/x.npz"}
    spec_file = project / "spec.yaml"
    flow = {"type": "flow", "base": {"type": "standard_normal", "shape": [2]}, "bijectors": [{"type": "actnorm", "shape": [2]}]}
    for data in (source, {"type": "two_sources", "a": source, "b": source}):
        spec_file.write_text(yaml.safe_dump({"name": "t", "data": data, "components": {"flow": flow}, "losses": {"nll": {"type": "flow_nll", "flow": "flow", "x": "x" if data is source else "a"}}, "train": {"batch_size": 8}}))
        monkeypatch.chdir(elsewhere)
        spec = cg.load_spec(spec_file)
        with pytest.warns(cg.SpecWarning) as caught, pytest.raises(cg.SpecError, match="no such file"):
            cg.build(spec)
        where = "data.path" if data is source else "data.a.path"
        located, _, message = str(caught[0].message).partition(": ")
        assert located.startswith(f"{spec_file}:")
        assert message == (
            f"{where}: data/x.npz: relative paths are read from the working directory ({elsewhere}), which has no such file, "
            f"but the spec's folder has {project / 'data' / 'x.npz'}: run compose-gen from {project}, or write the path as ../project/data/x.npz"
        )
        with warnings.catch_warnings(), pytest.raises(cg.SpecError, match="no such file"):
            warnings.simplefilter("error", cg.SpecWarning)  # a path typed with --set is read from where it was typed
            cg.build(cg.load_spec(spec_file, [f"data={yaml.safe_dump(data, default_flow_style=True).strip()}"]))
        monkeypatch.chdir(project)
        with warnings.catch_warnings():
            warnings.simplefilter("error", cg.SpecWarning)
            cg.build(cg.load_spec(spec_file))


def test_a_loss_no_player_trains_or_logs_is_warned_about(cgan_spec, catalogue) -> None:
    """Declared but left out of every player's terms, it would be dropped without a word; listed with weight 0, it is logged."""
    cgan_spec["losses"]["gp"] = {"type": "gradient_penalty", "critic": "critic", "real": "x", "fake": "fake", "labels": "y"}
    assert said(cgan_spec, catalogue) == [
        "<dict>:1: losses.gp: no player's terms include 'gp', so it is neither trained nor logged, and test_losses leaves it "
        "out: add its terms to a player's terms (a weight of 0 logs them without training on them)"
    ]
    cgan_spec["players"]["critic"]["terms"] = {"adv.critic": 1.0, "gp.critic": 0.0}
    assert said(cgan_spec, catalogue) == []
    model, data = cg.build(cg.load_spec(cgan_spec, catalogue=catalogue))
    assert "gp.critic" in model.evaluate_terms({name: field[:32] for name, field in data.test.fields.items()})


def test_the_path_suggested_for_a_file_beside_a_linked_spec_folder_is_where_the_system_finds_it(tmp_path, monkeypatch) -> None:
    """``..`` of a linked folder is its target's parent, which the suggestion missed (it pointed beside the link)."""
    import numpy as np

    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    np.savez(tmp_path / "real" / "x.npz", x=np.random.default_rng(0).normal(size=(40, 2)))
    flow = {"type": "flow", "base": {"type": "standard_normal", "shape": [2]}, "bijectors": [{"type": "actnorm", "shape": [2]}]}
    spec = {"name": "t", "data": {"type": "npz", "path": "../x.npz"}, "components": {"flow": flow},
            "losses": {"nll": {"type": "flow_nll", "flow": "flow"}}, "train": {"batch_size": 8}}
    (tmp_path / "real" / "sub" / "spec.yaml").write_text(yaml.safe_dump(spec))
    (tmp_path / "link").symlink_to(tmp_path / "real" / "sub")
    monkeypatch.chdir(tmp_path / "elsewhere")
    with pytest.warns(cg.SpecWarning) as caught, pytest.raises(cg.SpecError, match="no such file"):
        cg.build(cg.load_spec("../link/spec.yaml"))
    assert str(caught[0].message).endswith(f"has {tmp_path / 'real' / 'x.npz'}: run compose-gen from {tmp_path / 'link'}, or write the path as ../real/x.npz")


def test_classes_the_labels_imply_but_no_training_example_has_are_warned_about(tmp_path) -> None:
    """Labels 1, 4, 7 make 8 classes, 5 of them empty: a model samples them, class_accuracy counts them."""
    import numpy as np

    rng = np.random.default_rng(0)
    y = rng.choice([1, 4, 7], 120)
    np.savez(tmp_path / "sparse.npz", x=rng.normal(size=(120, 2)).astype(np.float32), y=y)
    flow = {"type": "flow", "base": {"type": "standard_normal", "shape": [2]}, "bijectors": [{"type": "actnorm", "shape": [2]}]}
    spec = {"name": "t", "data": {"type": "npz", "path": str(tmp_path / "sparse.npz"), "y_key": "y"}, "components": {"flow": flow},
            "losses": {"nll": {"type": "flow_nll", "flow": "flow"}}, "train": {"batch_size": 8}}
    assert said(spec, None) == [
        "<dict>:1: data: the train split has no example of class(es) 0, 2, 3, 5, 6 of the 8 its labels index (0..7): a model "
        "learns nothing of them, yet sampling by class draws them and class_accuracy counts them; number the labels 0..K-1 "
        "by the classes the data hold"
    ]
    np.savez(tmp_path / "sparse.npz", x=rng.normal(size=(120, 2)).astype(np.float32), y=np.searchsorted([1, 4, 7], y))
    assert said(spec, None) == []


def test_a_class_the_split_put_wholly_in_the_test_split_is_told_how_to_keep_it(tmp_path) -> None:
    """Labels 0..K-1 that the data hold, but a rare class's every example drawn into the test split: renumbering the
    labels is no fix, another seed or test_fraction is."""
    import numpy as np

    y = np.array([0, 1] * 30 + [2])
    np.savez(tmp_path / "rare.npz", x=np.random.default_rng(0).normal(size=(61, 2)).astype(np.float32), y=y)
    flow = {"type": "flow", "base": {"type": "standard_normal", "shape": [2]}, "bijectors": [{"type": "actnorm", "shape": [2]}]}
    for seed in range(20):  # the split is seeded: find one that puts the single class-2 example in the test split
        data = {"type": "npz", "path": str(tmp_path / "rare.npz"), "y_key": "y", "seed": seed, "test_fraction": 0.5}
        spec = {"name": "t", "data": data, "components": {"flow": flow},
                "losses": {"nll": {"type": "flow_nll", "flow": "flow"}}, "train": {"batch_size": 8}}
        messages = said(spec, None)
        if messages:
            break
    assert messages == [
        "<dict>:1: data: the train split has no example of class(es) 2 of the 3 its labels index (0..2): a model learns "
        "nothing of them, yet sampling by class draws them and class_accuracy counts them; the split put every example "
        "of 2 in the test split: use another data seed, a smaller test_fraction, or more examples of them"
    ]


def test_a_component_the_players_update_only_in_part_is_warned_of(catalogue) -> None:
    """A player naming a bijector that a flow's repeat: copies trains copy 0 alone; a component no player names is
    frozen on purpose and not warned of."""
    spec = {
        "name": "repeated",
        "data": {"type": "moons", "n": 200},
        "components": {
            "c1": {"type": "affine_coupling", "shape": [2], "hidden": [8]},
            "flow": {"type": "flow", "base": {"type": "standard_normal", "shape": [2]}, "bijectors": ["c1", {"type": "reverse", "shape": [2]}], "repeat": 3},
        },
        "losses": {"nll": {"type": "flow_nll", "flow": "flow"}},
        "players": {"model": {"params": ["c1"], "terms": ["nll"]}},
        "train": {"steps": 2, "batch_size": 32},
    }
    with pytest.warns(cg.SpecWarning, match=r"components.flow: the players update part of it and leave as built 8 parameter tensors that only its own name"):
        cg.build(cg.load_spec(spec, catalogue=catalogue), "cpu")
    spec["players"]["model"]["params"] = ["flow"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", cg.SpecWarning)
        cg.build(cg.load_spec(spec, catalogue=catalogue), "cpu")
        spec["components"]["c2"] = {"type": "affine_coupling", "shape": [2], "hidden": [8]}  # named: a freeze on purpose
        spec["components"]["flow"].update(bijectors=["c1", {"type": "reverse", "shape": [2]}, "c2"], repeat=1)
        spec["players"]["model"]["params"] = ["c1"]
        cg.build(cg.load_spec(spec, catalogue=catalogue), "cpu")


def test_fp16_convolutions_on_the_cpu_are_warned_of(catalogue) -> None:
    """cyclegan_digits trained 20x slower in fp16 than in fp32 on the CPU, without a word; an MLP is not so slow."""
    from pathlib import Path

    spec = yaml.safe_load((Path(__file__).parents[2] / "specs" / "conv_vae_digits.yaml").read_text())
    spec["train"]["precision"] = "fp16"
    warned = [m for m in said(spec, catalogue) if "train.precision: fp16 on the CPU" in m]
    assert len(warned) == 1 and "use bf16, the CPU's half precision, or fp32" in warned[0]
    spec["train"]["precision"] = "bf16"
    assert not [m for m in said(spec, catalogue) if "train.precision" in m]


def test_fp16_s_range_is_checked_on_the_fields_layers_read_not_on_ladj_ones(cgan_spec, catalogue) -> None:
    """A dataset's per-example log-determinant (ladj_x) is added to bounds in float32, never read by a layer."""
    import torch

    from compose_gen import Splits, TensorData
    from compose_gen.compiler.advice import _advise_half_range

    cgan_spec["train"]["precision"] = "fp16"
    spec = cg.load_spec(cgan_spec, catalogue=catalogue)

    def warned(fields: dict) -> list[str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _advise_half_range(spec, Splits(TensorData(fields), TensorData(fields)))
        return [str(w.message) for w in caught]

    assert warned({"x": torch.ones(4, 2), "ladj_x": torch.full((4,), 1e6)}) == []
    assert "the data's x reach 1e+06 in size" in warned({"x": torch.full((4, 2), 1e6)})[0]


def test_a_best_metric_that_a_kl_warm_up_redefines_is_warned_about(vae_spec, catalogue) -> None:
    """best.json named a checkpoint from the warm-up, its KL weighted 1 where the β-VAE's is 4, as the best β-VAE."""
    vae_spec["losses"]["vae"].update(beta=4.0, warmup_steps=300)
    vae_spec["train"]["best_metric"] = "vae"
    assert said(vae_spec, catalogue) == [
        "<dict>:1: train.best_metric: 'vae' is the value of loss 'vae', whose definition changes over its first 300 optimizer "
        "steps (its warm-up), so a checkpoint from then is judged the best by another yardstick than later ones: judge by a "
        "logged value that keeps one meaning (an ELBO's vae.elbo, best_mode: max)"
    ]
    vae_spec["train"].update(best_metric="vae.elbo", best_mode="max")
    assert said(vae_spec, catalogue) == []
