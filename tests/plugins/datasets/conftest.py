"""Build dataset types by name through a catalogue holding only the dataset plugin."""

from __future__ import annotations

from typing import Any, Callable

import pytest

import compose_gen_plugins.datasets as dataset_plugin
from compose_gen import Splits, make_catalogue

CATALOGUE = make_catalogue([dataset_plugin], entry_points=False)


def build_dataset(name: str, **params: Any) -> Splits:
    component = CATALOGUE.get(name)
    return component.build(component.params.model_validate(params), None)


@pytest.fixture
def build() -> Callable[..., Splits]:
    return build_dataset
