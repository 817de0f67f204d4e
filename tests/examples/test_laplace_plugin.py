"""The example third-party plugin registers through the entry point and trains a spec that uses it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import compose_gen as cg
from compose_gen import make_catalogue
from compose_gen.testing.components import check_prior

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "compose_gen_laplace"


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """Install the example as pip would (its source on sys.path plus a dist-info with its entry points)."""
    info = tmp_path / "compose_gen_laplace-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: compose-gen-laplace\nVersion: 0.1.0\n")
    pyproject = (EXAMPLE / "pyproject.toml").read_text()
    assert '[project.entry-points.compose_gen]\nlaplace = "compose_gen_laplace"' in pyproject
    (info / "entry_points.txt").write_text("[compose_gen]\nlaplace = compose_gen_laplace\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.delitem(sys.modules, "compose_gen_laplace", raising=False)


def test_the_example_plugin_is_discovered_and_trains(installed, tmp_path) -> None:
    catalogue = make_catalogue()
    assert catalogue.plugin_of["laplace"] == "laplace"
    spec = cg.load_spec(EXAMPLE / "vae_laplace_digits.yaml", ["train.steps=30", "train.log_every=10"], catalogue)
    run = cg.runtime.Run.create(spec, tmp_path / "run", "cpu", progress=False)
    run.train()
    results = run.evaluate()
    assert results["test/vae.elbo"] < 0
    prior = run.model.component("prior")
    z = prior.sample(1000)
    assert z.shape == (1000, 16)
    # Laplace(0, 1): E|z| = 1, which a Gaussian (E|z| ≈ 0.80) would miss.
    assert abs(z.abs().mean().item() - 1.0) < 0.05
    assert torch.isfinite(run.model.losses["vae"]({"x": run.data.test.fields["x"][:8]}, frozenset({"loss"}))["loss"])
    check_prior(prior)  # at temperature 0 too: its scale 0 was refused by the distribution's validation
    assert run.model.sample(2, temperature=0.0).shape == (2, 64)
