"""Every registered bijector type passes the conformance kit on every example it declares.

The catalogue is the installed one (entry points) plus the first-party flows, so a
bijector added anywhere without examples, or failing a property, fails here.
Options: ``--bijector-examples N``, ``--bijector-device cuda``.
"""

from __future__ import annotations

import pytest

import compose_gen_plugins.flows as flows
from compose_gen import make_catalogue
from compose_gen.testing.bijectors import bijector_types

CATALOGUE = make_catalogue([flows])


def test_every_plugin_loads():
    assert not CATALOGUE.failures, f"plugins that failed to load: {CATALOGUE.failures}"


def test_the_flows_catalogue_is_covered():
    assert {"affine_coupling", "additive_coupling", "glow", "actnorm", "logit"} <= set(bijector_types(CATALOGUE))


@pytest.mark.parametrize("name", bijector_types(CATALOGUE))
def test_bijector_type_conforms(check_bijector_type, name):
    check_bijector_type(CATALOGUE, name)  # pytest --bijector-device cuda runs it on a GPU
