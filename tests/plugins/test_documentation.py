"""Every first-party type says what it is and what each parameter means.

``compose-gen plugins TYPE`` and the JSON Schema that editors show on hover read
these texts; a parameter without one is a question its user has to answer from
the source.
"""

from __future__ import annotations

from compose_gen import make_catalogue

CATALOGUE = make_catalogue()
FIRST_PARTY = {name: t for name, t in CATALOGUE.types.items() if t.build.__module__.startswith("compose_gen_plugins")}


def test_first_party_types_are_found() -> None:
    assert len(FIRST_PARTY) >= 90 and not CATALOGUE.failures


def test_every_type_has_a_one_line_description() -> None:
    """One whole sentence: ``compose-gen plugins`` shows it in a table cell."""
    assert not [name for name, t in FIRST_PARTY.items() if not t.doc or "\n" in t.doc or not t.doc.endswith((".", ")"))]


def test_every_parameter_has_a_description() -> None:
    missing = [
        f"{name}.{field}" for name, t in sorted(FIRST_PARTY.items()) for field, info in t.params.model_fields.items() if not info.description
    ]
    assert not missing, f"{len(missing)} parameters without a description: {', '.join(missing)}"
