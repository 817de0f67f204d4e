"""Shared fixtures: fake installed plugins, tiny specs, a catalogue of first-party plugins."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Callable, Iterator

import pytest
from torch.distributions import Distribution

from compose_gen import make_catalogue
from compose_gen.registry import Catalogue

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _distribution_validation_kept() -> Iterator[None]:
    """Each test sees torch.distributions' argument validation as torch sets it by default.

    ``torch.compile`` turns it off for the whole process, so a test that compiles
    would change what later tests in the same worker see (a base distribution that
    no longer refuses NaN), and their outcome would depend on the order.
    """
    before = Distribution._validate_args
    yield
    Distribution.set_default_validate_args(before)


@pytest.fixture(scope="session")
def catalogue() -> Catalogue:
    """Every plugin installed through the entry-point group (the first-party ones included)."""
    return make_catalogue()


@pytest.fixture
def install_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Make a module importable and visible in the ``compose_gen`` entry-point group, as pip would.

    Writes the module and a ``*.dist-info`` folder with ``entry_points.txt`` into a
    folder put on ``sys.path``; ``importlib.metadata`` then finds it like any
    installed distribution, named like the module.  The entry point is named
    like the module too unless ``entry_point`` says otherwise.
    """

    def install(module: str, source: str, entry_point: str | None = None) -> None:
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
        info = tmp_path / f"{module}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[compose_gen]\n{entry_point or module} = {module}\n")
        monkeypatch.syspath_prepend(str(tmp_path))
        monkeypatch.delitem(sys.modules, module, raising=False)

    return install


@pytest.fixture
def vae_spec() -> dict:
    """A small VAE on digits as a plain mapping (tests change what they need)."""
    return {
        "name": "tiny_vae",
        "data": {"type": "digits", "binarize": "threshold", "shape": "flat"},
        "components": {
            "prior": {"type": "standard_normal", "shape": [4]},
            "encoder": {"type": "gaussian_encoder", "latent": 4, "net": {"type": "mlp", "in_features": 64, "out_features": 8, "hidden": [32]}},
            "decoder": {"type": "bernoulli_decoder", "net": {"type": "mlp", "in_features": 4, "out_features": 64, "hidden": [32]}},
        },
        "losses": {"vae": {"type": "elbo", "encoder": "encoder", "decoder": "decoder", "prior": "prior"}},
        "train": {"steps": 20, "batch_size": 32, "log_every": 10},
        "sample": {"type": "ancestral", "prior": "prior", "decoder": "decoder"},
        "evaluate": {"metrics": [{"type": "test_losses"}]},
    }


def pytest_configure(config: pytest.Config) -> None:
    """One intra-op thread per test process: the suite runs one worker per core."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def cgan_spec() -> dict:
    """A class-conditional GAN on eight Gaussians, sampled by class from raw labels, as a plain mapping."""
    return {
        "name": "cgan",
        "data": {"type": "eight_gaussians", "n": 200},
        "train": {"steps": 2, "batch_size": 32},
        "components": {
            "noise": {"type": "standard_normal", "shape": [2]},
            "generator": {"type": "mlp_generator", "latent_dim": 2, "hidden": [8], "num_classes": 8},
            "critic": {"type": "mlp_critic", "hidden": [8], "num_classes": 8},
        },
        "graph": {"z": "noise.sample(x)", "fake": "generator(z, y)"},
        "losses": {"adv": {"type": "non_saturating", "critic": "critic", "real": "x", "fake": "fake", "labels": "y"}},
        "players": {"critic": {"params": ["critic"], "terms": ["adv.critic"]}, "generator": {"params": ["generator"], "terms": ["adv.generator"]}},
        "sample": {"type": "generator", "noise": "noise", "generator": "generator", "classes": 8, "condition": "y"},
        "evaluate": {"metrics": []},
    }
