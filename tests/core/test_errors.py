"""Exceptions quoted in compose_gen's messages: torch's C++ backtrace is cut, the rest kept."""

from __future__ import annotations

import pytest
import torch

from compose_gen.core.errors import described, message_of


def test_torch_s_cpp_backtrace_is_cut_from_a_quoted_error() -> None:
    with pytest.raises(TypeError) as caught:
        torch.empty(3, 2**63)
    assert "frame #0" in str(caught.value)  # what torch says
    assert described(caught.value) == "TypeError: empty(): argument 'size' failed to unpack the object at pos 2 with error \"Overflow when unpacking long long"


@pytest.mark.parametrize(
    "error, text",
    [(ValueError("bad\nsecond line"), "ValueError: bad\nsecond line"), (KeyError("x"), "KeyError: 'x'"), (RuntimeError(), "RuntimeError")],
)
def test_other_errors_are_quoted_whole(error: BaseException, text: str) -> None:
    assert described(error) == text


def test_the_message_alone_is_also_kept_without_the_backtrace() -> None:
    with pytest.raises(TypeError) as caught:
        torch.empty(2**63)
    assert message_of(caught.value) == described(caught.value).removeprefix("TypeError: ")
