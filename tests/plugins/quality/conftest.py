"""Small synthetic datasets for the quality metrics: a 2D eight-Gaussian mixture and tiny labelled images."""

from __future__ import annotations

import math

import pytest
import torch

from compose_gen import EvalContext, Splits, TensorData
from compose_gen_plugins.quality.classifier import CACHE_ENV
from compose_gen.testing.doubles import DistributionSampler

MODE_STD = 0.05


def eight_modes() -> torch.Tensor:
    angles = torch.arange(8) * (2 * math.pi / 8)
    return 2 * torch.stack([angles.cos(), angles.sin()], 1)


def mixture(n: int, seed: int, modes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` draws (and their mode labels) from equal-weight isotropic Gaussians of std MODE_STD."""
    modes = eight_modes() if modes is None else modes
    generator = torch.Generator().manual_seed(seed)
    y = torch.randint(len(modes), (n,), generator=generator)
    return modes[y] + MODE_STD * torch.randn(n, 2, generator=generator), y


def mixture_distribution(modes: torch.Tensor) -> torch.distributions.Distribution:
    components = torch.distributions.Independent(torch.distributions.Normal(modes, MODE_STD), 1)
    return torch.distributions.MixtureSameFamily(torch.distributions.Categorical(torch.ones(len(modes))), components)


@pytest.fixture
def modes() -> torch.Tensor:
    return eight_modes()


@pytest.fixture
def mixture_sampler():
    """``mixture_sampler(modes)``: a model sampling the equal-weight mixture on ``modes`` exactly."""
    return lambda modes, seed=0: DistributionSampler(mixture_distribution(modes), seed=seed)


@pytest.fixture
def mixture_splits() -> Splits:
    meta = {"modes": eight_modes(), "mode_std": MODE_STD}
    (x_train, y_train), (x_test, y_test) = mixture(4000, 1), mixture(1000, 2)
    return Splits(
        TensorData({"x": x_train, "y": y_train}, num_classes=8, meta=meta),
        TensorData({"x": x_test, "y": y_test}, num_classes=8, meta=meta),
    )


def tiny_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three classes of 1×6×6 "digits" (a bar, a column, a diagonal) plus pixel noise, in [0, 1]."""
    templates = torch.zeros(3, 1, 6, 6)
    templates[0, 0, 2:4, :] = 1
    templates[1, 0, :, 2:4] = 1
    templates[2, 0] = torch.eye(6)
    generator = torch.Generator().manual_seed(seed)
    y = torch.randint(3, (n,), generator=generator)
    x = (templates[y] + 0.15 * torch.randn(n, 1, 6, 6, generator=generator)).clamp(0, 1)
    return x, y


@pytest.fixture
def image_splits() -> Splits:
    (x_train, y_train), (x_test, y_test) = tiny_images(600, 1), tiny_images(300, 2)
    return Splits(
        TensorData({"x": x_train, "y": y_train}, image_shape=(1, 6, 6), num_classes=3),
        TensorData({"x": x_test, "y": y_test}, image_shape=(1, 6, 6), num_classes=3),
    )


@pytest.fixture(autouse=True)
def classifier_cache(tmp_path, monkeypatch):
    """Every test caches classifiers in its own folder, never in the user's cache."""
    folder = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(folder))
    return folder / "classifiers"


@pytest.fixture
def context(tmp_path):
    """``context(model, splits, **fields)``: an EvalContext (on CPU unless told) writing into a temporary folder."""

    def make(model, splits: Splits, **fields) -> EvalContext:
        fields = {"device": torch.device("cpu"), "out_dir": tmp_path / "eval", **fields}
        return EvalContext(model=model, data=splits, **fields)

    return make


@pytest.fixture(autouse=True)
def one_thread():
    """The networks here are tiny: one thread is fastest and immune to a busy machine's oversubscription."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
