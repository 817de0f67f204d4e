"""The catalogue: built by a factory, entry points discovered, broken plugins isolated."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest

from pydantic import BaseModel, ConfigDict, Field, RootModel, computed_field, field_serializer

from compose_gen import ComponentType, Params, Ref, hookimpl, make_catalogue
from compose_gen.registry import StrictModel
from compose_gen.spec import SpecError, load_spec
from compose_gen.testing.plugins import plugin


class Empty(Params):
    pass


class Loose(Params):
    model_config = ConfigDict(extra="allow")


class RefAsDefault(Params):
    net: str | dict = Ref("network")  # meant as `net: Ref("network")`


# What would not come back from the spec.yaml a run folder keeps (a dump of the params): the folder failed to load,
# or loaded as another model.
class Aliased(Params):
    lambda_: float = Field(1.0, alias="lambda")


class Excluded(Params):
    width: int = Field(32, exclude=True)


class Rounded(Params):
    scale: float = 0.3

    @field_serializer("scale")
    def _rounded(self, scale: float) -> int:
        return round(scale)


class IgnoringSettings(StrictModel):
    model_config = ConfigDict(extra="ignore")
    width: int = 8


class HoldsIgnoringSettings(Params):
    options: IgnoringSettings = IgnoringSettings()


class Computed(Params):
    width: int = 32

    @computed_field
    @property
    def out_features(self) -> int:
        return 2 * self.width


class BrokenFactory(Params):
    hidden: list[int] = Field(default_factory=lambda: [][0])


class DerivedDefault(Params):
    width: int = 8
    depth: int = Field(default_factory=lambda data: data["width"] // 2)


def test_a_default_computed_from_the_other_parameters_is_listed_as_such() -> None:
    from compose_gen.registry.listing import describe

    catalogue = make_catalogue([plugin(ComponentType("derived", "network", DerivedDefault, lambda p, ctx: None))], entry_points=False)
    (listed,) = describe(catalogue)["types"]
    assert listed["params"]["depth"]["default"] == "computed from the other parameters" and listed["params"]["width"]["default"] == 8


class LooseSettings(BaseModel):  # a plain pydantic model ignores a misspelt key
    width: int = 8


class HoldsLooseSettings(Params):
    options: list[LooseSettings] = []


class AliasedSettings(StrictModel):
    lambda_: float = Field(1.0, alias="lambda")


class HoldsAliasedSettings(Params):
    options: AliasedSettings = AliasedSettings()


class Widths(RootModel[list[int]]):
    pass


class HoldsRootModel(Params):
    widths: Widths = Widths([8])


def test_a_root_model_setting_is_no_loose_settings_model() -> None:
    ComponentType("x", "network", HoldsRootModel, lambda p, ctx: None)


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


def test_a_type_name_two_plugins_register_is_set_aside_and_a_spec_using_it_is_told_why(vae_spec) -> None:
    catalogue = make_catalogue([plugin(widget(), widget("gadget"), name="first"), plugin(widget(), name="second")], entry_points=False)
    assert "widget" not in catalogue and "gadget" in catalogue, "the rest of both plugins still works"
    assert "registered by both 'first' and 'second'" in catalogue.failures["first"]
    assert "registered by both 'first' and 'second'" in catalogue.failures["second"]
    message = catalogue.unknown_type_message("widget", ("network",))
    assert message == "type 'widget' is registered by two plugins, 'first' and 'second'; uninstall or rename one of them"


def test_a_plugin_registering_one_type_twice_is_told_so() -> None:
    catalogue = make_catalogue([plugin(widget(), widget(), name="stutter")], entry_points=False)
    assert catalogue.failures == {"stutter": "registers type 'widget' twice"}
    assert "widget" in catalogue


def test_a_third_party_type_cannot_replace_a_first_party_one(install_plugin, vae_spec) -> None:
    install_plugin(
        "usurper",
        """
        from compose_gen import ComponentType, Params, hookimpl

        class P(Params):
            pass

        @hookimpl
        def compose_gen_types():
            return [ComponentType("mlp", "network", P, lambda p, ctx: None)]
        """,
    )
    catalogue = make_catalogue()
    assert catalogue.plugin_of["mlp"] == "networks"
    assert "type 'mlp' is first-party (plugin 'networks')" in catalogue.failures["usurper"]
    load_spec(vae_spec, catalogue=catalogue)
    vae_spec["components"]["encoder"]["net"]["usurpers_width"] = 3  # written for the plugin's mlp, which is not used
    with pytest.raises(SpecError, match=r"unknown parameter 'usurpers_width' \(type 'mlp' \(plugin 'networks'\); plugin 'usurper' registers a 'mlp' too, not used: rename it there\)"):
        load_spec(vae_spec, catalogue=catalogue)


def gizmo_plugin(*names: str) -> str:
    """A plugin's source registering a network type of each of ``names``."""
    return f"""
from compose_gen import ComponentType, Params, hookimpl

class P(Params):
    pass

@hookimpl
def compose_gen_types():
    return [ComponentType(name, "network", P, lambda p, ctx: None) for name in {list(names)!r}]
"""


def test_an_entry_point_reusing_a_first_party_name_is_loaded_under_its_distribution_s_too(install_plugin, vae_spec) -> None:
    """Plugins are registered by entry-point name: a package calling its entry point ``networks`` must not knock out
    mlp, nor lose its own types."""
    install_plugin("clasher", gizmo_plugin("clasher_net"), entry_point="networks")
    catalogue = make_catalogue()
    assert catalogue.plugin_of["mlp"] == "networks" and catalogue.plugin_of["clasher_net"] == "networks (from clasher)"
    assert catalogue.failures["networks (from clasher)"] == (
        "entry point 'networks' of 'clasher' has the name of one from 'compose-gen': loaded as 'networks (from clasher)'; rename it"
    )
    load_spec(vae_spec, catalogue=catalogue)


@pytest.mark.parametrize("first", ["aaa_other", "zzz_other"])
def test_two_packages_sharing_an_entry_point_name_both_load_whichever_is_listed_first(install_plugin, first) -> None:
    """Neither knocks out the other (importlib lists distributions in no order of install), so a type both register is
    set aside as any such clash is, rather than one package's silently winning."""
    install_plugin("mmm_ext", gizmo_plugin("wae_net", "ext_net"), entry_point="ext")
    install_plugin(first, gizmo_plugin("wae_net"), entry_point="ext")
    catalogue = make_catalogue()
    assert catalogue.plugin_of["ext_net"] == "ext (from mmm_ext)" and "wae_net" not in catalogue
    assert set(catalogue.conflicts["wae_net"]) == {"ext (from mmm_ext)", f"ext (from {first})"}
    assert "type 'wae_net' is registered by two plugins" in catalogue.unknown_type_message("wae_net", ("network",))
    for dist, other in (("mmm_ext", first), (first, "mmm_ext")):
        assert f"entry point 'ext' of {dist!r} has the name of one from {other!r}: loaded as 'ext (from {dist})'" in (
            catalogue.failures[f"ext (from {dist})"]
        )


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (("x", "gizmo", Empty, lambda p, ctx: None), ValueError, "unknown kind 'gizmo'"),
        (("", "network", Empty, lambda p, ctx: None), ValueError, "type name '': expected letters"),
        (("my type", "network", Empty, lambda p, ctx: None), ValueError, "type name 'my type'"),
        ((123, "network", Empty, lambda p, ctx: None), ValueError, "type name 123"),
        (("x", "network", dict, lambda p, ctx: None), TypeError, "type 'x': params must be a subclass of compose_gen.Params"),
        (("x", "network", Empty, "build_x"), TypeError, "type 'x': build must be callable"),
        (("x", "network", Empty, lambda p: None), TypeError, r"type 'x': build must be callable as build\(params, ctx\), but its signature is \(p\)"),
        (("x", "network", Loose, lambda p, ctx: None), ValueError, "its params set extra='allow', so a misspelt parameter in a spec would be kept unused"),
        (("x", "network", RefAsDefault, lambda p, ctx: None), TypeError, "the default of 'net' is a reference annotation"),
        (("x", "network", Aliased, lambda p, ctx: None), ValueError, "its params give 'lambda_' the alias 'lambda'; a spec names a parameter by its field name"),
        (("x", "network", Excluded, lambda p, ctx: None), ValueError, "its params exclude 'width' from their dump"),
        (("x", "network", Computed, lambda p, ctx: None), ValueError, "its params compute 'out_features', which the spec.yaml a run folder"),
        (("x", "network", HoldsLooseSettings, lambda p, ctx: None), ValueError, "settings model LooseSettings, which does not forbid unknown keys"),
        (("x", "network", HoldsIgnoringSettings, lambda p, ctx: None), ValueError,
         r"IgnoringSettings, which does not forbid unknown keys, .*; leave extra as StrictModel sets it, 'forbid' \(it sets extra='ignore'\)"),
        (("x", "network", Rounded, lambda p, ctx: None), ValueError, "Rounded serializes scale its own way, so the spec.yaml a run folder keeps"),
        (("x", "network", HoldsAliasedSettings, lambda p, ctx: None), ValueError, "its params give 'AliasedSettings.lambda_' the alias 'lambda'"),
        (("x", "network", BrokenFactory, lambda p, ctx: None), ValueError, "the default_factory of 'hidden' raised IndexError: list index out of range"),
    ],
)
def test_a_malformed_type_is_refused_when_made(args, error, message) -> None:
    with pytest.raises(error, match=message):
        ComponentType(*args)


def test_a_malformed_type_fails_its_plugin_only(install_plugin) -> None:
    install_plugin(
        "malformed",
        """
        from dataclasses import dataclass
        from compose_gen import ComponentType, hookimpl

        @dataclass
        class P:
            size: int = 1

        @hookimpl
        def compose_gen_types():
            return [ComponentType("dc", "prior", P, lambda p, ctx: None)]
        """,
    )
    catalogue = make_catalogue()
    assert "TypeError: type 'dc': params must be a subclass of compose_gen.Params" in catalogue.failures["malformed"]
    assert "mlp" in catalogue


def test_doc_defaults_to_the_first_line_of_the_builder_docstring() -> None:
    def build(p, ctx):
        """Builds a thing.

        More text.
        """

    assert ComponentType("x", "network", Empty, build).doc == "Builds a thing."


def test_help_defaults_to_doc_for_a_builder_without_a_docstring() -> None:
    """``compose-gen plugins NAME`` prints the help, which was empty for a type described only by ``doc=``."""
    assert ComponentType("x", "network", Empty, lambda p, ctx: None, doc="Builds a thing.").help == "Builds a thing."


def test_a_plugin_that_fails_to_import_is_reported_and_others_still_work(install_plugin, vae_spec) -> None:
    install_plugin("broken_plugin", "raise ImportError('missing dependency: fancylib')\n")
    catalogue = make_catalogue()
    assert "broken_plugin" in catalogue.failures
    assert "missing dependency: fancylib" in catalogue.failures["broken_plugin"]
    load_spec(vae_spec, catalogue=catalogue)  # a spec that does not use it still validates
    vae_spec["components"]["prior"]["type"] = "fancy_prior"
    failed = r"unless it is of a plugin that failed to load, see `compose-gen plugins`: 'broken_plugin': .*ImportError: missing dependency: fancylib"
    with pytest.raises(SpecError, match=failed):
        load_spec(vae_spec, catalogue=catalogue)


def test_a_plugin_that_does_not_parse_is_located_at_its_own_line(install_plugin, tmp_path) -> None:
    """Python reports the SyntaxError from importlib's frame, which is no help to the plugin's author."""
    install_plugin("typo_plugin", "x = 1\ndef broken(:\n")
    failure = make_catalogue().failures["typo_plugin"]
    assert failure.endswith(f": SyntaxError: invalid syntax ({tmp_path / 'typo_plugin.py'}:2)"), failure


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


def test_a_hook_of_the_wrong_signature_is_located_at_its_definition(install_plugin, tmp_path) -> None:
    """pluggy refuses it, and the innermost frame of that refusal is pluggy's own code, not the plugin's."""
    install_plugin(
        "greedy_hook",
        """
        from compose_gen import hookimpl

        @hookimpl
        def compose_gen_types(catalogue):
            return []
        """,
    )
    failure = make_catalogue().failures["greedy_hook"]
    assert failure.startswith("PluginValidationError: ") and "{'catalogue'}" in failure
    assert failure.endswith(f"({tmp_path / 'greedy_hook.py'}:4)")


def test_a_plugin_returning_garbage_keeps_its_good_types() -> None:
    catalogue = make_catalogue([plugin("not a type", widget(), name="sloppy")], entry_points=False)  # type: ignore[arg-type]
    assert catalogue.failures == {"sloppy": "registered 'not a type', not a ComponentType"}
    assert "widget" in catalogue
    stringy = SimpleNamespace(__name__="stringy", compose_gen_types=hookimpl(lambda: "mlp"))  # one name, not a list
    assert make_catalogue([stringy], entry_points=False).failures == {"stringy": "compose_gen_types returned 'mlp', not a list of ComponentType"}
    forgetful = SimpleNamespace(__name__="forgetful", compose_gen_types=hookimpl(lambda: None))  # no return statement
    assert make_catalogue([forgetful], entry_points=False).failures == {"forgetful": "compose_gen_types returned None, not a list of ComponentType"}


def test_a_type_refused_when_made_is_located_at_the_plugins_line() -> None:
    """Not at the line in compose_gen that raised."""

    def types():
        return [ComponentType("odd", "priors", Params, lambda p, ctx: None)]  # the kind is misspelt

    catalogue = make_catalogue([SimpleNamespace(__name__="misspelt", compose_gen_types=hookimpl(types))], entry_points=False)
    line = types.__code__.co_firstlineno + 1
    assert catalogue.failures["misspelt"].startswith("ValueError: type 'odd': unknown kind 'priors'")
    assert catalogue.failures["misspelt"].endswith(f"({__file__}:{line})")


def test_a_plugin_that_exits_at_import_is_reported_and_the_others_still_load(install_plugin) -> None:
    install_plugin("quitter", "import sys\nsys.exit('bye')\n")
    catalogue = make_catalogue()
    assert catalogue.failures["quitter"].startswith("entry point quitter = 'quitter' of quitter: SystemExit: bye (")
    assert catalogue.failures["quitter"].endswith("quitter.py:2)"), "the plugin's line, not importlib's"
    assert catalogue.failures["quitter"].endswith("quitter.py:2)"), "the failure points at the line that raised"
    assert "mlp" in catalogue


def test_a_misspelt_hook_is_reported_with_the_right_name() -> None:
    from compose_gen import hookimpl

    @hookimpl
    def compose_gen_type():
        return [widget()]

    catalogue = make_catalogue([SimpleNamespace(__name__="typo", compose_gen_type=compose_gen_type)], entry_points=False)
    assert catalogue.failures == {"typo": "unknown hook 'compose_gen_type'; did you mean 'compose_gen_types'?"}


def test_a_plugin_without_hookimpl_is_reported() -> None:
    def compose_gen_types():
        return [widget()]

    catalogue = make_catalogue([SimpleNamespace(__name__="undecorated", compose_gen_types=compose_gen_types)], entry_points=False)
    assert "defines no hook implementation; is compose_gen_types decorated with compose_gen.hookimpl?" in catalogue.failures["undecorated"]
    assert "widget" not in catalogue


def test_a_plugin_shadowed_by_a_folder_of_its_name_says_where_it_was_imported_from(tmp_path) -> None:
    """An empty folder named like the plugin's module, in the working directory, is imported as a namespace package."""
    shadow = SimpleNamespace(__name__="cg_extras", __file__=None, __path__=[str(tmp_path / "cg_extras")])
    catalogue = make_catalogue([shadow], entry_points=False)
    message = catalogue.failures["cg_extras"]
    assert f"module 'cg_extras' was imported from {tmp_path / 'cg_extras'}, a folder without __init__.py" in message
    assert "a folder of that name in the working directory (or elsewhere on sys.path) shadows it" in message
    plain = SimpleNamespace(__name__="empty", __file__="/x/empty.py")
    assert make_catalogue([plain], entry_points=False).failures["empty"] == "module 'empty' (/x/empty.py) has no compose_gen_types hook"


def test_test_plugins_get_distinct_names_by_default() -> None:
    catalogue = make_catalogue([plugin(widget()), plugin(widget("gadget"))], entry_points=False)
    assert not catalogue.failures and {"widget", "gadget"} <= set(catalogue.types)


def test_loading_the_plugins_does_not_import_the_compiler() -> None:
    """torch._dynamo takes about 2 s to import; every command loads the plugins, few compile."""
    probe = "import sys, compose_gen; compose_gen.make_catalogue(); print(sorted(m for m in sys.modules if m.startswith('torch._dynamo')))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


GIZMO = """
from compose_gen import ComponentType, Params, hookimpl

class P(Params):
    pass

def build_gizmo(p, ctx):
    '''A gizmo.'''

@hookimpl
def compose_gen_types():
    return [ComponentType("gizmo", "network", P, build_gizmo)]
"""


def test_an_installed_plugin_passed_explicitly_too_is_registered_once_under_its_entry_point_name(install_plugin) -> None:
    """A plugin's own tests pass its module beside the installed (and first-party) plugins: no clash with itself."""
    install_plugin("gizmos", GIZMO, entry_point="gizmo_plugin")
    import gizmos

    catalogue = make_catalogue([gizmos])
    assert not catalogue.failures and catalogue.plugin_of["gizmo"] == "gizmo_plugin" and "mlp" in catalogue


def test_the_same_types_reached_through_a_test_plugin_and_an_entry_point_are_kept_once(install_plugin) -> None:
    """``plugin(*types)`` of an installed package's own types: the same kind, parameters and build, so no conflict."""
    install_plugin("gizmos", GIZMO)
    import gizmos

    catalogue = make_catalogue([plugin(*gizmos.compose_gen_types(), name="under_test")])
    assert not catalogue.failures and not catalogue.conflicts
    assert catalogue.get("gizmo").build is gizmos.build_gizmo and "mlp" in catalogue


def test_types_of_the_same_name_but_other_code_still_clash(install_plugin) -> None:
    install_plugin("gizmos", GIZMO)
    catalogue = make_catalogue([plugin(widget("gizmo"), name="impostor")])
    assert catalogue.conflicts == {"gizmo": ["impostor", "gizmos"]} and "gizmo" not in catalogue


def test_a_first_party_module_passed_explicitly_stays_first_party_and_wins_whatever_the_order() -> None:
    import compose_gen_plugins.networks as networks

    catalogue = make_catalogue([plugin(widget("mlp"), name="early"), networks])
    assert catalogue.plugin_of["mlp"] == "networks"
    assert catalogue.failures == {"early": "type 'mlp' is first-party (plugin 'networks'); this plugin's is not used, rename it"}


def test_a_plugin_passed_with_a_first_party_plugin_s_name_is_registered_beside_it_not_as_it() -> None:
    """A test passing its own ``metrics.py`` module beside the built-in plugins, one of which is called ``metrics``."""
    mine = SimpleNamespace(__name__="metrics", __file__="/x/metrics.py", compose_gen_types=hookimpl(lambda: [widget()]))
    catalogue = make_catalogue([mine], entry_points="first-party")
    assert not catalogue.failures and "test_losses" in catalogue, "the first-party metrics plugin still loads"
    assert catalogue.plugin_of["widget"] == "metrics (from /x/metrics.py)" and catalogue.plugin_of["test_losses"] == "metrics"
    assert catalogue.provenance(["widget"]) == {"widget": "plugin 'metrics (from /x/metrics.py)'"}, "not recorded as compose-gen's"


def test_a_catalogue_of_first_party_types_leaves_other_installed_plugins_out(install_plugin) -> None:
    """A test of a variant of an installed type, beside the built-in types, without the installed copy clashing with it."""
    install_plugin("gizmos", GIZMO)
    catalogue = make_catalogue([plugin(widget("gizmo"), name="variant")], entry_points="first-party")
    assert not catalogue.conflicts and catalogue.plugin_of["gizmo"] == "variant" and "mlp" in catalogue


@pytest.mark.parametrize(
    "name, candidates, hint",
    [
        ("n_critic", ["params", "steps"], "; did you mean 'steps'? (a player's optimizer steps per round, n_critic in WGAN terms)"),
        ("learning_rate", ["lr", "betas"], "; did you mean 'lr'? (the learning rate)"),
        ("n_critic", ["params", "terms"], ""),  # a synonym is suggested only where its name exists
        ("stepz", ["steps"], "; did you mean 'steps'?"),
        ("CSV", ["csv", "npz", "npy"], "; did you mean 'csv'?"),  # too short for difflib, but the same name in another case
        # spelling alone said 'context_features' on a bijector, 'out_features' on mlp_critic, nothing on a player's clip
        ("features", ["shape", "hidden", "context_features"], "; did you mean 'shape'? (a bijector's event shape, [D])"),
        ("shape", ["features", "context_features"], "; did you mean 'features'? (this bijector's event size D)"),
        ("in_features", ["in_shape", "out_features", "hidden"], "; did you mean 'in_shape'? (the shape of the examples the critic reads)"),
        ("clip", ["params", "clip_grad_norm", "clip_grad_value"], "; did you mean 'clip_grad_norm'? (a player clips gradients; weight clipping is the wasserstein loss's clip)"),
    ],
)
def test_suggest_knows_names_other_tools_use(name, candidates, hint) -> None:
    from compose_gen.registry import suggest

    assert suggest(name, candidates) == hint


@pytest.mark.parametrize(
    "name, hint",
    [
        ("RealNVP", "did you mean 'affine_coupling'? (RealNVP is a stack of affine couplings; see specs/realnvp_digits.yaml)"),
        ("nice", "did you mean 'additive_coupling'? (NICE is a stack of additive couplings; see specs/nice_digits.yaml)"),
        ("real-nvp", "did you mean 'affine_coupling'?"),
    ],
)
def test_an_unknown_type_named_as_papers_name_it_points_to_the_type_that_declares_the_alias(name, hint) -> None:
    """The aliases live with the plugin that registers the type: the registry knows no model by name."""
    assert hint in make_catalogue().unknown_type_message(name, ("bijector",))


def test_a_name_two_types_declare_as_an_alias_points_to_both() -> None:
    first = ComponentType("t_student", "prior", Empty, lambda p, ctx: None, doc="A.", aliases={"tprior": "heavy tails"})
    second = ComponentType("t_laplace", "prior", Empty, lambda p, ctx: None, doc="B.", aliases={"tprior": "also heavy"})
    catalogue = make_catalogue([plugin(first, name="one"), plugin(second, name="two")], entry_points=False)
    assert catalogue.unknown_type_message("tprior", ("prior",)) == (
        "unknown prior type 'tprior'; did you mean 't_student'? (heavy tails) or 't_laplace'? (also heavy)"
    )


def test_aliases_are_names_with_reasons() -> None:
    with pytest.raises(TypeError, match="aliases must map names to the reason they mean this type"):
        ComponentType("t", "bijector", Params, lambda p, ctx: None, aliases={"x": 1})


@pytest.mark.parametrize(
    "library, call, raised",
    [
        ("json", 'json.loads("{")', "JSONDecodeError: "),  # the standard library's frame is innermost
        ("fancylib", 'fancylib.load("{")', "ValueError: cannot parse '{'"),  # a library installed beside the plugin
    ],
)
def test_a_hook_failing_inside_a_library_is_located_at_the_plugins_line(install_plugin, tmp_path, library, call, raised) -> None:
    """The plugin's call is the line to fix, even when the library sits in the plugin's folder (site-packages)."""
    (tmp_path / "fancylib.py").write_text("def load(text):\n    raise ValueError(f'cannot parse {text!r}')\n")
    install_plugin(
        "single_plugin",
        f"""
        import {library}
        from compose_gen import hookimpl

        @hookimpl
        def compose_gen_types():
            return {call}
        """,
    )
    problem = make_catalogue().failures["single_plugin"]
    assert problem.startswith(raised) and problem.endswith("single_plugin.py:7)"), problem
