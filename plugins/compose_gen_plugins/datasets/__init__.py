"""Dataset plugins: toy 2D sets, scikit-learn's bundled sets, NumPy/CSV/image/IDX files, two domains.

Every type is of kind ``dataset``; ``build(params, ctx)`` returns
:class:`compose_gen.Splits` with a fixed, seeded split, and accepts the
``transforms:`` preprocessing pipeline (:mod:`.transforms`).  A malformed file
raises :class:`DatasetError` naming the file and the problem.
"""

from __future__ import annotations

from compose_gen import ComponentType, hookimpl
from compose_gen_plugins.datasets.arrays import ARRAY_TYPES
from compose_gen_plugins.datasets.base import (
    DatasetError,
    DatasetParams,
    DataSpace,
    PipelineParams,
    ladj_field,
    make_splits,
    seeded_generator,
    split_fields,
)
from compose_gen_plugins.datasets.bundled import BUNDLED_TYPES
from compose_gen_plugins.datasets.images import IMAGE_TYPES
from compose_gen_plugins.datasets.tables import TABLE_TYPES
from compose_gen_plugins.datasets.toy import TOY_TYPES
from compose_gen_plugins.datasets.two_domain import TWO_DOMAIN_TYPES

__all__ = [
    "DataSpace",
    "DatasetError",
    "DatasetParams",
    "PipelineParams",
    "compose_gen_types",
    "ladj_field",
    "make_splits",
    "seeded_generator",
    "split_fields",
]


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    return [*TOY_TYPES, *BUNDLED_TYPES, *ARRAY_TYPES, *TABLE_TYPES, *IMAGE_TYPES, *TWO_DOMAIN_TYPES]
