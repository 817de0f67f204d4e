"""The hook a plugin implements to contribute component types.

A plugin is any module or object with a function decorated by :data:`hookimpl`::

    from compose_gen import ComponentType, hookimpl

    @hookimpl
    def compose_gen_types():
        return [ComponentType("mlp", "network", MLPParams, build_mlp)]

Installed packages expose such a module through the ``compose_gen`` entry-point
group; the first-party plugins are registered exactly that way.
"""

from __future__ import annotations

import pluggy

from compose_gen.registry.types import ComponentType

PROJECT = "compose_gen"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def compose_gen_types() -> list[ComponentType]:  # type: ignore[empty-body]
    """Return the component, loss, dataset, metric and sampler types this plugin provides."""
