"""The plugin registers every dataset type, each documented, with a schema and the shared parameters."""

from __future__ import annotations

import json

import torch

import compose_gen_plugins.datasets as dataset_plugin
from compose_gen import make_catalogue

EXPECTED = {
    "eight_gaussians", "gaussian_grid", "moons", "circles", "checkerboard", "pinwheel", "swiss_roll", "rings",
    "two_spirals", "digits", "breast_cancer", "wine", "npz", "npy", "csv", "image_folder", "mnist_idx", "paired",
    "unpaired", "two_sources",
}


def test_every_type_registered_documented_and_schema_ready() -> None:
    catalogue = make_catalogue([dataset_plugin], entry_points=False)
    assert not catalogue.failures
    assert set(catalogue.types) == EXPECTED
    for component in catalogue.types.values():
        assert component.kind == "dataset" and component.doc
        schema = component.params.model_json_schema()
        assert {"seed", "transforms"} <= set(schema["properties"]), component.name
        json.dumps(schema)


def test_display_keeps_dtype_and_leading_dims(build) -> None:
    splits = build("digits", shape="flat", transforms=["standardise"])
    x = splits.test.fields["x"][:6].double().reshape(2, 3, 64)
    shown = splits.test.to_display(x)
    assert shown.shape == (2, 3, 1, 8, 8) and shown.dtype == torch.float64
    torch.testing.assert_close(shown.reshape(6, 64).float(), build("digits", shape="flat").test.fields["x"][:6])
