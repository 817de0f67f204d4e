"""Sample-quality metrics: mode coverage, Fréchet distance, Inception score, precision/recall, class accuracy, birthday test.

Image metrics compare features of a classifier trained (and cached) on the
dataset itself, since nothing may be downloaded.  Registered through the
``compose_gen`` entry-point group as ``quality = "compose_gen_plugins.quality"``.
"""

from compose_gen import ComponentType, hookimpl
from compose_gen_plugins import package_types


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    """Every type of every quality submodule, each listed by the module that defines it."""
    return package_types(__name__)
