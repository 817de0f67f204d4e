"""Dataset plugins: toy 2D sets, scikit-learn's bundled sets, NumPy/CSV/image/IDX files, two domains.

Every type is of kind ``dataset``; ``build(params, ctx)`` returns
:class:`compose_gen.Splits` with a fixed, seeded split, and accepts the
``transforms:`` preprocessing pipeline (:mod:`.transforms`).  A malformed file
raises :class:`DatasetError` naming the file and the problem.
"""

from __future__ import annotations

from compose_gen import ComponentType, hookimpl
from compose_gen.core import check_ladj, ladj_field  # here before compose_gen.core had them; plugins may import either
from compose_gen_plugins import package_types
from compose_gen_plugins.datasets.base import (
    DatasetError,
    DatasetParams,
    DataSpace,
    PipelineParams,
    make_splits,
    seeded_generator,
    split_fields,
)

__all__ = [
    "DataSpace",
    "DatasetError",
    "DatasetParams",
    "PipelineParams",
    "check_ladj",
    "compose_gen_types",
    "ladj_field",
    "make_splits",
    "seeded_generator",
    "split_fields",
]


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    """Every type of every datasets submodule, each listed by the module that defines it."""
    return package_types(__name__)
