"""Graph expressions parse into calls and nothing else."""

from __future__ import annotations

import pytest

from compose_gen.compiler import Call, parse_call


@pytest.mark.parametrize(
    ("text", "call"),
    [
        ("generator(z)", Call("generator", None, ("z",))),
        ("noise.sample(x)", Call("noise", "sample", ("x",))),
        ("qz.rsample()", Call("qz", "rsample", ())),
        ("qz.rsample(5)", Call("qz", "rsample", (5,))),
        (" cat( x , z ) ", Call("cat", None, ("x", "z"))),
        ("f(x, 0.5, -2e-3)", Call("f", None, ("x", 0.5, -2e-3))),
    ],
)
def test_parses(text: str, call: Call) -> None:
    assert parse_call(text) == call


@pytest.mark.parametrize(
    "text",
    ["__import__('os').system('ls')", "generator(z)(x)", "a.b.c(x)", "generator", "f(x + 1)", "f(g(x))", "f(x=1)"],
)
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_call(text)


@pytest.mark.parametrize("number", ["1e400", "-1e400", "99999999999999999999999"])
def test_a_number_beyond_torch_s_range_is_refused(number: str) -> None:
    """1e400 parsed as inf (one_hot(y, 1e400) was an OverflowError traceback); a long integer failed in torch's words."""
    with pytest.raises(ValueError, match=rf"number {number} in 'one_hot\(y, {number}\)' is beyond the range of torch's numbers"):
        parse_call(f"one_hot(y, {number})")
    assert parse_call("f(x, 1e19)").args == ("x", 1e19), "a float past int64's range is a float"
