"""``compose-gen validate`` refuses quality metrics that could only fail at the evaluation after training."""

from __future__ import annotations

import re

import numpy as np
import yaml
from torch import nn

from compose_gen.cli import main


def flow_spec(data: str, metrics: list[dict]) -> dict:
    """A tiny flow on 100 unlabelled 2-D points from an npz file: 80 train, 20 test examples."""
    return {
        "name": "unlabelled_points",
        "data": {"type": "npz", "path": data},
        "components": {
            "flow": {
                "type": "flow",
                "base": {"type": "standard_normal", "shape": [2]},
                "bijectors": [{"type": "affine_coupling", "shape": [2], "hidden": [8]}],
            }
        },
        "losses": {"nll": {"type": "flow_nll", "flow": "flow"}},
        "sample": {"type": "flow_sampler", "flow": "flow"},
        "train": {"steps": 2, "batch_size": 16},
        "evaluate": {"metrics": metrics},
    }


def validate(tmp_path, metrics: list[dict], capsys) -> tuple[int, str]:
    data = tmp_path / "points.npz"
    np.savez(data, x=np.random.default_rng(0).normal(size=(100, 2)).astype(np.float32))
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(flow_spec(str(data), metrics), sort_keys=False))
    capsys.readouterr()
    status = main(["validate", str(spec)])
    return status, capsys.readouterr().out


def test_metrics_that_can_only_fail_on_the_data_are_refused_each_with_its_remedy(tmp_path, capsys):
    status, out = validate(
        tmp_path,
        [
            {"type": "inception_score", "n": 100},
            {"type": "frechet_distance", "space": "classifier"},
            {"type": "precision_recall", "k": 20},
            {"type": "birthday_paradox"},
            {"type": "birthday_paradox", "s": 10, "space": "classifier"},
            {"type": "mode_coverage"},
        ],
        capsys,
    )
    assert status == 1
    problems = {match[1]: line for line in out.splitlines() if (match := re.search(r"(evaluate\.metrics\[\d\]): ", line))}
    assert set(problems) == {f"evaluate.metrics[{i}]" for i in range(6)}, out
    inception = problems["evaluate.metrics[0]"]
    assert "inception_score: p(y|x) comes from a classifier trained on the data's labels" in inception
    assert "frechet_distance and precision_recall compare raw examples" in inception and "space: raw" not in inception
    assert "frechet_distance: `space: classifier`" in problems["evaluate.metrics[1]"]
    assert "set `space: raw`, or `space: auto`" in problems["evaluate.metrics[1]"]
    assert "need more than k=20 real examples, but the test split has 20; lower `k`, or use `reference: train`" in problems[
        "evaluate.metrics[2]"
    ]
    assert "s=100 exceeds the 80 examples of the train split" in problems["evaluate.metrics[3]"]
    assert "lower `s` to at most 80" in problems["evaluate.metrics[3]"]
    assert "set `space: raw` (the default)" in problems["evaluate.metrics[4]"]
    assert "the dataset stores no meta['modes']" in problems["evaluate.metrics[5]"]


def test_the_same_metrics_set_as_the_data_allow_pass(tmp_path, capsys):
    status, out = validate(
        tmp_path,
        [
            {"type": "frechet_distance"},  # auto: raw examples, as there are no labels
            {"type": "precision_recall", "k": 5},
            {"type": "birthday_paradox", "s": 80},
            {"type": "mode_coverage", "modes": [[0.0, 0.0]], "mode_std": 1.0},
        ],
        capsys,
    )
    assert status == 0, out
    assert out.strip().endswith(": ok")


def test_parameters_that_contradict_each_other_are_refused_with_the_spec(tmp_path, capsys):
    status, out = validate(tmp_path, [{"type": "precision_recall", "n": 3}, {"type": "inception_score", "n": 5}], capsys)
    assert status == 1
    assert "evaluate.metrics[0]" in out and "need more than k=3 samples, got n=3: raise `n` or lower `k`" in out
    assert "evaluate.metrics[1]" in out and "n=5 samples cannot fill splits=10 chunks" in out


def test_a_frechet_distance_on_fewer_reference_examples_than_features_is_warned_about(tmp_path, capsys):
    """20 test points in 2-D are plenty; in 64-D (a classifier's features, here raw pixels) they are not."""
    assert validate(tmp_path, [{"type": "frechet_distance"}], capsys)[0] == 0
    assert main(["validate", "--strict", str(tmp_path / "spec.yaml")]) == 0, "no warning for 20 points in 2-D"
    data = tmp_path / "wide.npz"
    np.savez(data, x=np.random.default_rng(0).normal(size=(100, 64)).astype(np.float32))
    spec = flow_spec(str(data), [{"type": "frechet_distance"}])
    spec["components"]["flow"]["base"]["shape"] = spec["components"]["flow"]["bijectors"][0]["shape"] = [64]
    (tmp_path / "wide.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    assert main(["validate", "--strict", str(tmp_path / "wide.yaml")]) == 1
    assert "evaluate.metrics[0]: type 'frechet_distance' (plugin 'quality'): the test split holds 20 examples for 64 features, so their covariance is singular" in capsys.readouterr().err


def test_a_frechet_distance_of_fewer_samples_than_features_is_warned_about(tmp_path, capsys):
    """A tester's 10 samples scored 453.6 against the data's own 619.7: the model 'beat' the data."""
    assert validate(tmp_path, [{"type": "frechet_distance", "n": 2}], capsys)[0] == 0
    assert main(["validate", "--strict", str(tmp_path / "spec.yaml")]) == 1
    assert "n: 2 samples for 2 features make the samples' covariance singular" in capsys.readouterr().err
    validate(tmp_path, [{"type": "frechet_distance", "n": 3}], capsys)
    assert main(["validate", "--strict", str(tmp_path / "spec.yaml")]) == 0


def test_metrics_of_samples_drawn_at_a_temperature_or_truncated_are_warned_about(tmp_path, capsys):
    """A sampler's own temperature (or a generator's truncation) changes the distribution the metric scores."""
    assert validate(tmp_path, [{"type": "precision_recall", "k": 5}], capsys)[0] == 0
    assert main(["validate", "--strict", str(tmp_path / "spec.yaml")]) == 0, "no warning for draws from the model"
    assert main(["validate", "--strict", str(tmp_path / "spec.yaml"), "--set", "sample.temperature=0.7"]) == 1
    assert (
        "evaluate.metrics[0]: type 'precision_recall' (plugin 'quality'): scores the spec's samples, drawn with `sample:` "
        "temperature 0.7 (temperature 1 draws from the model) rather than from the model's distribution, so its value describes that "
        "setting, not the model" in capsys.readouterr().err
    )
    from compose_gen_plugins.samplers import GeneratorSampler

    assert GeneratorSampler(nn.Identity(), nn.Identity(), 1.5, None).distortion == "truncation 1.5 (no truncation draws from the model)"
    assert GeneratorSampler(nn.Identity(), nn.Identity(), None, None).distortion is None


def test_metrics_of_the_means_of_a_discrete_decoder_are_warned_about_and_draws_are_not() -> None:
    """A Bernoulli VAE's means on binarised digits: precision 1.0, recall 0.0 and a failed birthday test, of grey images."""
    from compose_gen_plugins.distributions import StandardNormal
    from compose_gen_plugins.latent.conditionals import BernoulliDecoder, GaussianDecoder
    from compose_gen_plugins.samplers import AncestralSampler

    bernoulli = BernoulliDecoder(nn.Linear(2, 4), (4,))
    gaussian = GaussianDecoder(nn.Linear(2, 4), (4,), 1, "fixed", 0.5)
    distortion = AncestralSampler(StandardNormal((2,)), bernoulli, True, None).distortion
    assert distortion.startswith("mean: true (the means of a discrete decoder") and distortion.endswith("mean: false draws from the model)")
    assert AncestralSampler(StandardNormal((2,)), bernoulli, False, None).distortion is None
    assert AncestralSampler(StandardNormal((2,)), gaussian, True, None).distortion is None


def test_classifier_settings_that_no_classifier_reads_are_warned_about(tmp_path, capsys):
    """Unlabelled points compare raw examples (`space: auto` resolves to raw, the birthday test's default is raw), so a
    `classifier:` given there changed nothing, silently; the defaults, as a resolved spec writes them, are no warning."""
    metrics = [
        {"type": "frechet_distance", "classifier": {"epochs": 3}},
        {"type": "precision_recall", "k": 5, "space": "raw", "classifier": {"width": 4}},
        {"type": "birthday_paradox", "s": 20, "classifier": {"feature_dim": 8}},
    ]
    assert validate(tmp_path, metrics, capsys)[0] == 0
    assert main(["validate", "--strict", str(tmp_path / "spec.yaml")]) == 1
    err = capsys.readouterr().err
    for index, name in enumerate(("frechet_distance", "precision_recall", "birthday_paradox")):
        assert f"evaluate.metrics[{index}]: type '{name}' (plugin 'quality'): its `classifier:` settings are unused" in err
    assert "with `space: auto`, which compares raw examples on data that are not labelled images" in err
    for metric in metrics:
        del metric["classifier"]
    assert validate(tmp_path, metrics, capsys)[0] == 0
    assert main(["validate", "--resolved", str(tmp_path / "spec.yaml")]) == 0
    (tmp_path / "resolved.yaml").write_text(capsys.readouterr().out)
    assert "classifier:" in (tmp_path / "resolved.yaml").read_text()
    assert main(["validate", "--strict", str(tmp_path / "resolved.yaml")]) == 0
