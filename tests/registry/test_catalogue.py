"""The catalogue: built by a factory, entry points discovered, broken plugins isolated."""

from __future__ import annotations

import subprocess
import sys

import pytest

from compose_gen import ComponentType, Params, make_catalogue
from compose_gen.registry import RegistryError
from compose_gen.spec import SpecError, load_spec
from compose_gen.testing.plugins import plugin


class Empty(Params):
    pass


def widget(name: str = "widget") -> ComponentType:
    return ComponentType(name, "network", Empty, lambda p, ctx: None, doc="A widget.")


def test_first_party_plugins_come_through_entry_points(catalogue) -> None:
    for name in ("mlp", "standard_normal", "elbo", "digits", "ancestral", "test_losses"):
        assert name in catalogue
    assert catalogue.plugin_of["mlp"] == "networks"
    assert all(t.doc for t in catalogue.types.values()), [t.name for t in catalogue.types.values() if not t.doc]


def test_a_catalogue_holds_only_the_plugins_it_is_given() -> None:
    catalogue = make_catalogue([plugin(widget(), name="mine")], entry_points=False)
    assert list(catalogue.types) == ["widget"]
    assert catalogue.plugin_of["widget"] == "mine"


def test_two_plugins_with_one_type_name_is_an_error_naming_both() -> None:
    with pytest.raises(RegistryError, match="'widget' is registered by two plugins: 'first' and 'second'"):
        make_catalogue([plugin(widget(), name="first"), plugin(widget(), name="second")], entry_points=False)


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown kind 'gizmo'"):
        ComponentType("x", "gizmo", Empty, lambda p, ctx: None)


def test_doc_defaults_to_the_first_line_of_the_builder_docstring() -> None:
    def build(p, ctx):
        """Builds a thing.

        More text.
        """

    assert ComponentType("x", "network", Empty, build).doc == "Builds a thing."


def test_a_plugin_that_fails_to_import_is_reported_and_others_still_work(install_plugin, vae_spec) -> None:
    install_plugin("broken_plugin", "raise ImportError('missing dependency: fancylib')\n")
    catalogue = make_catalogue()
    assert "broken_plugin" in catalogue.failures
    assert "missing dependency: fancylib" in catalogue.failures["broken_plugin"]
    load_spec(vae_spec, catalogue=catalogue)  # a spec that does not use it still validates
    vae_spec["components"]["prior"]["type"] = "fancy_prior"
    with pytest.raises(SpecError, match=r"plugins that failed to load: broken_plugin"):
        load_spec(vae_spec, catalogue=catalogue)


def test_a_plugin_whose_hook_raises_is_reported(install_plugin) -> None:
    install_plugin(
        "raising_hook",
        """
        from compose_gen import hookimpl

        @hookimpl
        def compose_gen_types():
            raise RuntimeError("registration exploded")
        """,
    )
    catalogue = make_catalogue()
    assert "registration exploded" in catalogue.failures["raising_hook"]
    assert "mlp" in catalogue


def test_a_plugin_returning_garbage_is_an_error() -> None:
    with pytest.raises(RegistryError, match="not a ComponentType"):
        make_catalogue([plugin("not a type", name="sloppy")], entry_points=False)  # type: ignore[arg-type]


def test_loading_the_plugins_does_not_import_the_compiler() -> None:
    """torch._dynamo takes about 2 s to import; every command loads the plugins, few compile."""
    probe = "import sys, compose_gen; compose_gen.make_catalogue(); print(sorted(m for m in sys.modules if m.startswith('torch._dynamo')))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
