"""Test doubles for plugin authors: a plugin object from component types, and an installed-plugin fake.

``plugin(*types)`` turns ``ComponentType`` records into an object pluggy can
register, so a test builds a catalogue with exactly the types it wants::

    catalogue = make_catalogue([plugin(ComponentType("mine", "loss", P, build))], entry_points=False)
"""

from __future__ import annotations

from types import SimpleNamespace

from compose_gen.registry import ComponentType, hookimpl

__all__ = ["plugin"]


def plugin(*types: ComponentType, name: str = "test_plugin") -> object:
    """A registrable plugin object contributing ``types``."""

    @hookimpl
    def compose_gen_types() -> list[ComponentType]:
        return list(types)

    return SimpleNamespace(__name__=name, compose_gen_types=compose_gen_types)
