"""Every first-party type says what it is and what each parameter means.

``compose-gen plugins TYPE`` and the JSON Schema that editors show on hover read
these texts; a parameter without one is a question its user has to answer from
the source.
"""

from __future__ import annotations

import importlib.metadata
import re

import pytest

from compose_gen import make_catalogue
from compose_gen.registry import KINDS

CATALOGUE = make_catalogue()
FIRST_PARTY = {name: t for name, t in CATALOGUE.types.items() if t.build.__module__.startswith("compose_gen_plugins")}


def test_first_party_types_are_found() -> None:
    """Every first-party plugin loads; a broken third-party one installed beside them is not this package's to document."""
    first_party_plugins = {ep.name for ep in importlib.metadata.distribution("compose-gen").entry_points if ep.group == "compose_gen"}
    assert len(FIRST_PARTY) >= 90 and not first_party_plugins & set(CATALOGUE.failures)


def test_every_type_has_a_one_line_description() -> None:
    """One whole sentence: ``compose-gen plugins`` shows it in a table cell."""
    assert not [name for name, t in FIRST_PARTY.items() if not t.doc or "\n" in t.doc or not t.doc.endswith((".", ")"))]


def test_every_parameter_has_a_description() -> None:
    missing = [
        f"{name}.{field}" for name, t in sorted(FIRST_PARTY.items()) for field, info in t.params.model_fields.items() if not info.description
    ]
    assert not missing, f"{len(missing)} parameters without a description: {', '.join(missing)}"


# -- formula and paper --------------------------------------------------------------------------------------------------
# Team rule: "a short docstring with the formula and the paper for every component".  The help that
# ``compose-gen plugins TYPE`` prints (``ComponentType.help``, by default the build function's docstring) of every
# mathematical type must name a year, as its reference "Author et al. YEAR, "Title"" does, and hold a formula.

#: Kinds whose types are models, parts of one, or measures of one, each with a formula and a paper behind it.
MATHEMATICAL_KINDS = ("bijector", "loss", "prior", "encoder", "decoder", "flow", "sampler", "generator", "critic", "network", "metric")
YEAR = re.compile(r"\b(19|20)\d\d\b")
#: A formula: a relation, a sum, a logarithm or exponential (whole words: "logistic" is none), or the square, norm or
#: maximum of a penalty or hinge term written without an "=".
FORMULA = re.compile(r"[=≥≤∑Σ²‖]|\b(log|exp|max)\b")

#: Purely structural types, with no formula or paper of their own; keep this short, each with its reason.
STRUCTURAL = {
    # Calls the named loss's own ``sample``: the formula and the paper are that loss's help.
    "latent_model": "delegates to the generative model of a latent-variable loss",
    # Pictures and the spec's own losses: what they show or compute is another component's formula.
    "reconstruction_grid": "draws the model's reconstructions of test images",
    "sample_grid": "draws the model's samples at some temperatures",
    "value_grid": "draws a graph value as images",
    "value_scatter": "draws graph values as 2D points",
    "test_losses": "evaluates the spec's own losses on the test split",
}

MATHEMATICAL = {name: t for name, t in sorted(FIRST_PARTY.items()) if t.kind in MATHEMATICAL_KINDS}


def test_mathematical_kinds_are_catalogue_kinds() -> None:
    assert set(MATHEMATICAL_KINDS) <= set(KINDS)
    assert all(any(t.kind == kind for t in MATHEMATICAL.values()) for kind in MATHEMATICAL_KINDS)


def test_exemptions_name_mathematical_types() -> None:
    """An exemption for a type that is gone or of another kind would hide nothing and rot."""
    assert not set(STRUCTURAL) - set(MATHEMATICAL)


def _missing(help_text: str) -> list[str]:
    gaps = [] if YEAR.search(help_text) else ["a paper's year"]
    return gaps + ([] if FORMULA.search(help_text) else ["a formula"])


@pytest.mark.parametrize("name", [name for name in MATHEMATICAL if name not in STRUCTURAL])
def test_help_gives_the_formula_and_the_paper(name: str) -> None:
    gaps = _missing(MATHEMATICAL[name].help)
    assert not gaps, f"{name}: the help of `compose-gen plugins {name}` lacks {' and '.join(gaps)}:\n{MATHEMATICAL[name].help}"
