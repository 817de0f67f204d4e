"""The shipped latent-variable specs: the conv VAE's grey-level grid; one spec trains, resumes and evaluates every metric.

(Every shipped spec compiling, training and sampling is ``tests/test_specs.py``.)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy
import pytest
import torch
import yaml

import compose_gen as cg
from compose_gen.runtime import Run, build

SPECS = Path(__file__).parents[3] / "specs"


def test_conv_vae_decoder_grid_is_the_digits_grey_levels() -> None:
    """The discretized logistic decoder's grid holds every pixel value of the data exactly, and no level more."""
    model, data = build(cg.load_spec(SPECS / "conv_vae_digits.yaml"), "cpu")
    vae = model.losses["vae"]
    x, grid = data.train.fields["x"], vae.decoder.grid
    assert vae.discrete and x.shape[1:] == (1, 8, 8)
    torch.testing.assert_close(grid.value(grid.index(x), x), x, rtol=0, atol=1e-12)
    assert grid.index(x).unique().tolist() == list(range(grid.bins))


def test_warmup_resumes_from_a_checkpoint_and_every_metric_writes_its_output(tmp_path: Path) -> None:
    raw = yaml.safe_load((SPECS / "hvae_digits.yaml").read_text())
    raw["losses"]["hvae"]["warmup_steps"] = 10
    raw["train"].update(steps=4, batch_size=16, checkpoint_every=2, log_every=2, evaluate_at_end=False)
    raw["evaluate"]["metrics"] = [
        {"type": "importance_sampled_nll", "model": "hvae", "samples": 20, "chunk": 8},
        {"type": "posterior_collapse", "model": "hvae"},
        {"type": "reconstruction_grid", "model": "hvae", "examples": 8},
        {"type": "interpolation_grid", "model": "hvae", "pairs": 2, "steps": 4, "mode": "linear"},
        {"type": "sample_grid", "temperatures": [0.5, 1.0], "samples": 4},
    ]
    spec = cg.load_spec(raw)
    run = Run.create(spec, tmp_path, "cpu", progress=False)
    run.trainer.fit(2)
    resumed = Run.load(tmp_path, "cpu", progress=False)
    assert int(resumed.model.losses["hvae"].optimizer_steps) == 2
    resumed.trainer.fit(4)
    assert int(resumed.model.losses["hvae"].optimizer_steps) == 4
    results = resumed.evaluate()
    assert results["test/hvae.nll_k20"] > 0  # binary pixels: a probability mass, so −log P(x) > 0
    for level, size in (("z2", 8), ("z1", 16)):  # each layer's active units count its own dimensions
        assert results[f"test/hvae.{level}.active_units"] in range(size + 1)
        assert sorted(k for k in results if k.startswith(f"test/hvae.{level}.kl_dim")) == [f"test/hvae.{level}.kl_dim{d:02d}" for d in range(size)]
    for png in ["hvae_reconstructions.png", "hvae_interpolation_linear.png", "samples_T0.5.png", "samples_T1.png"]:
        assert (tmp_path / png).stat().st_size > 0
    assert json.loads((tmp_path / "evaluation.json").read_text())["step"] == 4
    assert torch.isfinite(resumed.sample(2)).all()


def test_the_conditional_vae_draws_each_class_it_is_asked_for(tmp_path: Path, monkeypatch) -> None:
    """cvae_digits, briefly trained: samples drawn for class k are read as k; its NLL is the conditional one.

    A model that ignored its condition would score 1/10 on class_accuracy.
    """
    monkeypatch.setenv("COMPOSE_GEN_CACHE_DIR", str(tmp_path / "cache"))
    raw = yaml.safe_load((SPECS / "cvae_digits.yaml").read_text())
    raw["train"].update(steps=400, log_every=400, evaluate_at_end=False)
    classifier = {"epochs": 10}
    raw["evaluate"]["metrics"] = [
        {"type": "importance_sampled_nll", "model": "cvae", "samples": 50},
        {"type": "class_accuracy", "n": 500, "classifier": classifier},
        {"type": "reconstruction_grid", "model": "cvae", "examples": 8},
        {"type": "interpolation_grid", "model": "cvae", "pairs": 2, "steps": 4},
        {"type": "sample_grid", "samples": 20},
    ]
    run = Run.create(cg.load_spec(raw), tmp_path, "cpu", progress=False)
    run.trainer.fit(400)
    results = run.evaluate()
    assert results["class_accuracy"] > 0.8, results
    assert 0 < results["test/cvae.nll_k50"] < 40
    for png in ["cvae_reconstructions.png", "cvae_interpolation_spherical.png", "samples_T1.png"]:
        assert (tmp_path / png).stat().st_size > 0
    with numpy.load(run.save_samples(tmp_path / "drawn.npz", 12)) as drawn:  # the arrays, with the class each was drawn for
        assert drawn["x"].shape[0] == 12 and drawn["y"].tolist() == [i % 10 for i in range(12)]


def test_a_vae_conditioned_only_through_its_prior_draws_each_class(tmp_path: Path, monkeypatch) -> None:
    """``conditioned: [prior]``: p(z|c) a conditional flow, q(z|x) and p(x|z) blind to c; sampling by class still works.

    The encoder and decoder have no ``context_features``, so they would refuse a
    context; the class reaches the samples only through z ~ p(z|c).
    """
    monkeypatch.setenv("COMPOSE_GEN_CACHE_DIR", str(tmp_path / "cache"))
    raw = yaml.safe_load((SPECS / "cvae_digits.yaml").read_text())
    for part in ("encoder", "decoder"):
        raw["components"][part]["net"].update(context_features=0, hidden=[64])
    coupling = {"type": "affine_coupling", "shape": [8], "hidden": [64], "context_features": 10}
    raw["components"]["prior"] = {
        "type": "flow",
        "base": {"type": "standard_normal", "shape": [8]},
        "bijectors": [coupling, {"type": "reverse", "shape": [8]}],
        "repeat": 3,
    }
    raw["losses"]["cvae"]["conditioned"] = ["prior"]
    raw["train"].update(steps=500, log_every=500, evaluate_at_end=False, optimizer={"type": "adam", "lr": 3e-3})
    raw["evaluate"]["metrics"] = [{"type": "class_accuracy", "n": 500, "classifier": {"epochs": 10}}]
    run = Run.create(cg.load_spec(raw), tmp_path, "cpu", progress=False)
    assert run.model.losses["cvae"].conditioned == {"prior"}
    run.trainer.fit(500)
    assert run.evaluate()["class_accuracy"] > 0.5


@pytest.mark.parametrize(
    ("spec", "event_shape"),
    [("vae_digits", [1, 64]), ("conv_vae_digits", [8, 8]), ("vqvae_digits", [1, 64]), ("hvae_digits", [1, 64])],
)
def test_a_decoder_whose_event_shape_broadcasts_against_the_examples_is_refused(spec: str, event_shape: list[int]) -> None:
    """Event shape (1, 64) for 64-value examples: log p(x|z) broadcast x against the batch, summing it twice over; the loss
    trained was 688.8 for the right one's 44.1, and only a sampler, where the spec had one, noticed the shape."""
    raw = yaml.safe_load((SPECS / f"{spec}.yaml").read_text())
    raw["components"]["decoder"]["event_shape"] = event_shape
    raw["sample"] = None
    with pytest.raises(cg.SpecError, match=rf"the decoder gives distributions over shape \({', '.join(map(str, event_shape))},?\).* but x has shape"):
        build(cg.load_spec(raw), "cpu")
