"""Plugin registry: pluggy hookspecs, the catalogue factory, and the type records."""

from compose_gen.registry.catalogue import Catalogue, listed, make_catalogue, suggest
from compose_gen.registry.hookspecs import hookimpl
from compose_gen.registry.types import (
    COMPONENT_KINDS,
    KINDS,
    ComponentType,
    LossName,
    LossRef,
    Params,
    Ref,
    RefTo,
    MAX_SIZE,
    Seed,
    Size,
    StrictModel,
    Value,
    ValueRef,
    ref_fields,
)

__all__ = [
    "COMPONENT_KINDS",
    "KINDS",
    "Catalogue",
    "ComponentType",
    "LossName",
    "LossRef",
    "Params",
    "Ref",
    "RefTo",
    "MAX_SIZE",
    "Seed",
    "Size",
    "StrictModel",
    "Value",
    "ValueRef",
    "hookimpl",
    "make_catalogue",
    "ref_fields",
    "listed",
    "suggest",
]
