"""Picture grids of latent-variable models: interpolation rows need two test examples each."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from compose_gen import EvalContext, Splits, TensorData
from compose_gen.runtime import build
from compose_gen.spec import SpecError, load_spec
from compose_gen_plugins.latent import grids
from compose_gen_plugins.latent.grids import InterpolationGrid


class Identity:
    """A stand-in latent model whose latent is the image itself, so each row is a plain interpolation of two images."""

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z.reshape(-1, 1, 2, 2)


def context(n: int, tmp_path: Path) -> EvalContext:
    data = TensorData({"x": torch.rand(n, 1, 2, 2, generator=torch.Generator().manual_seed(0))}, image_shape=(1, 2, 2))
    return EvalContext(model=None, data=Splits(data, data), device=torch.device("cpu"), out_dir=tmp_path, batch_size=3)


@torch.no_grad()
def test_interpolation_pairs_up_to_half_an_odd_test_split(tmp_path: Path, monkeypatch) -> None:
    """7 test images make 3 pairs: rows run from x[0] to x[1], x[2] to x[3], x[4] to x[5]."""
    saved = []
    monkeypatch.setattr(grids, "save_grid", lambda images, path, nrow: saved.append(images))
    ectx = context(7, tmp_path)
    assert InterpolationGrid("m", Identity(), 3, 4, "linear")(ectx) == {"test/m.interpolation_images": 12.0}
    rows, x = saved[0].reshape(3, 4, 1, 2, 2), ectx.test.fields["x"]
    torch.testing.assert_close(rows[:, 0], x[0:6:2])
    torch.testing.assert_close(rows[:, -1], x[1:6:2])


def test_interpolation_with_more_pairs_than_the_test_split_holds_says_so(tmp_path: Path) -> None:
    """Before, 2·pairs > n cut the batch short: z[0::2] and z[1::2] of an odd count failed in torch."""
    with pytest.raises(ValueError, match=re.escape("pairs: 4 needs 8 test examples (two per row), but the test split has 7; lower `pairs` to at most 3")):
        InterpolationGrid("m", Identity(), 4, 4, "linear")(context(7, tmp_path))
    with pytest.raises(ValueError, match=re.escape("but the test split has 1; give the data a test split of two examples or more")):
        InterpolationGrid("m", Identity(), 1, 4, "linear")(context(1, tmp_path))  # no pairs at all: lowering them is no remedy


def digits_vae(pairs: int) -> dict:
    net = {"type": "mlp", "hidden": [8]}
    return {
        "name": "vae",
        "data": {"type": "digits", "binarize": "threshold", "shape": "flat", "test_fraction": 0.05},
        "components": {
            "prior": {"type": "standard_normal", "shape": [2]},
            "encoder": {"type": "gaussian_encoder", "latent": 2, "net": {**net, "in_features": 64, "out_features": 4}},
            "decoder": {"type": "bernoulli_decoder", "net": {**net, "in_features": 2, "out_features": 64}},
        },
        "losses": {"vae": {"type": "elbo", "encoder": "encoder", "decoder": "decoder", "prior": "prior"}},
        "evaluate": {"metrics": [{"type": "interpolation_grid", "model": "vae", "pairs": pairs}]},
    }


def test_validate_refuses_more_pairs_than_the_test_split_holds() -> None:
    """The build knows the test split, so validate finds the mistake before any training."""
    _, data = build(load_spec(digits_vae(1)), "cpu")
    n = len(data.test)
    build(load_spec(digits_vae(n // 2)), "cpu")
    message = f"interpolation_grid: pairs: {n // 2 + 1} needs {2 * (n // 2 + 1)} test examples (two per row), but the test split has {n}"
    with pytest.raises(SpecError, match=re.escape(f"evaluate.metrics[0]: type 'interpolation_grid' (plugin 'latent') failed to build: ValueError: {message}")):
        build(load_spec(digits_vae(n // 2 + 1)), "cpu")


def test_validate_refuses_a_sample_grid_temperature_a_vq_vae_cannot_sample_at() -> None:
    """vqvae_digits with `sample_grid: {temperatures: [0.7, 1.0]}` validated, trained to the end, then failed the metric:
    the VQ-VAE's uniform codes take no temperature, which the build knows from the spec's sampler."""
    raw = yaml.safe_load((Path(__file__).parents[3] / "specs" / "vqvae_digits.yaml").read_text())
    raw["evaluate"]["metrics"] = [{"type": "sample_grid", "temperatures": [0.7, 1.0]}]
    with pytest.raises(SpecError, match=re.escape("sample_grid: temperatures 0.7: the VQ-VAE samples its codes uniformly")):
        build(load_spec(raw), "cpu")
    raw["evaluate"]["metrics"] = [{"type": "sample_grid", "temperatures": [1.0]}]
    build(load_spec(raw), "cpu")
