"""The catalogue: every registered type, built fresh by :func:`make_catalogue`.

There is no global registry.  A catalogue is built from an explicit list of
plugins and, by default, the ``compose_gen`` entry-point group; tests build one
with just the plugins they want.  A plugin that fails to import or to register
is recorded in :attr:`Catalogue.failures` (so specs that do not use it still
run); two plugins registering the same type name is a :class:`RegistryError`
naming both.
"""

from __future__ import annotations

import difflib
import importlib.metadata
from dataclasses import dataclass, field
from typing import Iterable

import pluggy

from compose_gen.registry import hookspecs
from compose_gen.registry.types import ComponentType

__all__ = ["Catalogue", "RegistryError", "make_catalogue", "suggest"]

ENTRY_POINT_GROUP = "compose_gen"


class RegistryError(Exception):
    """A plugin set that cannot form a catalogue (e.g. a type registered twice)."""


@dataclass
class Catalogue:
    """Registered types by name, the plugin that registered each, and failed plugins."""

    types: dict[str, ComponentType] = field(default_factory=dict)
    plugin_of: dict[str, str] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)

    def __contains__(self, name: object) -> bool:
        return name in self.types

    def get(self, name: str) -> ComponentType:
        return self.types[name]

    def of_kind(self, *kinds: str) -> list[ComponentType]:
        return [t for t in self.types.values() if t.kind in kinds]

    def unknown_type_message(self, name: str, kinds: tuple[str, ...]) -> str:
        """Explain an unknown type name: suggestions and plugins that failed to load."""
        candidates = [t.name for t in self.of_kind(*kinds)]
        message = f"unknown {'/'.join(kinds)} type {name!r}{suggest(name, candidates)}"
        if self.failures:
            message += f" (plugins that failed to load: {', '.join(sorted(self.failures))})"
        return message


def suggest(name: str, candidates: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest candidate, or an empty string."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def make_catalogue(plugins: Iterable[object] = (), *, entry_points: bool = True) -> Catalogue:
    """Build a catalogue from ``plugins`` (modules or objects with hook implementations).

    With ``entry_points`` true, every plugin of the ``compose_gen`` entry-point
    group is loaded too (the first-party ones included).
    """
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    catalogue = Catalogue()
    named: list[tuple[str, object]] = [(getattr(p, "__name__", repr(p)), p) for p in plugins]
    if entry_points:
        for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            try:
                named.append((point.name, point.load()))
            except Exception as error:  # a broken third-party plugin must not stop the others
                catalogue.failures[point.name] = f"{type(error).__name__}: {error}"
    for name, plugin in named:
        if manager.is_registered(plugin):
            continue
        try:
            manager.register(plugin, name=name)
        except Exception as error:
            catalogue.failures[name] = f"{type(error).__name__}: {error}"
    for impl in manager.hook.compose_gen_types.get_hookimpls():
        try:
            contributed = list(impl.function())
        except Exception as error:
            catalogue.failures[impl.plugin_name] = f"{type(error).__name__}: {error}"
            continue
        for component_type in contributed:
            _add(catalogue, component_type, impl.plugin_name)
    return catalogue


def _add(catalogue: Catalogue, component_type: ComponentType, plugin: str) -> None:
    if not isinstance(component_type, ComponentType):
        raise RegistryError(f"plugin {plugin!r} registered {component_type!r}, not a ComponentType")
    name = component_type.name
    if name in catalogue.types:
        raise RegistryError(
            f"type {name!r} is registered by two plugins: {catalogue.plugin_of[name]!r} and {plugin!r}"
        )
    catalogue.types[name] = component_type
    catalogue.plugin_of[name] = plugin
