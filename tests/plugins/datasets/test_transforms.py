"""The preprocessing pipeline: log-determinants against autograd and by hand, inverses, errors."""

from __future__ import annotations

import math
from pathlib import Path
from typing import get_args

import pytest
import torch
from pydantic import TypeAdapter, ValidationError

import compose_gen as cg
from compose_gen_plugins.datasets.transforms import STEPS, NamedStep, PipelineError, TransformSpec, fit_pipeline

SPECS = TypeAdapter(list[TransformSpec])


def fit(specs: list, x: torch.Tensor, seed: int = 0):
    return fit_pipeline(SPECS.validate_python(specs), x, torch.Generator().manual_seed(seed))


def autograd_ladj(pipeline, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """log|det ∂f(x_i)/∂x_i| per example, with the same noise draw as ``fit``."""

    def one(index: int) -> float:
        def f(v: torch.Tensor) -> torch.Tensor:
            noisy_batch = x.clone()
            noisy_batch[index] = v  # keep the batch so dequantization noise is the same draw
            return pipeline.apply(noisy_batch, torch.Generator().manual_seed(seed))[0][index]

        jac = torch.autograd.functional.jacobian(f, x[index])
        d = x[index].numel()
        return torch.linalg.slogdet(jac.reshape(d, d))[1].item()

    return torch.tensor([one(i) for i in range(len(x))], dtype=torch.float64)


CASES = [
    [{"type": "scale", "a": -2.5, "b": 0.3}],
    ["standardise"],
    ["flatten", {"type": "reshape", "shape": [3, 2]}],
    [{"type": "logit", "alpha": 0.05}],
    [{"type": "logit", "alpha": 0.0}],
    [{"type": "scale", "a": 0.5, "b": 0.25}, "logit", "standardise", "flatten", {"type": "scale", "a": 3.0}],
]


@pytest.mark.parametrize("specs", CASES)
def test_ladj_matches_autograd_and_inverse_recovers_data(specs: list) -> None:
    x = torch.rand(5, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 0.9 + 0.05
    pipeline, y, constant, per_example = fit(specs, x)
    total = constant + (per_example if per_example is not None else torch.zeros(len(x), dtype=torch.float64))
    torch.testing.assert_close(total, autograd_ladj(pipeline, x))
    torch.testing.assert_close(pipeline.inverse(y), x)
    y_again, constant_again, _ = pipeline.apply(x, torch.Generator())
    torch.testing.assert_close(y_again, y)
    assert constant_again == constant


def test_dequantize_adds_noise_within_each_cell_and_its_ladj() -> None:
    levels = 17
    k = torch.randint(levels, (50, 4), generator=torch.Generator().manual_seed(2)).to(torch.float64)
    pipeline, y, constant, per_example = fit([{"type": "dequantize", "levels": levels}], k)
    assert per_example is None and constant == pytest.approx(-4 * math.log(levels))
    assert ((y * levels - k) >= 0).all() and ((y * levels - k) < 1).all()
    assert torch.equal(pipeline.inverse(y), k)
    torch.testing.assert_close(autograd_ladj(pipeline, k[:3]), torch.full((3,), constant, dtype=torch.float64))
    again = fit([{"type": "dequantize", "levels": levels}], k)[1]
    other_seed = fit([{"type": "dequantize", "levels": levels}], k, seed=1)[1]
    assert torch.equal(again, y) and not torch.equal(other_seed, y)


def test_binarize_thresholds_and_starts_the_log_determinant_over() -> None:
    """The log-determinants before a binarize no longer apply; those after it count, as for any integer data."""
    x = torch.rand(20, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    pipeline, y, constant, per_example = fit([{"type": "binarize", "threshold": 0.3}], x)
    assert torch.equal(y, (x >= 0.3).to(x.dtype)) and constant == 0.0 and per_example is None and pipeline.binarizes
    assert torch.equal(pipeline.inverse(y), y)
    _, y, constant, per_example = fit([{"type": "scale", "a": 0.5, "b": 0.25}, "binarize", {"type": "scale", "a": 0.5}], x)
    assert set(y.unique().tolist()) <= {0.0, 0.5} and constant == pytest.approx(-3 * math.log(2)) and per_example is None
    assert fit(["logit", {"type": "scale", "a": 0.1, "b": 0.5}, "binarize"], x)[2:] == (0.0, None), "logit's per-example part is gone"
    pipeline, y, constant, _ = fit(["binarize", {"type": "dequantize", "levels": 2}], x)
    assert constant == pytest.approx(-3 * math.log(2)) and not fit(["flatten"], x)[0].binarizes
    assert torch.equal(pipeline.inverse(y), (x >= 0.5).to(x.dtype))


def test_bernoulli_binarization_draws_once_seeded() -> None:
    """``b ~ Bernoulli(x)``: the mean over examples is x (within 4 standard errors), the draw repeats with the seed."""
    x = torch.tensor([[0.0, 0.3, 0.9, 1.0]], dtype=torch.float64).expand(4000, 4)
    spec = [{"type": "binarize", "mode": "bernoulli"}]
    _, y, constant, _ = fit(spec, x)
    assert set(y.unique().tolist()) == {0.0, 1.0} and constant == 0.0
    se = (x[0] * (1 - x[0]) / len(x)).sqrt()
    assert ((y.mean(0) - x[0]).abs() <= 4 * se + 1e-12).all()
    assert torch.equal(fit(spec, x)[1], y) and not torch.equal(fit(spec, x, seed=1)[1], y)


def test_ladj_by_hand() -> None:
    x = torch.tensor([[1.0, 3.0], [3.0, 7.0], [5.0, 2.0]], dtype=torch.float64)
    _, y, constant, _ = fit(["standardise"], x)
    assert constant == pytest.approx(-(math.log(2.0) + math.log(x[:, 1].std().item())))
    torch.testing.assert_close(y.mean(0), torch.zeros(2, dtype=torch.float64))
    assert fit([{"type": "scale", "a": -3.0}], x)[2] == pytest.approx(2 * math.log(3.0))
    half = torch.full((1, 3), 0.5, dtype=torch.float64)
    _, y, constant, per_example = fit([{"type": "logit", "alpha": 0.0}], half)
    assert constant == 0.0 and per_example.item() == pytest.approx(3 * 2 * math.log(2.0))
    torch.testing.assert_close(y, torch.zeros_like(half))


def test_standardise_keeps_constant_features() -> None:
    x = torch.tensor([[0.0, 1.0], [0.0, 3.0]], dtype=torch.float64)
    pipeline, y, constant, _ = fit(["standardise"], x)
    assert torch.isfinite(y).all() and constant == pytest.approx(-math.log(x[:, 1].std().item()))
    torch.testing.assert_close(pipeline.inverse(y), x)


def test_inverse_broadcasts_over_extra_leading_dims() -> None:
    x = torch.rand(4, 6, dtype=torch.float64)
    pipeline, y, _, _ = fit(["logit", {"type": "reshape", "shape": [2, 3]}, "standardise"], x)
    stacked = torch.stack([y, y])
    assert pipeline.inverse(stacked).shape == (2, 4, 6)
    torch.testing.assert_close(pipeline.inverse(stacked)[1], x)


@pytest.mark.parametrize(
    ("specs", "x", "message"),
    [
        ([{"type": "dequantize", "levels": 4}], [[0.5, 1.0]], r"not all integers \(dequantize before scaling, not after: .* set `scale: false`\)"),
        ([{"type": "dequantize", "levels": 4}], [[0.0, 4.0]], r"integer values in 0\.\.3"),
        (["flatten", "logit"], [[0.2, 1.5]], r"transforms\[1\]: logit expects values in \[0, 1\]"),
        ([{"type": "logit", "alpha": 0.0}], [[0.0, 0.5]], "strictly inside"),
        ([{"type": "reshape", "shape": [4]}], [[0.0, 0.5, 1.0]], r"transforms\[0\]: cannot reshape"),
        (["flatten", "standardise"], [[0.0, 0.5]], r"transforms\[1\]: standardise needs at least 2 training examples"),
        (["binarize"], [[0.0, 16.0]], r"transforms\[0\]: binarize expects values in \[0, 1\].*scale them first"),
    ],
)
def test_impossible_steps_say_which_and_why(specs: list, x: list, message: str) -> None:
    with pytest.raises(PipelineError, match=message):
        fit(specs, torch.tensor(x, dtype=torch.float64))


@pytest.mark.parametrize(
    "specs",
    [[{"type": "scale", "a": 0.0}], [{"type": "logit", "alpha": 0.5}], [{"type": "dequantize", "levels": 1}],
     ["unknown"], [{"type": "scale", "a": 1.0, "c": 2}], [{"type": "reshape", "shape": []}],
     [{"type": "binarize", "threshold": 1.0}], [{"type": "binarize", "mode": "random"}],
     [{"type": "binarize", "mode": "bernoulli", "threshold": 0.9}],
     [{"type": "binarize", "mode": "bernoulli", "threshold": 0.5}]],
)
def test_bad_transform_specs_are_validation_errors(specs: list) -> None:
    with pytest.raises(ValidationError):
        SPECS.validate_python(specs)


def test_exactly_the_parameter_free_steps_may_be_written_by_name() -> None:
    """The JSON Schema offers the names in ``NamedStep``; validation accepts just those alone."""
    named = set(get_args(NamedStep))
    steps = get_args(get_args(TransformSpec)[0])
    every = {get_args(step.model_fields["type"].annotation)[0] for step in steps}
    for name in sorted(every):
        if name in named:
            assert SPECS.validate_python([name])[0].type == name
        else:
            with pytest.raises(ValidationError, match="Field required"):
                SPECS.validate_python([name])
    by_name = [item for item in SPECS.json_schema()["items"]["anyOf"] if item.get("type") == "string"]
    assert [set(item["enum"]) for item in by_name] == [named]


def test_the_spec_union_is_the_steps_tuple_and_each_step_fits_itself() -> None:
    """``STEPS`` is the one list of steps: the spec union is built from it, and each class fits itself on the data."""
    assert get_args(get_args(TransformSpec)[0]) == STEPS
    x = torch.rand(4, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    for step in STEPS:
        assert "fit" in vars(step), f"{step.__name__} does not define fit"
    for spec in SPECS.validate_python(["standardise", "flatten", {"type": "reshape", "shape": [3, 2]}, "logit", "binarize"]):
        fitted = spec.fit(x)
        assert callable(fitted.forward) and callable(fitted.inverse) and fitted.binarizes == (spec.type == "binarize")


def bernoulli_vae(steps: int = 2) -> dict:
    """A tiny VAE on the digits, binarized by a Bernoulli draw."""
    return {
        "name": "bernoulli_vae",
        "data": {"type": "digits", "shape": "flat", "transforms": [{"type": "binarize", "mode": "bernoulli"}]},
        "components": {
            "prior": {"type": "standard_normal", "shape": [2]},
            "encoder": {"type": "gaussian_encoder", "latent": 2, "net": {"type": "mlp", "in_features": 64, "out_features": 4, "hidden": [8]}},
            "decoder": {"type": "bernoulli_decoder", "net": {"type": "mlp", "in_features": 2, "out_features": 64, "hidden": [8]}},
        },
        "losses": {"vae": {"type": "elbo", "encoder": "encoder", "decoder": "decoder", "prior": "prior"}},
        "train": {"steps": steps, "batch_size": 32},
        "sample": {"type": "ancestral", "prior": "prior", "decoder": "decoder"},
        "evaluate": {"metrics": [{"type": "test_losses"}]},
    }


def test_binarize_s_resolved_spec_validates_again(tmp_path: Path) -> None:
    """The resolved spec writes mode threshold's default in and gives mode bernoulli none, so each loads again as it was."""
    for step, threshold in (({"type": "binarize", "mode": "bernoulli"}, None), ({"type": "binarize"}, 0.5)):
        spec = bernoulli_vae()
        spec["data"]["transforms"] = [step]
        path = tmp_path / "resolved.yaml"
        path.write_text(cg.load_spec(spec).to_yaml())
        again = cg.load_spec(path)
        assert again.to_dict()["data"]["transforms"] == [{"type": "binarize", "mode": step.get("mode", "threshold"), "threshold": threshold}]


def test_a_run_binarized_by_bernoulli_draws_loads_again(tmp_path: Path) -> None:
    """Its run folder's spec.yaml is the resolved spec: sampling, evaluating and resuming read it back."""
    cg.train(bernoulli_vae(), out=tmp_path / "run", progress=False)
    run = cg.load_run(tmp_path / "run", progress=False)
    assert run.sample(3).shape[0] == 3
