"""How compose_gen quotes an exception inside its own messages."""

from __future__ import annotations

__all__ = ["described", "message_of"]


def message_of(error: BaseException) -> str:
    """``error``'s message without the C++ backtrace torch appends to some of its errors (``Exception raised from …
    (most recent call first): frame #0: …``), which names torch's source files rather than what went wrong."""
    return str(error).split("\nException raised from ", 1)[0].rstrip()


def described(error: BaseException) -> str:
    """``"TypeName: message"`` (:func:`message_of`), or the type's name alone for an error without a message."""
    text = message_of(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
