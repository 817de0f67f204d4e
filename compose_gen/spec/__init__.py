"""The spec language: loading, validation against the catalogue, overrides, schema.

``load_spec`` is the one entry point::

    spec = load_spec("specs/vae_digits.yaml", overrides=["train.steps=200"])

It raises :class:`SpecError` listing every problem as ``file:line: path: message``.
"""

from compose_gen.spec.errors import Problem, SpecError, SpecWarning, format_path
from compose_gen.spec.load import MODEL_SECTIONS, Spec, load_spec, override_list
from compose_gen.spec.resolve import Declared
from compose_gen.spec.source import SpecSource, parse_text

__all__ = [
    "MODEL_SECTIONS",
    "Declared",
    "Problem",
    "Spec",
    "SpecError",
    "SpecSource",
    "SpecWarning",
    "format_path",
    "load_spec",
    "override_list",
    "parse_text",
]
