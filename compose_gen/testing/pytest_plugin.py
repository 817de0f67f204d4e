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

The checks of priors, encoders, decoders, samplers, losses, metrics and datasets take no
options, so they have no fixtures: import them from
:mod:`compose_gen.testing.components` (``check_decoder(decoder, z, context)``, ...).
"""

from __future__ import annotations

import argparse
import functools
from typing import Any, Callable

import pytest



def _positive(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    """An option type that reads a positive ``kind``, so that a bad value is a usage error, not every test's failure."""

    def read(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}") from None
        if not value > 0 or value == float("inf"):
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        return value

    return read


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("compose_gen", "compose_gen bijector conformance")
    group.addoption("--bijector-examples", type=_positive(int), default=None, help="hypothesis cases per bijector (default 8)")
    group.addoption("--bijector-device", default="cpu", help="device the conformance checks run on (default cpu)")
    group.addoption(
        "--bijector-scale",
        type=_positive(float),
        default=None,
        help="standard deviation of the unconstrained input draws (default: a mix of N(0,1) and N(0,4²) elements)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """A device other than the CPU is checked once, here, rather than failing every conformance test with it."""
    device = config.getoption("--bijector-device", default="cpu")
    if device == "cpu":
        return
    import torch  # only now: a test session that does not ask for a device does not import torch for it

    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as error:  # an unknown name; CUDA not compiled in or not present
        raise pytest.UsageError(f"--bijector-device {device}: {str(error).splitlines()[0]}") from None


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
