"""Spec paths in messages read as ``--set`` keys, so a path in an error can be pasted into an override."""

from __future__ import annotations

import pytest

from compose_gen.spec.errors import format_path
from compose_gen.spec.overrides import parse_key


@pytest.mark.parametrize(
    "path, text",
    [
        (("components", "flow", "bijectors", 3, "hidden"), "components.flow.bijectors[3].hidden"),
        (("players", "critic", "terms", "adv.critic"), 'players.critic.terms."adv.critic"'),
        (("data", "columns", "x[0]"), 'data.columns."x[0]"'),
        (("graph", 'say "hi".x'), """graph.'say "hi".x'"""),
        ((), "<spec>"),
    ],
)
def test_a_path_is_written_as_the_override_key_that_reads_back_as_it(path, text) -> None:
    assert format_path(path) == text
    if path:
        assert parse_key(text) == path
