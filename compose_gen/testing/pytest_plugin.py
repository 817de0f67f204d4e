"""pytest plugin offering the bijector conformance kit to any package's tests.

Installed with compose_gen (entry point ``pytest11``), so a plugin author writes::

    def test_my_bijector_conforms(check_bijector):
        check_bijector(MyBijector((4,)))            # or a factory; options as in check_case

and, to check every example of every bijector type their plugin registers::

    from compose_gen import make_catalogue
    from compose_gen.testing.bijectors import bijector_types

    CATALOGUE = make_catalogue([my_plugin], entry_points=False)

    @pytest.mark.parametrize("name", bijector_types(CATALOGUE))
    def test_type_conforms(check_bijector_type, name):
        check_bijector_type(CATALOGUE, name)

``--bijector-examples N`` sets the number of hypothesis cases per bijector,
``--bijector-device cuda`` the device they run on and ``--bijector-scale S`` the
standard deviation of the unconstrained input draws (default: half of them
``N(0, 1)``, half ``N(0, 4²)``; see :func:`compose_gen.testing.bijectors.check_case`).
The kit is imported on first use, so collecting tests stays cheap.

The checks of priors, encoders, decoders, samplers, losses and metrics take no
options, so they have no fixtures: import them from
:mod:`compose_gen.testing.components` (``check_decoder(decoder, z, context)``, ...).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import pytest



def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("compose_gen", "compose_gen bijector conformance")
    group.addoption("--bijector-examples", type=int, default=None, help="hypothesis cases per bijector (default 8)")
    group.addoption("--bijector-device", default="cpu", help="device the conformance checks run on (default cpu)")
    group.addoption(
        "--bijector-scale",
        type=float,
        default=None,
        help="standard deviation of the unconstrained input draws (default: a mix of N(0,1) and N(0,4²) elements)",
    )


def _options(config: pytest.Config) -> dict[str, Any]:
    from compose_gen.testing.bijectors import MAX_EXAMPLES

    examples = config.getoption("--bijector-examples")
    examples = MAX_EXAMPLES if examples is None else examples
    device, scale = config.getoption("--bijector-device"), config.getoption("--bijector-scale")
    return {"max_examples": examples, "device": device, "scale": scale}


@pytest.fixture
def check_bijector(request: pytest.FixtureRequest) -> Callable[..., None]:
    """:func:`compose_gen.testing.bijectors.check_bijector` with the command-line options."""
    from compose_gen.testing.bijectors import check_bijector as check

    return functools.partial(check, **_options(request.config))


@pytest.fixture
def check_bijector_type(request: pytest.FixtureRequest) -> Callable[..., None]:
    """:func:`compose_gen.testing.bijectors.check_type` with the command-line options."""
    from compose_gen.testing.bijectors import check_type

    return functools.partial(check_type, **_options(request.config))
