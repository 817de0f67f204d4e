"""First-party compose_gen plugins, each registered through the ``compose_gen`` entry-point group.

A plugin is one module (``networks``, ``samplers``, …) or a package (``flows``,
``latent``, ``datasets``, ``quality``).  Either way each module that defines
types ends with its own ``@hookimpl def compose_gen_types()`` listing them, so a
module is also a plugin of its own (``make_catalogue([module], entry_points=False)``);
a package's hook returns :func:`package_types`, the types of all its modules.
"""

from __future__ import annotations

import importlib
import pkgutil

from compose_gen import ComponentType

__all__ = ["package_types"]


def package_types(package_name: str) -> list[ComponentType]:
    """The types of every submodule of ``package_name`` with a ``compose_gen_types`` hook, module by module in name order.

    A package plugin's hook returns this, so adding a type means editing one
    module, with no list in the package to keep in step::

        @hookimpl
        def compose_gen_types() -> list[ComponentType]:
            return package_types(__name__)
    """
    package = importlib.import_module(package_name)
    types: list[ComponentType] = []
    for module_info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{package_name}.{module_info.name}")
        hook = getattr(module, "compose_gen_types", None)
        if callable(hook):
            types += hook()
    return types
