"""``compose-gen plugins`` data: kinds, plugins, parameters."""

from __future__ import annotations

from compose_gen.registry.listing import describe


def test_listing_has_kind_plugin_and_parameters(catalogue) -> None:
    listing = describe(catalogue)
    mlp = next(t for t in listing["types"] if t["name"] == "mlp")
    assert mlp["kind"] == "network" and mlp["plugin"] == "networks"
    assert mlp["params"]["in_features"]["required"] is True
    assert mlp["params"]["hidden"]["default"] == [256, 256]
    assert listing["failed_plugins"] == catalogue.failures


def test_parameter_types_read_as_a_spec_writes_them(catalogue) -> None:
    params = {t["name"]: t["params"] for t in describe(catalogue)["types"]}
    assert params["elbo"]["encoder"]["type"] == "component (encoder)"
    assert params["elbo"]["prior"]["type"] == "component (prior | flow)"
    assert params["elbo"]["x"]["type"] == "value"
    assert params["posterior_collapse"]["model"]["type"] == "loss name"
    assert params["elbo"]["objective"]["type"] == "'elbo' | 'iwae'"
    assert params["flow"]["bijectors"]["type"] == "list[component (bijector)]"
    assert params["mlp"]["hidden"]["type"] == "list[int]"
    assert params["wine"]["transforms"]["type"] == "list[scale | standardise | flatten | reshape | dequantize | logit | binarize]"
    assert params["frechet_distance"]["classifier"]["type"] == "{width, feature_dim, epochs, batch_size, lr, seed}"
