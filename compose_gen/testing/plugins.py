"""Test doubles for plugin authors: a plugin object from component types, and an installed-plugin fake.

``plugin(*types)`` turns ``ComponentType`` records into an object pluggy can
register, so a test builds a catalogue with exactly the types it wants::

    catalogue = make_catalogue([plugin(ComponentType("mine", "loss", P, build))], entry_points=False)
"""

from __future__ import annotations

import itertools
from types import SimpleNamespace

from compose_gen.registry import ComponentType, hookimpl

__all__ = ["plugin"]


_unnamed = itertools.count(1)


def plugin(*types: ComponentType, name: str | None = None) -> object:
    """A registrable plugin object contributing ``types``, named ``name`` (by default ``test_plugin_<n>``, unique)."""

    @hookimpl
    def compose_gen_types() -> list[ComponentType]:
        return list(types)

    return SimpleNamespace(__name__=name or f"test_plugin_{next(_unnamed)}", compose_gen_types=compose_gen_types)
